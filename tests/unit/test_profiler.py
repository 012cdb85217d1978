"""The depth-profile engine: every evaluation equals scoring the ablated model on its own; cached
evaluations are reused; per-suite item limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from trained_tiny import save, shared_fact_model, write_fact_suite

from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.profile_data import INTACT
from pytest_layercheck.evaluation.options import parse_limit
from pytest_layercheck.evaluation.profiler import ALL_BANDS, build_profile, plan_ablations
from pytest_layercheck.evaluation.result_cache import ResultCache
from pytest_layercheck.evaluation.service import score_suite
from pytest_layercheck.evaluation.settings import DEFAULT_LIMITS, ProfileSettings
from pytest_layercheck.model.ablation import Ablation
from pytest_layercheck.model.loading import LoadedModel, load_model
from pytest_layercheck.suites.loader import load_suite


@pytest.fixture(scope="module")
def fact_model(tmp_path_factory: pytest.TempPathFactory, run_folder: Path) -> tuple[LoadedModel, Path]:
    root = tmp_path_factory.mktemp("profiler")
    folder = save(shared_fact_model(run_folder), root / "model")
    return load_model(str(folder), device="cpu"), write_fact_suite(root / "facts.yaml", n=24)


@pytest.mark.parametrize("mode", ["layers", "bands", "window:2"])
def test_every_evaluation_equals_scoring_that_ablated_model(fact_model, tmp_path: Path, mode: str) -> None:
    loaded, suite_path = fact_model
    settings = ProfileSettings(suites=(str(suite_path),), mode=mode, limit=None)
    profile = build_profile(loaded, settings, cache=ResultCache(tmp_path, enabled=True))
    suite = load_suite(suite_path)
    removals = plan_ablations(6, mode, settings.bands)
    assert len(profile.evaluations) == 1 + len(removals)
    for removed in [(), *removals]:
        ablation = Ablation.skipping(removed)
        key = ablation.key if removed else INTACT
        evaluation = profile.evaluations[("facts", "mc_text", key)]
        reference = score_suite(loaded, suite, "mc_text", ablation)
        assert list(evaluation.outcomes["acc"]) == [o.scores["acc"] for o in reference.outcomes], key
    intact = profile.evaluations[("facts", "mc_text", INTACT)].outcomes["acc"]
    assert sum(intact) / len(intact) > 0.9  # the memorised facts are known


def test_a_second_run_comes_from_the_cache(fact_model, tmp_path: Path) -> None:
    loaded, suite_path = fact_model
    settings = ProfileSettings(suites=(str(suite_path),), limit=None)
    first_cache = ResultCache(tmp_path, enabled=True)
    first = build_profile(loaded, settings, cache=first_cache)
    assert first_cache.misses == 7 and first_cache.hits == 0
    second_cache = ResultCache(tmp_path, enabled=True)
    second = build_profile(loaded, settings, cache=second_cache)
    assert second_cache.hits == 7 and second_cache.misses == 0
    assert second.evaluations == first.evaluations


def test_progress_reaches_the_total(fact_model, tmp_path: Path) -> None:
    loaded, suite_path = fact_model
    seen: list[tuple[int, int]] = []
    build_profile(
        loaded,
        ProfileSettings(suites=(str(suite_path),), limit=None),
        cache=ResultCache(tmp_path, enabled=False),
        progress=lambda _d, done, total: seen.append((done, total)),
    )
    dones = [done for done, _ in seen]
    assert dones == sorted(dones) and seen[-1] == (7, 7)


def test_limits_default_per_suite_and_parse() -> None:
    settings = ProfileSettings()
    assert {s: settings.limit_for(s) for s in settings.suites} == DEFAULT_LIMITS
    assert settings.describe()["limit"] == DEFAULT_LIMITS
    assert ProfileSettings(limit=None).limit_for("retrieval") is None
    assert ProfileSettings(limit=12).limit_for("knowledge") == 12
    assert parse_limit("") == DEFAULT_LIMITS
    assert parse_limit("0") is None and parse_limit("7") == 7
    parsed = parse_limit("retrieval=4, knowledge=0")
    assert parsed == {**DEFAULT_LIMITS, "retrieval": 4, "knowledge": None}
    assert ProfileSettings(limit=parsed).limit_for("my-suite") is None  # user suites: every item intact
    assert ProfileSettings(limit=parsed).sweep_limit_for("my-suite") == 40
    assert ProfileSettings(limit=7).sweep_limit_for("knowledge") == 7  # the sweep never exceeds the limit
    assert ProfileSettings(limit=None, sweep_limit=None).sweep_limit_for("knowledge") is None
    for bad in ("x", "-1", "=3", "retrieval=many"):
        with pytest.raises(ConfigError):
            parse_limit(bad)


def test_the_sweep_scores_a_prefix_and_intact_every_item(fact_model, tmp_path: Path) -> None:
    """Intact over all 24 items, ablations over the first 8: each equals scoring that model on its own."""
    loaded, suite_path = fact_model
    settings = ProfileSettings(suites=(str(suite_path),), limit=None, sweep_limit=8)
    profile = build_profile(loaded, settings, cache=ResultCache(tmp_path, enabled=False))
    info = profile.suites["facts"]
    assert len(info.item_ids) == 24 and info.sweep_items == 8 and len(info.swept_ids) == 8
    suite = load_suite(suite_path)
    intact = profile.evaluations[("facts", "mc_text", INTACT)].outcomes["acc"]
    assert list(intact) == [o.scores["acc"] for o in score_suite(loaded, suite, "mc_text").outcomes]
    leading = score_suite(loaded, suite, "mc_text", limit=8)  # the sweep's own intact run
    assert list(intact[:8]) == [o.scores["acc"] for o in leading.outcomes]
    removed = profile.evaluations[("facts", "mc_text", Ablation.skipping((2,)).key)].outcomes["acc"]
    reference = score_suite(loaded, suite, "mc_text", Ablation.skipping((2,)), limit=8)
    assert list(removed) == [o.scores["acc"] for o in reference.outcomes]
    band = profile.cell("facts", "middle", metric="acc")
    assert band.intact == sum(intact[:8]) / 8  # a band's drop is measured on the items it scored
    # So is the default cell's, judged by p_correct.
    scores = profile.evaluations[("facts", "mc_text", INTACT)].outcomes["p_correct"]
    default = profile.cell("facts", "middle")
    assert default.metric == "p_correct" and default.intact == sum(scores[:8]) / 8


def test_no_item_is_scored_intact_twice_and_every_profile_has_the_same_intact_cell(
    fact_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep's intact run on the leading items and the other items on their own make the intact
    cell; a profile that needs no ablation splits the same way, so its cell is the full profile's."""
    import pytest_layercheck.evaluation.profiler as profiler

    loaded, suite_path = fact_model
    scored: list[tuple[str, ...]] = []
    real = profiler.evaluate_ablations

    def counting(model, tokenizer, suite, info, ablations, **kwargs):  # type: ignore[no-untyped-def]
        scored.append(tuple(item.id for item in suite.items))
        return real(model, tokenizer, suite, info, ablations, **kwargs)

    monkeypatch.setattr(profiler, "evaluate_ablations", counting)
    settings = ProfileSettings(suites=(str(suite_path),), limit=None, sweep_limit=8)
    full = build_profile(loaded, settings, cache=ResultCache(tmp_path / "a", enabled=False))
    ids = full.suites["facts"].item_ids
    assert sorted(scored) == sorted([ids[:8], ids[8:]])  # each item once, intact
    scored.clear()
    partial = build_profile(
        loaded, settings, cache=ResultCache(tmp_path / "b", enabled=False), needs={"facts": frozenset()}
    )
    assert sorted(scored) == sorted([ids[:8], ids[8:]])
    assert partial.evaluations[("facts", "mc_text", INTACT)] == full.evaluations[("facts", "mc_text", INTACT)]
    assert list(partial.evaluations) == [("facts", "mc_text", INTACT)]


@pytest.mark.parametrize(
    ("needs", "expected"),
    [
        ({"facts": frozenset()}, 1),  # an intact-only check: one evaluation
        ({"facts": frozenset({"shallow"})}, 1 + 2),  # a band check: its band's ablations
        ({"facts": ALL_BANDS}, 1 + 6),
        ({}, 0),  # no check names the suite: nothing computed
    ],
)
def test_needs_restrict_the_work(fact_model, tmp_path: Path, needs, expected: int) -> None:
    loaded, suite_path = fact_model
    cache = ResultCache(tmp_path, enabled=True)
    profile = build_profile(loaded, ProfileSettings(suites=(str(suite_path),), limit=None), cache=cache, needs=needs)
    assert cache.misses == expected == len(profile.evaluations)
