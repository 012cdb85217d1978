"""Which attention function a model runs, switched restorably; and grouped-query SDPA on the CPU.

Models with grouped-query attention (SmolLM2: 9 query heads over 3 key/value heads) run
transformers' SDPA function, which copies every key/value head once per query head it serves
(``repeat_kv``) whenever an attention mask is given, and scoring always gives one (padding, the
shared prefix). On the CPU, torch's SDPA computes grouped-query attention itself
(``enable_gqa=True``), masked or not, on the same flash kernel with bit-identical outputs; skipping
the copies made the prompt-cache attention of a layer sweep 5× faster (``benchmarks/RESULTS.md``).
Transformers enables that path only where it avoids the copies on every device, so scoring switches
the model to :data:`GROUPED_SDPA` for its duration with :func:`grouped_query_sdpa`
(:meth:`~.runtime.ModelRuntime.grouped_query_sdpa` for a model being scored).

The switch is the one ``mask_heads(mode="uniform")`` uses too: :func:`use_attention` sets the
implementation name on every config the backbone and the attention modules read, and puts the old
names back on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from pytest_layercheck.model.architecture import ArchitectureAdapter

#: Name under which the CPU grouped-query SDPA function and its mask format are registered.
GROUPED_SDPA = "layercheck_grouped_sdpa"
_IMPLEMENTATION = "_attn_implementation_internal"


def attention_configs(adapter: ArchitectureAdapter, blocks: Any = None) -> list[object]:
    """Every distinct config object that names the attention implementation the model runs.

    ``_attn_implementation_internal`` is set directly on each, because the public setter also rewrites
    sub-configs, which could not be restored exactly. ``blocks`` defaults to the installed layers.
    """
    configs: dict[int, object] = {id(c): c for c in (adapter.model.config, *adapter.decoder_configs)}
    for block in adapter.layers if blocks is None else blocks:
        config = getattr(adapter.attention_of(block), "config", None)
        if config is not None:
            configs.setdefault(id(config), config)
    return list(configs.values())


def use_attention(stack: ExitStack, configs: list[object], name: str) -> None:
    """Switch ``configs`` to the attention function registered as ``name`` until ``stack`` closes."""
    for config in configs:
        stack.callback(setattr, config, _IMPLEMENTATION, getattr(config, _IMPLEMENTATION, None))
        setattr(config, _IMPLEMENTATION, name)


def _grouped_sdpa(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Transformers' SDPA attention, with grouped-query heads left to the kernel on the CPU.

    Anything else (GPUs, where a masked grouped call falls back to the slow math kernel; position
    biases; soft-capping; paged caches) goes to transformers' own function unchanged.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    special = any(kwargs.get(k) is not None for k in ("position_bias", "softcap", "cache"))
    if groups == 1 or query.device.type != "cpu" or special or kwargs.get("output_attentions"):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    q_length = query.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = q_length > 1 and attention_mask is None and causal
    if causal and key.shape[2] > q_length:  # as transformers does: the flash kernel needs square causal calls
        key, value = key[:, :, :q_length], value[:, :, :q_length]
    output = nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=causal,
        enable_gqa=True,
    )
    return output.transpose(1, 2).contiguous(), None


def _register() -> None:
    """Register the function and give it SDPA-style masks. Idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GROUPED_SDPA, _grouped_sdpa)
    AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)


def _supports_enable_gqa() -> bool:
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 5)


@contextmanager
def grouped_query_sdpa(adapter: ArchitectureAdapter, device: torch.device) -> Iterator[None]:
    """Run a CPU model's SDPA attention with grouped-query heads left to the kernel, until exit.

    ``device``: where the model's inputs go. Changes nothing on other devices, for models without
    grouped-query attention, or when the model runs another attention function (eager, flash, or an
    ablation's own).
    """
    configs = attention_configs(adapter)
    if (
        device.type != "cpu"
        or adapter.num_kv_heads == adapter.num_heads
        or not _supports_enable_gqa()
        or any(getattr(c, _IMPLEMENTATION, None) != "sdpa" for c in configs)
    ):
        yield
        return
    _register()
    with ExitStack() as stack:
        use_attention(stack, configs, GROUPED_SDPA)
        yield
