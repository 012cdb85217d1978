"""How ablations are written down: the index and mode checks every primitive and :class:`Ablation` share.

Model-independent, so an :class:`~pytest_layercheck.model.ablation.Ablation` can be built, compared and
hashed before any model is loaded; bad input fails here with a fix, not deep inside a forward pass.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from typing import Literal

from pytest_layercheck.core.errors import AblationError

HeadMode = Literal["zero", "uniform"]
GqaMode = Literal["query", "group"]
HEAD_MODES: tuple[str, ...] = ("zero", "uniform")
GQA_MODES: tuple[str, ...] = ("query", "group")
HeadSpec = Mapping[int, Iterable[int]] | Iterable[tuple[int, Iterable[int]]]
SwapSpec = Mapping[int, int] | Iterable[int | tuple[int, int]]


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
            f"{what} {index} is negative; negative (from-the-end) indices are ambiguous once layers are skipped.",
            fix=f"use the original, zero-based {what} index.",
        )
    return index


def normalise_layers(layers: Iterable[int] | int) -> tuple[int, ...]:
    """Sorted, de-duplicated layer indices."""
    if isinstance(layers, (int, str)) or not isinstance(layers, Iterable):
        layers = [layers]
    return tuple(sorted({_as_index(i, "layer") for i in layers}))


def normalise_heads(heads: HeadSpec) -> tuple[tuple[int, tuple[int, ...]], ...]:
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


def normalise_swap(layers: SwapSpec) -> tuple[tuple[int, int], ...]:
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
        raise AblationError(f"unknown {what} {value!r}.", fix=f"use one of: {', '.join(repr(c) for c in choices)}.")


def check_range(indices: Iterable[int], count: int, what: str, model_desc: str, fix: str | None = None) -> None:
    """Refuse the indices the model has no ``what`` for (``count`` of them), naming them and the valid range;
    ``fix`` replaces the default advice."""
    bad = [i for i in indices if i >= count]
    if bad:
        raise AblationError(
            f"{what} {', '.join(map(str, bad))} out of range: the {model_desc} has {count} {what}s "
            f"(valid: 0-{count - 1}).",
            fix=fix or f"use original {what} indices between 0 and {count - 1}.",
        )
