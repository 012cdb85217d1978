"""Batched execution of tokenised requests, split into PREPARATION and EXECUTION: the entry points.

A depth profile scores the same requests under ~31 ablations, so everything that does not depend
on the model's weights is done once: tokenisation (``protocols.prepare``), grouping requests that
share a prompt (:func:`prepare_loglikelihood`) and padding them into batches (``*Plan``; built once
per batch setting and cached). Execution (:func:`run_loglikelihood`, :func:`run_generation`) is
then only model calls plus vectorised gathers.

The parts: :mod:`.batching` (how much one pass holds), :mod:`.prompt_cache` (shared-prefix and
continuation caches), :mod:`.loglikelihood` (running a plan; the prompt-sharing scheme) and
:mod:`.generation` (greedy generation). The two settings that decide planning and prefix sharing,
:data:`MIN_SHARED_PREFIX` and :data:`MIN_FILL`, live here with the code that reads them; each of the
other names is imported from the part that defines it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import TYPE_CHECKING

import torch

from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.model.threads import split_over_cores
from pytest_layercheck.scoring.batching import BatchSettings, _chunks, _pad, shared_prefix
from pytest_layercheck.scoring.generation import PreparedGeneration, _generate
from pytest_layercheck.scoring.loglikelihood import (
    LoglikelihoodOutput,
    LoglikelihoodPlan,
    _ContinuationChunk,
    _PromptBatch,
    _Scored,
    empty_totals,
    run_batch,
)
from pytest_layercheck.scoring.prompt_cache import PrefixCache

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "MIN_FILL", "MIN_SHARED_PREFIX", "PreparedLoglikelihood", "prefix_for", "prepare_loglikelihood", "run_generation",
    "run_loglikelihood",
]  # fmt: skip


#: Shared prompt prefixes shorter than this (in tokens) are recomputed per row: a separate prefix
#: pass is not worth it.
MIN_SHARED_PREFIX = 16
#: A prompt batch ends where the next (shorter) row would fill less than this share of the
#: batch's computed width: beyond that, padding wastes more than a further forward call costs.
MIN_FILL = 0.6


def prefix_for(runtime: ModelRuntime, prefix: Sequence[int], share: bool) -> PrefixCache | None:
    """The prefix cache to use for one evaluation, or None (sharing off, prefix too short)."""
    if not share or len(prefix) < MIN_SHARED_PREFIX:
        return None
    return PrefixCache.compute(runtime, prefix)


# --------------------------------------------------------------------------------------------
# Log-likelihood: preparation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedLoglikelihood:
    """Requests grouped for prompt sharing; model-independent, so built once per suite/protocol."""

    #: Unique (already truncated) contexts.
    contexts: tuple[tuple[int, ...], ...]
    #: Per request: index into ``contexts``, and its continuation tokens.
    request_context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]
    #: Unique continuation-pass rows ``(context index, continuation[:-1])``; identical rows of
    #: different requests (same prefix, different last token) are computed once.
    rows: tuple[tuple[int, tuple[int, ...]], ...]
    request_row: tuple[int, ...]  # -1 for single-token continuations
    #: Token prefix common to all contexts (see :func:`shared_prefix`); run once per evaluation.
    prefix: tuple[int, ...] = ()
    _plans: dict[BatchSettings, LoglikelihoodPlan] = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_requests(self) -> int:
        return len(self.continuations)

    @property
    def longest_input(self) -> int:
        """Longest model input (context + continuation[:-1]) in tokens."""
        return max(
            (len(self.contexts[c]) + len(cont) - 1 for c, cont in zip(self.request_context, self.continuations)),
            default=0,
        )

    @cached_property
    def highest_token_id(self) -> int:
        """The largest token id fed to the model or scored (continuations' last tokens index the logits)."""
        return max((max(seq) for seq in (*self.contexts, *self.continuations) if seq), default=-1)

    def plan(self, settings: BatchSettings) -> LoglikelihoodPlan:
        """The padded batches for ``settings``; built on first use, then reused across ablations."""
        if settings not in self._plans:
            self._plans[settings] = _plan_loglikelihood(self, settings)
        return self._plans[settings]


def prepare_loglikelihood(requests: Sequence[tuple[Sequence[int], Sequence[int]]]) -> PreparedLoglikelihood:
    """Group ``(context tokens, continuation tokens)`` requests by shared context and prefix."""
    context_index: dict[tuple[int, ...], int] = {}
    row_index: dict[tuple[int, tuple[int, ...]], int] = {}
    request_context: list[int] = []
    request_row: list[int] = []
    continuations: list[tuple[int, ...]] = []
    for context, continuation in requests:
        if not context or not continuation:
            raise ValueError("log-likelihood requests need a non-empty context and continuation")
        c = context_index.setdefault(tuple(context), len(context_index))
        cont = tuple(continuation)
        request_context.append(c)
        continuations.append(cont)
        request_row.append(row_index.setdefault((c, cont[:-1]), len(row_index)) if len(cont) > 1 else -1)
    return PreparedLoglikelihood(
        contexts=tuple(context_index),
        request_context=tuple(request_context),
        continuations=tuple(continuations),
        rows=tuple(row_index),
        request_row=tuple(request_row),
        prefix=shared_prefix(list(context_index)),
    )


def _plan_loglikelihood(prepared: PreparedLoglikelihood, settings: BatchSettings) -> LoglikelihoodPlan:
    """Pad prepared requests into prompt batches and continuation chunks (done once per setting)."""
    requests_of_context: list[list[int]] = [[] for _ in prepared.contexts]
    for r, c in enumerate(prepared.request_context):
        requests_of_context[c].append(r)
    requests_of_row: list[list[int]] = [[] for _ in prepared.rows]
    for r, row in enumerate(prepared.request_row):
        if row >= 0:
            requests_of_row[row].append(r)
    rows_of_context: list[list[int]] = [[] for _ in prepared.contexts]
    for j, (c, _) in enumerate(prepared.rows):
        rows_of_context[c].append(j)

    order = sorted(range(len(prepared.contexts)), key=lambda c: -len(prepared.contexts[c]))
    lengths = [len(prepared.contexts[c]) for c in order]
    batches: list[_PromptBatch] = []
    shared = len(prepared.prefix) if len(prepared.prefix) >= MIN_SHARED_PREFIX else 0
    for part in _chunks(lengths, settings, scored_all=False, shared=shared, min_fill=MIN_FILL):
        members = order[part]
        width = lengths[part.start]
        ids, mask = _pad([prepared.contexts[c] for c in members], width, left=True)
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)

        first_req = [r for c in members for r in requests_of_context[c]]
        local = {c: i for i, c in enumerate(members)}
        first = _Scored(
            index=(torch.tensor([local[prepared.request_context[r]] for r in first_req], dtype=torch.long),),
            token=torch.tensor([prepared.continuations[r][0] for r in first_req], dtype=torch.long),
            request=torch.tensor(first_req, dtype=torch.long),
        )
        rows = sorted((j for c in members for j in rows_of_context[c]), key=lambda j: -len(prepared.rows[j][1]))
        chunks = _plan_chunks(prepared, rows, local, mask, requests_of_row, settings)
        batches.append(_PromptBatch(ids, mask, position_ids, first, chunks))
    return LoglikelihoodPlan(prepared.n_requests, tuple(batches), prepared.prefix)


def _plan_chunks(
    prepared: PreparedLoglikelihood,
    rows: list[int],
    local: dict[int, int],
    prompt_mask: torch.Tensor,
    requests_of_row: list[list[int]],
    settings: BatchSettings,
) -> tuple[_ContinuationChunk, ...]:
    lengths = [len(prepared.rows[j][1]) for j in rows]
    out: list[_ContinuationChunk] = []
    for part in _chunks(lengths, settings, scored_all=True, cached=prompt_mask.shape[1]):
        members = rows[part]
        width = lengths[part.start]
        source = torch.tensor([local[prepared.rows[j][0]] for j in members], dtype=torch.long)
        ids, cont_mask = _pad([prepared.rows[j][1] for j in members], width, left=False)
        context_len = prompt_mask[source].sum(1, keepdim=True)
        req: list[int] = []
        row_idx: list[int] = []
        pos: list[int] = []
        tok: list[int] = []
        for i, j in enumerate(members):
            for r in requests_of_row[j]:
                targets = prepared.continuations[r][1:]
                req += [r] * len(targets)
                row_idx += [i] * len(targets)
                pos += range(len(targets))
                tok += targets
        scored = _Scored(
            index=(torch.tensor(row_idx, dtype=torch.long), torch.tensor(pos, dtype=torch.long)),
            token=torch.tensor(tok, dtype=torch.long),
            request=torch.tensor(req, dtype=torch.long),
        )
        out.append(
            _ContinuationChunk(
                source=source,
                input_ids=ids,
                attention_mask=torch.cat([prompt_mask[source], cont_mask], dim=1),
                position_ids=(context_len + torch.arange(width)) * cont_mask,  # padding at 0
                scored=scored,
            )
        )
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------------


@torch.inference_mode()
def run_loglikelihood(
    runtime: ModelRuntime,
    plan: LoglikelihoodPlan,
    share_prefix: bool = True,
    workers: int | None = None,
    on_batch: Callable[[], None] | None = None,
) -> LoglikelihoodOutput:
    """Score every request of ``plan`` with ``runtime``'s model (the scheme: :mod:`.loglikelihood`).

    ``share_prefix``: run the contexts' common token prefix once instead of once per context.
    ``workers``: how many prompt batches run at once, each on one core (:func:`split_over_cores`;
    default: torch's thread count on a CPU, else 1). A request is scored within one batch, so
    per-batch totals add up exactly to the serial ones. ``on_batch()`` is called after each batch,
    in the calling thread (progress bars).
    """
    workers = workers if workers is not None else runtime.workers
    total, misses = empty_totals(plan)
    with runtime.grouped_query_sdpa():
        prefix = prefix_for(runtime, plan.prefix, share_prefix)

        def score(batch: _PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
            totals = empty_totals(plan)
            run_batch(runtime, batch, prefix, *totals)
            return totals

        def add(totals: tuple[torch.Tensor, torch.Tensor]) -> None:
            total.add_(totals[0])
            misses.add_(totals[1])
            if on_batch is not None:
                on_batch()

        split_over_cores([partial(score, b) for b in plan.batches], workers, on_result=add)
    return LoglikelihoodOutput(total, misses == 0)


@torch.inference_mode()
def run_generation(
    runtime: ModelRuntime,
    tokenizer: PreTrainedTokenizerBase,
    prepared: PreparedGeneration,
    settings: BatchSettings,
    share_prefix: bool = True,
) -> list[str]:
    """Greedy continuations of every prompt, cut at the first EOS and the first stop string.

    ``share_prefix``: run the prompts' common token prefix once; ``generate`` gets the full
    left-padded prompts and a cache covering their first columns, and computes only the rest.
    """
    texts: list[str] = [""] * len(prepared.prompts)
    with runtime.grouped_query_sdpa():
        _generate(runtime, tokenizer, prepared, settings, prefix_for(runtime, prepared.prefix, share_prefix), texts)
    return texts
