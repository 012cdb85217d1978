"""Layer redundancy: which block of layers a similarity metric calls prunable, and what removing it costs.

Two metrics from the pruning literature (Gromov et al., "The Unreasonable Ineffectiveness of the Deeper
Layers", arXiv 2403.17887; ShortGPT, arXiv 2403.03853), both computed from the residual
stream of the model as it is now (an active ablation is measured as installed):

* **Angular distance** (Gromov et al., arXiv 2403.17887). ``x^l`` is the hidden state entering
  decoder layer ``l`` (``x^0`` the embedding output, ``x^N`` the output of the last layer BEFORE the
  final norm). For a block of ``n`` layers starting at ``l``::

      d(l, n) = mean over prompts of arccos(cos(x_T^l, x_T^{l+n})) / pi

  where ``T`` is the prompt's last real (non-padding) token. Removing layers ``l .. l+n-1`` feeds
  ``x^l`` to layer ``l+n``, so a small ``d`` means the block barely turns its input. The suggested
  block is ``l* = argmin d`` over the **eligible** starts ``0 <= l <= N-n-1``: the block must end
  before the last layer (``l+n <= N-1``), so the final layer is never dropped and ``x^N`` is never
  needed for a candidate. (The start ``N-n``, whose block contains the last layer, is still
  computed and shown, marked ineligible.) Ties go to the shallowest start.
* **Block Influence** (ShortGPT, arXiv 2403.03853). ``BI_i = 1 - mean over tokens of
  cos(x^i, x^{i+1})``, pooled over every real token of every prompt (a few-shot prefix that all
  of a suite's prompts share is run once and counts once). ShortGPT removes the ``n``
  lowest-BI layers (not necessarily contiguous; the last layer is not excluded, as in ShortGPT).

Why hooks and not ``output_hidden_states``: in transformers 5.x ``hidden_states[i]`` is the input of
layer ``i`` for ``i < N``, but ``hidden_states[N]`` is replaced by the *final-normed* output
(``last_hidden_state``), which is not the residual stream a block feeds; and not every family
records hidden states the same way. A forward pre-hook and a forward hook on every decoder block
give ``x^0 .. x^N`` uniformly for all supported families (tests check them against
``output_hidden_states`` for ``i < N``).

A similarity metric is a statement about representations, close to a likelihood view of the model.
:func:`compare_with_capabilities` removes the candidate blocks for real and scores capability
suites under a likelihood protocol and under generation, and says where the metric's pick and the
measured drops disagree — the "likelihood versus generation" point of arXiv 2510.02091.

Fixture one-liner::

    measure = lambda block=1, **kw: measure_redundancy(layercheck_model, block=block, **kw)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.bands import format_layers
from pytest_layercheck.data.statistics import mean
from pytest_layercheck.evaluation.comparison import exact_mcnemar
from pytest_layercheck.model import kv_cache
from pytest_layercheck.model.ablation import Ablation
from pytest_layercheck.model.architecture import get_adapter
from pytest_layercheck.model.probes import block_input, block_output, probe_blocks
from pytest_layercheck.scoring.engine import (
    MIN_SHARED_PREFIX,
    PrefixCache,
    accepts_logits_to_keep,
    default_token_budget,
    model_device,
    shared_prefix,
)
from pytest_layercheck.scoring.protocols import prepare, score_sweep
from pytest_layercheck.scoring.rendering import render
from pytest_layercheck.scoring.results import ProtocolResult
from pytest_layercheck.scoring.tokenization import (
    encode_texts,
    encoding_rule,
    model_max_length,
    tokenizer_max_length,
)
from pytest_layercheck.suites.builtin import resolve_suite
from pytest_layercheck.suites.protocols import get_protocol
from pytest_layercheck.suites.schema import Suite

#: Suites whose rendered prompts are the default samples of the metrics.
DEFAULT_SUITES: tuple[str, ...] = ("knowledge", "reasoning")
#: Prompts per suite by default: enough for a stable mean, a few seconds on a CPU.
DEFAULT_PROMPTS = 40
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

ModelLike = Any


# --------------------------------------------------------------------------------------------------
# Residual-stream statistics


@dataclass(frozen=True)
class LayerStates:
    """What the metrics need from one pass over the prompts.

    ``last``: ``[prompts, N+1, hidden]`` float64, the last real token's ``x^0 .. x^N``.
    ``cos_sum``: ``[N]`` float64, summed ``cos(x^i, x^{i+1})`` over every real token.
    ``tokens``: the number of real tokens summed.
    """

    last: torch.Tensor
    cos_sum: torch.Tensor
    tokens: int

    @property
    def num_layers(self) -> int:
        return int(self.cos_sum.shape[0])

    @property
    def num_prompts(self) -> int:
        return int(self.last.shape[0])


class _StreamRecorder:
    """Per-token cosines of each block's input vs output, and last-token states, via block probes."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        self.blocks = list(blocks)
        self.mask: torch.Tensor | None = None  # [rows, width] bool, real tokens
        self.inputs: list[torch.Tensor | None] = [None] * len(self.blocks)
        self.last: list[torch.Tensor | None] = [None] * (len(self.blocks) + 1)
        self.cos: list[torch.Tensor | None] = [None] * len(self.blocks)

    @contextmanager
    def installed(self) -> Iterator[_StreamRecorder]:
        with probe_blocks(self.blocks, on_input=self._before, on_output=self._after):
            yield self

    def _before(self, index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = block_input(args, kwargs)
        self.inputs[index] = hidden
        self.last[index] = hidden[:, -1].double().cpu()

    def _after(self, index: int, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        out = block_output(output)
        before = self.inputs[index]
        assert before is not None and self.mask is not None
        cos = F.cosine_similarity(before.double(), out.double(), dim=-1)  # [rows, width]
        self.cos[index] = cos.cpu().masked_select(self.mask).sum()
        self.inputs[index] = None
        if index == len(self.blocks) - 1:
            self.last[index + 1] = out[:, -1].double().cpu()


def _batches(lengths: Sequence[int], budget: int, skip: int = 0) -> list[list[int]]:
    """Prompt indices, longest first, grouped so rows x (width - skip) stays within ``budget`` tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * (lengths[groups[-1][0]] - skip) <= budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@torch.inference_mode()
def collect_layer_states(
    model: ModelLike,
    tokenizer: Any,
    prompts: Sequence[str],
    token_budget: int | None = None,
    share_prefix: bool = True,
) -> LayerStates:
    """Run ``prompts`` (left-padded batches, explicit positions) and gather :class:`LayerStates`.

    Padding never enters a statistic: with left padding the last column is every row's last real
    token, and per-token cosines are summed under the attention mask. Prompts longer than the
    model's window lose tokens from the left, as everywhere in layercheck.

    ``share_prefix``: few-shot suites repeat one long token prefix in every prompt. It is run once
    (the engine's :class:`~pytest_layercheck.scoring.engine.PrefixCache`) and its tokens enter
    Block Influence once, not once per prompt; the last-token states are unchanged (a prefix
    token's states do not depend on what follows it). Without sharing, every prompt's copy of the
    prefix counts.
    """
    if not prompts:
        raise ConfigError("no prompts to measure redundancy on", "pass at least one prompt (or a non-empty suite)")
    adapter = get_adapter(model)
    blocks = list(adapter.layers)
    if not blocks:
        raise ConfigError("the model has no decoder layers installed", "measure a model with at least two layers")
    rule = encoding_rule(tokenizer)
    encoded = encode_texts(tokenizer, rule, list(prompts))
    limit = model_max_length(model) or tokenizer_max_length(tokenizer)
    if limit is not None:
        encoded = [ids[-limit:] for ids in encoded]
    if any(not ids for ids in encoded):
        raise ConfigError("a prompt encodes to no tokens", "drop empty prompts")
    device = model_device(model)
    budget = token_budget or default_token_budget(device)
    recorder = _StreamRecorder(blocks)
    rows_last: dict[int, torch.Tensor] = {}
    cos_sum = torch.zeros(len(blocks), dtype=torch.float64)
    tokens = 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else rule.empty_context_token
    keep = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    with recorder.installed():
        prefix: PrefixCache | None = None
        common = shared_prefix(encoded) if share_prefix else ()
        if len(common) >= MIN_SHARED_PREFIX:
            recorder.mask = torch.ones((1, len(common)), dtype=torch.bool)
            prefix = PrefixCache.compute(model, common, device)
            if prefix is not None:  # None: a cache layout the prefix cache does not handle
                cos_sum += torch.stack(recorder.cos)  # type: ignore[arg-type]
                tokens += len(common)
        skip = prefix.length if prefix is not None else 0
        for group in _batches([len(ids) for ids in encoded], budget, skip):
            width = len(encoded[group[0]])
            ids = torch.full((len(group), width), int(pad), dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for row, index in enumerate(group):
                seq = encoded[index]
                ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
                mask[row, width - len(seq) :] = 1
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            inputs: dict[str, Any] = {"attention_mask": mask.to(device), "use_cache": prefix is not None, **keep}
            if prefix is None:
                recorder.mask = mask.bool()
                inputs.update(input_ids=ids.to(device), position_ids=positions.to(device))
            else:
                # Columns before ``skip`` come from the prefix cache (row r shifted by its padding);
                # re-run prefix tokens of padded rows (position < skip) are not counted again.
                recorder.mask = mask[:, skip:].bool() & (positions[:, skip:] >= skip)
                inputs.update(
                    input_ids=ids[:, skip:].to(device),
                    position_ids=positions[:, skip:].to(device),
                    **kv_cache.cache_kwargs(model, prefix.expand(width - mask.sum(1))),
                )
            model(**inputs)
            stacked = torch.stack(recorder.last, dim=1)  # type: ignore[arg-type]
            for row, index in enumerate(group):
                rows_last[index] = stacked[row]
            cos_sum += torch.stack(recorder.cos)  # type: ignore[arg-type]
            tokens += int(recorder.mask.sum())
    last = torch.stack([rows_last[i] for i in range(len(encoded))])
    return LayerStates(last=last, cos_sum=cos_sum, tokens=tokens)


# --------------------------------------------------------------------------------------------------
# The metrics


def check_block_size(num_layers: int, block: int) -> None:
    """A block of ``n`` layers that ends before the last layer needs ``1 <= n <= N-1``."""
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ConfigError(
            f"block size {block!r} is not a positive whole number",
            "pass the number of consecutive layers to drop, e.g. block=1 or --block 3",
        )
    if block >= num_layers:
        raise ConfigError(
            f"a block of {block} layers cannot be dropped from a model of {num_layers} layers without "
            "dropping the final layer",
            f"use a block size between 1 and {num_layers - 1}",
        )


def eligible_starts(num_layers: int, block: int) -> range:
    """Starts ``l`` whose block ``l .. l+n-1`` ends before the last layer: ``0 .. N-n-1``."""
    check_block_size(num_layers, block)
    return range(0, num_layers - block)


def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``arccos(cos(a, b)) / pi`` along the last axis, in [0, 1] (float64; cosine clamped to [-1, 1])."""
    cos = F.cosine_similarity(a.double(), b.double(), dim=-1)
    return torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi


def angular_distances(states: LayerStates, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error over prompts of ``d(l, n)`` for every start ``l = 0 .. N-n``.

    The last entry (``l = N-n``) is the block containing the final layer: computed, never suggested.
    """
    check_block_size(states.num_layers, block)
    starts = states.num_layers - block + 1
    per_prompt = angle(states.last[:, :starts], states.last[:, block : block + starts])  # [P, starts]
    mean = per_prompt.mean(0)
    if states.num_prompts > 1:
        stderr = per_prompt.std(0, unbiased=True) / math.sqrt(states.num_prompts)
    else:
        stderr = torch.full_like(mean, float("nan"))
    return mean, stderr


def block_influence(states: LayerStates) -> torch.Tensor:
    """ShortGPT's ``BI_i = 1 - mean over real tokens of cos(x^i, x^{i+1})`` for every layer."""
    return 1.0 - states.cos_sum / states.tokens


def best_start(distances: Sequence[float], num_layers: int, block: int) -> int:
    """``argmin d`` over the eligible starts (never a block containing the last layer); ties: shallowest."""
    starts = eligible_starts(num_layers, block)
    return min(starts, key=lambda s: (distances[s], s))


def lowest_influence(influence: Sequence[float], count: int) -> tuple[int, ...]:
    """ShortGPT's pick: the ``count`` layers of lowest BI (ties: shallowest), in layer order."""
    ranked = sorted(range(len(influence)), key=lambda i: (influence[i], i))
    return tuple(sorted(ranked[:count]))


@dataclass(frozen=True)
class RedundancyResult:
    """Both metrics for one block size, and the blocks they suggest dropping."""

    model: str
    num_layers: int
    block: int
    prompts: int
    tokens: int
    sources: tuple[str, ...]
    #: ``d(l, n)`` for ``l = 0 .. N-n`` (the last start contains the final layer: ineligible).
    distances: tuple[float, ...]
    distance_stderr: tuple[float, ...]
    #: ``BI_i`` for every layer.
    influence: tuple[float, ...]

    @property
    def eligible(self) -> range:
        return eligible_starts(self.num_layers, self.block)

    @property
    def best_start(self) -> int:
        return best_start(self.distances, self.num_layers, self.block)

    @property
    def suggested(self) -> tuple[int, ...]:
        """The block the angular distance calls most prunable: layers ``l* .. l*+n-1``."""
        return tuple(range(self.best_start, self.best_start + self.block))

    @property
    def best_distance(self) -> float:
        return self.distances[self.best_start]

    @property
    def bi_suggested(self) -> tuple[int, ...]:
        """The ``n`` lowest-BI layers (ShortGPT)."""
        return lowest_influence(self.influence, self.block)

    def ranked_starts(self) -> list[int]:
        """Eligible starts from most to least prunable by angular distance."""
        return sorted(self.eligible, key=lambda s: (self.distances[s], s))

    def block_layers(self, start: int) -> tuple[int, ...]:
        return tuple(range(start, start + self.block))

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "num_layers": self.num_layers, "block": self.block,
            "prompts": self.prompts, "tokens": self.tokens, "sources": list(self.sources),
            "distances": list(self.distances), "distance_stderr": list(self.distance_stderr),
            "eligible_starts": [self.eligible.start, self.eligible.stop - 1],
            "influence": list(self.influence), "suggested": list(self.suggested),
            "best_distance": self.best_distance, "bi_suggested": list(self.bi_suggested),
        }  # fmt: skip


def redundancy_from_states(
    states: LayerStates, block: int, model: str = "model", sources: Sequence[str] = ()
) -> RedundancyResult:
    """Both metrics for ``block`` from gathered states (one pass serves every block size)."""
    mean, stderr = angular_distances(states, block)
    return RedundancyResult(
        model=model, num_layers=states.num_layers, block=block, prompts=states.num_prompts,
        tokens=states.tokens, sources=tuple(sources), distances=tuple(mean.tolist()),
        distance_stderr=tuple(stderr.tolist()), influence=tuple(block_influence(states).tolist()),
    )  # fmt: skip


def _model_name(loaded: Any) -> str:
    return str(getattr(loaded, "name", None) or type(getattr(loaded, "model", loaded)).__name__)


def merge_states(parts: Sequence[LayerStates]) -> LayerStates:
    """Pool states gathered in several passes (one per suite, so each suite's prefix is shared)."""
    if not parts:
        raise ConfigError("no states to merge", "gather states from at least one group of prompts")
    if len({p.num_layers for p in parts}) != 1:
        raise ConfigError("states come from models with different layer counts", "merge states of one model")
    return LayerStates(
        last=torch.cat([p.last for p in parts]),
        cos_sum=torch.stack([p.cos_sum for p in parts]).sum(0),
        tokens=sum(p.tokens for p in parts),
    )


def suite_prompts(suites: Sequence[str | Suite], limit: int | None) -> list[tuple[str, list[str]]]:
    """Per suite: a label and the rendered prompts (few-shot block included) of its default protocol."""
    groups: list[tuple[str, list[str]]] = []
    for spec in suites:
        suite = resolve_suite(spec)
        rendered = render(suite.limited(limit), suite.default_protocol)
        groups.append(
            (f"{suite.name} ({len(rendered)} {suite.default_protocol} prompts)", [r.prompt for r in rendered])
        )
    return groups


def measure_redundancy(
    loaded: Any,
    block: int = 1,
    *,
    suites: Sequence[str | Suite] = DEFAULT_SUITES,
    limit: int | None = DEFAULT_PROMPTS,
    prompts: Sequence[str] | None = None,
    token_budget: int | None = None,
) -> RedundancyResult:
    """Angular distance and Block Influence of ``loaded`` (a ``LoadedModel``) for blocks of ``block``.

    Samples are the rendered prompts of ``suites`` (first ``limit`` items each; each suite's
    few-shot prefix is run, and counted in Block Influence, once), or the given ``prompts``.
    """
    check_block_size(get_adapter(loaded.model).num_layers, block)
    groups = suite_prompts(suites, limit) if prompts is None else [(f"{len(prompts)} given prompts", list(prompts))]
    states = merge_states(
        [collect_layer_states(loaded.model, loaded.tokenizer, texts, token_budget) for _, texts in groups]
    )
    return redundancy_from_states(states, block, _model_name(loaded), [label for label, _ in groups])


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
            sug, least = _span(r.block_layers(v.suggested)), _span(r.block_layers(v.least_harmful))
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


def _span(layers: Sequence[int]) -> str:
    return format_layers(layers, prefix="L")


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
    loaded: Any,
    result: RedundancyResult,
    *,
    views: Sequence[tuple[str | Suite, str]] = DEFAULT_VIEWS,
    limit: int | None = DEFAULT_PROMPTS,
    candidates: int | None = None,
    generation_blocks: int = DEFAULT_GENERATION_BLOCKS,
    tolerance: float = DEFAULT_TOLERANCE,
    alpha: float = 0.05,
    progress: Any = None,
) -> RedundancyComparison:
    """Remove candidate blocks for real and set the measured drops beside the metric's suggestion.

    Likelihood views evaluate ``candidates`` blocks (None: every eligible block; an int keeps the
    most prunable by distance plus an even spread, as :func:`generation_candidates`) in one layer
    sweep. Generation views evaluate ``generation_blocks`` blocks chosen by
    :func:`generation_candidates`, always including the suggestion and the least harmful block of the
    same suite's likelihood view. Every view also scores ShortGPT's lowest-BI layers.
    """
    model, tokenizer = loaded.model, loaded.tokenizer
    if get_adapter(model).num_layers != result.num_layers:
        raise ConfigError(
            f"the result was measured on {result.num_layers} layers, the model has {get_adapter(model).num_layers}",
            "measure and compare the same model",
        )
    likelihood_starts = (
        list(result.eligible) if candidates is None else generation_candidates(result, max(1, candidates))
    )
    ordered = sorted(views, key=lambda v: get_protocol(v[1]).generates)  # likelihood first
    verdicts: list[ViewVerdict] = []
    notes: list[str] = []
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
        prepared = prepare(suite.limited(limit), protocol, tokenizer, max_length=model_max_length(model))
        ablations = [Ablation.skipping(result.block_layers(s)) for s in starts]
        bi_layers = result.bi_suggested
        ablations.append(Ablation.skipping(bi_layers))
        intact, removed = score_sweep(model, prepared, ablations)
        metric = _view_metric(protocol)
        order = [r.item.id for r in prepared.items]
        view = CapabilityView(
            suite=suite.name,
            protocol=protocol,
            metric=metric,
            intact=_outcomes(intact, metric, order),
            after={s: _outcomes(r, metric, order) for s, r in zip(starts, removed[:-1])},
            bi_after=_outcomes(removed[-1], metric, order),
        )
        verdict = judge_view(view, result.distances, result.best_start, tolerance, alpha)
        verdicts.append(verdict)
        if not generation:
            least_by_suite.setdefault(suite.name, []).append(verdict.least_harmful)
    if progress:
        progress("done", len(ordered), len(ordered))
    if candidates is not None or any(get_protocol(v.view.protocol).generates for v in verdicts):
        notes.append(
            "Blocks evaluated: "
            + "; ".join(f"{v.view.label}: {v.evaluated}" for v in verdicts)
            + f" of {len(result.eligible)} eligible."
        )
    return RedundancyComparison(result, tuple(verdicts), tolerance, limit, tuple(notes))
