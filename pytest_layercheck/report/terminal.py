"""The profile (and its comparison with the baseline) as a rich table for pytest's terminal summary."""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from pytest_layercheck.comparison import ProfileComparison
from pytest_layercheck.profile_data import DepthProfile
from pytest_layercheck.report.format import (
    LEGEND,
    criteria_text,
    describe_change,
    describe_detail,
    marker,
    status_line,
    title_text,
)
from pytest_layercheck.report.table import TableCell, build_table

STYLES = {"regressed": "bold red", "changed": "yellow", "improved": "green"}


def _style(cell: TableCell) -> str:
    return "bold red" if cell.failed else STYLES.get(cell.status or "", "")


def profile_table(profile: DepthProfile, comparison: ProfileComparison | None = None,
                  metrics: Sequence[str] | None = None) -> Table:
    """Suites × bands with accuracy per cell (and Δ vs baseline, coloured by status)."""
    model = build_table(profile, comparison, metrics)
    table = Table(title=title_text(profile, comparison, metrics), title_justify="left",
                  caption=LEGEND if comparison else None, caption_justify="left")
    for index, header in enumerate(model.headers):
        text_column = index < model.lead_columns and header != "items"
        table.add_column(header, justify="left" if text_column else "right", no_wrap=index == 0)
    for row in model.rows:
        table.add_row(*(Text(cell.text, style=_style(cell)) for cell in row))
    return table


def terminal_renderable(profile: DepthProfile, comparison: ProfileComparison | None = None,
                        metrics: Sequence[str] | None = None) -> RenderableType:
    """The table, then (when compared) the verdict, each non-ok cell with its evidence, warnings and notes."""
    parts: list[RenderableType] = [profile_table(profile, comparison, metrics)]
    if comparison is not None:
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


def render_terminal(profile: DepthProfile, comparison: ProfileComparison | None = None, *,
                    metrics: Sequence[str] | None = None, width: int = 120, color: bool = False) -> str:
    """The renderable as text for ``terminalreporter.write``; ANSI colours only when ``color``."""
    console = Console(record=True, width=width, file=io.StringIO(), force_terminal=color,
                      no_color=not color, color_system="standard" if color else None, highlight=False)
    console.print(terminal_renderable(profile, comparison, metrics))
    return console.export_text(styles=color)
