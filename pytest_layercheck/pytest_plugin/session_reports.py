"""What a session writes and prints at its end: the JSON, HTML, heatmap and job-summary reports, and the
terminal summary's lines."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_layercheck.evaluation.comparison import sensitivity_warning

if TYPE_CHECKING:
    from pytest_layercheck.data.profile_data import DepthProfile
    from pytest_layercheck.evaluation.comparison_result import ProfileComparison
    from pytest_layercheck.pytest_plugin.session_options import SessionOptions


def write_reports(
    options: SessionOptions,
    suites: Sequence[str],
    profile: DepthProfile,
    comparison: ProfileComparison | None,
    baseline: DepthProfile | None,
    refused: str | None,
    failed_checks: Sequence[str],
) -> list[str]:
    """Write the reports the options ask for; returns a line per file written. The reports' verdict is the
    run's: a refused comparison or a failed check is no pass."""
    from pytest_layercheck.report.json_report import write_json_report
    from pytest_layercheck.report.markdown import append_step_summary, render_markdown

    written = []
    if options.report:
        write_json_report(Path(options.report), profile, comparison, refused=refused, failed_checks=failed_checks)
        written.append(f"JSON report written: {options.report}")
    if options.html:
        from pytest_layercheck.report.html_items import run_item_texts
        from pytest_layercheck.report.html_page import write_html_report

        write_html_report(
            Path(options.html),
            profile,
            comparison,
            baseline=baseline if comparison is not None else None,
            refused=refused,
            failed_checks=failed_checks,
            item_texts=run_item_texts(suites),
        )
        written.append(f"HTML report written: {options.html}")
    if options.heatmap:
        from pytest_layercheck.report.heatmap import plot_layer_heatmap

        plot_layer_heatmap(profile, Path(options.heatmap))
        written.append(f"heatmap written: {options.heatmap}")
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        append_step_summary(render_markdown(profile, comparison))
    return written


def verdict_lines(
    profile: DepthProfile,
    comparison: ProfileComparison | None,
    baseline: DepthProfile | None,
    metric: str | None,
    width: int,
    color: bool,
) -> list[str]:
    """The profile and its verdict as the terminal summary shows them, with the power warning."""
    from pytest_layercheck.report.terminal import render_terminal

    lines = render_terminal(
        profile,
        comparison,
        metrics=[metric] if metric else None,
        width=width,
        color=color,
        baseline=baseline if comparison is not None else None,
    ).splitlines()
    warning = sensitivity_warning(comparison) if comparison is not None else None
    if warning:
        lines += ["", *warning.splitlines()]
    return lines
