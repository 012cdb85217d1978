"""What the candidate answered: recorded per item for the intact evaluation, carried through the result
cache, never written into a baseline, and shown in the HTML page's item lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fault_world import RECORDED, SUITE, assert_exit, layercheck
from repo_files import REPO
from trained_tiny import fact_suite_items, save, shared_fact_model, write_fact_suite

from pytest_layercheck.data.profile_data import INTACT, DepthProfile
from pytest_layercheck.evaluation.baseline import read_baseline
from pytest_layercheck.evaluation.comparison import compare_profiles
from pytest_layercheck.evaluation.profiler import build_profile
from pytest_layercheck.evaluation.result_cache import CacheEntryWarning, ResultCache
from pytest_layercheck.evaluation.settings import ProfileSettings
from pytest_layercheck.model.loading import LoadedModel, load_model
from pytest_layercheck.suites.loader import load_suite


@pytest.fixture(scope="module")
def fact_model(tmp_path_factory: pytest.TempPathFactory, run_folder: Path) -> tuple[LoadedModel, Path]:
    root = tmp_path_factory.mktemp("answers")
    folder = save(shared_fact_model(run_folder), root / "model")
    return load_model(str(folder), device="cpu"), write_fact_suite(root / "facts.yaml", n=12)


def test_multiple_choice_answers_agree_with_the_outcomes(fact_model, tmp_path: Path) -> None:
    loaded, suite_path = fact_model
    profile = build_profile(
        loaded, ProfileSettings(suites=(str(suite_path),), limit=None), cache=ResultCache(tmp_path, enabled=True)
    )
    intact = profile.evaluations[("facts", "mc_text", INTACT)]
    gold = {item.id: item.gold for item in load_suite(suite_path).items}
    ids = profile.suites["facts"].item_ids
    assert intact.answers is not None and len(intact.answers) == len(ids)
    assert [float(a == gold[i]) for i, a in zip(ids, intact.answers)] == list(intact.outcomes["acc"])
    assert all(ev.answers is None for key, ev in profile.evaluations.items() if key[2] != INTACT)
    stored = profile.to_json()["evaluations"]["facts"]  # never written into a profile or baseline
    assert all("answers" not in ev for ev in stored.values())
    again = build_profile(
        loaded, ProfileSettings(suites=(str(suite_path),), limit=None), cache=ResultCache(tmp_path, enabled=True)
    )
    assert again.evaluations[("facts", "mc_text", INTACT)].answers == intact.answers  # through the cache


def test_a_generation_records_its_answer_text(fact_model, tmp_path: Path) -> None:
    loaded, _ = fact_model
    suite = {
        "name": "gen",
        "capability": "knowledge",
        "description": "generated colours",
        "default_protocol": "generate_until",
        "protocols": {"generate_until": {"template": "{context}", "until": ["\n"], "max_gen_toks": 3}},
        "items": fact_suite_items(6),
    }
    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    profile = build_profile(
        loaded,
        ProfileSettings(suites=(str(path),), limit=None, mode="bands"),
        cache=ResultCache(tmp_path / "cache", enabled=True),
    )
    intact = profile.evaluations[("gen", "generate_until", INTACT)]
    assert intact.answers is not None and len(intact.answers) == 6
    assert all(isinstance(a, str) and len(a) <= 200 for a in intact.answers)
    targets = [item["target"] for item in suite["items"]]
    right = [float(a.strip().lower().rstrip(".") == t) for a, t in zip(intact.answers, targets)]
    assert right == list(intact.outcomes["exact_match"])


def test_an_old_baseline_without_answers_loads_and_compares() -> None:
    path = REPO / "baselines" / "smollm2-135m-instruct.json"
    before = path.read_bytes()
    baseline = read_baseline(path)
    assert all(ev.answers is None for ev in baseline.evaluations.values())
    assert compare_profiles(baseline, baseline).passed
    assert DepthProfile.from_json(baseline.to_json()).to_json() == baseline.to_json()
    assert path.read_bytes() == before


@pytest.mark.parametrize("bad", [[0] * 3, ["x"] * 12, [7] * 12, [-1] * 12, [True] * 12, "0" * 12])
def test_a_cache_entry_with_malformed_answers_is_rejected_and_recomputed(fact_model, tmp_path: Path, bad) -> None:
    loaded, suite_path = fact_model
    settings = ProfileSettings(suites=(str(suite_path),), limit=None, mode="bands")
    cache = ResultCache(tmp_path, enabled=True, key=b"k" * 32)
    first = build_profile(loaded, settings, cache=cache)
    intact = [p for p in cache.files() if json.loads(p.read_text())["ablation"] == INTACT]
    assert len(intact) == 1
    entry = json.loads(intact[0].read_text())
    assert len(entry["answers"]) == 12
    entry["answers"] = bad
    entry["signature"] = __import__("pytest_layercheck.evaluation.result_cache", fromlist=["_sign"])._sign(
        b"k" * 32, entry
    )  # signed with the right key: only the decoding can refuse it
    intact[0].write_text(json.dumps(entry))
    again = ResultCache(tmp_path, enabled=True, key=b"k" * 32)
    with pytest.warns(CacheEntryWarning, match="answers"):
        second = build_profile(loaded, settings, cache=again)
    assert len(again.rejected) == 1 and again.misses == 1
    assert (
        second.evaluations[("facts", "mc_text", INTACT)].answers
        == first.evaluations[("facts", "mc_text", INTACT)].answers
    )


@pytest.mark.slow
def test_the_page_shows_the_candidate_s_choice_for_a_worsened_item(ws: Path) -> None:
    result = layercheck(ws, "profile", "damaged", *SUITE, *RECORDED, "--html", "out/r.html", "--json", "out/r.json")
    assert_exit(result, 1, "regressed")
    page = (ws / "out" / "r.html").read_text(encoding="utf-8")
    assert '<th class="l">this run\'s answer</th>' in page
    report = json.loads((ws / "out" / "r.json").read_text())
    worse = [i for c in report["comparison"]["cells"] if c["band"] == INTACT for i in c["worse_items"]]
    assert worse, "the damaged model gets some intact items wrong"
    items = {i["id"]: i for i in fact_suite_items()}
    # The intact cell is judged by p_correct: an item is worse when its gold choice lost probability, whether
    # or not this run still picks it. The answer shown is this run's own: the gold exactly when its acc is 1.
    current = DepthProfile.from_json(report["profile"])
    right = dict(
        zip(
            current.suites["facts"].item_ids,
            current.evaluations[("facts", "mc_text", INTACT)].outcomes["acc"],
            strict=True,
        )
    )
    assert any(right[entry["id"]] == 0.0 for entry in worse), "some worsened items are now answered wrong"
    for entry in worse:  # the JSON report knows no texts of a user suite: the choice's index
        index = int(entry["candidate_answer"].removeprefix("choice "))
        chosen = items[entry["id"]]["choices"][index]
        assert (chosen == items[entry["id"]]["target"]) == (right[entry["id"]] == 1.0), entry["id"]
        assert (
            f'<td class="l">{entry["id"]}</td><td class="prompt">{items[entry["id"]]["context"]}</td>'
            f'<td class="l">{items[entry["id"]]["target"]}</td><td class="l chosen">{chosen}</td>' in page
        )
