"""A few lean checks on the real default model, SmolLM2-135M-Instruct (fetched and cached on first use)."""

from __future__ import annotations

import pytest
import torch

from pytest_layercheck.model.ablation import Ablation, ablate
from pytest_layercheck.model.loading import LoadedModel

pytestmark = pytest.mark.real_model


def greedy(loaded: LoadedModel, prompt: str, tokens: int = 3) -> str:
    inputs = loaded.tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        output = loaded.model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
    return loaded.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_default_model_is_smollm2_with_30_llama_layers(smollm: LoadedModel) -> None:
    info = smollm.describe()
    assert info["name"] == "SmolLM2-135M-Instruct"
    assert info["model_type"] == "llama" and info["num_layers"] == 30
    assert info["dtype"] == "float32" and info["device"] == "cpu"


def test_default_model_knows_the_capital_of_france(smollm: LoadedModel) -> None:
    assert greedy(smollm, "The capital of France is").startswith(" Paris")


def test_removing_the_first_layer_breaks_recall_and_restores_exactly(smollm: LoadedModel) -> None:
    ids = smollm.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        before = smollm.model(ids).logits
        with ablate(smollm.model, Ablation.skipping([0])):
            assert not greedy(smollm, "The capital of France is").startswith(" Paris")
        after = smollm.model(ids).logits
    assert torch.equal(before, after)


@pytest.mark.parametrize("suite_name", ["knowledge", "reasoning", "retrieval"])
def test_intact_default_model_is_clearly_above_chance(smollm: LoadedModel, suite_name: str) -> None:
    """A suite where the intact model sits at chance would say nothing about ablation."""
    from pytest_layercheck.scoring.protocols import prepare_and_score
    from pytest_layercheck.suites.builtin import load_builtin_suite

    suite = load_builtin_suite(suite_name).limited(24)
    result = prepare_and_score(smollm.runtime, smollm.tokenizer, suite)
    chance = sum(1 / len(item.choices) for item in suite.items) / len(suite.items)
    assert result.mean("acc") >= chance + 0.15, (suite_name, result.mean("acc"), chance)


def test_cli_profile_prints_the_depth_table(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_layercheck.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["profile", "--suites", "knowledge", "--limit", "4", "--json", "report.json"])
    output = capsys.readouterr().out
    assert code == 0
    assert "knowledge" in output and "shallow" in output and "deep" in output and "p_correct" in output
    assert (tmp_path / "report.json").is_file()
