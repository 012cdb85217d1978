"""Grouped-query SDPA on the CPU: the same numbers as transformers' own attention, and fully restored."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, tiny_model

from pytest_layercheck.model import kv_cache
from pytest_layercheck.model.architecture import get_adapter
from pytest_layercheck.model.attention import GROUPED_SDPA, attention_configs
from pytest_layercheck.model.head_masking import mask_heads
from pytest_layercheck.model.runtime import ModelRuntime


def _implementations(model: torch.nn.Module) -> list[str]:
    return [c._attn_implementation_internal for c in attention_configs(get_adapter(model))]


def _logits(model: torch.nn.Module) -> torch.Tensor:
    """A left-padded batch (so a mask is passed), then a cached two-token continuation."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 100, (3, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    mask[1, :1] = 0
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        more = torch.randint(3, 100, (3, 2), generator=generator)
        mask2 = torch.cat([mask, torch.ones_like(more)], 1)
        positions2 = positions[:, -1:] + 1 + torch.arange(2)
        out2 = model(
            input_ids=more,
            attention_mask=mask2,
            position_ids=positions2,
            use_cache=True,
            **kv_cache.cache_kwargs(model, kv_cache.returned_cache(out)),
        )
    return torch.cat([out.logits, out2.logits], 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_grouped_sdpa_gives_the_models_own_numbers(family: str) -> None:
    model = tiny_model(family, attention="eager" if family == "gemma2" else "sdpa")  # Gemma 2: no SDPA
    before = _implementations(model)
    reference = _logits(model)
    with ModelRuntime.of(model).grouped_query_sdpa():
        switched = _implementations(model)
        grouped = _logits(model)
    assert _implementations(model) == before
    adapter = get_adapter(model)
    if adapter.num_kv_heads < adapter.num_heads and set(before) == {"sdpa"}:
        assert set(switched) == {GROUPED_SDPA}
    else:  # eager models, soft-capped ones, no grouping: left exactly as they are
        assert switched == before
    torch.testing.assert_close(grouped, reference, rtol=0, atol=1e-6)


def test_grouped_sdpa_restores_after_an_exception() -> None:
    model = tiny_model("llama", attention="sdpa")
    with pytest.raises(RuntimeError, match="boom"), ModelRuntime.of(model).grouped_query_sdpa():
        assert set(_implementations(model)) == {GROUPED_SDPA}
        raise RuntimeError("boom")
    assert set(_implementations(model)) == {"sdpa"}


def test_an_ablations_attention_function_wins_inside_and_out() -> None:
    """A uniform head mask switches the attention function too; the two nest in either order."""
    model = tiny_model("llama", attention="sdpa")
    with mask_heads(model, {1: [0]}, mode="uniform"):
        masked = _logits(model)
        with ModelRuntime.of(model).grouped_query_sdpa():  # another function is active: nothing to switch
            assert GROUPED_SDPA not in _implementations(model)
            torch.testing.assert_close(_logits(model), masked, rtol=0, atol=0)
    with ModelRuntime.of(model).grouped_query_sdpa(), mask_heads(model, {1: [0]}, mode="uniform"):
        torch.testing.assert_close(_logits(model), masked, rtol=0, atol=1e-6)
    assert set(_implementations(model)) == {"sdpa"}
