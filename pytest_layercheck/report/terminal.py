"""The profile (and its comparison with the baseline) for ``layercheck profile`` and pytest's terminal summary.

The capability × band table, a per-layer heat strip of where each capability lives (``depth_strip``),
and, against a baseline, the per-cell evidence table, a strip of where it moved, and the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypedDict

from rich import box
from rich.box import Box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from pytest_layercheck.data.profile_data import DepthProfile
from pytest_layercheck.evaluation.comparison_result import CellComparison, ProfileComparison
from pytest_layercheck.report.depth_strip import delta_strip, profile_strip
from pytest_layercheck.report.format import (
    LEGEND,
    criteria_text,
    describe_change,
    describe_detail,
    fmt_delta,
    fmt_p,
    marker,
    render_text,
    status_line,
    title_text,
)
from pytest_layercheck.report.table import TableCell, build_table

STYLES = {"regressed": "bold red", "moved": "bold red", "changed": "yellow", "improved": "green"}


def _style(cell: TableCell) -> str:
    return "bold red" if cell.failed else STYLES.get(cell.status or "", "")


class Fitting:
    """The first of several layouts (widest first) that fits the console without cutting a cell; the
    last one when none does. Lets a table lighten its frame, drop columns or stack cells on narrow
    consoles.

    A layout is a renderable, or a pair (renderable, probe) where the probe is what is measured: a
    table whose wrapping columns hold only their longest word, since those may wrap and still read.
    """

    def __init__(self, *layouts: RenderableType | tuple[RenderableType, RenderableType]) -> None:
        self.layouts = [layout if isinstance(layout, tuple) else (layout, layout) for layout in layouts]

    def pick(self, console: Console, options: ConsoleOptions) -> RenderableType:
        unbounded = options.update(max_width=10_000)
        for renderable, probe in self.layouts:
            if Measurement.get(console, unbounded, probe).maximum <= options.max_width:
                return renderable
        return self.layouts[-1][0]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.pick(console, options)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.pick(console, options))


class TableFrame(TypedDict, total=False):
    """Keywords of :class:`rich.table.Table` that set its frame."""

    box: Box | None
    show_edge: bool
    pad_edge: bool
    collapse_padding: bool


#: Table keywords of the light frame narrow layouts use: a rule under the header, one space between columns.
LIGHT: TableFrame = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False, "collapse_padding": True}
#: The default frame: rich's own box.
BOXED: TableFrame = {}


def _longest_word(text: str) -> str:
    return max(text.split(), key=len, default="")


def rows_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    title: str | None = None,
    *,
    caption: str | None = None,
    lead: int = 1,
    light: bool = False,
    wrap: Sequence[int] = (),
) -> tuple[Table, Table]:
    """A table of plain strings (the first ``lead`` columns left-aligned, the rest right-aligned) and
    its probe for :class:`Fitting`. Only the columns in ``wrap`` (free text, such as notes) may wrap."""

    def build(probe: bool) -> Table:
        table = Table(
            title=title, title_justify="left", caption=caption, caption_justify="left", **(LIGHT if light else BOXED)
        )
        for index, header in enumerate(headers):
            table.add_column(
                _longest_word(header) if probe and index in wrap else header,
                justify="left" if index < lead else "right",
                no_wrap=index not in wrap,
            )
        for row in rows:
            table.add_row(*(_longest_word(cell) if probe and index in wrap else cell for index, cell in enumerate(row)))
        return table

    return build(False), build(True)


def records(
    headers: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None, *, caption: str | None = None
) -> Group:
    """The layout of last resort: one paragraph per row, ``header value`` pairs that wrap at any width."""
    parts: list[RenderableType] = [Text(title, style="italic")] if title else []
    for row in rows:
        fields = [
            f"{header} {cell}" if header else cell for header, cell in zip(headers[1:], row[1:], strict=True) if cell
        ]
        parts.append(Text.assemble((row[0].strip(), "bold"), "  ", " · ".join(fields)))
    if caption:
        parts.append(Text(caption, style="dim"))
    return Group(*parts)


def fitted_rows(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    title: str | None = None,
    *,
    caption: str | None = None,
    lead: int = 1,
    wrap: Sequence[int] = (),
) -> Fitting:
    """The boxed table where it fits; else the light frame; else one paragraph per row."""
    tables = (
        rows_table(headers, rows, title, caption=caption, lead=lead, wrap=wrap, light=light) for light in (False, True)
    )
    return Fitting(*tables, records(headers, rows, title, caption=caption))


def _stacked(text: str) -> str:
    """``0.280 (-0.150 ✗)`` -> two lines, value over change; ``shallow (L0-8)`` -> name over layers."""
    return text.replace(" (", "\n(", 1)


def profile_table(
    profile: DepthProfile,
    comparison: ProfileComparison | None = None,
    metrics: Sequence[str] | None = None,
    *,
    narrow: bool = False,
) -> Table:
    """Suites × bands with accuracy per cell (and Δ vs baseline, coloured by status).

    ``narrow``: a light frame, band headers and compared cells on two lines, no item-count column and
    no title (``fitted_profile_table`` prints both above the table), for consoles of about 80 columns.
    """
    model = build_table(profile, comparison, metrics)
    title = title_text(profile, comparison, metrics)
    keep = [i for i, header in enumerate(model.headers) if not (narrow and header == "items")]
    table = Table(
        title=None if narrow else title,
        title_justify="left",
        caption=LEGEND if comparison else None,
        caption_justify="left",
        **(LIGHT if narrow else BOXED),
    )
    for index in keep:
        header = model.headers[index]
        text_column = index < model.lead_columns and header != "items"
        table.add_column(
            _stacked(header) if narrow else header, justify="left" if text_column else "right", no_wrap=True
        )
    for row in model.rows:
        table.add_row(*(Text(_stacked(row[i].text) if narrow else row[i].text, style=_style(row[i])) for i in keep))
    return table


def fitted_profile_table(
    profile: DepthProfile, comparison: ProfileComparison | None = None, metrics: Sequence[str] | None = None
) -> Fitting:
    """The boxed table where it fits; else the narrow one, its title above it at the console's width."""
    narrow = profile_table(profile, comparison, metrics, narrow=True)
    title = Text(
        title_text(profile, comparison, metrics)
        + " · items: "
        + ", ".join(f"{name} {len(info.item_ids)}" for name, info in profile.suites.items()),
        style="italic",
    )
    return Fitting(profile_table(profile, comparison, metrics), (Group(title, narrow), narrow))


def _number(cell: CellComparison, name: str) -> float | None:
    """A statistic the comparison may carry (p_adjusted, detectable_drop, ci_low...); None when absent."""
    value = getattr(cell, name, None)
    return float(value) if isinstance(value, (int, float)) else None


def _interval(cell: CellComparison) -> str:
    low, high = _number(cell, "ci_low"), _number(cell, "ci_high")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return ""
    return f"[{low:+.2f}, {high:+.2f}]"


def _optional(value: float | None, fmt: Callable[[float], str]) -> str:
    return "" if value is None or math.isnan(value) else fmt(value)


def _detectable(value: float) -> str:
    """The smallest drop the cell's test catches; ``none`` when even losing every item would not be."""
    return f"{value:.3f}" if math.isfinite(value) else "none"


def _underpowered(cell: CellComparison) -> bool:
    detectable = _number(cell, "detectable_drop")
    return detectable is not None and detectable > cell.allowed + 1e-9


def evidence_table(comparison: ProfileComparison, *, interval: bool = True) -> Table | None:
    """One row per compared cell: change, its interval, raw and adjusted p, the detectable drop.

    Columns appear only for the statistics the comparison has. The test's name goes into the caption,
    per band when it differs (McNemar for intact cells, sign-flip for bands), so the table stays narrow.
    """
    cells = comparison.cells
    if not cells:
        return None
    columns: list[tuple[str, list[str]]] = [
        ("cell", [f"{c.suite}/{c.band}" for c in cells]),
        ("Δ", [fmt_delta(c.delta) for c in cells]),
        ("95% CI", [_interval(c) if interval else "" for c in cells]),
        ("p", [fmt_p(c.p_value) for c in cells]),
        ("p adj", [_optional(_number(c, "p_adjusted"), fmt_p) for c in cells]),
        (
            "detectable",
            [_optional(_number(c, "detectable_drop"), _detectable) + ("*" if _underpowered(c) else "") for c in cells],
        ),
        ("", [marker(c) for c in cells]),
    ]
    table = Table(
        title="evidence per cell (this run vs baseline)",
        title_justify="left",
        caption=_evidence_caption(comparison),
        caption_justify="left",
        **LIGHT,
    )
    shown = [(header, values) for header, values in columns if any(values) or header == "p"]
    for index, (header, _) in enumerate(shown):
        table.add_column(header, justify="left" if index == 0 else "right", no_wrap=True)
    for row, cell in enumerate(cells):
        style = _style(TableCell("", cell.status, cell.failed))
        styles = {0: style, len(shown) - 1: style}
        if _underpowered(cell):
            styles[[header for header, _ in shown].index("detectable")] = "yellow"
        table.add_row(*(Text(values[row], style=styles.get(index, "")) for index, (_, values) in enumerate(shown)))
    return table


def _evidence_caption(comparison: ProfileComparison) -> str:
    """Which test each cell used (the most common one named once, the others with their cells), the
    multiplicity correction and what the detectable drop means: only what the comparison carries."""
    by_test: dict[str, list[str]] = {}
    for cell in comparison.cells:
        test = getattr(cell, "test", None)
        if test:
            by_test.setdefault(str(test), []).append(f"{cell.suite}/{cell.band}")
    parts = []
    if by_test:
        ranked = sorted(by_test, key=lambda t: -len(by_test[t]))
        others = [f"{test} for {', '.join(by_test[test])}" for test in ranked[1:]]
        parts.append(f"test: {ranked[0]}" + (f" ({'; '.join(others)})" if others else ""))
    if any(_number(c, "p_adjusted") is not None for c in comparison.cells):
        correction = getattr(comparison, "correction", None)
        parts.append(f"p adj: corrected for {len(comparison.cells)} cells" + (f" ({correction})" if correction else ""))
    if any(_number(c, "detectable_drop") is not None for c in comparison.cells):
        power = getattr(comparison, "power", None)
        at = f" with {power:.0%} power" if isinstance(power, float) else ""
        parts.append(
            f"detectable: the smallest drop this test would catch{at}"
            + (
                "; * above the tolerance: a drop of the tolerance's size would likely go unnoticed"
                if any(_underpowered(c) for c in comparison.cells)
                else ""
            )
        )
    return " · ".join(parts)


def terminal_renderable(
    profile: DepthProfile,
    comparison: ProfileComparison | None = None,
    metrics: Sequence[str] | None = None,
    *,
    baseline: DepthProfile | None = None,
    strip: str = "drop",
) -> RenderableType:
    """The table and the depth strip; when compared, the evidence per cell, where it moved (needs the
    ``baseline`` profile, per layer), the verdict, each non-ok cell with its evidence, warnings and notes.

    ``strip``: ``"drop"`` (default), ``"accuracy"``, or ``""`` for no strip.
    """
    parts: list[RenderableType] = [fitted_profile_table(profile, comparison, metrics)]
    depth = profile_strip(profile, metrics, value=strip) if strip else None
    if depth is not None:
        parts += [Text(""), depth]
    if comparison is not None:
        evidence = evidence_table(comparison)
        compact = evidence_table(comparison, interval=False)
        if evidence is not None and compact is not None:
            parts += [Text(""), Fitting(evidence, compact)]
        baseline = baseline if baseline is not None else getattr(comparison, "baseline_profile", None)
        moved = delta_strip(baseline, profile, metrics) if strip and baseline is not None else None
        if moved is not None:
            parts += [Text(""), moved]
        parts.append(Text(""))
        verdict_style = "bold green" if comparison.passed else "bold red"
        parts.append(Text(status_line(comparison), style=verdict_style))
        parts.append(Text(criteria_text(comparison), style="dim"))
        for cell in comparison.cells:
            if cell.status != "ok":
                line = f"{marker(cell)} {describe_change(cell)}: {describe_detail(cell)}"
                parts.append(Text(line, style="bold red" if cell.failed else STYLES[cell.status]))
        parts.extend(Text(f"warning: {w}", style="yellow") for w in comparison.warnings)
        parts.extend(Text(f"note: {n}", style="dim") for n in comparison.notes)
    return Group(*parts)


def render_terminal(
    profile: DepthProfile,
    comparison: ProfileComparison | None = None,
    *,
    metrics: Sequence[str] | None = None,
    width: int = 120,
    color: bool = False,
    baseline: DepthProfile | None = None,
    strip: str = "drop",
) -> str:
    """The renderable as text for ``terminalreporter.write``; ANSI colours only when ``color``.

    Without colour every strip still reads: heights, ``▲``/``▼`` rows, ``·`` and ``│`` carry the meaning.
    """
    return render_text(terminal_renderable(profile, comparison, metrics, baseline=baseline, strip=strip), width, color)
