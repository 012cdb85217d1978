"""``mask_heads`` (zero or uniform) and ``eager_attention``: silencing attention heads exactly and restorably.

Zero mode hooks the output projection; uniform mode and ``eager_attention`` route attention through an
eager function registered with transformers, since SDPA and flash attention expose neither scores nor weights.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from pytest_layercheck.core.errors import AblationError
from pytest_layercheck.model.ablation_spec import (
    GQA_MODES,
    HEAD_MODES,
    GqaMode,
    HeadMode,
    HeadSpec,
    _check_choice,
    check_range,
    normalise_heads,
)
from pytest_layercheck.model.architecture import ArchitectureAdapter, get_adapter
from pytest_layercheck.model.attention import attention_configs, use_attention
from pytest_layercheck.model.layer_skipping import _describe, _skip_origin

# Name under which the uniform-masking attention function and its mask format are registered.
UNIFORM_ATTENTION = "layercheck_uniform"


def _zero_heads_hook(heads: tuple[int, ...], head_dim: int, width: int) -> Any:
    """Forward pre-hook for the output projection: zero the input slice ``[h*d:(h+1)*d]`` of each head.

    The input of the output projection is the concatenation of per-head outputs, so this removes exactly
    those heads. (Zeroing the projection's *output* would hit residual coordinates, not heads.)
    """
    drop = torch.zeros(width, dtype=torch.bool)
    for h in heads:
        drop[h * head_dim : (h + 1) * head_dim] = True

    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        if x.shape[-1] != width:
            raise AblationError(
                f"output projection input has width {x.shape[-1]}, expected {width} (heads x head dim).",
                fix="this model variant is not laid out as the adapter expects; please report it.",
            )
        return (x.masked_fill(drop.to(x.device), 0), *args[1:])

    return hook


# Attention module -> the flagged query-head sets of every active uniform mask on it (nesting-safe).
_UNIFORM_HEADS: weakref.WeakKeyDictionary[nn.Module, list[frozenset[int]]] = weakref.WeakKeyDictionary()


def _uniform_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard (eager) attention where flagged heads get pre-softmax scores of 0.

    A flagged head therefore spreads its weight uniformly over exactly the positions the mask lets it see
    (causal, padding, sliding window — all encoded in the additive mask) and outputs the mean of those
    values, as in the retrieval-head paper. ``key``/``value`` include cached positions during generation.
    """
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:  # grouped-query attention: each KV head serves n_rep consecutive query heads
        key = key.repeat_interleave(n_rep, dim=1)
        value = value.repeat_interleave(n_rep, dim=1)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    flagged = frozenset().union(*_UNIFORM_HEADS.get(module, ()))
    if flagged:
        rows = torch.zeros(query.shape[1], dtype=torch.bool, device=scores.device)
        rows[sorted(flagged)] = True
        scores = scores.masked_fill(rows[None, :, None, None], 0.0)
    if attention_mask is not None:
        mask = attention_mask[:, :, :, : key.shape[-2]]
        bool_mask = mask.dtype == torch.bool
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if bool_mask else scores + mask
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


def _register_uniform_attention() -> None:
    """Register the attention function and give it eager-style (additive float) masks. Idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(UNIFORM_ATTENTION, _uniform_attention)
    AttentionMaskInterface.register(UNIFORM_ATTENTION, eager_mask)


def _enable_uniform(stack: ExitStack, adapter: ArchitectureAdapter, plan: dict[nn.Module, frozenset[int]]) -> None:
    """Route the model's attention through ``_uniform_attention`` with ``plan`` flagged, until exit.

    The implementation name is switched on every config object the backbone and the attention modules
    read (:func:`~pytest_layercheck.model.attention.use_attention`).
    """
    _register_uniform_attention()
    for attention, heads in plan.items():
        active = _UNIFORM_HEADS.setdefault(attention, [])
        active.append(heads)
        stack.callback(active.remove, heads)
    use_attention(stack, attention_configs(adapter, _skip_origin(adapter).blocks), UNIFORM_ATTENTION)


def _resolve_heads(adapter: ArchitectureAdapter, heads: HeadSpec, gqa: str) -> dict[int, tuple[int, ...]]:
    _check_choice(gqa, GQA_MODES, "gqa mode")
    spec = normalise_heads(heads)
    num_layers = len(_skip_origin(adapter).blocks)
    check_range([layer for layer, _ in spec], num_layers, "layer", _describe(adapter))
    resolved: dict[int, tuple[int, ...]] = {}
    for layer, layer_heads in spec:
        check_range(layer_heads, adapter.num_heads, "head", f"{_describe(adapter)} (per layer)")
        if gqa == "group":
            groups = sorted({adapter.kv_head_of(h) for h in layer_heads})
            layer_heads = tuple(h for g in groups for h in adapter.query_heads_of(g))
        resolved[layer] = layer_heads
    return resolved


def resolve_heads(model: nn.Module, heads: HeadSpec, gqa: GqaMode = "query") -> dict[int, tuple[int, ...]]:
    """The query heads ``mask_heads`` would affect, ``{original layer: heads}`` (validated, GQA-expanded)."""
    return _resolve_heads(get_adapter(model), heads, gqa)


@contextmanager
def mask_heads(
    model: nn.Module, heads: HeadSpec, mode: HeadMode = "zero", gqa: GqaMode = "query"
) -> Iterator[nn.Module]:
    """Silence attention heads, given as ``{original layer: [query head, ...]}``.

    Modes:
      * ``"zero"`` — remove the heads' contribution: a forward pre-hook on the attention output projection
        zeroes each head's input slice. The projection's bias (GPT-2, GPT-NeoX) belongs to no head and stays.
      * ``"uniform"`` — the retrieval-head paper's masking: the heads' pre-softmax scores are set to 0, so
        each attends uniformly over the positions it may see and outputs the mean of their values. While
        active, all layers run an eager attention function (slower than SDPA/flash; same math).

    Grouped-query attention (``gqa``):
      * ``"query"`` (default) — only the named query heads are affected; the shared K/V projections and the
        other query heads of the group are untouched.
      * ``"group"`` — every query head of each KV group touched is affected. This reproduces the code of
        "Demystifying the Roles of LLM Layers" (arXiv 2510.02091), which also zeroed the shared ``k_proj``/``v_proj`` rows and so silenced the whole group.
    """
    _check_choice(mode, HEAD_MODES, "head mask mode")
    adapter = get_adapter(model)
    plan = _resolve_heads(adapter, heads, gqa)
    blocks = _skip_origin(adapter).blocks
    width = adapter.num_heads * adapter.head_dim
    with ExitStack() as stack:
        if mode == "zero":
            for layer, layer_heads in plan.items():
                proj = adapter.out_proj_of(blocks[layer])
                handle = proj.register_forward_pre_hook(_zero_heads_hook(layer_heads, adapter.head_dim, width))
                stack.callback(handle.remove)
        elif plan:
            _enable_uniform(
                stack,
                adapter,
                {adapter.attention_of(blocks[layer]): frozenset(hs) for layer, hs in plan.items()},
            )
        yield model


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Run every layer through layercheck's eager attention function, masking nothing.

    SDPA and flash attention return no attention weights, and analyses that read them (the top-1
    attended position of each head, for retrieval heads) need the eager math. Outputs equal the
    model's own attention up to float rounding; each attention module's forward returns
    ``(output, weights)`` with weights of shape (batch, query heads, queries, keys). Heads flagged by
    an enclosing ``mask_heads(mode="uniform")`` stay masked. The previous implementation is restored
    on exit.
    """
    adapter = get_adapter(model)
    with ExitStack() as stack:
        _enable_uniform(stack, adapter, {})
        yield model
