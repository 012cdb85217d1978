"""The probe API sees what the model computes, on every family, and leaves no hook behind."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny_models import FAMILIES, tiny_model

from pytest_layercheck.model.architecture import get_adapter
from pytest_layercheck.model.head_masking import eager_attention
from pytest_layercheck.model.probes import block_input, block_output, probe_attention, probe_blocks


def _hooks(module: torch.nn.Module) -> list[tuple[str, int, int]]:
    """Every module's hook counts (transformers installs some of its own, for output recording)."""
    return [(name, len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in module.named_modules()]


@pytest.mark.parametrize("family", FAMILIES)
def test_block_probes_see_the_hidden_states_transformers_reports(family: str) -> None:
    """Independent reference: ``output_hidden_states`` gives block i's input as ``hidden_states[i]``."""
    model = tiny_model(family, layers=3)
    adapter = get_adapter(model)
    ids = torch.tensor([[5, 9, 14, 30, 41, 7]])
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}

    def before(index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        inputs[index] = block_input(args, kwargs).clone()

    def after(index: int, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        outputs[index] = block_output(output).clone()

    with torch.inference_mode():
        model(input_ids=ids, output_hidden_states=True)  # transformers installs its recording hooks once
        hooks = _hooks(model)
        with probe_blocks(adapter.layers, on_input=before, on_output=after):
            reference = model(input_ids=ids, output_hidden_states=True).hidden_states
        assert _hooks(model) == hooks
        model(input_ids=ids)  # a call after the ``with`` records nothing
    assert sorted(inputs) == sorted(outputs) == [0, 1, 2]
    for index in range(3):
        torch.testing.assert_close(inputs[index], reference[index], rtol=0, atol=0)
    for index in range(2):  # each block's output is the next block's input
        torch.testing.assert_close(outputs[index], inputs[index + 1], rtol=0, atol=0)


def test_attention_probe_sees_eager_weights_and_is_removed() -> None:
    model = tiny_model("llama", layers=2)
    adapter = get_adapter(model)
    seen: list[tuple[int, tuple[int, ...]]] = []
    hooks = _hooks(model)

    def after(index: int, module: torch.nn.Module, output: Any) -> None:
        seen.append((index, tuple(output[1].shape)))
        rows = output[1][0].sum(-1)  # attention weights: each query's row sums to one
        torch.testing.assert_close(rows, torch.ones_like(rows))

    attentions = [adapter.attention_of(b) for b in adapter.layers]
    with torch.inference_mode(), eager_attention(model), probe_attention(attentions, after):
        model(input_ids=torch.tensor([[3, 4, 5, 6]]))
    assert seen == [(0, (1, 4, 4, 4)), (1, (1, 4, 4, 4))]
    assert _hooks(model) == hooks


def test_probes_are_removed_when_the_forward_fails() -> None:
    model = tiny_model("llama", layers=2)
    hooks = _hooks(model)

    def boom(index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        raise RuntimeError("probe failed")

    with pytest.raises(RuntimeError, match="probe failed"), probe_blocks(get_adapter(model).layers, on_input=boom):
        model(input_ids=torch.tensor([[3, 4]]))
    assert _hooks(model) == hooks
