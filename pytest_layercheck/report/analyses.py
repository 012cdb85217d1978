"""The tables of an analysis result, for the terminal and for markdown, from one set of string rows.

Each analysis builds its tables once as plain string rows (``Rows``: headers, body); these helpers show
them as a rich table that fits the console (terminal, pytest's summary) and as a GitHub table (job
summaries, ``--markdown``), so the two never disagree. Numbers keep three decimals, as in the profile
tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import RenderableType
from tabulate import tabulate

from pytest_layercheck.data.bands import format_layers
from pytest_layercheck.report.terminal import fitted_rows

Rows = tuple[list[str], list[list[str]]]


def num(value: float, digits: int = 3) -> str:
    """``0.250``, or ``n/a`` for NaN and infinities."""
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def signed(value: float) -> str:
    """``+0.250`` / ``-0.125``, or ``n/a``."""
    return f"{value:+.3f}" if math.isfinite(value) else "n/a"


def interval(low: float, high: float) -> str:
    """``[0.12, 0.34]``, or nothing when a bound is not finite."""
    return f"[{low:.2f}, {high:.2f}]" if math.isfinite(low) and math.isfinite(high) else ""


def span(layers: Sequence[int]) -> str:
    """``L3-5``: layers as the tables name them."""
    return format_layers(layers, prefix="L")


def rich_rows(title: str | None, rows: Rows, caption: str | None = None, lead: int = 1) -> RenderableType:
    """Boxed, light or one paragraph per row, whichever fits; a ``note`` column may wrap."""
    headers, body = rows
    return fitted_rows(
        headers, body, title, caption=caption, lead=lead, wrap=[i for i, h in enumerate(headers) if h == "note"]
    )


def markdown_rows(rows: Rows) -> str:
    """A GitHub table (strings kept as they are: no number parsing)."""
    headers, body = rows
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def without(rows: Rows, columns: Sequence[int]) -> Rows:
    """``rows`` without the given columns (a narrower layout of the same table)."""
    headers, body = rows
    keep = [i for i in range(len(headers)) if i not in set(columns)]
    return [headers[i] for i in keep], [[row[i] for i in keep] for row in body]
