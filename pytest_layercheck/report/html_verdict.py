"""The verdict parts of the HTML report: what one page shows (:class:`Page`), the run's verdict, the
capability × band table, each compared cell's evidence and finding, and the remarks under them, all in
the terminal's words (:mod:`.format`, :mod:`..evaluation.describe`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_layercheck.data.profile_data import DepthProfile
from pytest_layercheck.data.statistics import CI_LEVEL
from pytest_layercheck.evaluation.comparison import sensitivity_warning
from pytest_layercheck.evaluation.comparison_result import CellComparison, ProfileComparison
from pytest_layercheck.evaluation.describe import ItemTexts, suite_item_texts
from pytest_layercheck.report.depth_strip import suite_metric
from pytest_layercheck.report.format import (
    LEGEND,
    describe_change,
    describe_detail,
    fmt_delta,
    fmt_p,
    fmt_value,
    marker,
    status_line,
)
from pytest_layercheck.report.html import esc
from pytest_layercheck.report.table import build_table

STATUS_WORDS = {
    "regressed": "regressed",
    "moved": "moved along depth",
    "changed": "changed (not significant)",
    "improved": "improved",
    "ok": "ok",
}


@dataclass(frozen=True)
class Page:
    """What one page shows: the run, what it was compared with, and why a comparison may be missing."""

    profile: DepthProfile
    comparison: ProfileComparison | None = None
    baseline: DepthProfile | None = None
    refused: str | None = None
    failed_checks: Sequence[str] = ()
    notes: Sequence[str] = ()
    metrics: Sequence[str] | None = None
    item_texts: ItemTexts = suite_item_texts

    @property
    def passed(self) -> bool:
        """The run's verdict, as the JSON report gives it: a refusal or a failed check is no pass."""
        compared = self.comparison.passed if self.comparison is not None else True
        return self.refused is None and not self.failed_checks and compared

    def cells_of(self, suite: str) -> list[CellComparison]:
        """The compared cells of ``suite``; none when nothing was compared."""
        return [c for c in self.comparison.cells if c.suite == suite] if self.comparison is not None else []

    def metric_of(self, suite: str) -> str:
        """The metric ``suite``'s chart and heading show."""
        return suite_metric(self.profile, suite, self.metrics)


def verdict_block(page: Page) -> str:
    """The run's verdict first: refused, failed or passed, in the terminal's words, with the criteria."""
    comparison = page.comparison
    if page.refused is not None:
        kind, lines = "refused", [f"comparison with the baseline refused: {page.refused}"]
    elif comparison is None:
        kind, lines = "profile", ["profile only: no baseline was compared"]
    else:
        kind, lines = ("passed" if comparison.passed else "failed"), [status_line(comparison)]
    if page.failed_checks:
        kind = "failed" if kind == "passed" else kind
        lines.append(f"{len(page.failed_checks)} layercheck check(s) failed: " + ", ".join(page.failed_checks))
    criteria = f'<div class="muted">{esc(comparison.criteria())}</div>' if comparison is not None else ""
    return (
        f'<div class="verdict {kind}" data-passed="{str(page.passed).lower()}">'
        + "<br>".join(esc(line) for line in lines)
        + f"</div>{criteria}"
    )


def overview_table(page: Page) -> str:
    """The capability × band table every renderer shows, a compared cell marked by its status."""
    model = build_table(page.profile, page.comparison, page.metrics)
    head = _head(model.headers, model.lead_columns)
    rows = []
    for row in model.rows:
        cells = []
        for index, cell in enumerate(row):
            classes = ["l"] if index < model.lead_columns else []
            if cell.status:
                classes.append(f"status-{cell.status}")
            if cell.failed:
                classes.append("failed-cell")
            status = f' data-status="{cell.status}" data-failed="{str(cell.failed).lower()}"' if cell.status else ""
            cells.append(f'<td class="{" ".join(classes)}"{status}>{esc(cell.text)}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    caption = f"<caption>{esc(LEGEND)}</caption>" if page.comparison is not None else ""
    return f'<table class="bands">{caption}<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _head(headers: Sequence[str], lead: int) -> str:
    """A table's header cells, the first ``lead`` left-aligned as their columns are."""
    return "".join(f'<th class="{"l" if i < lead else ""}">{esc(h)}</th>' for i, h in enumerate(headers))


def evidence_table(cells: Sequence[CellComparison]) -> str:
    """One row per compared cell: the numbers behind its verdict (values, Δ, CI, p, detectable drop,
    verdict), as the terminal's evidence table."""
    headers = [
        "cell",
        "baseline",
        "this run",
        "Δ",
        f"{CI_LEVEL:.0%} CI",
        "test",
        "items",
        "p",
        "p adj",
        "detectable drop",
        "tolerance",
        "status",
    ]
    rows = []
    for c in cells:
        interval = f"[{fmt_delta(c.ci_low)}, {fmt_delta(c.ci_high)}]" if math.isfinite(c.ci_low) else ""
        detectable = (f"{c.detectable_drop:.3f}" if math.isfinite(c.detectable_drop) else "none") + (
            "*" if c.underpowered else ""
        )
        status = f"{marker(c)} {'fails: ' if c.failed else ''}{STATUS_WORDS[c.status]}".strip()
        values = [
            c.label,
            fmt_value(c.baseline),
            fmt_value(c.current),
            fmt_delta(c.delta),
            interval,
            c.test,
            str(c.items),
            fmt_p(c.p_value),
            fmt_p(c.p_adjusted),
            detectable,
            f"{c.allowed:.3g}",
            status,
        ]
        style = f"status-{c.status}" + (" failed-cell" if c.failed else "")
        row = "".join(f'<td class="{"l" if i == 0 else ""}">{esc(v)}</td>' for i, v in enumerate(values[:-1]))
        rows.append(
            f'<tr class="cell" data-status="{c.status}" data-failed="{str(c.failed).lower()}">{row}'
            f'<td class="{style}">{esc(values[-1])}</td></tr>'
        )
    head = _head(headers, 1)
    caption = (
        (
            "* the tolerance is below the smallest drop this test would catch: a drop of its size would "
            "likely go unnoticed"
        )
        if any(c.underpowered for c in cells)
        else ""
    )
    return (
        f'<table class="evidence"><caption>{esc(caption)}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def findings_list(cells: Sequence[CellComparison]) -> str:
    """The sentence of each cell that is not ok, as the terminal and failure messages word it."""
    lines = [
        f'<li class="{"failed" if c.failed else c.status}">'
        f"{esc(f'{marker(c)} {describe_change(c)}: {describe_detail(c)}'.strip())}</li>"
        for c in cells
        if c.status != "ok"
    ]
    return f'<ul class="findings">{"".join(lines)}</ul>' if lines else ""


def remarks_list(page: Page) -> str:
    """Sensitivity, warnings, notes and extra findings: what the terminal prints under the verdict."""
    comparison = page.comparison
    lines = [("finding", note) for note in page.notes]
    if comparison is not None:
        weak = sensitivity_warning(comparison)
        lines += [("sensitivity", weak)] if weak else []
        lines += [("warning", w) for w in comparison.warnings] + [("note", n) for n in comparison.notes]
        lines += [("missing suite", s) for s in comparison.missing_suites]
        lines += [("new suite", s) for s in comparison.new_suites]
    if not lines:
        return ""
    return "<h2>Remarks</h2><ul>" + "".join(f"<li><b>{esc(k)}:</b> {esc(v)}</li>" for k, v in lines) + "</ul>"
