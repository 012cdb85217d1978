"""Relative weight change per layer and module, checked against hand computations on tiny models."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from tiny_models import tiny_model

from pytest_layercheck.analysis.weight_delta.deltas import ArchitectureMismatchError, measure_weight_delta
from pytest_layercheck.core.errors import LayercheckError


def _norm(tensor: torch.Tensor) -> float:
    return torch.linalg.vector_norm(tensor.double()).item()


@pytest.fixture(scope="module")
def base() -> torch.nn.Module:
    return tiny_model("llama", layers=6, seed=0)


def test_one_changed_projection_matches_the_hand_computation(base: torch.nn.Module) -> None:
    candidate = copy.deepcopy(base)
    generator = torch.Generator().manual_seed(3)
    q = candidate.model.layers[2].self_attn.q_proj.weight
    change = torch.randn(q.shape, generator=generator) * 0.01
    with torch.no_grad():
        q.add_(change)
        candidate.model.layers[4].mlp.down_proj.weight.mul_(1.1)

    delta = measure_weight_delta(base, candidate)

    base_q = base.model.layers[2].self_attn.q_proj.weight
    expected_q = _norm(q.detach() - base_q) / _norm(base_q)
    assert delta.module(2, "q_proj").relative == pytest.approx(expected_q, rel=1e-6)
    assert delta.module(2, "self_attn.q_proj").module == "self_attn.q_proj"
    assert delta.module(4, "down_proj").relative == pytest.approx(0.1, rel=1e-5)
    assert delta.module(2, "k_proj").relative == 0.0 and delta.module(3, "q_proj").relative == 0.0

    # A layer total pools every parameter of the block: sqrt(sum ‖ΔW‖²) / sqrt(sum ‖W‖²).
    layer2_norm = math.sqrt(sum(_norm(p) ** 2 for p in base.model.layers[2].parameters()))
    assert delta.layer_totals()[2] == pytest.approx(_norm(q.detach() - base_q) / layer2_norm, rel=1e-6)
    assert {i for i, v in delta.layer_totals().items() if v > 0} == {2, 4}
    assert [d.layer for d in delta.most_changed()] == sorted([2, 4], key=lambda i: -delta.layer_totals()[i])
    assert delta.changed_layers(0.0) == (2, 4)
    assert all(m.relative == 0 for m in delta.outside)


def test_modules_are_named_by_block_path_and_embeddings_are_reported_apart(base: torch.nn.Module) -> None:
    candidate = copy.deepcopy(base)
    with torch.no_grad():
        candidate.model.embed_tokens.weight[5] += 1.0
    delta = measure_weight_delta(base, candidate)

    assert delta.module_names == [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
        "input_layernorm",
        "post_attention_layernorm",
    ]
    assert all(layer.relative == 0 for layer in delta.layers)
    outside = {m.module: m for m in delta.outside}
    assert set(outside) == {"model.embed_tokens", "model.norm", "lm_head"}
    embed = base.model.embed_tokens.weight
    assert outside["model.embed_tokens"].relative == pytest.approx(math.sqrt(embed.shape[1]) / _norm(embed), rel=1e-6)
    assert delta.most_changed() == [] and not delta.unchanged


def test_identical_models_have_no_change_and_serialise(base: torch.nn.Module) -> None:
    delta = measure_weight_delta(base, copy.deepcopy(base))
    assert delta.unchanged and delta.most_changed() == [] and delta.changed_layers() == ()
    data = json.loads(json.dumps(delta.to_dict(), allow_nan=False))
    assert data["num_layers"] == 6 and len(data["layers"]) == 6 and data["most_changed"] == []
    assert len(data["modules"]) == 6 * 9


def test_fused_qkv_families_work_too() -> None:
    base = tiny_model("gpt2", layers=3, seed=0)
    candidate = copy.deepcopy(base)
    with torch.no_grad():
        candidate.transformer.h[1].attn.c_attn.bias += 0.5
    delta = measure_weight_delta(base, candidate)
    assert [d.layer for d in delta.most_changed()] == [1]
    assert delta.module(1, "c_attn").relative > 0 and delta.module(1, "c_proj").relative == 0
    assert "attn.c_attn" in delta.module_names


def test_a_different_depth_is_refused_naming_the_layer_counts(base: torch.nn.Module) -> None:
    with pytest.raises(ArchitectureMismatchError, match="layer count: base has 6, candidate has 4") as info:
        measure_weight_delta(base, tiny_model("llama", layers=4))
    assert isinstance(info.value, LayercheckError) and "How to fix" in str(info.value)


def test_a_different_family_is_refused(base: torch.nn.Module) -> None:
    with pytest.raises(ArchitectureMismatchError, match="model family: base is 'llama', candidate is 'qwen2'"):
        measure_weight_delta(base, tiny_model("qwen2", layers=6))


def test_different_sizes_are_refused_naming_the_parameter() -> None:
    from tiny_models import tiny_config
    from transformers import AutoModelForCausalLM

    config = tiny_config("llama", layers=2)
    config.intermediate_size = 96
    wider = AutoModelForCausalLM.from_config(config)
    with pytest.raises(
        ArchitectureMismatchError,
        match=r"layer 0 mlp.gate_proj.weight: base shape \(128, 64\), "
        r"candidate shape \(96, 64\)",
    ):
        measure_weight_delta(tiny_model("llama", layers=2), wider)


def test_accepts_loaded_models_and_records_their_identity(base: torch.nn.Module) -> None:
    from tiny_models import tiny_tokenizer

    from pytest_layercheck.model.loading import LoadedModel

    def loaded(model: torch.nn.Module, name: str) -> LoadedModel:
        return LoadedModel(model, tiny_tokenizer(), name, name, "test", torch.device("cpu"), torch.float32)

    delta = measure_weight_delta(loaded(base, "base"), loaded(copy.deepcopy(base), "copy"))
    assert delta.base["name"] == "base" and delta.candidate["name"] == "copy"
    assert delta.base["fingerprint"] == delta.candidate["fingerprint"]
