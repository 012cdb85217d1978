"""Exact, restorable, composable ablations: skip layers, mask attention heads, swap in donor layers.

Every primitive is a context manager. On exit (also after an exception in the body) the model is exactly
as before: the same module objects, the same config values, no hooks left behind. Indices always refer
to the model's ORIGINAL layer indices, also while a ``skip_layers`` is active, so ablations compose without
index arithmetic. ``ablate`` applies an :class:`Ablation` (swap, then head masks, then skip). The primitives
live in :mod:`.layer_skipping`, :mod:`.head_masking` and :mod:`.layer_swapping`, the specification types
and their normalisation in :mod:`.ablation_spec`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from torch import nn

from pytest_layercheck.core.errors import AblationError
from pytest_layercheck.model.ablation_spec import (
    GQA_MODES,
    HEAD_MODES,
    GqaMode,
    HeadMode,
    HeadSpec,
    SwapSpec,
    _check_choice,
    normalise_heads,
    normalise_layers,
    normalise_swap,
)
from pytest_layercheck.model.head_masking import mask_heads
from pytest_layercheck.model.layer_skipping import skip_layers
from pytest_layercheck.model.layer_swapping import swap_layers

__all__ = ["Ablation", "ablate"]


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
        object.__setattr__(self, "skip", normalise_layers(self.skip))
        object.__setattr__(self, "heads", normalise_heads(self.heads))
        object.__setattr__(self, "swap", normalise_swap(self.swap))
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
            stack.enter_context(mask_heads(model, ablation.heads, mode=ablation.head_mode, gqa=ablation.gqa))
        if ablation.skip:
            stack.enter_context(skip_layers(model, ablation.skip))
        yield model
