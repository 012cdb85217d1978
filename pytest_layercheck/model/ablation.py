"""Exact, restorable, composable ablations: skip layers, mask attention heads, swap in donor layers.

Every primitive is a context manager. On exit (also after an exception in the body) the model is exactly
as before: the same module objects, the same config values, no hooks left behind. Indices always refer
to the model's ORIGINAL layer indices, also while a ``skip_layers`` is active, so ablations compose without
index arithmetic. ``ablate`` applies an :class:`Ablation` (swap, then head masks, then skip).
"""

from __future__ import annotations

import copy
import operator
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from pytest_layercheck.core.errors import AblationError
from pytest_layercheck.model.architecture import ArchitectureAdapter, get_adapter
from pytest_layercheck.model.attention import attention_configs, use_attention

HeadMode = Literal["zero", "uniform"]
GqaMode = Literal["query", "group"]
HEAD_MODES: tuple[str, ...] = ("zero", "uniform")
GQA_MODES: tuple[str, ...] = ("query", "group")
HeadSpec = Mapping[int, Iterable[int]] | Iterable[tuple[int, Iterable[int]]]
SwapSpec = Mapping[int, int] | Iterable[int | tuple[int, int]]

# Name under which the uniform-masking attention function and its mask format are registered.
UNIFORM_ATTENTION = "layercheck_uniform"


# --------------------------------------------------------------------------------------------------
# Input normalisation (model-independent; shared by the primitives and the Ablation dataclass)
# --------------------------------------------------------------------------------------------------


def _as_index(value: object, what: str) -> int:
    """A non-negative int index; bools, floats and negative numbers are rejected, not coerced."""
    if isinstance(value, bool):
        raise AblationError(f"{what} {value!r} is a bool, not an index.", fix=f"pass {what}s as ints.")
    try:
        index = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise AblationError(
            f"{what} {value!r} is not an integer index.", fix=f"pass {what}s as ints, e.g. 0, 3, 11."
        ) from None
    if index < 0:
        raise AblationError(
            f"{what} {index} is negative; negative (from-the-end) indices are ambiguous once layers are "
            "skipped.",
            fix=f"use the original, zero-based {what} index.",
        )
    return index


def normalize_layers(layers: Iterable[int] | int) -> tuple[int, ...]:
    """Sorted, de-duplicated layer indices."""
    if isinstance(layers, (int, str)) or not isinstance(layers, Iterable):
        layers = [layers]
    return tuple(sorted({_as_index(i, "layer") for i in layers}))


def normalize_heads(heads: HeadSpec) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """``((layer, (head, ...)), ...)`` sorted by layer with sorted unique heads; empty entries dropped."""
    items = heads.items() if isinstance(heads, Mapping) else heads
    merged: dict[int, set[int]] = {}
    for entry in items:
        try:
            layer, layer_heads = entry
        except (TypeError, ValueError):
            raise AblationError(
                f"head spec entry {entry!r} is not a (layer, heads) pair.",
                fix="pass heads as a mapping {layer: [head, ...]}, e.g. {2: [0, 1]}.",
            ) from None
        if isinstance(layer_heads, (int, str)) or not isinstance(layer_heads, Iterable):
            layer_heads = [layer_heads]
        merged.setdefault(_as_index(layer, "layer"), set()).update(_as_index(h, "head") for h in layer_heads)
    return tuple((layer, tuple(sorted(hs))) for layer, hs in sorted(merged.items()) if hs)


def normalize_swap(layers: SwapSpec) -> tuple[tuple[int, int], ...]:
    """``((target, donor), ...)`` sorted by target; a bare index ``i`` means ``(i, i)``."""
    items = layers.items() if isinstance(layers, Mapping) else layers
    pairs: dict[int, int] = {}
    for entry in items:
        if isinstance(entry, tuple):
            if len(entry) != 2:
                raise AblationError(
                    f"swap entry {entry!r} is not a (target, donor) pair.",
                    fix="pass layer indices, or a mapping {target_layer: donor_layer}.",
                )
            target, source = _as_index(entry[0], "layer"), _as_index(entry[1], "layer")
        else:
            target = source = _as_index(entry, "layer")
        if pairs.get(target, source) != source:
            raise AblationError(
                f"layer {target} is given two donor layers ({pairs[target]} and {source}).",
                fix="give each target layer exactly one donor layer.",
            )
        pairs[target] = source
    return tuple(sorted(pairs.items()))


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise AblationError(
            f"unknown {what} {value!r}.", fix=f"use one of: {', '.join(repr(c) for c in choices)}."
        )


def _check_range(indices: Iterable[int], count: int, what: str, model_desc: str) -> None:
    bad = [i for i in indices if i >= count]
    if bad:
        raise AblationError(
            f"{what} {', '.join(map(str, bad))} out of range: the {model_desc} has {count} {what}s "
            f"(valid: 0-{count - 1}).",
            fix=f"use original {what} indices between 0 and {count - 1}.",
        )


# --------------------------------------------------------------------------------------------------
# Shared mechanics
# --------------------------------------------------------------------------------------------------


def _set_restorably(stack: ExitStack, obj: object, name: str, value: object) -> None:
    """Set ``obj.name = value`` and register putting the old value back when ``stack`` closes."""
    stack.callback(setattr, obj, name, getattr(obj, name))
    setattr(obj, name, value)


def _renumber(stack: ExitStack | None, block: nn.Module, layer_idx: int) -> None:
    """Set ``layer_idx`` on every submodule that carries one (attention, decoder layer) — KV-cache slot."""
    for module in block.modules():
        current = getattr(module, "layer_idx", None)
        if isinstance(current, int) and not isinstance(current, bool) and current != layer_idx:
            if stack is None:
                # torch annotates Module.__setattr__ for tensors and modules only; plain attributes work
                module.layer_idx = layer_idx  # type: ignore[assignment]
            else:
                _set_restorably(stack, module, "layer_idx", layer_idx)


@dataclass(frozen=True)
class _SkipOrigin:
    """What the model looked like before the outermost active ``skip_layers``."""

    blocks: nn.ModuleList
    layer_types: dict[int, list[str] | None]  # id(config) -> its original layer_types


# Temporary (skipped) ModuleList -> origin; lets nested ablations resolve original indices.
_ACTIVE_SKIPS: weakref.WeakKeyDictionary[nn.ModuleList, _SkipOrigin] = weakref.WeakKeyDictionary()


def _skip_origin(adapter: ArchitectureAdapter) -> _SkipOrigin:
    current = adapter.layers
    origin = _ACTIVE_SKIPS.get(current)
    if origin is not None:
        return origin
    return _SkipOrigin(
        blocks=current,
        layer_types={id(c): getattr(c, "layer_types", None) for c in adapter.decoder_configs},
    )


def original_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks by ORIGINAL index, even while ``skip_layers`` is active."""
    return _skip_origin(get_adapter(model)).blocks


def _describe(adapter: ArchitectureAdapter) -> str:
    return f"{adapter.family} model"


# --------------------------------------------------------------------------------------------------
# skip_layers
# --------------------------------------------------------------------------------------------------


@contextmanager
def skip_layers(model: nn.Module, layers: Iterable[int] | int) -> Iterator[nn.Module]:
    """Remove decoder blocks so each skipped block acts as the identity on the residual stream.

    Done as in the code of "Demystifying the Roles of LLM Layers" (arXiv 2510.02091): the backbone gets a new ``ModuleList`` of the kept blocks, the kept blocks'
    ``layer_idx`` are renumbered (their KV-cache slots; without this generation breaks, transformers
    #30508), ``config.num_hidden_layers`` shrinks and ``config.layer_types`` (read per index by Gemma2/3
    and Qwen and used to build the cache) becomes the kept layers' types. The result is numerically the
    same model as one rebuilt with fewer layers, including ``generate`` with a KV cache.

    Skipping every layer is allowed: the model becomes embeddings -> final norm -> LM head, the floor a
    capability can fall to. Nested ``skip_layers`` use original indices and skip the union.
    """
    adapter = get_adapter(model)
    origin = _skip_origin(adapter)
    skip = normalize_layers(layers)
    _check_range(skip, len(origin.blocks), "layer", _describe(adapter))
    installed = {id(b) for b in adapter.layers}
    keep = [i for i, b in enumerate(origin.blocks) if id(b) in installed and i not in skip]
    with ExitStack() as stack:
        if len(keep) < len(installed):
            kept = nn.ModuleList([origin.blocks[i] for i in keep])
            _ACTIVE_SKIPS[kept] = origin
            stack.callback(adapter.set_layers, adapter.layers)
            adapter.set_layers(kept)
            for position, block in enumerate(kept):
                _renumber(stack, block, position)
            for config in adapter.decoder_configs:
                _set_restorably(stack, config, "num_hidden_layers", len(keep))
                types = origin.layer_types.get(id(config))
                if types is not None:
                    _set_restorably(stack, config, "layer_types", [types[i] for i in keep])
        yield model


# --------------------------------------------------------------------------------------------------
# mask_heads
# --------------------------------------------------------------------------------------------------


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


def _enable_uniform(
    stack: ExitStack, adapter: ArchitectureAdapter, plan: dict[nn.Module, frozenset[int]]
) -> None:
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
    spec = normalize_heads(heads)
    num_layers = len(_skip_origin(adapter).blocks)
    _check_range([layer for layer, _ in spec], num_layers, "layer", _describe(adapter))
    resolved: dict[int, tuple[int, ...]] = {}
    for layer, layer_heads in spec:
        _check_range(layer_heads, adapter.num_heads, "head", f"{_describe(adapter)} (per layer)")
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
                handle = proj.register_forward_pre_hook(
                    _zero_heads_hook(layer_heads, adapter.head_dim, width)
                )
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


# --------------------------------------------------------------------------------------------------
# swap_layers
# --------------------------------------------------------------------------------------------------


def _check_donor(target: ArchitectureAdapter, donor: ArchitectureAdapter) -> None:
    """Donor blocks must be drop-in replacements: same family, widths and head layout."""

    def signature(a: ArchitectureAdapter) -> dict[str, object]:
        return {
            "model_type": a.family,
            "hidden_size": getattr(a.config, "hidden_size", None),
            "num_heads": a.num_heads,
            "num_kv_heads": a.num_kv_heads,
            "head_dim": a.head_dim,
        }

    mine, theirs = signature(target), signature(donor)
    diffs = [f"{k}: {mine[k]} vs donor {theirs[k]}" for k in mine if mine[k] != theirs[k]]
    if diffs:
        raise AblationError(
            "donor model does not match the model's architecture (" + "; ".join(diffs) + ").",
            fix="use a donor of the same architecture and size, e.g. a fine-tuned or distilled variant "
            "of the same base model.",
        )


def _check_block_shapes(target: nn.Module, donor: nn.Module, target_idx: int, donor_idx: int) -> None:
    mine = {k: v.shape for k, v in target.state_dict().items()}
    theirs = {k: v.shape for k, v in donor.state_dict().items()}
    if mine != theirs:
        diffs = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        raise AblationError(
            f"donor layer {donor_idx} does not fit layer {target_idx}: parameters differ in "
            f"{', '.join(diffs[:5])}{' ...' if len(diffs) > 5 else ''}.",
            fix="use a donor of the same architecture and size (same intermediate size and head layout).",
        )


def _layer_type(adapter: ArchitectureAdapter, index: int) -> str | None:
    types = getattr(adapter.config, "layer_types", None)
    return types[index] if types is not None else None


def _copy_block(
    donor: ArchitectureAdapter, source: int, target: ArchitectureAdapter, target_idx: int
) -> nn.Module:
    """A deep copy of the donor block that behaves as the target's layer ``target_idx``.

    It shares the target's config objects (so attention-implementation switches reach it), lives on the
    target block's device and dtype, and has ``layer_idx`` set to the target index.
    """
    reference = target.layers[target_idx]
    memo: dict[int, object] = {id(donor.model.config): target.model.config}
    memo.update({id(c): target.config for c in donor.decoder_configs})
    block = copy.deepcopy(donor.layers[source], memo)
    _strip_dispatch_hooks(block)
    param = next(reference.parameters(), None)
    if param is not None:
        if param.device.type == "meta":
            raise AblationError(
                f"layer {target_idx} is offloaded (weights on the meta device) and cannot be swapped.",
                fix="load the model without disk/CPU offloading (a device_map that fits in memory).",
            )
        block.to(device=param.device, dtype=param.dtype)
    _renumber(None, block, target_idx)
    _copy_dispatch_hook(reference, block)
    return block


def _strip_dispatch_hooks(block: nn.Module) -> None:
    """Drop accelerate hooks the copy inherited from a dispatched donor."""
    if any(hasattr(m, "_hf_hook") for m in block.modules()):
        from accelerate.hooks import remove_hook_from_module

        remove_hook_from_module(block, recurse=True)


def _copy_dispatch_hook(reference: nn.Module, block: nn.Module) -> None:
    """Give the copy the device-alignment hook of the block it replaces (models with a device_map)."""
    device = getattr(getattr(reference, "_hf_hook", None), "execution_device", None)
    if device is not None:
        from accelerate.hooks import AlignDevicesHook, add_hook_to_module

        add_hook_to_module(block, AlignDevicesHook(execution_device=device))


@contextmanager
def swap_layers(model: nn.Module, donor: nn.Module, layers: SwapSpec) -> Iterator[nn.Module]:
    """Put copies of donor layers into ``model`` ("delta model replacement"); originals return on exit.

    ``layers`` is an iterable of indices (same index in both models) or a mapping
    ``{target_index: donor_index}``. The donor needs the same architecture and shapes, and for models with
    per-layer attention types (sliding/full) the two layers must be of the same type.
    """
    adapter, donor_adapter = get_adapter(model), get_adapter(donor)
    if adapter.layers in _ACTIVE_SKIPS:
        raise AblationError(
            "swap_layers was entered while skip_layers is active on the same model.",
            fix="enter swap_layers before skip_layers (ablate() applies swap, then heads, then skip).",
        )
    _check_donor(adapter, donor_adapter)
    pairs = normalize_swap(layers)
    _check_range([t for t, _ in pairs], adapter.num_layers, "layer", _describe(adapter))
    _check_range([s for _, s in pairs], donor_adapter.num_layers, "layer", "donor model")
    for target, source in pairs:
        if _layer_type(adapter, target) != _layer_type(donor_adapter, source):
            raise AblationError(
                f"layer {target} is {_layer_type(adapter, target)} but donor layer {source} is "
                f"{_layer_type(donor_adapter, source)}.",
                fix="swap layers of the same attention type (usually the same index).",
            )
        _check_block_shapes(adapter.layers[target], donor_adapter.layers[source], target, source)
    with ExitStack() as stack:
        installed = adapter.layers
        for target, source in pairs:
            replacement = _copy_block(donor_adapter, source, adapter, target)
            stack.callback(installed.__setitem__, target, installed[target])
            installed[target] = replacement
        yield model


# --------------------------------------------------------------------------------------------------
# Ablation: a value describing a composed ablation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ablation:
    """A composed ablation: skipped layers, masked heads and donor-swapped layers (original indices).

    Fields are normalised on construction (sorted, de-duplicated tuples), so equal ablations compare and
    hash equal and have the same :attr:`key`. ``head_mode``/``gqa`` are reset to their defaults when no
    heads are masked, since they mean nothing then.
    """

    skip: tuple[int, ...] = ()
    heads: tuple[tuple[int, tuple[int, ...]], ...] = ()
    head_mode: HeadMode = "zero"
    gqa: GqaMode = "query"
    swap: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        _check_choice(self.head_mode, HEAD_MODES, "head mask mode")
        _check_choice(self.gqa, GQA_MODES, "gqa mode")
        object.__setattr__(self, "skip", normalize_layers(self.skip))
        object.__setattr__(self, "heads", normalize_heads(self.heads))
        object.__setattr__(self, "swap", normalize_swap(self.swap))
        if not self.heads:
            object.__setattr__(self, "head_mode", "zero")
            object.__setattr__(self, "gqa", "query")

    @classmethod
    def build(
        cls,
        skip: Iterable[int] = (),
        heads: HeadSpec = (),
        head_mode: HeadMode = "zero",
        gqa: GqaMode = "query",
        swap: SwapSpec = (),
    ) -> Ablation:
        """Construct from loose inputs (lists, sets, ``{layer: heads}``, ``{target: donor}``)."""
        return cls(skip=skip, heads=heads, head_mode=head_mode, gqa=gqa, swap=swap)  # type: ignore[arg-type]

    @classmethod
    def skipping(cls, *layers: int | Iterable[int]) -> Ablation:
        """``Ablation.skipping(3, 4)`` or ``Ablation.skipping([3, 4])``."""
        flat: list[Any] = []
        for item in layers:
            flat.extend(item if isinstance(item, Iterable) and not isinstance(item, str) else [item])
        return cls(skip=tuple(flat))

    @classmethod
    def masking(cls, heads: HeadSpec, mode: HeadMode = "zero", gqa: GqaMode = "query") -> Ablation:
        """``Ablation.masking({2: [0, 1]}, mode="uniform")``."""
        return cls(heads=heads, head_mode=mode, gqa=gqa)  # type: ignore[arg-type]

    @classmethod
    def swapping(cls, layers: SwapSpec) -> Ablation:
        """``Ablation.swapping([5, 6])`` or ``Ablation.swapping({5: 7})`` (target <- donor)."""
        return cls(swap=layers)  # type: ignore[arg-type]

    @property
    def is_intact(self) -> bool:
        """True when nothing is ablated."""
        return not (self.skip or self.heads or self.swap)

    @property
    def key(self) -> str:
        """Stable, human-readable identity, e.g. ``skip=3,4;heads=2:0,1/5:3;swap=5<-5``; ``intact`` if empty.

        Used as a cache and baseline key, so its format must not change between versions.
        """
        parts: list[str] = []
        if self.skip:
            parts.append("skip=" + ",".join(map(str, self.skip)))
        if self.heads:
            parts.append("heads=" + "/".join(f"{layer}:{','.join(map(str, hs))}" for layer, hs in self.heads))
            if self.head_mode != "zero":
                parts.append(f"head_mode={self.head_mode}")
            if self.gqa != "query":
                parts.append(f"gqa={self.gqa}")
        if self.swap:
            parts.append("swap=" + ",".join(f"{t}<-{s}" for t, s in self.swap))
        return ";".join(parts) or "intact"

    def __str__(self) -> str:
        return self.key


@contextmanager
def ablate(model: nn.Module, ablation: Ablation, donor: nn.Module | None = None) -> Iterator[nn.Module]:
    """Apply ``ablation`` to ``model``: swap, then head masks, then skip (all by original index)."""
    with ExitStack() as stack:
        if ablation.swap:
            if donor is None:
                raise AblationError(
                    f"ablation {ablation.key!r} swaps layers but no donor model was given.",
                    fix="pass the donor model (the model to take layers from) as donor=...",
                )
            stack.enter_context(swap_layers(model, donor, ablation.swap))
        if ablation.heads:
            stack.enter_context(
                mask_heads(model, ablation.heads, mode=ablation.head_mode, gqa=ablation.gqa)
            )
        if ablation.skip:
            stack.enter_context(skip_layers(model, ablation.skip))
        yield model
