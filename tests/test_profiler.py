"""The depth-profile engine: every evaluation equals scoring the ablated model on its own; cached
evaluations are reused; per-suite item limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from trained_tiny import save, train_fact_model, write_fact_suite

from pytest_layercheck.ablation import Ablation
from pytest_layercheck.errors import ConfigError
from pytest_layercheck.loading import LoadedModel, load_model
from pytest_layercheck.profile_data import INTACT
from pytest_layercheck.profiler import DEFAULT_LIMITS, ProfileSettings, build_profile, plan_ablations, score_suite_under
from pytest_layercheck.result_cache import ResultCache
from pytest_layercheck.session import parse_limit
from pytest_layercheck.suites.loader import load_suite


@pytest.fixture(scope="module")
def fact_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, Path]:
    root = tmp_path_factory.mktemp("profiler")
    folder = save(train_fact_model(steps=300), root / "model")
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
        reference = score_suite_under(loaded, suite, "mc_text", ablation)
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
    build_profile(loaded, ProfileSettings(suites=(str(suite_path),), limit=None),
                  cache=ResultCache(tmp_path, enabled=False), progress=lambda _d, done, total: seen.append((done, total)))
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
    assert ProfileSettings(limit=parsed).limit_for("my-suite") == 40
    for bad in ("x", "-1", "=3", "retrieval=many"):
        with pytest.raises(ConfigError):
            parse_limit(bad)
