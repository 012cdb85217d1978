"""What the analyses' HTML pages share: the page shell, tables of string rows, a layer × head grid and bar charts.

The pages look like the depth report's (:mod:`.html`: its CSS and its escaping) and, like it, load
nothing: inline CSS and SVG only, no script, a Content-Security-Policy that forbids every fetch. Each
analysis draws its page from these pieces in its own room (``analysis/<name>/html.py``), with the rows its
terminal and markdown tables use, so every renderer shows the same numbers.

* A layer × head grid has one ``rect.head`` per head with ``data-layer``/``data-head``/``data-value``, its
  number printed in the cell where the cell is wide enough and always in a ``<title>`` tooltip. The fill is a
  single-hue sequential ramp (ColorBrewer Blues: colour-blind safe, lightness strictly falling with the
  value, so it prints in greyscale); outlined heads carry a thick black outline, heads whose value is
  negative (masking raised the metric) a dashed one.
* A bar chart draws one group per label and one bar per series in it, from a zero line, with whiskers for
  intervals. A second series is hatched, a pick is outlined and marked, so no meaning rests on colour alone.

Every string from data (names, prompts, answers, generations) goes through :func:`.html.esc`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_layercheck.report.analyses import Rows
from pytest_layercheck.report.depth_strip import nice_scale
from pytest_layercheck.report.html import BASELINE_COLOUR, MAX_PROMPT, esc, flat_settings, meta_list, page_shell

#: ColorBrewer "Blues" (9 classes): one hue, so colour-blind safe; lightness falls strictly from the first
#: to the last, so a greyscale print keeps the order. Low values are near white, high ones dark blue.
RAMP = ("#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b")
#: Widest and narrowest grid cell (px); a cell this wide or wider prints its value.
CELL_MAX, CELL_MIN, CELL_TEXT = 46.0, 10.0, 34.0
#: Width the charts are drawn for (the page is at most 1180 px wide).
CHART_WIDTH = 1080.0

EXTRA_CSS = """
svg.head-grid,svg.bar-chart{display:block;max-width:100%;height:auto;margin:6px 0}
svg text.v{font-size:10px;pointer-events:none}svg text.v.dark{fill:#fff}svg text.small{font-size:10px}
p.summary{margin:6px 0 10px}ul.lines li{margin:2px 0}
td.text{text-align:left;white-space:pre-wrap;max-width:420px;font-family:ui-monospace,monospace;font-size:12px}
"""


# ----------------------------------------------------------------------------------------- shell
def page(title: str, parts: Iterable[str]) -> str:
    """A whole page in the depth report's shell (no script: the analyses' pages need none)."""
    return page_shell(title, [f"<h1>{esc(title)}</h1>", *parts], css=EXTRA_CSS)


def table(rows: Rows, caption: str = "", lead: int = 1, css: str = "", text: Sequence[int] = ()) -> str:
    """A table of the renderers' string rows; the first ``lead`` columns are labels (left-aligned), the
    ``text`` columns free text (left-aligned, monospace, wrapped)."""
    headers, body = rows

    def kind(i: int) -> str:
        return "text" if i in text else "l" if i < lead or headers[i] == "note" else ""

    head = "".join(f'<th class="{"l" if kind(i) else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    lines = []
    for row in body:
        cells = "".join(f'<td class="{kind(i)}">{esc(v)}</td>' for i, v in enumerate(row))
        lines.append(f"<tr>{cells}</tr>")
    caption_html = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (
        f'<table class="{esc(css)}">{caption_html}<thead><tr>{head}</tr></thead><tbody>{"".join(lines)}</tbody></table>'
    )


def bullet_list(lines: Iterable[str], css: str = "lines") -> str:
    """``<ul>`` of plain lines (nothing when there are none)."""
    items = "".join(f"<li>{esc(line)}</li>" for line in lines)
    return f'<ul class="{css}">{items}</ul>' if items else ""


def settings_list(title: str, settings: Mapping[str, Any]) -> str:
    """The settings a result records, as the depth report lists them (nothing when there are none)."""
    return meta_list(title, flat_settings("", dict(settings))) if settings else ""


def cut(text: str) -> str:
    """A prompt or generation shortened to what a table cell shows."""
    text = text.strip()
    return text if len(text) <= MAX_PROMPT else text[:MAX_PROMPT] + " …"


def shown_items(shown: int, total: int, hint: str = "") -> str:
    """``; the first 100 of 240 shown`` when a table lists only some of the items (else nothing)."""
    return f"; the first {shown} of {total} shown{hint}" if shown < total else ""


# ----------------------------------------------------------------------------------------- colour
def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def ramp(share: float) -> str:
    """The ramp's colour at ``share`` in [0, 1] (clamped; NaN is white), interpolated between classes."""
    if not math.isfinite(share):
        return "#ffffff"
    position = min(max(share, 0.0), 1.0) * (len(RAMP) - 1)
    low = min(int(position), len(RAMP) - 2)
    t = position - low
    a, b = _rgb(RAMP[low]), _rgb(RAMP[low + 1])
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b))


def luminance(colour: str) -> float:
    """Relative luminance (WCAG) of ``#rrggbb``: what a greyscale print keeps of a colour."""

    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in _rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _dark(colour: str) -> bool:
    return luminance(colour) < 0.3


# ------------------------------------------------------------------------------------------ grid
@dataclass(frozen=True)
class Grid:
    """What a layer × head grid shows: a value per head, the full scale, the heads to outline."""

    values: Mapping[tuple[int, int], float]
    layers: Sequence[int]
    heads: int
    high: float
    what: str  # "drop" or "score": the tooltip's word
    unit: str = "H"
    outlined: frozenset[tuple[int, int]] = frozenset()
    outline_label: str = ""
    dashed_label: str = ""
    details: Mapping[tuple[int, int], str] = field(default_factory=dict)
    signed: bool = False


@dataclass(frozen=True)
class _Cells:
    """Where a grid's cells go: the top-left corner, each cell's size, and whether values are printed."""

    left: float
    top: float
    width: float
    height: float

    @property
    def text(self) -> bool:
        return self.width >= CELL_TEXT


def head_grid(grid: Grid) -> str:
    """Layers (rows) × heads (columns), one ``rect.head`` per pair (``rect.head.missing`` where a head
    was not evaluated), then the colour scale and the outline keys."""
    left = 48.0
    width = max(CELL_MIN, min(CELL_MAX, (CHART_WIDTH - left) / max(grid.heads, 1)))
    cells = _Cells(left, 30.0, width, 20.0 if width >= CELL_TEXT else max(CELL_MIN, min(20.0, width)))
    every = max(1, math.ceil(grid.heads / 32))
    parts = [
        f'<text class="small" x="{left + width * (h + 0.5):.1f}" y="{cells.top - 8:.1f}" text-anchor="middle">'
        f"{grid.unit}{h}</text>"
        for h in range(0, grid.heads, every)
    ]
    outlines: list[str] = []
    rows_every = max(1, math.ceil(len(grid.layers) / 60)) if cells.height < 12 else 1
    for row, layer in enumerate(grid.layers):
        y = cells.top + row * cells.height
        if row % rows_every == 0:
            parts.append(
                f'<text class="small" x="{left - 6:.1f}" y="{y + cells.height / 2 + 4:.1f}" '
                f'text-anchor="end">L{layer}</text>'
            )
        for head in range(grid.heads):
            parts += _grid_cell(grid, cells, (layer, head), left + head * width, y, outlines)
    parts += outlines
    bottom = cells.top + len(grid.layers) * cells.height + 16
    legend, legend_end = _grid_legend(grid, left, bottom)
    parts.append(legend)
    total_width = max(left + width * grid.heads, legend_end) + 16
    label = (
        f"{grid.what} per head: {len(grid.layers)} layers × {grid.heads} heads, darker = higher "
        f"(full scale {grid.high:.2f})"
    )
    return (
        f'<svg class="head-grid" data-layers="{len(grid.layers)}" data-heads="{grid.heads}" role="img" '
        f'aria-label="{esc(label)}" viewBox="0 0 {total_width:.0f} {bottom + 40:.0f}" '
        f'width="{total_width:.0f}" height="{bottom + 40:.0f}">' + "".join(parts) + "</svg>"
    )


def _grid_value(grid: Grid, value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    if abs(value) < 5e-13:
        return "·"  # as the terminal's grid: masking changed nothing
    return f"{value:+.2f}" if grid.signed else f"{value:.2f}"


def _grid_cell(grid: Grid, cells: _Cells, key: tuple[int, int], x: float, y: float, outlines: list[str]) -> list[str]:
    """One head's cell (and its printed value); an outline, drawn over every cell, goes to ``outlines``."""
    (layer, head), width, height = key, cells.width, cells.height
    position = (
        f'data-layer="{layer}" data-head="{head}" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}"'
    )
    value = grid.values.get(key)
    if value is None:
        return [
            f'<rect class="head missing" {position} fill="#fff" stroke="#999" '
            f'stroke-dasharray="2 2"><title>L{layer}.{grid.unit}{head}: not evaluated</title></rect>'
        ]
    fill = ramp(value / grid.high if grid.high > 0 else 0.0)
    shown = _grid_value(grid, value)
    classes = ["head"]
    stroke = 'stroke="#fff" stroke-width="0.5"'
    if key in grid.outlined:
        classes.append("outlined")
        outlines.append(
            f'<rect class="outline" x="{x + 1.25:.1f}" y="{y + 1.25:.1f}" '
            f'width="{width - 2.5:.1f}" height="{height - 2.5:.1f}" fill="none" stroke="#000" '
            'stroke-width="2.5"/>'
        )
    elif grid.signed and value < 0:
        classes.append("negative")
        stroke = 'stroke="#444" stroke-width="1.2" stroke-dasharray="3 2"'
    detail = grid.details.get(key, "")
    tip = f"L{layer}.{grid.unit}{head}: {grid.what} {shown}" + (f" ({detail})" if detail else "")
    parts = [
        f'<rect class="{" ".join(classes)}" {position} data-value="{value:.4f}" fill="{fill}" '
        f"{stroke}><title>{esc(tip)}</title></rect>"
    ]
    if cells.text:
        ink = " dark" if _dark(fill) else ""
        parts.append(
            f'<text class="v{ink}" x="{x + width / 2:.1f}" y="{y + height / 2 + 3.5:.1f}" '
            f'text-anchor="middle">{esc(shown)}</text>'
        )
    return parts


def _grid_legend(grid: Grid, left: float, y: float) -> tuple[str, float]:
    """The ramp in steps with its ends and middle labelled, then the outline keys; and where it ends."""
    steps, width = 9, 18.0
    parts = [f'<text class="small" x="{left:.1f}" y="{y + 4:.1f}">{esc(grid.what)}</text>']
    x0 = left + 8 + 7 * len(grid.what)
    for step in range(steps):
        share = step / (steps - 1)
        parts.append(
            f'<rect class="scale" x="{x0 + step * width:.1f}" y="{y - 8:.1f}" width="{width:.1f}" '
            f'height="14" fill="{ramp(share)}" stroke="#999" stroke-width="0.5"/>'
        )
    for share in (0.0, 0.5, 1.0):
        parts.append(
            f'<text class="small" x="{x0 + share * (steps - 1) * width + width / 2:.1f}" y="{y + 20:.1f}" '
            f'text-anchor="middle">{share * grid.high:.2f}{"+" if share == 1.0 else ""}</text>'
        )
    x = x0 + steps * width + 24
    keys = []
    if grid.outline_label:
        keys.append(('stroke="#000" stroke-width="2.5"', grid.outline_label))
    if grid.dashed_label:
        keys.append(('stroke="#444" stroke-width="1.2" stroke-dasharray="3 2"', grid.dashed_label))
    for stroke, name in keys:
        parts.append(
            f'<rect x="{x:.1f}" y="{y - 8:.1f}" width="16" height="14" fill="{RAMP[2]}" {stroke}/>'
            f'<text class="small" x="{x + 22:.1f}" y="{y + 3:.1f}">{esc(name)}</text>'
        )
        x += 40 + 6 * len(name)
    return "".join(parts), x


# ------------------------------------------------------------------------------------------ bars
@dataclass(frozen=True)
class Bar:
    """One bar: its value, tooltip, optional interval, extra classes and ``data-*`` attributes."""

    value: float
    tip: str
    low: float = math.nan
    high: float = math.nan
    mark: str = ""
    data: Mapping[str, str] = field(default_factory=dict)


#: How a marked bar is drawn: its outline and the symbol above it (so a mark reads without colour).
MARKS = {
    "picked": ('stroke="#000" stroke-width="2.5"', "▼"),
    "least": ('stroke="#000" stroke-width="2.5" stroke-dasharray="5 3"', "▽"),
    "ineligible": ('stroke="#555" stroke-width="1.2" stroke-dasharray="2 2"', ""),
}
PLAIN = 'stroke="#000" stroke-width="0.5"'


@dataclass(frozen=True)
class Series:
    """A bar series: its name in the legend, class name, colour, and whether its bars are hatched."""

    name: str
    css: str
    colour: str = BASELINE_COLOUR
    hatched: bool = False


BarGroups = Sequence[tuple[str, Sequence[Bar | None]]]


@dataclass(frozen=True)
class _Scale:
    """The value axis: ``bottom``..``top`` drawn from ``y0`` down ``plot`` pixels."""

    bottom: float
    top: float
    y0: float = 30.0
    plot: float = 170.0

    def y(self, value: float) -> float:
        span = self.top - self.bottom
        share = (value - self.bottom) / span if span > 0 else 0.0
        return self.y0 + self.plot * (1 - min(max(share, 0.0), 1.0))


def _scale(groups: BarGroups, low: float | None, high: float | None) -> _Scale:
    """Zero to a round number above the highest value or interval end (below zero when one is negative),
    unless ``low`` or ``high`` fix an end."""
    bars = [b for _, entries in groups for b in entries if b is not None]
    ends = [b.value for b in bars if math.isfinite(b.value)]
    ends += [v for b in bars for v in (b.low, b.high) if math.isfinite(v)]
    top = high if high is not None else nice_scale(max([0.0, *ends]))
    bottom = low if low is not None else (-nice_scale(-min(ends)) if ends and min(ends) < 0 else 0.0)
    return _Scale(bottom, top)


def _ticks(scale: _Scale, left: float, width: float, counts: bool) -> list[str]:
    """Grid lines at both ends, zero and the middle, labelled on the left."""
    middle = (scale.top + scale.bottom) / 2
    parts = []
    for tick in sorted({scale.bottom, 0.0, scale.top, math.floor(middle) if counts else middle}):
        dash = "" if tick == 0 else ' stroke-dasharray="2 3"'
        y = scale.y(tick)
        parts.append(
            f'<line x1="{left}" x2="{left + width:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#999"{dash}/><text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{tick:.{0 if counts else 2}f}</text>"
        )
    return parts


def bar_chart(
    chart_id: str,
    groups: BarGroups,
    series: Sequence[Series],
    *,
    title: str,
    x_title: str,
    low: float | None = None,
    high: float | None = None,
    marks: Sequence[tuple[str, str]] = (),
    css: str = "",
    counts: bool = False,
) -> str:
    """Vertical bars from a zero line, one group per label and one bar per series in it (``None``: none).

    Values are printed above bars wide enough, intervals drawn as whiskers; a bar with ``mark`` set gets
    a thick outline and a ▼ above it, and ``marks`` names those outlines in the legend. ``counts``: whole
    numbers (ticks and labels without decimals)."""
    scale = _scale(groups, low, high)
    left = 64.0
    width = min(CHART_WIDTH - left, max(200.0, 56.0 * len(groups) * len(series)))
    parts = [f"<defs>{''.join(_hatch(chart_id, s) for s in series if s.hatched)}</defs>"]
    parts += _ticks(scale, left, width, counts)
    base = scale.y0 + scale.plot + 14
    parts += _bar_groups(chart_id, groups, series, scale, left, width, base, 0 if counts else 2)
    parts.append(f'<text x="{left + width / 2:.1f}" y="{base + 16:.1f}" text-anchor="middle">{esc(x_title)}</text>')
    middle = scale.y0 + scale.plot / 2
    parts.append(f'<text transform="translate(14 {middle:.1f}) rotate(-90)" text-anchor="middle">{esc(title)}</text>')
    legend, legend_end = _bar_legend(chart_id, series, marks, left, base + 40)
    parts.append(legend)
    total, bottom = max(left + width, legend_end) + 16, base + 56
    return (
        f'<svg class="bar-chart {esc(css)}" id="{esc(chart_id)}" data-groups="{len(groups)}" role="img" '
        f'aria-label="{esc(title)} per {esc(x_title)}" viewBox="0 0 {total:.0f} {bottom:.0f}" '
        f'width="{total:.0f}" height="{bottom:.0f}">' + "".join(parts) + "</svg>"
    )


def _bar_groups(
    chart_id: str,
    groups: BarGroups,
    series: Sequence[Series],
    scale: _Scale,
    left: float,
    width: float,
    base: float,
    digits: int,
) -> list[str]:
    """Each group's label (every n-th where they would crowd) and its bars."""
    step = width / max(len(groups), 1)
    bar = min(34.0, step * 0.8 / max(len(series), 1))
    label_every = max(1, math.ceil(len(groups) / 40))
    parts = []
    for index, (label, bars) in enumerate(groups):
        centre = left + step * (index + 0.5)
        if index % label_every == 0:
            parts.append(
                f'<text class="small" x="{centre:.1f}" y="{base:.1f}" text-anchor="middle">{esc(label)}</text>'
            )
        for number, (entry, kind) in enumerate(zip(bars, series)):
            if entry is not None:
                x = centre - bar * len(series) / 2 + bar * number
                parts.append(_bar_svg(chart_id, entry, kind, x, bar, scale.y, digits))
    return parts


def _hatch(chart_id: str, series: Series) -> str:
    return (
        f'<pattern id="{esc(chart_id)}-{esc(series.css)}" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{series.colour}" stroke-width="3.5"/></pattern>'
    )


def _fill(chart_id: str, series: Series) -> str:
    return f"url(#{esc(chart_id)}-{esc(series.css)})" if series.hatched else series.colour


def _bar_svg(
    chart_id: str, entry: Bar, kind: Series, x: float, width: float, y: Callable[[float], float], digits: int
) -> str:
    data = "".join(f' data-{esc(k)}="{esc(v)}"' for k, v in entry.data.items())
    classes = " ".join(filter(None, ["bar", kind.css, entry.mark]))
    if not math.isfinite(entry.value):
        return (
            f'<text class="{classes} missing"{data} x="{x + width / 2:.1f}" y="{y(0.0) - 4:.1f}" '
            f'text-anchor="middle">·<title>{esc(entry.tip)}</title></text>'
        )
    y0, y1 = sorted((y(0.0), y(entry.value)))
    stroke, symbol = MARKS.get(entry.mark, (PLAIN, ""))
    parts = [
        f'<rect class="{classes}"{data} data-value="{entry.value:.4f}" x="{x:.1f}" y="{y0:.1f}" '
        f'width="{width:.1f}" height="{max(y1 - y0, 0.5):.1f}" fill="{_fill(chart_id, kind)}" {stroke}>'
        f"<title>{esc(entry.tip)}</title></rect>"
    ]
    centre = x + width / 2
    if math.isfinite(entry.low) and math.isfinite(entry.high):
        a, b = y(entry.low), y(entry.high)
        parts.append(
            f'<path class="interval" d="M{centre - 4:.1f} {a:.1f}H{centre + 4:.1f}M{centre:.1f} {a:.1f}'
            f'V{b:.1f}M{centre - 4:.1f} {b:.1f}H{centre + 4:.1f}" stroke="#000" stroke-width="1.2" '
            'fill="none"/>'
        )
    label_y = min(y0, y(entry.high) if math.isfinite(entry.high) else y0) - 4
    if symbol:
        parts.append(
            f'<text x="{centre:.1f}" y="{label_y - (12 if width >= 24 else 0):.1f}" '
            f'text-anchor="middle">{symbol}</text>'
        )
    if width >= 24:
        parts.append(
            f'<text class="small" x="{centre:.1f}" y="{label_y:.1f}" text-anchor="middle">'
            f"{entry.value:.{digits}f}</text>"
        )
    return "".join(parts)


def _bar_legend(
    chart_id: str, series: Sequence[Series], marks: Sequence[tuple[str, str]], x: float, y: float
) -> tuple[str, float]:
    keys = [
        (
            f'<rect x="0" y="-6" width="16" height="12" fill="{_fill(chart_id, s)}" stroke="#000" stroke-width="0.5"/>',
            s.name,
        )
        for s in series
        if len(series) > 1 or marks
    ]
    keys += [
        (
            f'<rect x="0" y="-6" width="16" height="12" fill="#fff" {MARKS[mark][0]}/>',
            f"{MARKS[mark][1]} {name}".strip(),
        )
        for mark, name in marks
    ]
    parts = []
    for shape, name in keys:
        parts.append(f'<g transform="translate({x:.1f} {y:.1f})">{shape}<text x="22" y="4">{esc(name)}</text></g>')
        x += 36 + 6.5 * len(name)
    return "".join(parts), x
