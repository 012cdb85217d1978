"""Head importance as a self-contained HTML page: the layer × head grid of drops (critical heads outlined,
heads whose masking raised the metric dashed), the drop per layer, and the ranking."""

from __future__ import annotations

import math

from pytest_layercheck.analysis.heads.importance import HeadImportance
from pytest_layercheck.analysis.heads.render import importance_rows, importance_summary, importance_title
from pytest_layercheck.report.analysis_html import Bar, Grid, Series, bar_chart, head_grid, page, settings_list, table
from pytest_layercheck.report.depth_strip import nice_scale
from pytest_layercheck.report.html import esc


def drop_grid(result: HeadImportance) -> Grid:
    """Every evaluated head's drop, on a scale up to the largest; the critical heads outlined."""
    drops = result.drops
    positive = max([d for d in drops.values() if math.isfinite(d)], default=0.0)
    return Grid(
        values=drops,
        layers=result.layers,
        heads=result.heads_per_layer,
        high=nice_scale(max(positive, 0.0)),
        what="drop",
        unit="G" if result.unit == "group" else "H",
        outlined=frozenset(result.critical_heads()),
        signed=True,
        outline_label=f"critical (top 5% of {result.unit}s by drop)",
        dashed_label="masking raised the metric",
        details={
            key: f"{result.metric} {value:.3f} masked, {result.intact:.3f} intact"
            for key, value in result.accuracy.items()
        },
    )


def render_heads_html(result: HeadImportance, top: int = 15) -> str:
    """Head importance: the summary, the layer × head grid of drops, the drop per layer, the ranking."""
    bars = [
        (f"L{layer}", [Bar(total, f"L{layer}: positive drops sum to {total:.3f}", data={"layer": str(layer)})])
        for layer, total in result.layer_totals().items()
    ]
    settings = {
        "model": result.model,
        "suite": result.suite,
        "protocol": result.protocol,
        "items": len(result.item_ids),
        **result.settings,
    }
    parts = [
        f'<p class="summary">{esc(importance_summary(result))}</p>',
        f"<h2>Drop per {esc(result.unit)}</h2>",
        f'<p class="muted">{esc(result.metric)} intact − {esc(result.metric)} with the {esc(result.unit)} '
        f"masked ({esc(result.mode)} masking); darker = masking costs more. Hover a cell for its numbers.</p>",
        head_grid(drop_grid(result)),
        "<h2>Where in depth</h2>",
        bar_chart(
            "layer-totals",
            bars,
            [Series("sum of positive drops", "total")],
            title="sum of positive drops",
            x_title="layer",
            css="per-layer",
        ),
        f"<h2>Top {min(top, result.num_units)} {esc(result.unit)}s</h2>",
        table(importance_rows(result, top), lead=1, css="ranking"),
        settings_list("settings", settings),
    ]
    return page(importance_title(result), parts)
