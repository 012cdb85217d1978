"""GitHub-flavoured markdown for job summaries, and workflow-command annotations for the PR view."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tabulate import tabulate

from pytest_layercheck.data.profile_data import DepthProfile
from pytest_layercheck.data.statistics import CI_LEVEL
from pytest_layercheck.evaluation.comparison import sensitivity_warning
from pytest_layercheck.evaluation.comparison_result import SHIFT, CellComparison, ProfileComparison
from pytest_layercheck.report.format import (
    LEGEND,
    describe_change,
    fmt_delta,
    fmt_p,
    marker,
    status_line,
    title_text,
)
from pytest_layercheck.report.table import build_table

#: GitHub rejects step summaries over 1 MiB; stay well below it, counting what is already there.
MAX_SUMMARY_BYTES = 512 * 1024
#: GitHub shows at most 10 annotations of each kind per step.
MAX_ANNOTATIONS = 10
#: Item ids listed per failing cell (the JSON report lists them all, with prompts).
MAX_ITEM_IDS = 10
TRUNCATED = "\n\n_(layercheck summary truncated to stay under GitHub's size limit; see the JSON report)_\n"


def markdown_table(
    profile: DepthProfile, comparison: ProfileComparison | None = None, metrics: Sequence[str] | None = None
) -> str:
    model = build_table(profile, comparison, metrics)
    return tabulate(model.text_rows(), headers=model.headers, tablefmt="github", disable_numparse=True)


def render_markdown(
    profile: DepthProfile, comparison: ProfileComparison | None = None, metrics: Sequence[str] | None = None
) -> str:
    """Heading with the verdict, the table, then regressions (test, raw and adjusted p, interval,
    detectable drop, the items that got worse), other changes, the evidence per cell, sensitivity and
    warnings."""
    verdict = (
        ""
        if comparison is None
        else (" — ✅ passed" if comparison.passed else f" — ❌ {len(comparison.failures)} failing cell(s)")
    )
    lines = [
        f"### {title_text(profile, comparison, metrics)}{verdict}",
        "",
        markdown_table(profile, comparison, metrics),
    ]
    if comparison is not None:
        lines += ["", f"_{LEGEND}_", "", f"**{status_line(comparison)}** — {comparison.criteria()}."]
        sections = [
            ("Regressions", comparison.regressions),
            ("Moved along depth", comparison.moved),
            ("Improvements", comparison.improvements),
            ("Changed beyond tolerance but not significant", comparison.changed),
        ]
        for heading, cells in sections:
            if cells:
                lines += ["", f"**{heading}**", *(_bullet(cell) for cell in cells)]
        if comparison.cells:
            lines += [
                "",
                "<details><summary>Evidence per cell</summary>",
                "",
                evidence_table(comparison),
                "",
                "</details>",
            ]
        weak = sensitivity_warning(comparison)
        if weak:
            lines += ["", "**Sensitivity**", f"- {weak}"]
        for heading, items in (("Warnings", comparison.warnings), ("Notes", comparison.notes)):
            if items:
                lines += ["", f"**{heading}**", *(f"- {item}" for item in items)]
    return "\n".join(lines) + "\n"


def _bullet(cell: CellComparison) -> str:
    mark = marker(cell)
    lead = f"{mark} " if mark else ""
    line = f"- {lead}`{cell.label}` {describe_change(cell, with_label=False)}: {_evidence(cell)}"
    if cell.failed and (cell.worse_items or cell.better_items):
        line += f"\n  - worse: {_ids(cell.worse_items)}" + (
            f"; better: {_ids(cell.better_items)}" if cell.better_items else ""
        )
    return line


def _evidence(cell: CellComparison) -> str:
    """Δ against the tolerance, the test with raw and adjusted p, the interval and the detectable drop (a shift
    cell: the move against the allowed one, over items x single-layer removals, and the detectable shift)."""
    shift = cell.band == SHIFT
    effect = (
        (
            f"Δ {fmt_delta(cell.delta)} of depth vs allowed {cell.allowed:.3g}; {cell.items} items x "
            f"{len(cell.layers)} single-layer removals"
        )
        if shift
        else (
            f"Δ {fmt_delta(cell.delta)} vs tolerance {cell.allowed:.3g}; {len(cell.worse_items)} of {cell.items} "
            f"items worse, {len(cell.better_items)} better"
        )
    )
    return (
        f"{effect}; {cell.test} p={fmt_p(cell.p_value)}, "
        f"adjusted p={fmt_p(cell.p_adjusted)}; {CI_LEVEL:.0%} CI [{fmt_delta(cell.ci_low)}, "
        f"{fmt_delta(cell.ci_high)}]; detectable {'shift' if shift else 'drop'} {_drop(cell.detectable_drop)}"
    )


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(f"`{i}`" for i in ids[:MAX_ITEM_IDS])
    return shown + (f" and {len(ids) - MAX_ITEM_IDS} more (see the JSON report)" if len(ids) > MAX_ITEM_IDS else "")


def _drop(value: float) -> str:
    return f"{value:.3f}" if value != float("inf") else "none"


def evidence_table(comparison: ProfileComparison) -> str:
    """One row per compared cell: test, items, raw and adjusted p, interval, detectable drop, status."""
    headers = [
        "cell",
        "Δ",
        "test",
        "items",
        "p",
        f"p ({comparison.correction})",
        f"{CI_LEVEL:.0%} CI",
        "detectable drop",
        "status",
    ]
    rows = [
        [
            f"`{c.label}`",
            fmt_delta(c.delta),
            c.test,
            str(c.items),
            fmt_p(c.p_value),
            fmt_p(c.p_adjusted),
            f"[{fmt_delta(c.ci_low)}, {fmt_delta(c.ci_high)}]",
            _drop(c.detectable_drop),
            f"{marker(c)} {c.status}".strip(),
        ]
        for c in comparison.cells
    ]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def append_step_summary(
    markdown: str, path: str | os.PathLike[str] | None = None, max_bytes: int = MAX_SUMMARY_BYTES
) -> Path | None:
    """Append to ``$GITHUB_STEP_SUMMARY`` (or ``path``); a no-op returning None outside GitHub Actions.

    The file is shared with other steps' tools, so it is appended to, never replaced, and the text is
    cut at a line boundary when the file would grow past ``max_bytes``.
    """
    target = path if path is not None else os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    target = Path(target)
    used = target.stat().st_size if target.exists() else 0
    budget = max_bytes - used
    data = ("\n" + markdown).encode("utf-8")
    if len(data) > budget:
        room = budget - len(TRUNCATED.encode("utf-8"))
        if room <= 0:
            return target
        cut = data[:room].decode("utf-8", errors="ignore")
        data = (cut[: cut.rfind("\n") + 1] + TRUNCATED).encode("utf-8")
    with open(target, "ab") as handle:
        handle.write(data)
    return target


def github_annotations(comparison: ProfileComparison, limit: int = MAX_ANNOTATIONS) -> list[str]:
    """``::error``/``::warning`` workflow commands: failing cells first, then non-significant changes.

    At most ``limit`` lines; when more would be needed the last line says how many were left out.
    """
    entries = [("error", describe_change(c)) for c in comparison.failures]
    entries += [("warning", describe_change(c) + " (not significant)") for c in comparison.changed]
    entries += [("warning", w) for w in comparison.warnings]
    if len(entries) > limit:
        hidden = entries[limit - 1 :]
        level = "error" if any(kind == "error" for kind, _ in hidden) else "warning"
        entries = [*entries[: limit - 1], (level, f"{len(hidden)} more layercheck findings; see the job summary")]
    return [f"::{kind} title=layercheck::{_escape(message)}" for kind, message in entries]


def _escape(message: str) -> str:
    """Workflow-command data escaping: '%', CR and LF would otherwise end or corrupt the command."""
    return message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
