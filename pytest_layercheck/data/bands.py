"""Depth bands: named, contiguous fractions of a model's depth (shallow / middle / deep).

Findings such as "knowledge sits in shallow layers, reasoning needs middle and deep ones" are stated in
relative depth, so checks name a band instead of layer indices and work for any layer count.

Rounding rule: a band ``(lo, hi)`` of an ``N``-layer model holds layers ``b(lo) .. b(hi) - 1`` where
``b(f) = floor(f * N + 0.5)`` (round half up, computed exactly on the decimal value of ``f``). Because
consecutive bands share their boundary, the bands cover every layer exactly once for any ``N >= 1``. A
band can hold no layer (``0:0.01`` of 30 layers; with the defaults, every model under 3 layers):
:meth:`DepthBands.layers` then returns ``()``, but :meth:`DepthBands.as_dict`, which profiles use,
refuses it with a ConfigError instead of silently dropping the band's cells.
With the defaults and ``N = 30``: shallow 0-8, middle 9-20, deep 21-29.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from pytest_layercheck.core.errors import ConfigError

BandSpec = Mapping[str, tuple[float, float]] | Iterable[tuple[str, float, float]]

DEFAULT_BANDS: tuple[tuple[str, float, float], ...] = (
    ("shallow", 0.0, 0.3),
    ("middle", 0.3, 0.7),
    ("deep", 0.7, 1.0),
)

_FORMAT = "name=lo:hi,name=lo:hi,... e.g. shallow=0:0.3,middle=0.3:0.7,deep=0.7:1"
_RESERVED = set(",=: \t")


def _exact(value: float) -> Fraction:
    """The decimal the user wrote (0.3 -> 3/10), not the binary float, so rounding is predictable."""
    return Fraction(repr(float(value)))


def _boundary(fraction: float, num_layers: int) -> int:
    """``floor(fraction * num_layers + 0.5)``: the first layer index at or after ``fraction`` of depth."""
    return math.floor(_exact(fraction) * num_layers + Fraction(1, 2))


@dataclass(frozen=True)
class DepthBands:
    """Named depth bands, contiguous from 0 to 1; see the module docstring for the rounding rule.

    Construct from a mapping ``{"shallow": (0, 0.3), ...}`` (order = depth order), a sequence of
    ``(name, lo, hi)``, or :meth:`parse` of the string form. Invalid bands raise ``ConfigError``.
    """

    bands: tuple[tuple[str, float, float], ...] = DEFAULT_BANDS

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", _validate(self.bands))

    @classmethod
    def parse(cls, text: str) -> DepthBands:
        """Parse ``"shallow=0:0.3,middle=0.3:0.7,deep=0.7:1"`` (the CLI / ini form)."""
        entries: list[tuple[str, float, float]] = []
        for piece in (p.strip() for p in text.split(",")):
            name, eq, span = piece.partition("=")
            lo_text, colon, hi_text = span.partition(":")
            if not piece or not eq or not colon:
                raise ConfigError(f"cannot parse depth band {piece!r} in {text!r}.", fix=f"write {_FORMAT}.")
            try:
                entries.append((name.strip(), float(lo_text), float(hi_text)))
            except ValueError:
                raise ConfigError(
                    f"depth band {piece!r} has a bound that is not a number.", fix=f"write {_FORMAT}."
                ) from None
        return cls(tuple(entries))

    def __str__(self) -> str:
        """The string form accepted by :meth:`parse`."""
        return ",".join(f"{name}={lo:g}:{hi:g}" for name, lo, hi in self.bands)

    def describe(self) -> dict[str, list[float]]:
        """JSON-ready ``{band: [lo, hi]}``, shallowest first (recorded in baselines)."""
        return {name: [lo, hi] for name, lo, hi in self.bands}

    @property
    def names(self) -> tuple[str, ...]:
        """Band names, shallowest first."""
        return tuple(name for name, _, _ in self.bands)

    def layers(self, band: str, num_layers: int) -> tuple[int, ...]:
        """Layer indices of ``band`` in a model of ``num_layers`` layers (possibly empty)."""
        _check_num_layers(num_layers)
        for name, lo, hi in self.bands:
            if name == band:
                return tuple(range(_boundary(lo, num_layers), _boundary(hi, num_layers)))
        raise ConfigError(f"unknown depth band {band!r}.", fix=f"use one of: {', '.join(self.names)}.")

    def band_of(self, layer: int, num_layers: int) -> str:
        """The band that holds ``layer``."""
        _check_num_layers(num_layers)
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < num_layers:
            raise ConfigError(
                f"layer {layer!r} is not a layer of a {num_layers}-layer model.",
                fix=f"use a layer index between 0 and {num_layers - 1}.",
            )
        return next(name for name in self.names if layer in self.layers(name, num_layers))

    def as_dict(self, num_layers: int) -> dict[str, tuple[int, ...]]:
        """``{band: layer indices}`` for every band, shallowest first; a band with no layer is a ConfigError."""
        layers = {name: self.layers(name, num_layers) for name in self.names}
        empty = [name for name, held in layers.items() if not held]
        if empty:
            spans = ", ".join(f"{name}={lo:g}:{hi:g}" for name, lo, hi in self.bands if name in empty)
            raise ConfigError(
                f"depth band(s) {spans} hold no layer of this {num_layers}-layer model, so their checks "
                "would silently have nothing to measure.",
                fix=f"widen them to at least 1/{num_layers} of depth each, or use fewer bands "
                f"(a {num_layers}-layer model has room for at most {num_layers}).",
            )
        return layers


def _check_num_layers(num_layers: int) -> None:
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ConfigError(
            f"num_layers must be a positive int, got {num_layers!r}.",
            fix="pass the model's decoder layer count.",
        )


def _validate(spec: BandSpec) -> tuple[tuple[str, float, float], ...]:
    """Normalise to ``((name, lo, hi), ...)`` and check names and contiguity from 0 to 1."""
    raw = [(n, *span) for n, span in spec.items()] if isinstance(spec, Mapping) else list(spec)
    if not raw:
        raise ConfigError("no depth bands given.", fix=f"give at least one band: {_FORMAT}.")
    bands: list[tuple[str, float, float]] = []
    for entry in raw:
        try:
            name, lo, hi = entry
            lo, hi = float(lo), float(hi)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(
                f"depth band {entry!r} is not (name, lo, hi) with numeric bounds.",
                fix=f"write {_FORMAT}.",
            ) from None
        if not isinstance(name, str) or not name or _RESERVED & set(name):
            raise ConfigError(
                f"depth band name {name!r} is empty or contains one of ',=:' or whitespace.",
                fix="use simple names such as shallow, middle, deep.",
            )
        bands.append((name, lo, hi))

    names = [name for name, _, _ in bands]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"depth band names repeat: {', '.join(duplicates)}.", fix="give each band a unique name.")
    expected = 0.0
    for name, lo, hi in bands:
        if _exact(lo) != _exact(expected):
            raise ConfigError(
                f"depth band {name!r} starts at {lo:g} but the previous band ends at {expected:g}; "
                "bands must be contiguous, shallowest first, starting at 0.",
                fix=f"start {name!r} at {expected:g}, e.g. {_FORMAT}.",
            )
        if not lo < hi:
            raise ConfigError(
                f"depth band {name!r} is empty or reversed ({lo:g}:{hi:g}).",
                fix="give every band lo < hi.",
            )
        expected = hi
    if _exact(expected) != 1:
        raise ConfigError(
            f"depth bands end at {expected:g}, not at 1; they must cover the whole depth.",
            fix=f"end the last band at 1, e.g. {_FORMAT}.",
        )
    return tuple(bands)


def layer_runs(layers: Iterable[int]) -> list[tuple[int, ...]]:
    """Sorted indices in maximal contiguous runs: [3, 4, 5, 9] -> [(3, 4, 5), (9,)]."""
    runs: list[list[int]] = []
    for index in sorted(set(layers)):
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return [tuple(r) for r in runs]


def format_layers(layers: Iterable[int], prefix: str = "") -> str:
    """Layer indices as runs, the one short form of every table and message: (0, 1, 2, 3, 29) ->
    ``0-3,29``; with ``prefix="L"``: ``L0-3,29``; no layers: ``""``."""
    runs = layer_runs(layers)
    return prefix + ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs) if runs else ""
