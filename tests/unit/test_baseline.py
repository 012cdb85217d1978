"""The baseline store: naming, explicit-update writes, atomicity and clear errors on bad files."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from profile_factory import make_profile

from pytest_layercheck.core.errors import BaselineError, ConfigError
from pytest_layercheck.data.profile_data import DepthProfile
from pytest_layercheck.evaluation.baseline import BaselineStore, read_baseline, slugify, summarise_saves
from pytest_layercheck.evaluation.comparison import compare_profiles
from pytest_layercheck.evaluation.comparison_result import SHIFT

NAME = "SmolLM2-135M-Instruct"


@pytest.fixture
def store(tmp_path: Path) -> BaselineStore:
    return BaselineStore(tmp_path / "baselines")


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("SmolLM2-135M-Instruct", "smollm2-135m-instruct"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "huggingfacetb-smollm2-135m-instruct"),
        ("Qwen2.5-0.5B", "qwen2.5-0.5b"),
        ("  my model (v2)!  ", "my-model-v2"),
        ("../../etc/passwd", "etc-passwd"),  # never escapes the folder
    ],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_slugify_refuses_an_empty_name() -> None:
    with pytest.raises(ConfigError):
        slugify("///")


def test_path_for_uses_the_slug(store: BaselineStore) -> None:
    assert store.path_for(NAME) == store.folder / "smollm2-135m-instruct.json"


def test_a_missing_baseline_is_written_without_a_flag(store: BaselineStore) -> None:
    result = store.save(make_profile(), NAME)
    assert (result.status, result.path) == ("written", store.path_for(NAME))
    assert store.exists(NAME)
    assert any(line.startswith("+ knowledge/intact p_correct") for line in result.changes)


def test_a_different_baseline_is_replaced_only_with_update(store: BaselineStore) -> None:
    store.save(make_profile(), NAME)
    before = store.path_for(NAME).read_bytes()
    with pytest.raises(BaselineError) as info:
        store.save(make_profile(flip={("knowledge", "deep"): 3}), NAME)
    assert "--layercheck-update" in str(info.value) and "knowledge/deep p_correct" in str(info.value)
    assert store.path_for(NAME).read_bytes() == before  # nothing lost, nothing changed


def test_save_reports_written_unchanged_updated(store: BaselineStore) -> None:
    first = store.save(make_profile(), NAME, update=True)
    assert (first.name, first.path, first.status) == (NAME, store.path_for(NAME), "written")
    assert store.save(make_profile(), NAME, update=True).status == "unchanged"
    updated = store.save(make_profile(flip={("knowledge", "deep"): 3}), NAME, update=True)
    assert updated.status == "updated"
    assert [line for line in updated.changes if line.startswith("~ knowledge/deep p_correct")]


def test_a_partial_update_merges_and_keeps_the_other_suites(store: BaselineStore) -> None:
    full = make_profile()
    store.save(full, NAME)
    partial = make_profile(flip={("knowledge", "intact"): 2})
    for name in [n for n in partial.suites if n != "knowledge"]:
        del partial.suites[name]
    partial.evaluations = {k: v for k, v in partial.evaluations.items() if k[0] == "knowledge"}
    result = store.save(partial, NAME, update=True)
    assert result.status == "updated"
    assert any(line.startswith("~ knowledge/intact p_correct") for line in result.changes)
    assert not any(line.startswith("-") for line in result.changes)  # nothing silently dropped
    stored = store.load(NAME)
    assert set(stored.suites) == set(full.suites)
    other = next(n for n in full.suites if n != "knowledge")
    assert stored.evaluation(other).outcomes == full.evaluation(other).outcomes
    assert list(stored.suites) == list(full.suites)  # the stored order is kept
    # Re-recording one suite as it was changes nothing, byte for byte.
    before = store.path_for(NAME).read_bytes()
    same = make_profile(flip={("knowledge", "intact"): 2})
    same.suites = {"knowledge": same.suites["knowledge"]}
    same.evaluations = {k: v for k, v in same.evaluations.items() if k[0] == "knowledge"}
    assert store.save(same, NAME).status == "unchanged"
    assert store.path_for(NAME).read_bytes() == before


def test_a_partial_update_from_other_weights_is_refused(store: BaselineStore) -> None:
    store.save(make_profile(), NAME)
    partial = make_profile(flip={("knowledge", "intact"): 2})
    partial.model["fingerprint"] = "sha256:other"
    partial.suites = {"knowledge": partial.suites["knowledge"]}
    partial.evaluations = {k: v for k, v in partial.evaluations.items() if k[0] == "knowledge"}
    before = store.path_for(NAME).read_bytes()
    with pytest.raises(BaselineError, match="model fingerprint"):
        store.save(partial, NAME, update=True)
    assert store.path_for(NAME).read_bytes() == before


def test_environment_only_change_leaves_the_file_untouched(store: BaselineStore) -> None:
    store.save(make_profile(), NAME, update=True)
    before = store.path_for(NAME).read_bytes()
    moved = make_profile()
    moved.environment["versions"]["torch"] = "9.9.9"
    assert store.save(moved, NAME, update=True).status == "unchanged"
    assert store.path_for(NAME).read_bytes() == before  # no churn in the committed file


def test_save_defaults_to_the_model_name(store: BaselineStore) -> None:
    result = store.save(make_profile(name=NAME), update=True)
    assert result.path.name == "smollm2-135m-instruct.json" and store.exists(NAME)


def test_file_is_readable_json(store: BaselineStore) -> None:
    path = store.save(make_profile(), NAME, update=True).path
    text = path.read_text()
    assert text.endswith("}\n") and '\n  "schema_version": 2' in text
    data = json.loads(text)
    assert list(data["bands"]) == ["shallow", "middle", "deep"]  # meaningful order kept, not sorted
    assert list(data["model"]) == sorted(data["model"])
    assert data["evaluations"]["knowledge"]["intact"]["outcomes"]["acc"].count("1") > 100  # "0110..." strings


def test_round_trip_preserves_cells_and_outcomes(store: BaselineStore) -> None:
    profile = make_profile(flip={("reasoning", "middle"): 7})
    store.save(profile, NAME, update=True)
    loaded = store.load(NAME)
    assert loaded.cells() == profile.cells()
    assert loaded.cells(["acc_norm"]) == profile.cells(["acc_norm"])
    assert loaded.evaluations == profile.evaluations
    assert list(loaded.bands) == list(profile.bands) and loaded.suites == profile.suites
    comparison = compare_profiles(loaded, profile)
    shifts = [c for c in comparison.cells if c.band == SHIFT]
    assert len(shifts) == len(profile.suites)  # every suite is swept layer by layer: one shift cell each
    assert comparison.counts()["ok"] == len(profile.cells()) + len(shifts) == len(comparison.cells)
    assert DepthProfile.from_json(profile.to_json()).cells() == profile.cells()


def test_missing_baseline_names_the_flag_and_the_path(store: BaselineStore) -> None:
    with pytest.raises(BaselineError) as info:
        store.load(NAME)
    message = str(info.value)
    assert "--layercheck-update" in message and "smollm2-135m-instruct.json" in message


def _write(store: BaselineStore, text: str) -> Path:
    path = store.path_for(NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_invalid_json_is_a_clear_error(store: BaselineStore) -> None:
    path = _write(store, '{"schema_version": 1,\n<<<<<<< HEAD\n')
    with pytest.raises(BaselineError) as info:
        store.load(NAME)
    assert str(path) in info.value.problem and "not valid JSON (line 2" in info.value.problem
    assert "--layercheck-update" in info.value.fix
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    ("version", "expected"), [(0, "schema_version 0"), (None, "schema_version None"), (99, "newer than")]
)
def test_wrong_schema_version_is_a_clear_error(store: BaselineStore, version: object, expected: str) -> None:
    data = make_profile().to_json()
    data["schema_version"] = version
    _write(store, json.dumps(data))
    with pytest.raises(BaselineError, match=expected):
        store.load(NAME)


def test_a_schema_version_1_baseline_is_refused_and_left_as_it_is(store: BaselineStore) -> None:
    """A baseline recorded before per-item scores (0/1 outcomes only) is never compared: re-record it."""
    data = make_profile().to_json()
    data["schema_version"] = 1
    for evaluations in data["evaluations"].values():
        for evaluation in evaluations.values():
            for key in ("outcomes", "means"):
                for metric in ("p_correct", "margin"):
                    evaluation[key].pop(metric, None)
    for cell in data["cells"]:  # version 1 judged cells by acc (equal to p_correct in the factory's profiles)
        if cell["metric"] in ("p_correct", "margin"):
            cell["metric"] = "acc"
    path = _write(store, json.dumps(data, indent=2))
    before = path.read_bytes()
    for read in (lambda: store.load(NAME), lambda: read_baseline(path)):
        with pytest.raises(BaselineError) as info:
            read()
        assert str(path) in info.value.problem
        assert "recorded before per-item scores" in info.value.problem
        assert "--update" in info.value.fix
        assert path.read_bytes() == before  # refused, not rewritten


@pytest.mark.parametrize("damage", ["drop_suites", "not_a_dict", "short_outcomes"])
def test_malformed_baseline_is_a_clear_error(store: BaselineStore, damage: str) -> None:
    data = make_profile().to_json()
    if damage == "drop_suites":
        del data["suites"]
    elif damage == "short_outcomes":
        data["evaluations"]["knowledge"]["intact"]["outcomes"]["acc"] = "0101"
    _write(store, json.dumps([1, 2] if damage == "not_a_dict" else data))
    with pytest.raises(BaselineError) as info:
        store.load(NAME)
    assert "smollm2-135m-instruct.json" in info.value.problem and info.value.fix


def test_failed_write_keeps_the_old_baseline_and_leaves_no_temp_file(
    store: BaselineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save(make_profile(), NAME, update=True)
    before = store.path_for(NAME).read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.save(make_profile(flip={("knowledge", "shallow"): 10}), NAME, update=True)
    monkeypatch.undo()
    assert store.path_for(NAME).read_bytes() == before
    assert [p.name for p in store.folder.iterdir()] == ["smollm2-135m-instruct.json"]
    assert store.load(NAME).cells() == make_profile().cells()


def test_corrupt_baseline_can_be_replaced_by_an_update(store: BaselineStore) -> None:
    _write(store, "not json")
    assert store.save(make_profile(), NAME, update=True).status == "updated"
    assert store.load(NAME).cells() == make_profile().cells()


def test_stored_and_summary(store: BaselineStore) -> None:
    assert store.stored() == []
    results = [store.save(make_profile(), name, update=True) for name in ("a", "b")]
    results.append(store.save(make_profile(), "a", update=True))
    assert [p.name for p in store.stored()] == ["a.json", "b.json"]
    assert summarise_saves(results) == "2 baselines written, 1 unchanged"
    assert summarise_saves(results[2:]) == "1 baseline unchanged"
    assert summarise_saves([]) == ""


def test_float_rounding_in_continuous_scores_is_no_change(store: BaselineStore) -> None:
    """Another thread count or batch composition changes the last bits of p_correct and margins (measured up to
    4e-6 and 3e-5 on the default model): re-recording the same model must leave the baseline unchanged, while a
    real change of one item's score is reported and needs --update."""
    profile = make_profile()
    assert store.save(profile, NAME).status == "written"
    before = store.path_for(NAME).read_bytes()

    def nudged(by: float, items: slice) -> DepthProfile:
        evaluations = {}
        for key, ev in profile.evaluations.items():
            if "p_correct" not in ev.outcomes:  # a generation suite: 0/1 outcomes only
                evaluations[key] = ev
                continue
            values = list(ev.outcomes["p_correct"])
            values[items] = [min(1.0, max(0.0, v + (by if v < 0.5 else -by))) for v in values[items]]
            evaluations[key] = replace(ev, outcomes={**ev.outcomes, "p_correct": tuple(values)})
        return replace(profile, evaluations=evaluations)

    assert store.save(nudged(4e-6, slice(None)), NAME).status == "unchanged"
    assert store.path_for(NAME).read_bytes() == before
    with pytest.raises(BaselineError) as info:
        store.save(nudged(0.3, slice(0, 1)), NAME)
    assert "per-item outcomes changed" in info.value.problem
    assert store.path_for(NAME).read_bytes() == before
