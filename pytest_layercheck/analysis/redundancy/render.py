"""Layer redundancy in the terminal and as markdown: Block Influence and angular distance per layer, and
the metric's pick beside the capability views' measured drops, from one set of string rows."""

from __future__ import annotations

import math

from rich.console import Group, RenderableType
from rich.text import Text

from pytest_layercheck.analysis.redundancy.capabilities import RedundancyComparison
from pytest_layercheck.analysis.redundancy.metrics import RedundancyResult
from pytest_layercheck.evaluation.describe import fmt_p, fmt_value
from pytest_layercheck.report.analyses import Rows, markdown_rows, rich_rows, span


def redundancy_rows(result: RedundancyResult) -> Rows:
    """One row per layer: its Block Influence and the angular distance of the block starting there."""
    n = result.block
    headers = ["layer", "BI (ShortGPT)", f"d(l, l+{n}) (Gromov)", "± se", "note"]
    body = []
    picked = set(result.bi_suggested)
    for layer in range(result.num_layers):
        notes = []
        has_distance = layer < len(result.distances)
        if layer == result.best_start:
            notes.append(f"most prunable block {span(result.suggested)}")
        if has_distance and layer not in result.eligible:
            notes.append("block holds the last layer: never suggested")
        if layer in picked:
            notes.append("lowest BI")
        body.append([
            f"L{layer}", fmt_value(result.influence[layer]),
            fmt_value(result.distances[layer]) if has_distance else "",
            fmt_value(result.distance_stderr[layer]) if has_distance else "", "; ".join(notes),
        ])  # fmt: skip
    return headers, body


def redundancy_title(result: RedundancyResult) -> str:
    return (
        f"layercheck redundancy: {result.model} · blocks of {result.block} of {result.num_layers} layers · "
        f"{result.prompts} prompts ({', '.join(result.sources)}), {result.tokens} tokens for BI"
    )


def redundancy_caption(result: RedundancyResult) -> str:
    return (
        f"Angular distance picks {span(result.suggested)} (d = {result.best_distance:.3f}); "
        f"the {result.block} lowest-BI layers are {span(result.bi_suggested)}. "
        "d is measured on the last real token at each layer's input; the block must end before the last layer."
    )


def comparison_rows(comparison: RedundancyComparison) -> Rows:
    """One row per capability view: the metric's pick beside the least harmful evaluated block."""
    r = comparison.result
    headers = [
        "capability (protocol)",
        "items",
        "intact",
        f"w/o {span(r.suggested)}",
        "rank",
        "least harmful",
        "Spearman",
        f"w/o BI {span(r.bi_suggested)}",
        "verdict",
    ]
    body = []
    for v in comparison.verdicts:
        view = v.view
        bi = "" if view.bi_drop is None else fmt_value(view.intact_accuracy - view.bi_drop)
        body.append([
            f"{view.label} {view.metric}", str(view.items), fmt_value(view.intact_accuracy),
            fmt_value(view.accuracy(v.suggested)), f"{v.rank}/{v.evaluated}",
            f"{span(r.block_layers(v.least_harmful))}: {fmt_value(view.accuracy(v.least_harmful))}",
            f"{v.spearman:+.2f}" if math.isfinite(v.spearman) else "n/a", bi,
            v.status if v.agrees else f"{v.status} (p={fmt_p(v.p_value)})",
        ])  # fmt: skip
    return headers, body


COMPARISON_CAPTION = (
    "rank: the pick's place among the evaluated blocks by harm (1 = least harmful); "
    "Spearman: rank correlation of distance and accuracy drop over the evaluated blocks"
)


def redundancy_renderable(result: RedundancyResult, comparison: RedundancyComparison | None = None) -> RenderableType:
    parts: list[RenderableType] = [
        rich_rows(redundancy_title(result), redundancy_rows(result), redundancy_caption(result))
    ]
    if comparison is not None:
        parts.append(
            rich_rows(
                f"suggestion vs measured capability drops ({comparison.limit or 'all'} items per suite; "
                f"agrees = within {comparison.tolerance:g} of the least harmful evaluated block)",
                comparison_rows(comparison),
                COMPARISON_CAPTION,
            )
        )
        parts.extend(Text(line) for line in comparison.summary())
        parts.extend(Text(note, style="dim") for note in comparison.notes)
    return Group(*parts)


def redundancy_markdown(result: RedundancyResult, comparison: RedundancyComparison | None = None) -> str:
    lines = [
        f"### {redundancy_title(result)}",
        "",
        markdown_rows(redundancy_rows(result)),
        "",
        f"_{redundancy_caption(result)}_",
    ]
    if comparison is not None:
        lines += [
            "",
            markdown_rows(comparison_rows(comparison)),
            "",
            f"_{COMPARISON_CAPTION}_",
            "",
            *(f"- {s}" for s in comparison.summary()),
            *(f"- _{n}_" for n in comparison.notes),
        ]
    return "\n".join(lines) + "\n"
