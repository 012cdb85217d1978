"""Harmless candidates never fail the guard: seeded copies of the default model with relative weight
noise of 1e-4, compared with the committed baseline at the default settings, as the examples' intact
checks compare them (knowledge and reasoning on every item, Holm over the compared cells)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from repo_files import REPO

from pytest_layercheck.evaluation.baseline import BaselineStore
from pytest_layercheck.evaluation.comparison import Verdict
from pytest_layercheck.evaluation.profiler import build_profile
from pytest_layercheck.evaluation.result_cache import ResultCache
from pytest_layercheck.evaluation.settings import ProfileSettings
from pytest_layercheck.model.loading import LoadedModel

pytestmark = [pytest.mark.real_model, pytest.mark.early(4)]  # minutes of scoring: started first

SEEDS = (1,)  # a copy costs ~50 s of the CI budget; benign false-alarm rates are simulated in test_statistics


def noisy_copy(loaded: LoadedModel, seed: int, relative: float = 1e-4) -> LoadedModel:
    """``loaded`` with every decoder weight w replaced by w * (1 + relative * N(0, 1)), seeded; a new
    LoadedModel, so its fingerprint is that of the noisy weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in loaded.model.named_parameters():
            if ".layers." in name:
                noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.mul_(1 + relative * noise)
    return dataclasses.replace(loaded)


def test_noise_copies_of_the_default_model_pass(smollm: LoadedModel, tmp_path: Path) -> None:
    baseline = BaselineStore(REPO / "baselines").load("smollm2-135m-instruct")
    original = {name: p.detach().clone() for name, p in smollm.model.named_parameters() if ".layers." in name}
    flips = []
    try:
        for seed in SEEDS:
            candidate = noisy_copy(smollm, seed)
            assert candidate.fingerprint != baseline.model["fingerprint"]
            profile = build_profile(
                candidate,
                ProfileSettings(),
                cache=ResultCache(tmp_path),
                needs={"knowledge": frozenset(), "reasoning": frozenset()},
            )
            comparison = Verdict().compare(baseline, profile)
            assert comparison.family_size == 2 and len(comparison.cells) == 2
            assert comparison.passed, comparison.failures
            flips.append(sum(len(c.worse_items) + len(c.better_items) for c in comparison.cells))
    finally:
        with torch.no_grad():
            for name, parameter in smollm.model.named_parameters():
                if name in original:
                    parameter.copy_(original[name])
    print(f"items flipped per noise copy (seeds {SEEDS}): {flips}")
