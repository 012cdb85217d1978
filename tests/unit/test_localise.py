"""Delta replacement on a tiny Llama that memorised 24 facts: damage known layers, find them again."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_model, tiny_tokenizer
from trained_tiny import perturbed, train_fact_model, write_fact_suite

from pytest_layercheck.analysis.localise.replacement import LayerGroup, layer_groups, localise
from pytest_layercheck.analysis.weight_delta.deltas import measure_weight_delta
from pytest_layercheck.core.errors import ConfigError, LayercheckError
from pytest_layercheck.data.statistics import exact_mcnemar
from pytest_layercheck.evaluation.result_cache import ResultCache
from pytest_layercheck.evaluation.settings import ProfileSettings
from pytest_layercheck.model.fingerprint import model_fingerprint
from pytest_layercheck.model.loading import LoadedModel

FACTS = 24


def loaded(model: torch.nn.Module, name: str) -> LoadedModel:
    return LoadedModel(model, tiny_tokenizer(), name, name, "test", torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    """2.8 s: 150 steps bring a 6-layer tiny Llama to 24/24 facts."""
    return train_fact_model(n=FACTS, steps=150)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> ProfileSettings:
    suite = write_fact_suite(tmp_path_factory.mktemp("suite") / "facts.yaml", n=FACTS)
    return ProfileSettings(suites=(str(suite),), limit=None)


@pytest.fixture(scope="module")
def damaged(trained: torch.nn.Module) -> torch.nn.Module:
    """Layer 0 ruined (the facts are lost); layer 4 moved almost as much, harmlessly for this model."""
    return perturbed(perturbed(trained, [0], scale=3.0), [4], scale=2.0, seed=5)


def nocache() -> ResultCache:
    return ResultCache(enabled=False)


def test_localisation_points_at_the_damaged_layer_not_the_merely_changed_one(
    trained: torch.nn.Module, damaged: torch.nn.Module, settings: ProfileSettings
) -> None:
    base, candidate = loaded(trained, "base"), loaded(damaged, "damaged")
    weights = measure_weight_delta(base, candidate)
    assert set(weights.changed_layers()) == {0, 4}  # both moved: the weights alone cannot tell which matters

    result = localise(base, candidate, settings, "bands,layers,changed", weights=weights, cache=nocache())
    entry = result.suite("knowledge")
    assert entry.localised and entry.loss > 0.2 and entry.loss_p_value < 0.05
    by_layers = {r.group.layers: r for r in entry.restorations}
    assert by_layers[(0,)].recovered >= 0.8 and by_layers[(0, 1)].recovered >= 0.8  # layer 0, shallow band
    assert by_layers[(4,)].recovered <= 0.2 and by_layers[(4, 5)].recovered <= 0.2  # layer 4, deep band
    assert entry.restored_by is not None and entry.restored_by.group.layers == (0,)
    assert "is restored by reverting layer 0" in entry.verdict
    assert result.verdicts == [entry.verdict]


def test_restoring_every_layer_gives_back_exactly_the_base_outcomes(
    trained: torch.nn.Module, damaged: torch.nn.Module, settings: ProfileSettings
) -> None:
    base, candidate = loaded(trained, "base"), loaded(damaged, "damaged")
    result = localise(base, candidate, settings, "bands", cache=nocache())
    entry = result.suite("knowledge")
    every = next(r for r in entry.restorations if r.group.kind == "all")
    base_only = localise(
        base, loaded(copy.deepcopy(trained), "copy"), settings, "bands", cache=nocache(), tolerance=0.0, threshold=1.0
    )
    assert base_only.suite("knowledge").loss == 0  # the copy scores as the base, item by item
    assert every.accuracy == entry.base and every.recovered == 1.0
    # Recovered fraction and the paired test, recomputed by hand from the outcomes.
    shallow = next(r for r in entry.restorations if r.group.name == "shallow")
    assert shallow.recovered == pytest.approx((shallow.accuracy - entry.candidate) / (entry.base - entry.candidate))
    assert shallow.p_value == exact_mcnemar(shallow.broken, shallow.fixed)
    assert shallow.accuracy == pytest.approx(sum(shallow.outcomes) / FACTS)


def test_swapping_leaves_the_candidate_as_it_was(
    trained: torch.nn.Module, damaged: torch.nn.Module, settings: ProfileSettings
) -> None:
    candidate = loaded(copy.deepcopy(damaged), "damaged")
    before = model_fingerprint(candidate.model)
    localise(loaded(trained, "base"), candidate, settings, "layers", cache=nocache())
    assert model_fingerprint(candidate.model) == before
    assert len(candidate.model.model.layers) == 6


def test_a_candidate_without_a_loss_is_not_localised(trained: torch.nn.Module, settings: ProfileSettings) -> None:
    harmless = loaded(perturbed(trained, [4], scale=2.0), "harmless")
    result = localise(loaded(trained, "base"), harmless, settings, "layers", cache=nocache())
    entry = result.suite("knowledge")
    assert not entry.localised and entry.restorations == [] and entry.restored_by is None
    assert "no loss beyond the tolerance" in entry.verdict


def test_no_group_restoring_the_loss_is_said_plainly(
    trained: torch.nn.Module, damaged: torch.nn.Module, settings: ProfileSettings
) -> None:
    result = localise(
        loaded(trained, "base"),
        loaded(damaged, "damaged"),
        settings,
        [LayerGroup("upper", (3, 4, 5))],
        include_all=False,
        cache=nocache(),
    )
    entry = result.suite("knowledge")
    assert entry.restored_by is None
    assert "is not restored by reverting any single group" in entry.verdict and "layers 3–5" in entry.verdict


def test_a_change_outside_the_layers_is_named(trained: torch.nn.Module, settings: ProfileSettings) -> None:
    candidate = copy.deepcopy(trained)
    with torch.no_grad():
        candidate.lm_head.weight.mul_(-1.0)  # answers ranked upside down; no decoder layer differs
    result = localise(loaded(trained, "base"), loaded(candidate, "flipped"), settings, "bands", cache=nocache())
    entry = result.suite("knowledge")
    assert entry.localised and entry.restored_by is None
    assert "outside the decoder layers" in entry.verdict


def test_restorations_are_cached_and_keyed_by_the_donor(
    trained: torch.nn.Module, damaged: torch.nn.Module, settings: ProfileSettings, tmp_path: Path
) -> None:
    cache = ResultCache(tmp_path / "cache")
    base, candidate = loaded(trained, "base"), loaded(damaged, "damaged")
    first = localise(base, candidate, settings, "bands", cache=cache)
    groups = len(first.groups)
    # Misses: both intact evaluations and every swap-back. The one hit: the restoration sweep finds the
    # candidate's intact outcomes, stored a moment earlier, under the same donor-free key.
    assert (cache.hits, cache.misses) == (1, 2 + groups)
    second = localise(base, candidate, settings, "bands", cache=cache)
    assert (cache.hits, cache.misses) == (1 + 3 + groups, 2 + groups) and second.to_dict() == first.to_dict()
    hits, misses = cache.hits, cache.misses
    other_donor = loaded(perturbed(trained, [2], scale=0.5, seed=7), "other base")
    third = localise(other_donor, candidate, settings, "bands", cache=cache)
    assert third.suite("knowledge").localised
    assert cache.hits - hits == 2  # only the candidate's intact outcomes (twice); every swap from the new donor is new
    assert cache.misses - misses == 1 + len(third.groups)


def test_groups_default_to_the_depth_bands_plus_all() -> None:
    groups = layer_groups(30)
    assert [(g.name, g.layers[0], g.layers[-1]) for g in groups] == [
        ("shallow", 0, 8),
        ("middle", 9, 20),
        ("deep", 21, 29),
        ("all", 0, 29),
    ]
    assert groups[0].label == "layers 0–8 (shallow band)" and groups[-1].label == "all decoder layers 0–29"
    assert len(layer_groups(30, "layers", include_all=False)) == 30


def test_bad_requests_are_refused(trained: torch.nn.Module, settings: ProfileSettings) -> None:
    base = loaded(trained, "base")
    with pytest.raises(ConfigError, match="unknown localisation strategy 'heads'"):
        layer_groups(6, "bands,heads")
    with pytest.raises(ConfigError, match="needs the weight deltas"):
        layer_groups(6, "changed")
    with pytest.raises(LayercheckError, match="same model object"):
        localise(base, base, settings)
    with pytest.raises(LayercheckError, match="the base has 6 layers and the candidate 4"):
        localise(base, loaded(tiny_model("llama", layers=4), "short"), settings)
    with pytest.raises(ConfigError, match="threshold"):
        localise(base, loaded(copy.deepcopy(trained), "copy"), settings, threshold=1.5)
