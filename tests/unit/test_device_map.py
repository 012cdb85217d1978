"""``device_map`` (accelerate) with offloading, on CPU: weights that live on the meta device and
are loaded by accelerate's hooks per block give the same scores, also through the layer sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import tiny_model, tiny_tokenizer

from pytest_layercheck.model.ablation import Ablation
from pytest_layercheck.model.devices import model_device
from pytest_layercheck.model.loading import load_model
from pytest_layercheck.scoring.protocols import prepare, score, score_sweep
from pytest_layercheck.suites.schema import ProtocolSettings, Suite, SuiteItem

LAYERS = 4


def small_suite() -> Suite:
    contexts = ["What is 2+2?", "Name the capital of France.", "Pick one.", "Which is prime?"]
    choices = ("four", "Paris", "the other one")
    items = tuple(
        SuiteItem(id=f"q{i}", context=c, domain="t", kind="t", choices=choices, gold=i % 3, target=choices[0])
        for i, c in enumerate(contexts)
    )
    shots = tuple(
        SuiteItem(id=f"s{i}", context=c, domain="t", kind="t", choices=("yes", "no"), gold=0, target="yes")
        for i, c in enumerate(["Is water wet?", "Is fire hot?"])
    )
    template = ProtocolSettings(template="Q: {context}\nA:")
    return Suite(
        name="dm",
        capability="knowledge",
        description="",
        items=items,
        default_protocol="mc_text",
        protocols={"mc_text": template},
        fewshot=shots,
        content_hash="h",
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama", layers=LAYERS, seed=5).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.mark.parametrize("cpu_memory", ["250KB", "1KB"])  # part of the layers on disk; everything on disk
def test_an_offloaded_model_scores_as_the_plain_one(folder: Path, tmp_path: Path, cpu_memory: str) -> None:
    plain = load_model(folder, device="cpu")
    offloaded = load_model(
        folder, device="cpu", device_map="auto", max_memory={"cpu": cpu_memory}, offload_folder=tmp_path / "offload"
    )
    devices = {p.device.type for p in offloaded.model.parameters()}
    assert "meta" in devices  # really offloaded
    assert offloaded.device == model_device(offloaded.model) == torch.device("cpu")
    # Cache keys and baselines see the same weights: offloaded values are read from accelerate's hooks.
    assert offloaded.fingerprint == plain.fingerprint
    prepared = prepare(small_suite(), "mc_text", plain.tokenizer)
    ablations = [Ablation.skipping(i) for i in range(LAYERS)] + [Ablation.masking({1: [0]})]
    expected_intact, expected = score_sweep(plain.runtime, prepared, ablations)
    intact, swept = score_sweep(offloaded.runtime, prepared, ablations)
    assert score(offloaded.runtime, prepared).outcomes == score(plain.runtime, prepared).outcomes
    for got, want in zip([intact, *swept], [expected_intact, *expected]):
        for a, b in zip(got.outcomes, want.outcomes):
            assert a.scores == b.scores
            assert a.detail["loglikelihoods"] == pytest.approx(b.detail["loglikelihoods"], abs=1e-5)
