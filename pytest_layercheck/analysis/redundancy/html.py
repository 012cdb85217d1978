"""Layer redundancy as a self-contained HTML page: Block Influence and angular distance per layer as bars,
the table, and per capability view the drop from removing each evaluated block."""

from __future__ import annotations

from pytest_layercheck.analysis.redundancy.capabilities import RedundancyComparison, ViewVerdict
from pytest_layercheck.analysis.redundancy.metrics import RedundancyResult
from pytest_layercheck.analysis.redundancy.render import (
    COMPARISON_CAPTION,
    comparison_rows,
    redundancy_caption,
    redundancy_rows,
    redundancy_title,
)
from pytest_layercheck.report.analyses import num, span
from pytest_layercheck.report.analysis_html import (
    Bar,
    BarGroups,
    Series,
    bar_chart,
    bullet_list,
    page,
    settings_list,
    table,
)
from pytest_layercheck.report.html import RUN_COLOUR, esc


def render_redundancy_html(result: RedundancyResult, comparison: RedundancyComparison | None = None) -> str:
    """Redundancy: Block Influence and angular distance per layer, the table, and the capability views."""
    n = result.block
    parts = [
        f'<p class="summary">{esc(redundancy_caption(result))}</p>',
        "<h2>Block Influence per layer (ShortGPT)</h2>",
        '<p class="muted">1 − cosine similarity of a layer\'s input and output, averaged over tokens: low = the '
        "layer changes little.</p>",
        _influence_chart(result),
        f"<h2>Angular distance of the {n}-layer block starting at each layer (Gromov et al.)</h2>",
        '<p class="muted">d(l, l+n) on the last real token, with ± one standard error; low = the block '
        "changes the stream little. A block holding the last layer is never suggested.</p>",
        _distance_chart(result),
        "<h2>Per layer</h2>",
        table(redundancy_rows(result), css="redundancy"),
    ]
    if comparison is not None:
        parts += [
            f"<h2>The suggestion vs measured capability drops ({esc(comparison.limit or 'all')} items per "
            f"suite; agrees = within {comparison.tolerance:g} of the least harmful evaluated block)</h2>",
            table(comparison_rows(comparison), COMPARISON_CAPTION, css="views"),
            bullet_list(comparison.summary()),
        ]
        parts += [_view_chart(index, verdict) for index, verdict in enumerate(comparison.verdicts)]
        parts.append(bullet_list(comparison.notes, "lines muted"))
    run = {
        "model": result.model,
        "prompts": result.prompts,
        "tokens": result.tokens,
        "sources": ", ".join(result.sources),
    }
    parts.append(settings_list("run", run))
    return page(redundancy_title(result), parts)


def _influence_chart(result: RedundancyResult) -> str:
    """Block Influence of every layer, ShortGPT's lowest-BI layers marked."""
    lowest = set(result.bi_suggested)
    influence = [
        (
            f"L{layer}",
            [
                Bar(
                    value,
                    f"L{layer}: BI {num(value)}" + (" (lowest BI)" if layer in lowest else ""),
                    mark="picked" if layer in lowest else "",
                    data={"layer": str(layer)},
                )
            ],
        )
        for layer, value in enumerate(result.influence)
    ]
    return bar_chart(
        "influence",
        influence,
        [Series("Block Influence", "bi")],
        title="BI",
        x_title="layer",
        marks=[("picked", f"the {result.block} lowest-BI layer(s)")],
        css="per-layer",
    )


def _distance_bar(result: RedundancyResult, layer: int) -> Bar:
    """The angular distance of the block starting at ``layer``, ± its standard error."""
    d, se = result.distances[layer], result.distance_stderr[layer]
    eligible = layer in result.eligible
    picked = layer == result.best_start
    tip = (
        f"block {span(result.block_layers(layer))}: d {num(d)} ± {num(se)}"
        + ("" if eligible else " (holds the last layer: never suggested)")
        + (" (the most prunable block)" if picked else "")
    )
    mark = "picked" if picked else ("" if eligible else "ineligible")
    return Bar(d, tip, d - se, d + se, mark, {"layer": str(layer)})


def _distance_chart(result: RedundancyResult) -> str:
    distances: BarGroups = [
        (f"L{layer}", [_distance_bar(result, layer) if layer < len(result.distances) else None])
        for layer in range(result.num_layers)
    ]
    return bar_chart(
        "distance",
        distances,
        [Series("angular distance", "distance", RUN_COLOUR, hatched=True)],
        title=f"d(l, l+{result.block})",
        x_title="first layer of the block",
        marks=[
            ("picked", f"most prunable block {span(result.suggested)}"),
            ("ineligible", "holds the last layer: never suggested"),
        ],
        css="per-layer",
    )


def _view_bar(verdict: ViewVerdict, start: int) -> Bar:
    """The drop from removing the block at ``start``; the metric's pick and the least harmful marked."""
    view = verdict.view
    drop = view.drop(start)
    notes = [
        note
        for note, at in (("the metric's pick", verdict.suggested), ("least harmful", verdict.least_harmful))
        if start == at
    ]
    return Bar(
        drop,
        f"block at L{start}: drop {drop:+.3f} ({view.accuracy(start):.3f} vs {view.intact_accuracy:.3f} intact)"
        + (f"; {', '.join(notes)}" if notes else ""),
        mark="picked" if start == verdict.suggested else ("least" if start == verdict.least_harmful else ""),
        data={"layer": str(start)},
    )


def _view_chart(index: int, verdict: ViewVerdict) -> str:
    """One capability view: the drop from removing each evaluated block, the pick and the least harmful marked."""
    view = verdict.view
    groups: BarGroups = [(f"L{start}", [_view_bar(verdict, start)]) for start in sorted(view.after)]
    return (
        f"<h3>{esc(view.label)}: {esc(view.metric)} lost when each evaluated block is removed "
        f"({esc(verdict.status)})</h3>"
        + bar_chart(
            f"view-{index}",
            groups,
            [Series("drop", "drop")],
            title=f"drop in {view.metric}",
            x_title="first layer of the removed block",
            marks=[("picked", "the metric's pick"), ("least", "least harmful")],
            css="view",
        )
    )
