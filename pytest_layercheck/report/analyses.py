"""Tables for the three analyses — layer redundancy, fast vs slow thinking, transfer across numbers.

Each analysis has a rich table (terminal, ``layercheck`` subcommands) and a markdown table (job
summaries, the closing note), built from one list of plain string rows so the two never disagree.
Numbers keep three decimals and carry their metric name, as in the profile tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.text import Text
from tabulate import tabulate

from pytest_layercheck.data.bands import format_layers
from pytest_layercheck.report.format import finite, fmt_p, fmt_value, json_text, render_text  # noqa: F401 - re-exported for callers of this module
from pytest_layercheck.report.terminal import fitted_rows

if TYPE_CHECKING:
    from pytest_layercheck.analysis.redundancy import (
        RedundancyComparison,
        RedundancyResult,
    )
    from pytest_layercheck.analysis.thinking import Shift, ThinkingResult
    from pytest_layercheck.analysis.transfer import StabilityScore, TransferStability

Rows = tuple[list[str], list[list[str]]]


def _signed(value: float) -> str:
    return f"{value:+.3f}" if math.isfinite(value) else "n/a"


def _interval(low: float, high: float) -> str:
    return f"[{low:.2f}, {high:.2f}]" if math.isfinite(low) and math.isfinite(high) else ""


def _rich(title: str, rows: Rows, caption: str | None = None, lead: int = 1) -> RenderableType:
    """Boxed, light or one paragraph per row, whichever fits; a ``note`` column may wrap."""
    headers = rows[0]
    return fitted_rows(*rows, title, caption=caption, lead=lead, wrap=[i for i, h in enumerate(headers) if h == "note"])


def _markdown(rows: Rows) -> str:
    headers, body = rows
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


# --------------------------------------------------------------------------------------------------
# Redundancy


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
    parts: list[RenderableType] = [_rich(redundancy_title(result), redundancy_rows(result), redundancy_caption(result))]
    if comparison is not None:
        parts.append(
            _rich(
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
        _markdown(redundancy_rows(result)),
        "",
        f"_{redundancy_caption(result)}_",
    ]
    if comparison is not None:
        lines += [
            "",
            _markdown(comparison_rows(comparison)),
            "",
            f"_{COMPARISON_CAPTION}_",
            "",
            *(f"- {s}" for s in comparison.summary()),
            *(f"- _{n}_" for n in comparison.notes),
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Fast vs slow thinking


def _shift_row(shift: Shift) -> list[str]:
    return [
        shift.group,
        str(shift.items),
        fmt_value(shift.fast_accuracy),
        fmt_value(shift.slow_accuracy),
        _signed(shift.difference),
        str(shift.corrections),
        str(shift.overthinking),
        fmt_p(shift.p_value),
    ]


THINKING_HEADERS = ["domain", "items", "fast", "slow", "Δ", "corrections", "overthinking", "p"]
THINKING_CAPTION = (
    "fast / slow = accuracy answering directly / after a chain of thought, Δ = slow − fast; "
    "corrections = wrong→right, "
    "overthinking = right→wrong (paired per item); p: exact McNemar on those two counts"
)


def thinking_rows(result: ThinkingResult, fine: bool = False) -> Rows:
    """Per group (medicine, other knowledge, maths, all); ``fine``: per suite/domain instead."""
    shifts = result.by_domain() if fine else result.shifts()
    return THINKING_HEADERS, [_shift_row(s) for s in shifts]


def thinking_title(result: ThinkingResult) -> str:
    s = result.settings
    return (
        f'layercheck thinking: {result.model} · slow = "{s.get("cot_trigger", "")}" '
        f"(greedy, ≤{s.get('cot_tokens')} tokens) · accuracy after answer extraction"
    )


def thinking_renderable(result: ThinkingResult, fine: bool = False) -> RenderableType:
    parts: list[RenderableType] = [_rich(thinking_title(result), thinking_rows(result), THINKING_CAPTION)]
    if fine:
        parts.append(_rich("per domain", thinking_rows(result, fine=True)))
    return Group(*parts)


def thinking_markdown(result: ThinkingResult, fine: bool = False) -> str:
    lines = [f"### {thinking_title(result)}", "", _markdown(thinking_rows(result)), "", f"_{THINKING_CAPTION}_"]
    if fine:
        lines += ["", _markdown(thinking_rows(result, fine=True))]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Transfer across numbers


TRANSFER_HEADERS = [
    "suite",
    "variants",
    "items",
    "pairs",
    "base acc",
    "variant acc",
    "stability [95% CI]",
    "agreement",
    "kappa [95% CI]",
]


def _with_interval(text: str, interval: tuple[float, float]) -> str:
    bounds = _interval(*interval)
    return f"{text} {bounds}" if bounds else text


def _score_row(label: str, method: str, s: StabilityScore) -> list[str]:
    return [
        label,
        method,
        str(s.originals),
        str(s.pairs),
        fmt_value(s.base_accuracy),
        fmt_value(s.variant_accuracy),
        _with_interval(fmt_value(s.stability), s.stability_ci),
        fmt_value(s.agreement),
        _with_interval(_signed(s.kappa), s.kappa_ci),
    ]


def transfer_rows(results: Sequence[TransferStability], by_domain: bool = False) -> Rows:
    """One row per suite (and, with ``by_domain``, one per domain below it)."""
    body = []
    for r in results:
        method = "new numbers" if r.method == "numbers" else "same-kind items"
        body.append(_score_row(f"{r.suite} · {r.metric} ({r.protocol})", method, r.score))
        if by_domain:
            body += [_score_row(f"  {r.suite}/{d}", method, s) for d, s in r.by_domain.items()]
    return TRANSFER_HEADERS, body


def transfer_title(results: Sequence[TransferStability]) -> str:
    counts = sorted({r.variants_per_item for r in results})
    variants = str(counts[0]) if len(counts) == 1 else "/".join(map(str, counts))
    return (
        f"layercheck transfer: {variants} variants per item · "
        "stability = P(variant right | original right) · "
        "kappa = chance-corrected agreement of original and variant outcomes (0 = no transfer)"
    )


def transfer_renderable(results: Sequence[TransferStability], by_domain: bool = False) -> RenderableType:
    return _rich(
        transfer_title(results),
        transfer_rows(results, by_domain),
        "CIs: seeded bootstrap over original items (with all their variants).",
    )


def transfer_markdown(results: Sequence[TransferStability], by_domain: bool = False) -> str:
    return f"### {transfer_title(results)}\n\n{_markdown(transfer_rows(results, by_domain))}\n"


def span(layers: Sequence[int]) -> str:
    return format_layers(layers, prefix="L")
