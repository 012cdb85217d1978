"""The per-layer chart of one suite on the HTML report, as inline SVG: the drop when each layer is
removed (this run over the baseline), their difference below, band edges and failing bands marked.
Marker shapes, line styles and hatches carry what the colours do, so the chart reads in black and white.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pytest_layercheck.data.bands import format_layers
from pytest_layercheck.data.profile_data import DepthProfile
from pytest_layercheck.evaluation.comparison_result import CellComparison
from pytest_layercheck.report.depth_strip import layer_values, nice_scale, num_layers
from pytest_layercheck.report.html import BASELINE_COLOUR, FALL_COLOUR, RISE_COLOUR, RUN_COLOUR, esc


@dataclass(frozen=True)
class Frame:
    """Where the chart's layers and values land: ``x`` of a layer's centre, ``y`` of a value in a panel."""

    layers: int
    left: float = 64.0
    width: float = 860.0
    top: float = 34.0
    height: float = 170.0

    @property
    def step(self) -> float:
        return self.width / max(self.layers, 1)

    def x(self, layer: float) -> float:
        return self.left + self.step * (layer + 0.5)

    @staticmethod
    def y(value: float, low: float, high: float, top: float, height: float) -> float:
        share = (value - low) / (high - low) if high > low else 0.5
        return top + height * (1 - min(max(share, 0.0), 1.0))


def _drops(profile: DepthProfile | None, suite: str, metric: str) -> dict[int, tuple[float, float]]:
    """Layer -> (drop when it is removed, metric with it removed); empty when the profile lacks it."""
    if profile is None or suite not in profile.suites or metric not in profile.evaluation(suite).outcomes:
        return {}
    values, _ = layer_values(profile, suite, metric)
    return {layer: (ref - value, value) for layer, (value, ref) in values.items()}


def layer_chart(
    profile: DepthProfile,
    suite: str,
    metric: str,
    baseline: DepthProfile | None = None,
    index: int = 0,
    cells: Sequence[CellComparison] = (),
) -> str:
    """The suite's per-layer chart: one mark per layer (``class="mark"``, ``data-layer``) for this run,
    the baseline's curve, and below them the difference; failing bands are hatched and named ✗."""
    now, before = _drops(profile, suite, metric), _drops(baseline, suite, metric)
    if not now and not before:
        return '<p class="muted">intact only: no layer was removed, so there is no per-layer chart.</p>'
    frame = Frame(num_layers(profile))
    drops = [d for d, _ in (*now.values(), *before.values()) if math.isfinite(d)]
    high = nice_scale(max([0.0, *drops]))
    low = -nice_scale(-min(drops)) if drops and min(drops) < 0 else 0.0
    moved = {layer: now[layer][1] - before[layer][1] for layer in now.keys() & before.keys()}
    diff_top = frame.top + frame.height + 58
    bottom = diff_top + (90 if moved else 0) + 44
    failed = {c.band for c in cells if c.failed}
    parts = [
        _defs(index),
        _bands_svg(profile, frame, bottom - 44, failed, index),
        _axis_svg(frame, low, high, "drop when the layer is removed"),
        _series_svg(before, frame, low, high, "baseline"),
        _series_svg(now, frame, low, high, "run"),
    ]
    if moved:
        parts.append(_diff_svg(moved, frame, diff_top, index))
    parts.append(_legend_svg(frame, bottom - 14, bool(before), bool(moved), index))
    label = f"{suite}: drop in {metric} when each of {frame.layers} layers is removed" + (
        ", this run and baseline" if before else ""
    )
    total = frame.left + frame.width + 16
    return (
        f'<svg class="layer-chart" data-suite="{esc(suite)}" data-layers="{frame.layers}" role="img" '
        f'aria-label="{esc(label)}" viewBox="0 0 {total:.0f} {bottom:.0f}" width="{total:.0f}" '
        f'height="{bottom:.0f}">' + "".join(parts) + "</svg>"
    )


def _defs(index: int) -> str:
    """Hatches (ids unique per chart): a fall and a failing band read without colour."""
    return (
        f'<defs><pattern id="fall-{index}" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{FALL_COLOUR}" stroke-width="4"/></pattern>'
        f'<pattern id="failband-{index}" width="8" height="8" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(-45)"><line x1="0" y1="0" x2="0" y2="8" stroke="#f3c9b3" '
        f'stroke-width="2"/></pattern></defs>'
    )


def _bands_svg(profile: DepthProfile, frame: Frame, bottom: float, failed: set[str], index: int) -> str:
    """Band backgrounds, their names with layer ranges on top, and a dashed rule at each band edge."""
    parts = []
    for number, (band, layers) in enumerate(profile.bands.items()):
        if not layers:
            continue
        x0, x1 = frame.x(min(layers) - 0.5), frame.x(max(layers) + 0.5)
        fill = f"url(#failband-{index})" if band in failed else ("#f4f4f4" if number % 2 else "none")
        parts.append(
            f'<rect class="band" data-band="{esc(band)}" x="{x0:.1f}" y="{frame.top - 20:.1f}" '
            f'width="{x1 - x0:.1f}" height="{bottom - frame.top + 20:.1f}" fill="{fill}"/>'
        )
        name = f"{band} ({format_layers(layers, prefix='L')})" + (" ✗ fails" if band in failed else "")
        weight = ' font-weight="700"' if band in failed else ""
        parts.append(
            f'<text x="{(x0 + x1) / 2:.1f}" y="{frame.top - 8:.1f}" text-anchor="middle"{weight}>{esc(name)}</text>'
        )
        if number:
            parts.append(
                f'<line class="band-edge" x1="{x0:.1f}" x2="{x0:.1f}" y1="{frame.top - 20:.1f}" '
                f'y2="{bottom:.1f}" stroke="#444" stroke-dasharray="5 3"/>'
            )
    return "".join(parts)


def _axis_svg(frame: Frame, low: float, high: float, title: str) -> str:
    """Value ticks and gridlines of the top panel, and the layer numbers under it."""
    ticks: list[tuple[float, float]] = []
    for tick in (0.0, high, low, high / 2):  # a tick too close to one kept before it would overprint it
        y = frame.y(tick, low, high, frame.top, frame.height)
        if all(abs(y - other) >= 14 for _, other in ticks):
            ticks.append((tick, y))
    parts = []
    for tick, y in ticks:
        dash = "" if tick == 0 else ' stroke-dasharray="2 3"'
        parts.append(
            f'<line x1="{frame.left}" x2="{frame.left + frame.width}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#999"{dash}/><text x="{frame.left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{tick:.2f}</text>"
        )
    every = max(1, math.ceil(frame.layers / 40))
    base = frame.top + frame.height + 14
    parts += [
        f'<text x="{frame.x(layer):.1f}" y="{base:.1f}" text-anchor="middle">{layer}</text>'
        for layer in range(0, frame.layers, every)
    ]
    parts.append(
        f'<text x="{frame.left + frame.width / 2:.1f}" y="{base + 14:.1f}" text-anchor="middle">layer removed</text>'
    )
    middle = frame.top + frame.height / 2
    parts.append(f'<text transform="translate(14 {middle:.1f}) rotate(-90)" text-anchor="middle">{esc(title)}</text>')
    return "".join(parts)


def _series_svg(drops: Mapping[int, tuple[float, float]], frame: Frame, low: float, high: float, kind: str) -> str:
    """This run: filled circles on a solid line, one mark per layer (``·`` where not evaluated);
    the baseline: hollow squares on a dashed line."""
    if not drops and kind == "baseline":
        return ""
    colour = RUN_COLOUR if kind == "run" else BASELINE_COLOUR
    points = [
        (layer, frame.x(layer), frame.y(d, low, high, frame.top, frame.height))
        for layer, (d, _) in sorted(drops.items())
        if math.isfinite(d)
    ]
    dash = ' stroke-dasharray="6 4"' if kind == "baseline" else ""
    line = " ".join(f"{x:.1f},{y:.1f}" for _, x, y in points)
    parts = [f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>']
    shown = {layer: (x, y) for layer, x, y in points}
    who = "this run" if kind == "run" else "baseline"
    for layer in range(frame.layers) if kind == "run" else sorted(shown):
        if layer not in shown:
            parts.append(
                f'<text class="mark missing" data-layer="{layer}" x="{frame.x(layer):.1f}" '
                f'y="{frame.top + frame.height - 4:.1f}" text-anchor="middle">·<title>L{layer}: not '
                "evaluated</title></text>"
            )
            continue
        x, y = shown[layer]
        tip = f"<title>L{layer}, {who}: drop {drops[layer][0]:+.3f} (metric {drops[layer][1]:.3f})</title>"
        if kind == "run":
            parts.append(
                f'<circle class="mark" data-layer="{layer}" data-drop="{drops[layer][0]:.4f}" '
                f'cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}" stroke="#000" stroke-width="0.6">'
                f"{tip}</circle>"
            )
        else:
            parts.append(
                f'<rect class="mark-baseline" data-layer="{layer}" x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" '
                f'width="7" height="7" fill="#fff" stroke="{colour}" stroke-width="1.6">{tip}</rect>'
            )
    return "".join(parts)


def _diff_svg(moved: Mapping[int, float], frame: Frame, top: float, index: int) -> str:
    """Metric with each layer removed, this run − baseline (the terminal's delta strip): rises are solid
    bars up, falls hatched bars down, from a zero line."""
    finite = [abs(v) for v in moved.values() if math.isfinite(v)]
    scale = nice_scale(max(finite, default=0.0))
    height = 80.0
    zero = top + height / 2
    parts = [
        f'<line x1="{frame.left}" x2="{frame.left + frame.width}" y1="{zero:.1f}" y2="{zero:.1f}" stroke="#444"/>',
        f'<text x="{frame.left - 6}" y="{top + 4:.1f}" text-anchor="end">+{scale:.2f}</text>',
        f'<text x="{frame.left - 6}" y="{top + height + 4:.1f}" text-anchor="end">−{scale:.2f}</text>',
        f'<text x="{frame.left}" y="{top - 8:.1f}">metric with the layer removed, this run − baseline '
        "(▲ rose, ▼ fell)</text>",
    ]
    width = max(frame.step * 0.7, 1.0)
    for layer, delta in sorted(moved.items()):
        if not math.isfinite(delta):
            continue
        size = min(abs(delta) / scale, 1.0) * height / 2
        y = zero - size if delta >= 0 else zero
        fill = RISE_COLOUR if delta >= 0 else f"url(#fall-{index})"
        parts.append(
            f'<rect class="diff" data-layer="{layer}" data-delta="{delta:.4f}" '
            f'x="{frame.x(layer) - width / 2:.1f}" y="{y:.1f}" width="{width:.1f}" height="{size:.1f}" '
            f'fill="{fill}" stroke="#000" stroke-width="0.5"><title>L{layer}: {delta:+.3f}</title></rect>'
        )
    return "".join(parts)


def _legend_svg(frame: Frame, y: float, baseline: bool, moved: bool, index: int) -> str:
    """Each series' shape and line style with its name: the chart reads in black and white."""
    keys = [
        (
            f'<line x1="0" x2="22" y1="0" y2="0" stroke="{RUN_COLOUR}" stroke-width="2"/>'
            f'<circle cx="11" cy="0" r="4" fill="{RUN_COLOUR}" stroke="#000" stroke-width="0.6"/>',
            "this run",
        )
    ]
    if baseline:
        keys.append(
            (
                f'<line x1="0" x2="22" y1="0" y2="0" stroke="{BASELINE_COLOUR}" stroke-width="2" '
                f'stroke-dasharray="6 4"/><rect x="7.5" y="-3.5" width="7" height="7" fill="#fff" '
                f'stroke="{BASELINE_COLOUR}" stroke-width="1.6"/>',
                "baseline",
            )
        )
    if moved:
        keys += [
            (
                f'<rect x="4" y="-6" width="14" height="12" fill="{RISE_COLOUR}" stroke="#000" stroke-width="0.5"/>',
                "rose",
            ),
            (
                f'<rect x="4" y="-6" width="14" height="12" fill="url(#fall-{index})" stroke="#000" '
                'stroke-width="0.5"/>',
                "fell",
            ),
        ]
    keys.append(('<line x1="11" x2="11" y1="-7" y2="7" stroke="#444" stroke-dasharray="5 3"/>', "band edge"))
    parts, x = [], frame.left
    for shape, name in keys:
        parts.append(f'<g transform="translate({x:.1f} {y:.1f})">{shape}<text x="28" y="4">{esc(name)}</text></g>')
        x += 40 + 7 * len(name)
    return "".join(parts)
