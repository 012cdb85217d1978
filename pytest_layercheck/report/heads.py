"""Head-importance and retrieval-head results as rich tables (terminal) and markdown (tabulate).

Both renderers share one set of plain-string rows per table, so the terminal and the job summary
always show the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from tabulate import tabulate

from pytest_layercheck.analysis.heads import HeadImportance
from pytest_layercheck.analysis.retrieval_heads import MaskingComparison, RetrievalHeads
from pytest_layercheck.data.bands import format_layers
from pytest_layercheck.report.format import render_text  # noqa: F401 - re-exported for callers of this module
from pytest_layercheck.report.terminal import Fitting, fitted_rows

Rows = tuple[list[str], list[list[str]]]


def _num(value: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _signed(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.3f}"


def _p(value: float) -> str:
    return f"{value:.3g}"


def _heads_list(heads: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"L{layer}.H{head}" for layer, head in heads) or "(none)"


# --------------------------------------------------------------------------------------------------
# Head importance
# --------------------------------------------------------------------------------------------------


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
        f"intact {result.metric} {_num(result.intact)}; {result.num_units} {result.unit}s evaluated; "
        f"{sum(d > 0 for d in result.drops.values())} lower the metric when masked. "
        f"Top 5% ({n} {result.unit}s) carry {_num(result.concentration())} of the total drop "
        f"(concentration); critical: {_heads_list(critical)}"
    )


def importance_rows(result: HeadImportance, top: int = 15) -> Rows:
    """The ``top`` heads by drop: rank, layer, head, masked accuracy, drop, share of the total drop."""
    total = sum(d for d in result.drops.values() if d > 0)
    headers = ["rank", "layer", result.unit, result.metric, "drop", "share of drop"]
    rows = []
    for rank, ((layer, head), d) in enumerate(result.ranked()[:top], 1):
        share = d / total if total > 0 and d > 0 else 0.0
        rows.append([str(rank), str(layer), str(head), _num(result.accuracy[(layer, head)]), _signed(d), _num(share)])
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


def _rich_table(title: str, rows: Rows, numeric_from: int = 1) -> RenderableType:
    return fitted_rows(*rows, title, lead=numeric_from)


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
    parts: list[RenderableType] = [_rich_table(importance_title(result), importance_rows(result, top))]
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
    lines.append(tabulate(body, headers=headers, tablefmt="github", disable_numparse=True))
    if grid:
        headers, body = importance_grid_rows(result)
        lines += [
            "",
            "**Drop per head** (intact − masked)",
            "",
            tabulate(body, headers=headers, tablefmt="github", disable_numparse=True),
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Retrieval heads
# --------------------------------------------------------------------------------------------------


def retrieval_title(result: RetrievalHeads) -> str:
    return (
        f"Retrieval heads · {result.model} · {result.valid_tests} of {len(result.tests)} needle tests valid "
        f"(answer recovers > {result.min_recall:g} of the needle)"
    )


def retrieval_summary(result: RetrievalHeads) -> str:
    total = len(result.scores)
    return (
        f"{len(result.retrieval_heads)} of {total} heads ({_num(100 * result.share, 1)}%) score above "
        f"{result.threshold:g}"
    )


def retrieval_rows(result: RetrievalHeads, top: int = 20) -> Rows:
    headers = ["rank", "layer", "head", "retrieval score", "retrieval head"]
    rows = [
        [str(rank), str(layer), str(head), _num(s), "yes" if s > result.threshold else ""]
        for rank, ((layer, head), s) in enumerate(result.ranked()[:top], 1)
    ]
    return headers, rows


def masking_rows(comparison: MaskingComparison) -> Rows:
    headers = ["masking", "heads", comparison.metric, "Δ vs intact", "p vs intact"]
    rows = [
        ["none (intact)", "0", _num(comparison.intact_accuracy), "", ""],
        [
            f"top-{comparison.k} retrieval heads",
            str(comparison.k),
            _num(comparison.top_accuracy),
            _signed(comparison.top_accuracy - comparison.intact_accuracy),
            _p(comparison.p_top_vs_intact),
        ],
        [
            f"{comparison.k} random non-retrieval heads",
            str(comparison.k),
            _num(comparison.random_accuracy),
            _signed(comparison.random_accuracy - comparison.intact_accuracy),
            _p(comparison.p_random_vs_intact),
        ],
    ]
    return headers, rows


def masking_title(comparison: MaskingComparison) -> str:
    when = "during decoding only" if comparison.decode_only else "at every position"
    return (
        f"Uniform-attention masking · {comparison.suite} ({comparison.protocol}, {len(comparison.item_ids)} items) "
        f"· masked {when}"
    )


def masking_summary(comparison: MaskingComparison) -> str:
    return (
        f"top-{comparison.k} minus random: {_signed(-comparison.difference)} "
        f"(exact McNemar p = {_p(comparison.p_value)}); {comparison.retrieval_heads_masked} of the top {comparison.k} "
        f"score above {comparison.threshold:g}. top: {_heads_list(comparison.top_heads)}; "
        f"random (seed {comparison.seed}): {_heads_list(comparison.random_heads)}"
    )


def retrieval_renderable(
    result: RetrievalHeads, comparison: MaskingComparison | None = None, top: int = 20
) -> RenderableType:
    parts: list[RenderableType] = [
        _rich_table(retrieval_title(result), retrieval_rows(result, top)),
        Text(retrieval_summary(result)),
    ]
    if comparison is not None:
        parts += [_rich_table(masking_title(comparison), masking_rows(comparison)), Text(masking_summary(comparison))]
    return Group(*parts)


def retrieval_markdown(result: RetrievalHeads, comparison: MaskingComparison | None = None, top: int = 20) -> str:
    headers, body = retrieval_rows(result, top)
    lines = [
        f"### {retrieval_title(result)}",
        "",
        retrieval_summary(result),
        "",
        tabulate(body, headers=headers, tablefmt="github", disable_numparse=True),
    ]
    if comparison is not None:
        headers, body = masking_rows(comparison)
        lines += [
            "",
            f"### {masking_title(comparison)}",
            "",
            tabulate(body, headers=headers, tablefmt="github", disable_numparse=True),
            "",
            masking_summary(comparison),
        ]
    return "\n".join(lines) + "\n"
