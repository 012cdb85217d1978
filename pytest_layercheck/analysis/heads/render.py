"""Head importance in the terminal and as markdown: the ranking, the layers × heads grid of drops and the
summary, from one set of string rows."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from pytest_layercheck.analysis.heads.importance import HeadImportance
from pytest_layercheck.data.bands import format_layers
from pytest_layercheck.report.analyses import Rows, markdown_rows, num, rich_rows, signed
from pytest_layercheck.report.terminal import Fitting


def heads_list(heads: Sequence[tuple[int, int]]) -> str:
    """``L0.H3, L2.H1``, or ``(none)``."""
    return ", ".join(f"L{layer}.H{head}" for layer, head in heads) or "(none)"


def importance_title(result: HeadImportance) -> str:
    unit = "KV group" if result.unit == "group" else "head"
    return (
        f"Head importance · {result.model} · {result.suite} ({result.protocol}, {result.metric}, "
        f"{len(result.item_ids)} items) · {result.mode}-masking each {unit} of layers {format_layers(result.layers)}"
    )


def importance_summary(result: HeadImportance) -> str:
    n = max(1, math.ceil(0.05 * result.num_units - 1e-9))
    critical = result.critical_heads()
    return (
        f"intact {result.metric} {num(result.intact)}; {result.num_units} {result.unit}s evaluated; "
        f"{sum(d > 0 for d in result.drops.values())} lower the metric when masked. "
        f"Top 5% ({n} {result.unit}s) carry {num(result.concentration())} of the total drop "
        f"(concentration); critical: {heads_list(critical)}"
    )


def importance_rows(result: HeadImportance, top: int = 15) -> Rows:
    """The ``top`` heads by drop: rank, layer, head, masked accuracy, drop, share of the total drop."""
    total = sum(d for d in result.drops.values() if d > 0)
    headers = ["rank", "layer", result.unit, result.metric, "drop", "share of drop"]
    rows = []
    for rank, ((layer, head), d) in enumerate(result.ranked()[:top], 1):
        share = d / total if total > 0 and d > 0 else 0.0
        rows.append([str(rank), str(layer), str(head), num(result.accuracy[(layer, head)]), signed(d), num(share)])
    return headers, rows


def _grid_cell(drop: float) -> str:
    """Compact drop for the grid: two decimals, a dot where masking changed nothing."""
    if math.isnan(drop):
        return "n/a"
    return "·" if abs(drop) < 5e-13 else f"{drop:+.2f}"


def importance_grid_rows(result: HeadImportance) -> Rows:
    """Layers x heads grid of drops (positive = masking hurts)."""
    headers = ["layer", *(f"{'G' if result.unit == 'group' else 'H'}{h}" for h in range(result.heads_per_layer))]
    rows = []
    for layer in result.layers:
        cells = [str(layer)]
        for head in range(result.heads_per_layer):
            value = result.accuracy.get((layer, head))
            cells.append("" if value is None else _grid_cell(result.intact - value))
        rows.append(cells)
    return headers, rows


def _drop_style(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        return ""
    if value >= 0.1:
        return "bold red"
    if value > 0:
        return "yellow"
    if value < 0:
        return "green"
    return "dim"


def importance_renderable(result: HeadImportance, top: int = 15, grid: bool = True) -> RenderableType:
    parts: list[RenderableType] = [rich_rows(importance_title(result), importance_rows(result, top))]
    if grid:
        parts.append(importance_grid(result))
    parts.append(Text(importance_summary(result)))
    return Group(*parts)


GRID_TITLE = "drop per head (intact - masked; · = no change)"


def _grid_table(rows: Rows, title: str | None) -> Table:
    headers, body = rows
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE, padding=(0, 1), pad_edge=False, collapse_padding=True
    )
    for header in headers:
        table.add_column(header, justify="right", no_wrap=True)
    for row in body:
        table.add_row(row[0], *(Text(cell, style=_drop_style(cell)) for cell in row[1:]))
    return table


def importance_grid(result: HeadImportance) -> RenderableType:
    """Layers × heads, all heads side by side where they fit; else in blocks of 16, 12, 8 or 4 heads."""
    headers, body = importance_grid_rows(result)
    heads = len(headers) - 1
    layouts = []
    for per in sorted({heads, *(n for n in (16, 12, 8, 4) if n < heads)}, reverse=True):
        blocks = [
            (
                [headers[0], *headers[1 + start : 1 + start + per]],
                [[row[0], *row[1 + start : 1 + start + per]] for row in body],
            )
            for start in range(0, heads, per)
        ]
        layouts.append(Group(*(_grid_table(block, GRID_TITLE if i == 0 else None) for i, block in enumerate(blocks))))
    return Fitting(*layouts)


def importance_markdown(result: HeadImportance, top: int = 15, grid: bool = True) -> str:
    lines = [f"### {importance_title(result)}", "", importance_summary(result), ""]
    headers, body = importance_rows(result, top)
    lines.append(markdown_rows((headers, body)))
    if grid:
        headers, body = importance_grid_rows(result)
        lines += [
            "",
            "**Drop per head** (intact − masked)",
            "",
            markdown_rows((headers, body)),
        ]
    return "\n".join(lines) + "\n"


def summary_renderable(result: HeadImportance) -> RenderableType:
    """The ten heads that matter most and the summary, as pytest's summary shows them (no grid)."""
    return importance_renderable(result, top=10, grid=False)
