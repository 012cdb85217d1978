"""The metric's suggestion beside what removing blocks for real costs each capability.

A similarity metric is a statement about representations, close to a likelihood view of the model.
:func:`compare_with_capabilities` removes the candidate blocks for real and scores capability
suites under a likelihood protocol and under generation, and says where the metric's pick and the
measured drops disagree — the "likelihood versus generation" point of arXiv 2510.02091.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_layercheck.analysis.redundancy.metrics import DEFAULT_PROMPTS, RedundancyResult
from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.statistics import exact_mcnemar, mean
from pytest_layercheck.model.ablation import Ablation
from pytest_layercheck.report.analyses import span
from pytest_layercheck.scoring.protocols import prepare, score_sweep
from pytest_layercheck.scoring.results import ProtocolResult
from pytest_layercheck.suites.builtin import resolve_suite
from pytest_layercheck.suites.protocols import get_protocol
from pytest_layercheck.suites.schema import Suite

if TYPE_CHECKING:
    from pytest_layercheck.evaluation.profiler import ProgressHook
    from pytest_layercheck.model.loading import LoadedModel

#: Capability views compared with the metric by default: likelihood and generation for each suite.
DEFAULT_VIEWS: tuple[tuple[str, str], ...] = (
    ("knowledge", "mc_text"), ("reasoning", "mc_text"),
    ("knowledge", "generate_until"), ("reasoning", "generate_until"),
)  # fmt: skip
#: Blocks evaluated under generation (one full generation run each); likelihood views use a sweep.
DEFAULT_GENERATION_BLOCKS = 6
#: The metric's pick "agrees" with a view when it costs at most this much more than the least
#: harmful evaluated block (in accuracy; 0.05 = 2 items of 40).
DEFAULT_TOLERANCE = 0.05


# --------------------------------------------------------------------------------------------------
# Suggestion vs measured capability drops


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    if len(x) != len(y):
        raise ValueError("spearman needs two sequences of equal length")
    if len(x) < 2:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    if np.all(rx == rx[0]) or np.all(ry == ry[0]):
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    order = np.argsort(array, kind="stable")
    ranks = np.empty(len(array), dtype=float)
    sorted_values = array[order]
    start = 0
    while start < len(array):
        stop = start
        while stop + 1 < len(array) and sorted_values[stop + 1] == sorted_values[start]:
            stop += 1
        ranks[order[start : stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    return ranks


@dataclass(frozen=True)
class CapabilityView:
    """One capability under one protocol, intact and with each evaluated block removed.

    ``after`` maps a block start to the per-item outcomes (1/0) with that block removed; ``intact``
    holds the outcomes of the whole model; ``bi_after`` those with ShortGPT's layers removed.
    """

    suite: str
    protocol: str
    metric: str
    intact: tuple[float, ...]
    after: Mapping[int, tuple[float, ...]]
    bi_after: tuple[float, ...] | None = None

    @property
    def items(self) -> int:
        return len(self.intact)

    @property
    def label(self) -> str:
        kind = "generation" if get_protocol(self.protocol).generates else "likelihood"
        return f"{self.suite}/{self.protocol} ({kind})"

    @property
    def intact_accuracy(self) -> float:
        return mean(self.intact)

    def accuracy(self, start: int) -> float:
        return mean(self.after[start])

    def drop(self, start: int) -> float:
        """Accuracy lost by removing the block at ``start`` (positive = worse)."""
        return self.intact_accuracy - self.accuracy(start)

    @property
    def bi_drop(self) -> float | None:
        return None if self.bi_after is None else self.intact_accuracy - mean(self.bi_after)


@dataclass(frozen=True)
class ViewVerdict:
    """How the metric's pick fares in one capability view."""

    view: CapabilityView
    suggested: int
    least_harmful: int
    rank: int  # 1 = the suggestion is the least harmful evaluated block
    evaluated: int
    spearman: float  # distance vs drop over the evaluated blocks (positive = metric orders harm)
    gap: float  # drop(suggested) - drop(least harmful), >= 0
    p_value: float  # exact McNemar, suggested vs least harmful removal, paired by item
    tolerance: float = DEFAULT_TOLERANCE
    alpha: float = 0.05

    @property
    def suggested_drop(self) -> float:
        return self.view.drop(self.suggested)

    @property
    def least_drop(self) -> float:
        return self.view.drop(self.least_harmful)

    @property
    def agrees(self) -> bool:
        """The suggestion costs at most ``tolerance`` more than the least harmful evaluated block."""
        return self.gap <= self.tolerance + 1e-9

    @property
    def status(self) -> str:
        """``agrees``; ``disagrees`` (gap beyond tolerance and McNemar p < alpha); else ``unclear``.

        The least harmful block is the best of several noisy accuracies, so its advantage is
        optimistic (the p-value does not correct for that choice): ``disagrees`` is conservative
        only in requiring significance, not in the selection.
        """
        if self.agrees:
            return "agrees"
        return "disagrees" if self.p_value < self.alpha else "unclear"


def judge_view(
    view: CapabilityView,
    distances: Sequence[float],
    suggested: int,
    tolerance: float = DEFAULT_TOLERANCE,
    alpha: float = 0.05,
) -> ViewVerdict:
    """Rank the evaluated blocks by harm and test the metric's pick against the least harmful one.

    Least harmful: highest accuracy after removal; ties go to the smaller distance, then the
    shallower start, so an equally good suggestion counts as the least harmful.
    """
    if suggested not in view.after:
        raise ConfigError(
            f"block start {suggested} was not evaluated in {view.label}",
            "evaluate the suggested block (compare_with_capabilities always does)",
        )
    starts = sorted(view.after)
    ranked = sorted(starts, key=lambda s: (-view.accuracy(s), distances[s], s))
    least = ranked[0]
    suggested_outcomes, least_outcomes = view.after[suggested], view.after[least]
    worse = sum(1 for a, b in zip(suggested_outcomes, least_outcomes) if a < b)
    better = sum(1 for a, b in zip(suggested_outcomes, least_outcomes) if a > b)
    return ViewVerdict(
        view=view, suggested=suggested, least_harmful=least, rank=ranked.index(suggested) + 1,
        evaluated=len(starts), spearman=spearman([distances[s] for s in starts], [view.drop(s) for s in starts]),
        gap=view.drop(suggested) - view.drop(least), p_value=exact_mcnemar(worse, better),
        tolerance=tolerance, alpha=alpha,
    )  # fmt: skip


@dataclass(frozen=True)
class RedundancyComparison:
    """The metric's suggestion beside the measured drops of every capability view."""

    result: RedundancyResult
    verdicts: tuple[ViewVerdict, ...]
    tolerance: float
    limit: int | None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def disagreements(self) -> tuple[ViewVerdict, ...]:
        """Views where the metric's pick costs beyond tolerance more than the least harmful block."""
        return tuple(v for v in self.verdicts if not v.agrees)

    def to_json(self) -> dict[str, Any]:
        return {
            "result": self.result.to_json(), "tolerance": self.tolerance, "limit": self.limit,
            "views": [
                {"view": v.view.label, "suite": v.view.suite, "protocol": v.view.protocol, "metric": v.view.metric,
                 "items": v.view.items, "intact": v.view.intact_accuracy,
                 "after": {str(s): v.view.accuracy(s) for s in sorted(v.view.after)},
                 "bi_drop": v.view.bi_drop, "suggested": v.suggested, "least_harmful": v.least_harmful,
                 "rank": v.rank, "evaluated": v.evaluated, "spearman": v.spearman, "gap": v.gap,
                 "p_value": v.p_value, "status": v.status}
                for v in self.verdicts
            ],
            "summary": self.summary(), "notes": list(self.notes),
        }  # fmt: skip

    def summary(self) -> list[str]:
        """One sentence per view, then the likelihood-vs-generation contrast per suite."""
        r = self.result
        lines = []
        for v in self.verdicts:
            sug, least = span(r.block_layers(v.suggested)), span(r.block_layers(v.least_harmful))
            head = (
                f"{v.view.label}: removing {sug} (the metric's pick) drops accuracy by "
                f"{v.suggested_drop:.3f} ({v.view.intact_accuracy:.3f} -> {v.view.accuracy(v.suggested):.3f}), "
                f"rank {v.rank} of {v.evaluated} blocks by harm, Spearman(distance, drop) = {v.spearman:.2f}"
            )
            if v.status == "agrees":
                lines.append(head + f"; agrees (least harmful {least}, drop {v.least_drop:.3f}).")
            else:
                lines.append(
                    head + f"; {v.status.upper()}: {least} drops only {v.least_drop:.3f} "
                    f"(gap {v.gap:.3f} > {v.tolerance:g}, McNemar p = {v.p_value:.3g})."
                )
        by_suite: dict[str, dict[bool, ViewVerdict]] = {}
        for v in self.verdicts:
            by_suite.setdefault(v.view.suite, {})[get_protocol(v.view.protocol).generates] = v
        for suite, pair in by_suite.items():
            if len(pair) < 2:
                continue
            lk, g = pair[False], pair[True]
            line = (
                f"{suite}: the metric's pick costs {lk.suggested_drop:.3f} under likelihood and "
                f"{g.suggested_drop:.3f} under generation"
            )
            if lk.agrees and not g.agrees:
                line += (
                    " — harmless-looking by likelihood, not by generation: the similarity metric, "
                    "like likelihood scoring, misses what generation needs."
                )
            elif not lk.agrees and g.agrees:
                line += " — worse than the best block by likelihood, among the least harmful by generation."
            else:
                line += "."
            lines.append(line)
        return lines


def generation_candidates(result: RedundancyResult, count: int, must: Sequence[int] = ()) -> list[int]:
    """Blocks to evaluate under generation (each costs a full generation run).

    The suggestion and ``must`` (e.g. the least harmful block under likelihood) first, then the next
    most prunable block by distance, then starts spread evenly over depth, until ``count``.
    """
    chosen: list[int] = []
    for start in [result.best_start, *must]:
        if start in result.eligible and start not in chosen:
            chosen.append(start)
    ranked = result.ranked_starts()
    eligible = list(result.eligible)
    spread = [eligible[round(k * (len(eligible) - 1) / max(1, count - 1))] for k in range(count)]
    for start in [*ranked[1:2], *spread, *ranked]:
        if len(chosen) >= count:
            break
        if start not in chosen:
            chosen.append(start)
    return sorted(chosen)


def _outcomes(result: ProtocolResult, metric: str, order: Sequence[str]) -> tuple[float, ...]:
    by_id = {o.item_id: o for o in result.outcomes}
    return tuple(float(by_id[i].scores[metric]) for i in order)


def _view_metric(protocol: str) -> str:
    return get_protocol(protocol).primary_metric


def compare_with_capabilities(
    loaded: LoadedModel,
    result: RedundancyResult,
    *,
    views: Sequence[tuple[str | Suite, str]] = DEFAULT_VIEWS,
    limit: int | None = DEFAULT_PROMPTS,
    candidates: int | None = None,
    generation_blocks: int = DEFAULT_GENERATION_BLOCKS,
    tolerance: float = DEFAULT_TOLERANCE,
    alpha: float = 0.05,
    progress: ProgressHook | None = None,
) -> RedundancyComparison:
    """Remove candidate blocks for real and set the measured drops beside the metric's suggestion.

    Likelihood views evaluate ``candidates`` blocks (None: every eligible block; an int keeps the
    most prunable by distance plus an even spread, as :func:`generation_candidates`) in one layer
    sweep. Generation views evaluate ``generation_blocks`` blocks chosen by
    :func:`generation_candidates`, always including the suggestion and the least harmful block of the
    same suite's likelihood view. Every view also scores ShortGPT's lowest-BI layers.
    """
    if loaded.num_layers != result.num_layers:
        raise ConfigError(
            f"the result was measured on {result.num_layers} layers, the model has {loaded.num_layers}",
            "measure and compare the same model",
        )
    likelihood_starts = (
        list(result.eligible) if candidates is None else generation_candidates(result, max(1, candidates))
    )
    ordered = sorted(views, key=lambda v: get_protocol(v[1]).generates)  # likelihood first
    verdicts: list[ViewVerdict] = []
    least_by_suite: dict[str, list[int]] = {}
    for step, (spec, protocol) in enumerate(ordered):
        suite = resolve_suite(spec)
        generation = get_protocol(protocol).generates
        starts = (
            generation_candidates(result, generation_blocks, least_by_suite.get(suite.name, ()))
            if generation
            else likelihood_starts
        )
        if progress:
            progress(f"{suite.name}/{protocol}", step, len(ordered))
        view = measure_view(loaded, result, suite.limited(limit), protocol, starts)
        verdict = judge_view(view, result.distances, result.best_start, tolerance, alpha)
        verdicts.append(verdict)
        if not generation:
            least_by_suite.setdefault(suite.name, []).append(verdict.least_harmful)
    if progress:
        progress("done", len(ordered), len(ordered))
    notes: list[str] = []
    if candidates is not None or any(get_protocol(v.view.protocol).generates for v in verdicts):
        notes.append(
            "Blocks evaluated: "
            + "; ".join(f"{v.view.label}: {v.evaluated}" for v in verdicts)
            + f" of {len(result.eligible)} eligible."
        )
    return RedundancyComparison(result, tuple(verdicts), tolerance, limit, tuple(notes))


def measure_view(
    loaded: LoadedModel, result: RedundancyResult, suite: Suite, protocol: str, starts: Sequence[int]
) -> CapabilityView:
    """``suite`` under ``protocol`` intact, with each block at ``starts`` removed and with ShortGPT's
    lowest-BI layers removed, in one layer sweep."""
    prepared = prepare(suite, protocol, loaded.tokenizer, max_length=loaded.runtime.max_length)
    ablations = [Ablation.skipping(result.block_layers(s)) for s in starts]
    ablations.append(Ablation.skipping(result.bi_suggested))
    intact, removed = score_sweep(loaded.runtime, prepared, ablations)
    metric = _view_metric(protocol)
    order = [r.item.id for r in prepared.items]
    return CapabilityView(
        suite=suite.name,
        protocol=protocol,
        metric=metric,
        intact=_outcomes(intact, metric, order),
        after={s: _outcomes(r, metric, order) for s, r in zip(starts, removed[:-1])},
        bi_after=_outcomes(removed[-1], metric, order),
    )
