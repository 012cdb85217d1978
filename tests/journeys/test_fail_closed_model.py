"""Fault injection, the candidate model itself: a model that cannot be scored is an input error (exit 2).

A diverged fine-tune (NaN in a weight), activations that overflow (finite weights, intact or with a layer
removed), a tokenizer whose ids the model has no rows for, and a config that asks for more layers than the
checkpoint holds. Each row runs the real entry point in a temporary folder, as a user would (see
``fault_world``), and checks the exit status, the message and that no result was cached.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from fault_world import RECORDED, SUITE, assert_exit, entries, environment, layercheck
from safetensors.torch import load_file, save_file

#: Every row runs a command on the fault world (a trained model, a recorded baseline): none is in the fast tier.
pytestmark = pytest.mark.slow

Tensors = dict[str, torch.Tensor]
Config = dict[str, Any]


def edited_copy(world: Path, folder: Path, edit: Callable[[Tensors, Config], None]) -> Path:
    """A copy of the world's good model with its tensors and config.json changed by ``edit``."""
    shutil.copytree(world / "good", folder)
    tensors, config = load_file(folder / "model.safetensors"), json.loads((folder / "config.json").read_text())
    edit(tensors, config)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def nan_weight(tensors: Tensors, config: Config) -> None:
    """What a diverged fine-tune saves: one layer's weight is NaN."""
    tensors["model.layers.3.mlp.down_proj.weight"][0, 0] = float("nan")


def overflowing(offsets: dict[int, float]) -> Callable[[Tensors, Config], None]:
    """Finite weights whose activations overflow: layer ``i``'s feed-forward adds ``offsets[i]`` to one
    channel of the residual stream for every token (its down projection's bias)."""

    def edit(tensors: Tensors, config: Config) -> None:
        config["mlp_bias"] = True
        for layer in range(config["num_hidden_layers"]):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                bias = torch.zeros(tensors[f"model.layers.{layer}.mlp.{proj}.weight"].shape[0])
                if proj == "down_proj":
                    bias[0] = offsets.get(layer, 0.0)
                tensors[f"model.layers.{layer}.mlp.{proj}.bias"] = bias

    return edit


#: 2e38 twice is past float32's largest number (3.4e38): inf, then NaN in the next norm.
INTACT_OVERFLOW = overflowing({1: 2e38, 2: 2e38})
#: Intact, layer 2 takes back what layer 1 added; with layer 2 removed, layer 3 adds it a second time.
ABLATED_OVERFLOW = overflowing({1: 2e38, 2: -2e38, 3: 2e38})


def cached_ablations(ws: Path) -> list[str]:
    return sorted(str(entry["ablation"]) for entry in entries(ws).values())


def new_entries(ws: Path, before: dict[Path, dict]) -> list[dict]:
    return [entry for path, entry in entries(ws).items() if path not in before]


@pytest.mark.parametrize("command", ["compare", "profile"])
def test_nan_weights_are_refused_at_load_naming_the_tensor(ws: Path, world: Path, command: str) -> None:
    edited_copy(world, ws / "diverged", nan_weight)
    before = cached_ablations(ws)
    args = (
        ("compare", "good", "diverged", *SUITE) if command == "compare" else ("profile", "diverged", *SUITE, *RECORDED)
    )
    assert_exit(
        layercheck(ws, *args),
        2,
        "model.layers.3.mlp.down_proj.weight holds NaN",
        "How to fix: use a checkpoint saved before training diverged",
    )
    assert cached_ablations(ws) == before


@pytest.mark.parametrize("protocol", ["mc_text", "generate_until"])
def test_activations_that_overflow_on_the_intact_model_are_an_input_error(ws: Path, world: Path, protocol: str) -> None:
    """Finite weights pass the load-time scan; the scores are checked too (as fp16 overflow gives)."""
    edited_copy(world, ws / "overflow", INTACT_OVERFLOW)
    before = cached_ablations(ws)
    suite = yaml.safe_load((ws / "facts.yaml").read_text())
    suite["protocols"]["generate_until"] = {"template": "{context}", "until": ["\n"], "max_gen_toks": 2}
    (ws / "facts.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    what = "48 of 48 log-likelihoods" if protocol == "mc_text" else "greedy generation's logits"
    result = layercheck(
        ws,
        "profile",
        "overflow",
        "--suites",
        "facts.yaml",
        "--limit",
        "12",
        "--protocols",
        f"facts={protocol}",
        "--no-compare",
    )
    assert_exit(
        result,
        2,
        f"suite 'facts' ({protocol}) evaluated on the intact model: {what} are not finite",
        "score in float32",
        "No result of this evaluation was stored",
    )
    assert cached_ablations(ws) == before


def test_activations_that_overflow_only_with_a_layer_removed_are_an_input_error(ws: Path, world: Path) -> None:
    """The layer sweep's ablated streams are checked as well as the intact model, and nothing NaN is cached."""
    edited_copy(world, ws / "fragile", ABLATED_OVERFLOW)
    before = entries(ws)
    result = layercheck(ws, "profile", "fragile", *SUITE, "--no-compare")
    assert_exit(
        result,
        2,
        "suite 'facts' (mc_text) evaluated with ablation skip=2:",
        "are not finite",
        "the intact model's scores are finite",
    )
    assert all(entry["ablation"] != "skip=2" for entry in new_entries(ws, before))


def test_tokenizer_ids_beyond_the_embedding_are_an_input_error(ws: Path, world: Path) -> None:
    def truncate(tensors: Tensors, config: Config) -> None:
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            tensors[name] = tensors[name][:64].clone()
        config["vocab_size"] = 64

    edited_copy(world, ws / "small-vocab", truncate)
    assert_exit(
        layercheck(ws, "profile", "small-vocab", *SUITE, "--no-compare"),
        2,
        "the tokenizer produces token id",
        "but the model's embedding has only 64 rows",
        "use the tokenizer that matches the model",
    )


def test_a_config_asking_for_more_layers_than_the_weights_hold_is_refused_before_allocating(
    ws: Path, world: Path
) -> None:
    def inflate(tensors: Tensors, config: Config) -> None:
        config["num_hidden_layers"] = 100000

    edited_copy(world, ws / "inflated", inflate)
    assert_exit(
        layercheck(ws, "profile", "inflated", *SUITE, "--no-compare", timeout=120),
        2,
        "asks for 100000 decoder layers (num_hidden_layers), but the weights",
        "hold 6",
        "set num_hidden_layers to 6 in config.json",
    )


@pytest.mark.parametrize("model", ["diverged", "overflow"])
def test_a_model_that_cannot_be_scored_fails_its_pytest_check_with_the_message(
    world: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    for key, value in environment(pytester.path).items():
        monkeypatch.setenv(key, value)
    edited_copy(world, pytester.path / model, nan_weight if model == "diverged" else INTACT_OVERFLOW)
    shutil.copy(world / "facts.yaml", pytester.path / "facts.yaml")
    pytester.makeini("[pytest]\nlayercheck_suites = facts.yaml\nlayercheck_limit = 12\n")
    pytester.makepyfile(
        test_guard="""
        import pytest

        @pytest.mark.layercheck("knowledge", "intact", min=0.2)
        def test_knowledge_intact():
            pass
    """
    )
    result = pytester.runpytest_subprocess(f"--layercheck-model={pytester.path / model}", "-p", "no:cacheprovider")
    output = " ".join((result.stdout.str() + result.stderr.str()).split())
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    assert "Traceback" not in output
    message = (
        "model.layers.3.mlp.down_proj.weight holds NaN"
        if model == "diverged"
        else "evaluated on the intact model: 48 of 48 log-likelihoods are not finite"
    )
    assert message in output, output
