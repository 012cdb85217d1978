"""Retrieval heads as a self-contained HTML page: the layer × head grid of retrieval scores (retrieval heads
outlined), the ranking, the masking comparison and the needle tests."""

from __future__ import annotations

import math

from pytest_layercheck.analysis.retrieval_heads.detection import RetrievalHeads
from pytest_layercheck.analysis.retrieval_heads.masking import MaskingComparison
from pytest_layercheck.analysis.retrieval_heads.render import (
    masking_rows,
    masking_summary,
    masking_title,
    retrieval_rows,
    retrieval_summary,
    retrieval_title,
)
from pytest_layercheck.report.analysis_html import Grid, cut, head_grid, page, settings_list, table
from pytest_layercheck.report.depth_strip import nice_scale
from pytest_layercheck.report.html import MAX_ITEMS, esc


def score_grid(heads: RetrievalHeads) -> Grid:
    """Every head's retrieval score, on a scale up to the highest (at least the threshold); retrieval heads outlined."""
    peak = max([s for s in heads.scores.values() if math.isfinite(s)], default=0.0)
    return Grid(
        values=heads.scores,
        layers=range(heads.num_layers),
        heads=heads.num_heads,
        high=nice_scale(max(peak, heads.threshold)),
        what="score",
        outlined=frozenset(heads.retrieval_heads),
        outline_label=f"retrieval head (score > {heads.threshold:g})",
    )


def render_retrieval_html(heads: RetrievalHeads, comparison: MaskingComparison | None = None, top: int = 20) -> str:
    """Retrieval heads: the grid of retrieval scores, the ranking, the masking comparison, the needle tests."""
    parts = [
        f'<p class="summary">{esc(retrieval_summary(heads))}</p>',
        "<h2>Retrieval score per head</h2>",
        '<p class="muted">share of the needle tokens each head copied while the model answered '
        "(mean over the valid tests); darker = more retrieval.</p>",
        head_grid(score_grid(heads)),
        f"<h2>Top {min(top, len(heads.scores))} heads</h2>",
        table(retrieval_rows(heads, top), lead=1, css="ranking"),
    ]
    if comparison is not None:
        parts += [
            f"<h2>{esc(masking_title(comparison))}</h2>",
            table(masking_rows(comparison), css="masking"),
            f'<p class="summary">{esc(masking_summary(comparison))}</p>',
        ]
    parts += _needle_tests(heads)
    parts.append(settings_list("settings", {"model": heads.model, **heads.settings}))
    return page(retrieval_title(heads), parts)


def _needle_tests(heads: RetrievalHeads) -> list[str]:
    """The needle tests with each answer and its recall (nothing when there are none)."""
    if not heads.tests:
        return []
    shown = heads.tests[:MAX_ITEMS]
    rows = [
        [t.id, t.size, f"{t.depth:.2f}", cut(t.needle), cut(t.answer), f"{t.recall:.2f}", "yes" if t.valid else "no"]
        for t in shown
    ]
    return [
        "<h2>Needle tests</h2>",
        table(
            (["test", "size", "depth", "needle", "answer", "recall", "valid"], rows),
            lead=2,
            caption=f"{heads.valid_tests} of {len(heads.tests)} valid (recall > {heads.min_recall:g})"
            + (f"; the first {len(shown)} shown" if len(shown) < len(heads.tests) else ""),
            css="needles",
            text=(3, 4),
        ),
    ]
