"""One self-contained HTML page of a profile and its comparison, for a reviewer to open before reading logs.

The page holds everything inline (CSS, SVG charts, a few lines of script for the item search) and loads
nothing, so it opens offline and as a CI artifact. Per suite it draws the drop when each layer is
removed (baseline and this run overlaid, and their difference, band edges marked), the band cells and
their evidence in the terminal's words (:mod:`.format`, :mod:`..evaluation.describe`), and the items
that got worse or better. Colours are Okabe–Ito (colour-blind safe); every meaning colour carries is
also carried by a marker shape, a line style, a hatch or a word, so the page prints in black and white.
Long item lists are capped (the JSON report has them all), so a 5,000-item suite's page stays small.

This module puts the page together from its parts: the shell (:mod:`.html`), the verdict and evidence
(:mod:`.html_verdict`), the per-layer charts (:mod:`.html_chart`) and the changed items (:mod:`.html_items`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_layercheck.core.atomic import atomic_write_text
from pytest_layercheck.data.profile_data import DepthProfile
from pytest_layercheck.evaluation.comparison_result import ProfileComparison
from pytest_layercheck.evaluation.describe import ItemTexts, suite_item_texts
from pytest_layercheck.report.format import fingerprint_text, title_text
from pytest_layercheck.report.html import esc, flat_settings, meta_list, page_shell
from pytest_layercheck.report.html_chart import layer_chart
from pytest_layercheck.report.html_items import SCRIPT, items_section
from pytest_layercheck.report.html_verdict import (
    Page,
    evidence_table,
    findings_list,
    overview_table,
    remarks_list,
    verdict_block,
)


def render_html(
    profile: DepthProfile,
    comparison: ProfileComparison | None = None,
    *,
    baseline: DepthProfile | None = None,
    refused: str | None = None,
    failed_checks: Sequence[str] = (),
    notes: Sequence[str] = (),
    metrics: Sequence[str] | None = None,
    item_texts: ItemTexts | None = None,
) -> str:
    """The whole page. ``baseline`` (the stored profile) adds its per-layer curve and per-item shares;
    ``refused`` says why no comparison was made; ``notes`` are extra findings (localisation verdicts);
    ``item_texts(suite, content_hash)`` gives prompts and answers (default: the built-in suites)."""
    page = Page(
        profile,
        comparison,
        baseline,
        refused,
        tuple(failed_checks),
        tuple(notes),
        metrics,
        item_texts or suite_item_texts,
    )
    title = title_text(profile, comparison, metrics)
    body = [f"<h1>{esc(title)}</h1>", verdict_block(page), overview_table(page)]
    body += [_suite_section(page, index, suite) for index, suite in enumerate(profile.suites)]
    body += [remarks_list(page), _run_details(page)]
    return page_shell(title, body, script=SCRIPT)


def write_html_report(
    path: Path | str, profile: DepthProfile, comparison: ProfileComparison | None = None, **options: Any
) -> Path:
    """Write :func:`render_html`'s page atomically (a CI upload never takes half a page); returns the path."""
    path = Path(path)
    atomic_write_text(path, render_html(profile, comparison, **options))
    return path


def summary_html(
    profile: DepthProfile,
    comparison: ProfileComparison | None = None,
    *,
    baseline: DepthProfile | None = None,
    refused: str | None = None,
    failed_checks: Sequence[str] = (),
    metrics: Sequence[str] | None = None,
) -> str:
    """The page's verdict, band-cell table, and per suite its findings and per-layer chart, without the
    page around them (no styles, script or item lists): for another report to embed (pytest-html's
    summary). Style it with :func:`.html.scoped_css`."""
    page = Page(profile, comparison, baseline, refused, tuple(failed_checks), (), metrics)
    parts = [verdict_block(page), overview_table(page)]
    for index, suite in enumerate(profile.suites):
        cells = page.cells_of(suite)
        parts += [
            f'<h3 data-suite="{esc(suite)}">{esc(suite)}</h3>',
            findings_list(cells),
            layer_chart(profile, suite, page.metric_of(suite), baseline, index, cells),
        ]
    return "\n".join(part for part in parts if part)


def _suite_section(page: Page, index: int, suite: str) -> str:
    """A suite's heading, chart, and when compared its evidence, findings and changed items."""
    info = page.profile.suites[suite]
    metric, cells = page.metric_of(suite), page.cells_of(suite)
    sweep = f", {len(info.swept_ids)} scored with layers removed" if info.sweep_items is not None else ""
    heading = (
        f'<section class="suite" id="suite-{index}" data-suite="{esc(suite)}"><h2>{esc(suite)}</h2>'
        f'<div class="muted">capability {esc(info.capability)} · protocol {esc(info.protocol)} · metric '
        f"{esc(metric)} · {len(info.item_ids)} items{esc(sweep)}</div>"
    )
    parts = [heading, layer_chart(page.profile, suite, metric, page.baseline, index, cells)]
    if cells:
        parts += [evidence_table(cells), findings_list(cells), items_section(page, index, suite, cells)]
    return "\n".join(part for part in parts if part) + "</section>"


def _run_details(page: Page) -> str:
    """Models, fingerprints, precision, settings and versions: what a reader needs to trust the numbers."""
    model = page.profile.model
    parts = ["<h2>Run details</h2>", meta_list("this run's model", [(k, v) for k, v in model.items()])]
    comparison = page.comparison
    if comparison is not None:
        base = comparison.baseline_model
        precision = (
            f"{base.get('dtype', '?')} on {base.get('device', '?')} vs {model.get('dtype', '?')} on "
            f"{model.get('device', '?')}"
            + (" (compared across precisions: verdicts carry precision noise)" if comparison.precision_mismatch else "")
        )
        parts.append(
            meta_list(
                "baseline",
                [
                    *base.items(),
                    ("precision", precision),
                    (
                        "fingerprints",
                        f"baseline {fingerprint_text(base.get('fingerprint'))}, "
                        f"this run {fingerprint_text(model.get('fingerprint'))}",
                    ),
                ],
            )
        )
        judged = [
            ("tolerance", str(comparison.tolerance)),
            ("alpha", comparison.alpha),
            ("correction", comparison.correction),
            ("hypotheses", comparison.family_size),
            ("power", comparison.power),
            ("fail on improvement", comparison.fail_on_improvement),
        ]
        parts.append(meta_list("how cells are judged", judged))
    if page.refused is not None:
        parts.append(meta_list("comparison", [("refused", page.refused)]))
    suites = [
        (name, f"{info.protocol}, {len(info.item_ids)} items, {len(info.swept_ids)} swept, content {info.content_hash}")
        for name, info in page.profile.suites.items()
    ]
    parts += [
        meta_list("suites", suites),
        meta_list("settings", flat_settings("", page.profile.settings)),
        meta_list("versions and environment", flat_settings("", page.profile.environment)),
    ]
    return "\n".join(parts)
