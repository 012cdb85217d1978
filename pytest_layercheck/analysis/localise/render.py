"""Delta replacement in the terminal and as markdown: per localised suite, one row per reverted group (the
group that restores the loss marked), then each suite's verdict."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from pytest_layercheck.analysis.localise.replacement import Localisation, SuiteLocalisation
from pytest_layercheck.evaluation.describe import fmt_p
from pytest_layercheck.report.analyses import Rows, markdown_rows, rich_rows

WINNER = "◀"


def localisation_rows(entry: SuiteLocalisation) -> Rows:
    """One row per reverted group: accuracy after reverting, share of the loss recovered, paired test."""
    winner = entry.restored_by
    headers = ["reverted to base", entry.metric, "recovered", "fixed / broken", "p (vs candidate)", ""]
    rows = [["nothing (the candidate)", f"{entry.candidate:.3f}", "0%", "", "", ""]]
    for r in entry.restorations:
        recovered = "n/a" if r.recovered is None else f"{100 * r.recovered:.0f}%"
        rows.append(
            [
                r.group.label,
                f"{r.accuracy:.3f}",
                recovered,
                f"{r.fixed} / {r.broken}",
                fmt_p(r.p_value),
                WINNER if winner is not None and r is winner else "",
            ]
        )
    rows.append(["everything (the base)", f"{entry.base:.3f}", "100%", "", "", ""])
    return headers, rows


def localisation_parts(localisation: Localisation) -> list[RenderableType]:
    """A table per localised suite, then every suite's verdict (bold when a group restores the loss)."""
    parts: list[RenderableType] = []
    for entry in localisation.suites:
        if entry.localised:
            parts.append(Text(""))
            parts.append(rich_rows(f"delta replacement: {entry.suite} ({entry.items} items)", localisation_rows(entry)))
    for entry in localisation.suites:
        style = "bold" if entry.restored_by is not None else "yellow"
        parts.append(Text(f"⇒ {entry.verdict}", style=style))
    return parts


def localisation_renderable(localisation: Localisation) -> RenderableType:
    return Group(*localisation_parts(localisation))


def localisation_markdown(localisation: Localisation) -> list[str]:
    """Markdown lines: a table per localised suite, then the verdicts as bullets (bold when restored)."""
    localised = [e for e in localisation.suites if e.localised]
    lines = ["", "#### Delta replacement: reverting layers to the base"] if localised else []
    for entry in localised:
        lines += ["", f"**{entry.suite}** ({entry.items} items)", "", markdown_rows(localisation_rows(entry))]
    return [*lines, "", *(f"- **{e.verdict}**" if e.restored_by else f"- {e.verdict}" for e in localisation.suites)]
