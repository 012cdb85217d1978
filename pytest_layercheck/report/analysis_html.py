"""One self-contained HTML page per analysis result: ``heads``, ``retrieval-heads``, ``redundancy``,
``thinking`` and ``transfer``.

The pages look like the depth report's (:mod:`.html`: its CSS and its escaping) and, like it, load
nothing: inline CSS and SVG only, no script, a Content-Security-Policy that forbids every fetch. The
tables are the terminal's and the markdown's rows (:mod:`.heads`, :mod:`.analyses`), so every renderer
shows the same numbers; the pictures are what a table hides:

* head importance and retrieval scores as a layer × head grid: one ``rect.head`` per head with
  ``data-layer``/``data-head``/``data-value``, its number printed in the cell where the cell is wide
  enough and always in a ``<title>`` tooltip. The fill is a single-hue sequential ramp (ColorBrewer
  Blues: colour-blind safe, lightness strictly falling with the value, so it prints in greyscale);
  critical or retrieval heads carry a thick black outline, heads whose masking raised the metric a
  dashed one;
* redundancy as bars per layer (Block Influence of every layer, the angular distance of the block
  starting there with its standard error) and, per capability view, the drop from removing each
  evaluated block;
* thinking as fast vs slow accuracy and corrections vs overthinking per group, and the items that
  changed; transfer as stability and kappa with their CIs per suite and domain, and the items whose
  variants disagree.

A second series is hatched, a pick is outlined and marked, so no meaning rests on colour alone. Every
string from data (names, prompts, answers, generations) goes through :func:`.html.esc`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_layercheck.report.depth_strip import nice_scale
from pytest_layercheck.report.html import (
    BASELINE_COLOUR,
    MAX_ITEMS,
    MAX_PROMPT,
    RUN_COLOUR,
    esc,
    flat_settings,
    meta_list,
    page_shell,
)

if TYPE_CHECKING:
    from pytest_layercheck.analysis.heads import HeadImportance
    from pytest_layercheck.analysis.redundancy import RedundancyComparison, RedundancyResult, ViewVerdict
    from pytest_layercheck.analysis.retrieval_heads import MaskingComparison, RetrievalHeads
    from pytest_layercheck.analysis.thinking import ThinkingResult
    from pytest_layercheck.analysis.transfer import TransferStability

Rows = tuple[list[str], list[list[str]]]
HeadKey = tuple[int, int]

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


def _lines(lines: Iterable[str], css: str = "lines") -> str:
    items = "".join(f"<li>{esc(line)}</li>" for line in lines)
    return f'<ul class="{css}">{items}</ul>' if items else ""


def _settings(title: str, settings: Mapping[str, Any]) -> str:
    return meta_list(title, flat_settings("", dict(settings))) if settings else ""


def _cut(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_PROMPT else text[:MAX_PROMPT] + " …"


def _num(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


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

    values: Mapping[HeadKey, float]
    layers: Sequence[int]
    heads: int
    high: float
    what: str  # "drop" or "score": the tooltip's word
    unit: str = "H"
    outlined: frozenset[HeadKey] = frozenset()
    outline_label: str = ""
    dashed_label: str = ""
    details: Mapping[HeadKey, str] = field(default_factory=dict)
    signed: bool = False


def head_grid(grid: Grid) -> str:
    """Layers (rows) × heads (columns), one ``rect.head`` per pair (``rect.head.missing`` where a head
    was not evaluated), then the colour scale and the outline keys."""
    left, top = 48.0, 30.0
    cell = max(CELL_MIN, min(CELL_MAX, (CHART_WIDTH - left) / max(grid.heads, 1)))
    height = 20.0 if cell >= CELL_TEXT else max(CELL_MIN, min(20.0, cell))
    text = cell >= CELL_TEXT
    parts: list[str] = []
    outlines: list[str] = []
    every = max(1, math.ceil(grid.heads / 32))
    parts += [
        f'<text class="small" x="{left + cell * (h + 0.5):.1f}" y="{top - 8:.1f}" text-anchor="middle">'
        f"{grid.unit}{h}</text>"
        for h in range(0, grid.heads, every)
    ]
    rows_every = max(1, math.ceil(len(grid.layers) / 60)) if height < 12 else 1
    for row, layer in enumerate(grid.layers):
        y = top + row * height
        if row % rows_every == 0:
            parts.append(
                f'<text class="small" x="{left - 6:.1f}" y="{y + height / 2 + 4:.1f}" text-anchor="end">L{layer}</text>'
            )
        for head in range(grid.heads):
            x = left + head * cell
            key = (layer, head)
            value = grid.values.get(key)
            position = (
                f'data-layer="{layer}" data-head="{head}" x="{x:.1f}" y="{y:.1f}" width="{cell:.1f}" '
                f'height="{height:.1f}"'
            )
            if value is None:
                parts.append(
                    f'<rect class="head missing" {position} fill="#fff" stroke="#999" '
                    f'stroke-dasharray="2 2"><title>L{layer}.{grid.unit}{head}: not evaluated</title></rect>'
                )
                continue
            fill = ramp(value / grid.high if grid.high > 0 else 0.0)
            shown = f"{value:+.2f}" if grid.signed else f"{value:.2f}"
            if not math.isfinite(value):
                shown = "n/a"
            elif abs(value) < 5e-13:
                shown = "·"  # as the terminal's grid: masking changed nothing
            classes = ["head"]
            stroke = 'stroke="#fff" stroke-width="0.5"'
            if key in grid.outlined:  # the outline itself is drawn over every cell, below
                classes.append("outlined")
                outlines.append(
                    f'<rect class="outline" x="{x + 1.25:.1f}" y="{y + 1.25:.1f}" '
                    f'width="{cell - 2.5:.1f}" height="{height - 2.5:.1f}" fill="none" stroke="#000" '
                    'stroke-width="2.5"/>'
                )
            elif grid.signed and value < 0:
                classes.append("negative")
                stroke = 'stroke="#444" stroke-width="1.2" stroke-dasharray="3 2"'
            detail = grid.details.get(key, "")
            tip = f"L{layer}.{grid.unit}{head}: {grid.what} {shown}" + (f" ({detail})" if detail else "")
            parts.append(
                f'<rect class="{" ".join(classes)}" {position} data-value="{value:.4f}" fill="{fill}" '
                f"{stroke}><title>{esc(tip)}</title></rect>"
            )
            if text:
                ink = " dark" if _dark(fill) else ""
                parts.append(
                    f'<text class="v{ink}" x="{x + cell / 2:.1f}" y="{y + height / 2 + 3.5:.1f}" '
                    f'text-anchor="middle">{esc(shown)}</text>'
                )
    parts += outlines
    bottom = top + len(grid.layers) * height + 16
    legend, legend_end = _grid_legend(grid, left, bottom)
    parts.append(legend)
    total_width = max(left + cell * grid.heads, legend_end) + 16
    label = (
        f"{grid.what} per head: {len(grid.layers)} layers × {grid.heads} heads, darker = higher "
        f"(full scale {grid.high:.2f})"
    )
    return (
        f'<svg class="head-grid" data-layers="{len(grid.layers)}" data-heads="{grid.heads}" role="img" '
        f'aria-label="{esc(label)}" viewBox="0 0 {total_width:.0f} {bottom + 40:.0f}" '
        f'width="{total_width:.0f}" height="{bottom + 40:.0f}">' + "".join(parts) + "</svg>"
    )


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


def bar_chart(
    chart_id: str,
    groups: Sequence[tuple[str, Sequence[Bar | None]]],
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
    values = [b.value for _, bars in groups for b in bars if b is not None and math.isfinite(b.value)]
    ends = values + [
        v for _, bars in groups for b in bars if b is not None for v in (b.low, b.high) if math.isfinite(v)
    ]
    top_value = high if high is not None else nice_scale(max([0.0, *ends]))
    bottom_value = low if low is not None else (-nice_scale(-min(ends)) if ends and min(ends) < 0 else 0.0)
    left, top, plot = 64.0, 30.0, 170.0
    width = min(CHART_WIDTH - left, max(200.0, 56.0 * len(groups) * len(series)))
    step = width / max(len(groups), 1)
    bar = min(34.0, step * 0.8 / max(len(series), 1))

    def y(value: float) -> float:
        span = top_value - bottom_value
        share = (value - bottom_value) / span if span > 0 else 0.0
        return top + plot * (1 - min(max(share, 0.0), 1.0))

    parts = [f"<defs>{''.join(_hatch(chart_id, s) for s in series if s.hatched)}</defs>"]
    middle_tick = (top_value + bottom_value) / 2
    for tick in sorted({bottom_value, 0.0, top_value, math.floor(middle_tick) if counts else middle_tick}):
        dash = "" if tick == 0 else ' stroke-dasharray="2 3"'
        parts.append(
            f'<line x1="{left}" x2="{left + width:.1f}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            f'stroke="#999"{dash}/><text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">'
            f"{tick:.{0 if counts else 2}f}</text>"
        )
    label_every = max(1, math.ceil(len(groups) / 40))
    base = top + plot + 14
    for index, (label, bars) in enumerate(groups):
        centre = left + step * (index + 0.5)
        if index % label_every == 0:
            parts.append(
                f'<text class="small" x="{centre:.1f}" y="{base:.1f}" text-anchor="middle">{esc(label)}</text>'
            )
        for number, (entry, kind) in enumerate(zip(bars, series)):
            if entry is None:
                continue
            x = centre - bar * len(series) / 2 + bar * number
            parts.append(_bar_svg(chart_id, entry, kind, x, bar, y, 0 if counts else 2))
    parts.append(f'<text x="{left + width / 2:.1f}" y="{base + 16:.1f}" text-anchor="middle">{esc(x_title)}</text>')
    middle = top + plot / 2
    parts.append(f'<text transform="translate(14 {middle:.1f}) rotate(-90)" text-anchor="middle">{esc(title)}</text>')
    legend, legend_end = _bar_legend(chart_id, series, marks, left, base + 40)
    parts.append(legend)
    total, bottom = max(left + width, legend_end) + 16, base + 56
    return (
        f'<svg class="bar-chart {esc(css)}" id="{esc(chart_id)}" data-groups="{len(groups)}" role="img" '
        f'aria-label="{esc(title)} per {esc(x_title)}" viewBox="0 0 {total:.0f} {bottom:.0f}" '
        f'width="{total:.0f}" height="{bottom:.0f}">' + "".join(parts) + "</svg>"
    )


def _hatch(chart_id: str, series: Series) -> str:
    return (
        f'<pattern id="{esc(chart_id)}-{esc(series.css)}" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{series.colour}" stroke-width="3.5"/></pattern>'
    )


def _fill(chart_id: str, series: Series) -> str:
    return f"url(#{esc(chart_id)}-{esc(series.css)})" if series.hatched else series.colour


def _bar_svg(chart_id: str, entry: Bar, kind: Series, x: float, width: float, y: Any, digits: int) -> str:
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


# ----------------------------------------------------------------------------------------- heads
def render_heads_html(result: HeadImportance, top: int = 15) -> str:
    """Head importance: the summary, the layer × head grid of drops, the drop per layer, the ranking."""
    from pytest_layercheck.report.heads import importance_rows, importance_summary, importance_title

    drops = result.drops
    positive = max([d for d in drops.values() if math.isfinite(d)], default=0.0)
    letter = "G" if result.unit == "group" else "H"
    grid = Grid(
        values=drops,
        layers=result.layers,
        heads=result.heads_per_layer,
        high=nice_scale(max(positive, 0.0)),
        what="drop",
        unit=letter,
        outlined=frozenset(result.critical_heads()),
        signed=True,
        outline_label=f"critical (top 5% of {result.unit}s by drop)",
        dashed_label="masking raised the metric",
        details={
            key: f"{result.metric} {value:.3f} masked, {result.intact:.3f} intact"
            for key, value in result.accuracy.items()
        },
    )
    totals = result.layer_totals()
    bars = [
        (f"L{layer}", [Bar(total, f"L{layer}: positive drops sum to {total:.3f}", data={"layer": str(layer)})])
        for layer, total in totals.items()
    ]
    parts = [
        f'<p class="summary">{esc(importance_summary(result))}</p>',
        f"<h2>Drop per {esc(result.unit)}</h2>",
        f'<p class="muted">{esc(result.metric)} intact − {esc(result.metric)} with the {esc(result.unit)} '
        f"masked ({esc(result.mode)} masking); darker = masking costs more. Hover a cell for its numbers.</p>",
        head_grid(grid),
        "<h2>Where in depth</h2>",
        bar_chart(
            "layer-totals",
            bars,
            [Series("sum of positive drops", "total")],
            title="sum of positive drops",
            x_title="layer",
            css="per-layer",
        ),
        f"<h2>Top {min(top, result.num_units)} {esc(result.unit)}s</h2>",
        table(importance_rows(result, top), lead=1, css="ranking"),
        _settings(
            "settings",
            {
                "model": result.model,
                "suite": result.suite,
                "protocol": result.protocol,
                "items": len(result.item_ids),
                **result.settings,
            },
        ),
    ]
    return page(importance_title(result), parts)


def render_retrieval_html(heads: RetrievalHeads, comparison: MaskingComparison | None = None, top: int = 20) -> str:
    """Retrieval heads: the grid of retrieval scores, the ranking, the masking comparison, the needle tests."""
    from pytest_layercheck.report.heads import (
        masking_rows,
        masking_summary,
        masking_title,
        retrieval_rows,
        retrieval_summary,
        retrieval_title,
    )

    peak = max([s for s in heads.scores.values() if math.isfinite(s)], default=0.0)
    grid = Grid(
        values=heads.scores,
        layers=range(heads.num_layers),
        heads=heads.num_heads,
        high=nice_scale(max(peak, heads.threshold)),
        what="score",
        outlined=frozenset(heads.retrieval_heads),
        outline_label=f"retrieval head (score > {heads.threshold:g})",
    )
    parts = [
        f'<p class="summary">{esc(retrieval_summary(heads))}</p>',
        "<h2>Retrieval score per head</h2>",
        '<p class="muted">share of the needle tokens each head copied while the model answered '
        "(mean over the valid tests); darker = more retrieval.</p>",
        head_grid(grid),
        f"<h2>Top {min(top, len(heads.scores))} heads</h2>",
        table(retrieval_rows(heads, top), lead=1, css="ranking"),
    ]
    if comparison is not None:
        parts += [
            f"<h2>{esc(masking_title(comparison))}</h2>",
            table(masking_rows(comparison), css="masking"),
            f'<p class="summary">{esc(masking_summary(comparison))}</p>',
        ]
    if heads.tests:
        shown = heads.tests[:MAX_ITEMS]
        rows = [
            [
                t.id,
                t.size,
                f"{t.depth:.2f}",
                _cut(t.needle),
                _cut(t.answer),
                f"{t.recall:.2f}",
                "yes" if t.valid else "no",
            ]
            for t in shown
        ]
        parts += [
            "<h2>Needle tests</h2>",
            table(
                (["test", "size", "depth", "needle", "answer", "recall", "valid"], rows),
                lead=2,
                caption=f"{heads.valid_tests} of {len(heads.tests)} valid (recall > {heads.min_recall:g})"
                + (f"; the first {len(shown)} shown" if len(shown) < len(heads.tests) else ""),
                css="needles",
                text=(3, 4),
            ),
        ]
    parts.append(_settings("settings", {"model": heads.model, **heads.settings}))
    return page(retrieval_title(heads), parts)


# ------------------------------------------------------------------------------------ redundancy
def render_redundancy_html(result: RedundancyResult, comparison: RedundancyComparison | None = None) -> str:
    """Redundancy: Block Influence and angular distance per layer, the table, and the capability views."""
    from pytest_layercheck.report.analyses import (
        COMPARISON_CAPTION,
        comparison_rows,
        redundancy_caption,
        redundancy_rows,
        redundancy_title,
        span,
    )

    lowest = set(result.bi_suggested)
    influence = [
        (
            f"L{layer}",
            [
                Bar(
                    value,
                    f"L{layer}: BI {_num(value)}" + (" (lowest BI)" if layer in lowest else ""),
                    mark="picked" if layer in lowest else "",
                    data={"layer": str(layer)},
                )
            ],
        )
        for layer, value in enumerate(result.influence)
    ]
    picked = result.best_start
    distances: list[tuple[str, Sequence[Bar | None]]] = []
    for layer in range(result.num_layers):
        if layer >= len(result.distances):
            distances.append((f"L{layer}", [None]))
            continue
        d, se = result.distances[layer], result.distance_stderr[layer]
        eligible = layer in result.eligible
        tip = (
            f"block {span(result.block_layers(layer))}: d {_num(d)} ± {_num(se)}"
            + ("" if eligible else " (holds the last layer: never suggested)")
            + (" (the most prunable block)" if layer == picked else "")
        )
        distances.append(
            (
                f"L{layer}",
                [
                    Bar(
                        d,
                        tip,
                        d - se,
                        d + se,
                        "picked" if layer == picked else ("" if eligible else "ineligible"),
                        {"layer": str(layer)},
                    )
                ],
            )
        )
    n = result.block
    parts = [
        f'<p class="summary">{esc(redundancy_caption(result))}</p>',
        "<h2>Block Influence per layer (ShortGPT)</h2>",
        '<p class="muted">1 − cosine similarity of a layer\'s input and output, averaged over tokens: low = the '
        "layer changes little.</p>",
        bar_chart(
            "influence",
            influence,
            [Series("Block Influence", "bi")],
            title="BI",
            x_title="layer",
            marks=[("picked", f"the {n} lowest-BI layer(s)")],
            css="per-layer",
        ),
        f"<h2>Angular distance of the {n}-layer block starting at each layer (Gromov et al.)</h2>",
        '<p class="muted">d(l, l+n) on the last real token, with ± one standard error; low = the block '
        "changes the stream little. A block holding the last layer is never suggested.</p>",
        bar_chart(
            "distance",
            distances,
            [Series("angular distance", "distance", RUN_COLOUR, hatched=True)],
            title=f"d(l, l+{n})",
            x_title="first layer of the block",
            marks=[
                ("picked", f"most prunable block {span(result.suggested)}"),
                ("ineligible", "holds the last layer: never suggested"),
            ],
            css="per-layer",
        ),
        "<h2>Per layer</h2>",
        table(redundancy_rows(result), css="redundancy"),
    ]
    if comparison is not None:
        parts += [
            f"<h2>The suggestion vs measured capability drops ({esc(comparison.limit or 'all')} items per "
            f"suite; agrees = within {comparison.tolerance:g} of the least harmful evaluated block)</h2>",
            table(comparison_rows(comparison), COMPARISON_CAPTION, css="views"),
            _lines(comparison.summary()),
        ]
        parts += [_view_chart(index, verdict) for index, verdict in enumerate(comparison.verdicts)]
        parts.append(_lines(comparison.notes, "lines muted"))
    parts.append(
        _settings(
            "run",
            {
                "model": result.model,
                "prompts": result.prompts,
                "tokens": result.tokens,
                "sources": ", ".join(result.sources),
            },
        )
    )
    return page(redundancy_title(result), parts)


def _view_chart(index: int, verdict: ViewVerdict) -> str:
    """One capability view: the drop from removing each evaluated block, the pick and the least harmful marked."""
    view = verdict.view
    groups = []
    for start in sorted(view.after):
        drop = view.drop(start)
        notes = [
            note
            for note, at in (("the metric's pick", verdict.suggested), ("least harmful", verdict.least_harmful))
            if start == at
        ]
        groups.append(
            (
                f"L{start}",
                [
                    Bar(
                        drop,
                        f"block at L{start}: drop {drop:+.3f} "
                        f"({view.accuracy(start):.3f} vs {view.intact_accuracy:.3f} intact)"
                        + (f"; {', '.join(notes)}" if notes else ""),
                        mark="picked"
                        if start == verdict.suggested
                        else ("least" if start == verdict.least_harmful else ""),
                        data={"layer": str(start)},
                    )
                ],
            )
        )
    return (
        f"<h3>{esc(view.label)}: {esc(view.metric)} lost when each evaluated block is removed "
        f"({esc(verdict.status)})</h3>"
        + bar_chart(
            f"view-{index}",
            groups,
            [Series("drop", "drop")],
            title=f"drop in {view.metric}",
            x_title="first layer of the removed block",
            marks=[("picked", "the metric's pick"), ("least", "least harmful")],
            css="view",
        )
    )


# -------------------------------------------------------------------------------------- thinking
def render_thinking_html(result: ThinkingResult, fine: bool = True) -> str:
    """Fast vs slow: accuracy and corrections vs overthinking per group, the tables, the items that changed."""
    from pytest_layercheck.report.analyses import THINKING_CAPTION, thinking_rows, thinking_title

    shifts = result.shifts()
    fast, slow = Series("fast (direct)", "fast"), Series("slow (chain of thought)", "slow", RUN_COLOUR, hatched=True)
    accuracy = [
        (
            s.group,
            [
                Bar(s.fast_accuracy, f"{s.group}: fast {_num(s.fast_accuracy)} of {s.items}", data={"group": s.group}),
                Bar(s.slow_accuracy, f"{s.group}: slow {_num(s.slow_accuracy)} of {s.items}", data={"group": s.group}),
            ],
        )
        for s in shifts
    ]
    wrong, right = (
        Series("corrections (wrong → right)", "corrections"),
        Series("overthinking (right → wrong)", "overthinking", RUN_COLOUR, hatched=True),
    )
    flips = [
        (
            s.group,
            [
                Bar(float(s.corrections), f"{s.group}: {s.corrections} corrections", data={"group": s.group}),
                Bar(float(s.overthinking), f"{s.group}: {s.overthinking} overthinking", data={"group": s.group}),
            ],
        )
        for s in shifts
    ]
    peak = max([float(s.corrections) for s in shifts] + [float(s.overthinking) for s in shifts] + [1.0])
    parts = [
        "<h2>Accuracy per group</h2>",
        bar_chart("accuracy", accuracy, [fast, slow], title="accuracy", x_title="group", low=0.0, high=1.0),
        "<h2>Items that changed answer</h2>",
        bar_chart(
            "flips", flips, [wrong, right], title="items", x_title="group", low=0.0, high=math.ceil(peak), counts=True
        ),
        table(thinking_rows(result), THINKING_CAPTION, css="groups"),
    ]
    if fine:
        parts += ["<h3>Per domain</h3>", table(thinking_rows(result, fine=True), css="domains")]
    changed = [p for p in result.items if p.fast.correct != p.slow.correct]
    if changed:
        shown = changed[:MAX_ITEMS]
        rows = [
            [
                p.item_id,
                f"{p.suite}/{p.domain}",
                "correction" if p.slow.correct else "overthinking",
                p.target,
                p.fast.answer or "(none)",
                p.slow.answer or "(none)",
                _cut(p.slow_text),
            ]
            for p in shown
        ]
        more = (
            f"; the first {len(shown)} of {len(changed)} shown (--json has every one)"
            if len(shown) < len(changed)
            else ""
        )
        parts += [
            "<h3>The items</h3>",
            table(
                (["item", "domain", "change", "gold", "fast answer", "slow answer", "chain of thought"], rows),
                "answers after extraction" + more,
                lead=3,
                css="items",
                text=(3, 4, 5, 6),
            ),
        ]
    parts.append(_settings("settings", {"model": result.model, **result.settings}))
    return page(thinking_title(result), parts)


# -------------------------------------------------------------------------------------- transfer
def render_transfer_html(results: Sequence[TransferStability], by_domain: bool = True) -> str:
    """Transfer: stability and kappa with their CIs per suite (and domain), the table, the unstable items."""
    from pytest_layercheck.report.analyses import transfer_rows, transfer_title

    stability, kappa = Series("stability", "stability"), Series("kappa", "kappa", RUN_COLOUR, hatched=True)
    groups = []
    for r in results:
        scores = [(r.suite, r.score)] + ([(f"{r.suite}/{d}", s) for d, s in r.by_domain.items()] if by_domain else [])
        for label, s in scores:
            groups.append(
                (
                    label,
                    [
                        Bar(
                            s.stability,
                            f"{label}: stability {_num(s.stability)} [{_num(s.stability_ci[0], 2)}, "
                            f"{_num(s.stability_ci[1], 2)}]",
                            *s.stability_ci,
                            data={"suite": r.suite},
                        ),
                        Bar(
                            s.kappa,
                            f"{label}: kappa {_num(s.kappa)} [{_num(s.kappa_ci[0], 2)}, {_num(s.kappa_ci[1], 2)}]",
                            *s.kappa_ci,
                            data={"suite": r.suite},
                        ),
                    ],
                )
            )
    parts = [
        "<h2>Stability and agreement</h2>",
        '<p class="muted">stability = P(variant right | original right); kappa = chance-corrected agreement of '
        "original and variant outcomes (0 = no transfer). Whiskers: seeded bootstrap 95% CIs over original "
        "items.</p>",
        bar_chart("transfer", groups, [stability, kappa], title="stability, kappa", x_title="suite / domain", high=1.0),
        table(
            transfer_rows(results, by_domain),
            "CIs: seeded bootstrap over original items (with all their variants).",
            css="transfer",
        ),
    ]
    for r in results:
        mixed = [p for p in r.pairs if any(v != p.correct for v in p.variant_correct)]
        if not mixed:
            continue
        shown = mixed[:MAX_ITEMS]
        rows = [
            [
                p.item_id,
                p.domain,
                "right" if p.correct else "wrong",
                f"{sum(p.variant_correct)} of {len(p.variant_correct)} right",
                ", ".join(p.variant_ids),
            ]
            for p in shown
        ]
        more = f"; the first {len(shown)} of {len(mixed)} shown" if len(shown) < len(mixed) else ""
        parts += [
            f"<h3>{esc(r.suite)}: items whose variants went the other way</h3>",
            table(
                (["item", "domain", "original", "variants", "variant ids"], rows),
                "an original and a variant disagree" + more,
                lead=2,
                css="items",
                text=(4,),
            ),
        ]
    return page(transfer_title(results), parts)
