"""Batched execution of tokenised requests, split into PREPARATION and EXECUTION.

A depth profile scores the same requests under ~31 ablations, so everything that does not depend
on the model's weights is done once: tokenisation (``protocols.prepare``), grouping requests that
share a prompt (:func:`prepare_loglikelihood`) and padding them into batches (``*Plan``; built once
per batch setting and cached). Execution (:func:`run_loglikelihood`, :func:`run_generation`) is
then only model calls plus vectorised gathers.

**Log-likelihood with prompt sharing.** Requests are ``(context tokens, continuation tokens)``.
All requests with the same context (the choices of a multiple-choice item) share one forward
pass of that context:

1. *Prompt pass*: unique contexts, longest first, LEFT-padded with an attention mask and explicit
   ``position_ids`` (so rotary and GPT-2-style absolute positions are those of the unpadded
   sequence), ``logits_to_keep=1``. The last position is then the last real token of every row,
   and its logits score the FIRST token of every continuation of that context — for single-token
   continuations (``mc_letters``: " A", " B", ...) this is the whole score, exactly lm-eval's
   one-token-continuation cache.
2. *Continuation pass* (only for continuations longer than one token): the prompt pass's KV
   cache is selected per continuation row (inside each layer, :class:`RowsOfLayer`) and
   ``continuation[:-1]`` is run on top of it, RIGHT-padded (padding after the real tokens never
   influences them under causal attention), with positions continuing from the real context length.
   Its logits score tokens 1..n-1.

This is the same computation as running each ``context + continuation`` separately (lm-eval's
way), evaluated in a different order; numbers agree to float rounding, as for any batching.

**Shared-prefix reuse.** Few-shot suites put the same examples before every prompt, so most of a
prompt is a token prefix common to all of them. With ``share_prefix`` (the default) and a common
prefix of at least :data:`MIN_SHARED_PREFIX` tokens, each evaluation first runs that prefix ONCE
(batch size 1, into a fresh full-length ``DynamicCache``, so it is always computed by the model as
it is at call time, ablated or not). Every prompt batch then keeps exactly the layout of the
unshared prompt pass (rows left-padded to width ``W``, real tokens contiguous and ending at
``W - 1``), but the first ``K`` = prefix-length columns come from the prefix cache instead of being
computed: row ``r`` with ``pad_r`` padding columns holds prefix entry ``j - pad_r`` at cache column
``j`` (a per-row shifted copy, written into a new buffer of the batch's width, so nothing is mutated
or shared between batches; columns ``< pad_r`` are padding, masked as before). Only columns ``K..W-1`` (the
rest of the prefix for rows with ``pad_r > 0``, then each row's own suffix) are run. Every token
therefore sits at the same cache column, with the same position id and attention mask as without
sharing — which also keeps index-based sliding windows (Gemma 2/3) exact — and a prefix token's
keys/values depend only on the prefix itself under causal attention. The resulting cache is the
one the unshared prompt pass would produce, so continuation chunks run on it unchanged.
Greedy generation shares the prefix the same way: ``generate`` receives the full left-padded
prompts plus the shifted prefix cache and only computes the columns the cache does not cover.
Log-probabilities are ``logit[target] - logsumexp(logits)`` in float32, gathered for all scored
positions at once; ``greedy`` is whether every target token is the argmax.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any

import torch
from transformers import (
    DynamicCache,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicLayer

from pytest_layercheck.core.errors import NonFiniteScoreError
from pytest_layercheck.model import kv_cache
from pytest_layercheck.model.attention import grouped_query_sdpa
from pytest_layercheck.model.devices import model_device
from pytest_layercheck.model.threads import cores_for, split_over_cores

#: Default forward-pass size in padded tokens (KV-cache tokens included for continuation passes).
#: CPU throughput saturates at small batches; accelerators profit from large ones.
CPU_TOKEN_BUDGET = 2048
ACCELERATOR_TOKEN_BUDGET = 16384
#: A continuation call's cached tokens (its rows' prompt keys and values) may number this many times
#: the token budget: attention only reads them, one layer at a time (:class:`RowsOfLayer`), so they cost
#: far less than computed tokens; counting them fully split a prompt batch's continuations into a call
#: of a few rows per context, each streaming every weight.
CACHE_READS = 8
#: Upper bound on float32 logits materialised at once (elements; 2**24 = 64 MiB; logsumexp doubles it).
LOGIT_BUDGET = 2**24
#: Shared prompt prefixes shorter than this (in tokens) are recomputed per row: a separate prefix
#: pass is not worth it.
MIN_SHARED_PREFIX = 16
#: A prompt batch ends where the next (shorter) row would fill less than this share of the
#: batch's computed width: beyond that, padding wastes more than a further forward call costs.
MIN_FILL = 0.6


def default_token_budget(device: torch.device) -> int:
    """Forward-pass size by device: a token budget adapts to prompt lengths, an item count does not."""
    return CPU_TOKEN_BUDGET if device.type == "cpu" else ACCELERATOR_TOKEN_BUDGET


@dataclass(frozen=True)
class BatchSettings:
    """Limits of one forward pass.

    ``token_budget`` bounds padded input tokens, ``max_rows`` (the user's ``batch_size``) bounds
    sequences, and ``logit_rows`` bounds the positions whose full-vocabulary logits are
    materialised at once (``LOGIT_BUDGET // vocab_size``).
    """

    token_budget: int
    max_rows: int | None = None
    logit_rows: int | None = None

    def fits(self, rows: int, width: int, scored_width: int, cached: int = 0) -> bool:
        """Whether ``rows`` sequences of ``width`` tokens, ``scored_width`` of them with logits, each
        attending to ``cached`` tokens of a prompt cache, fit."""
        return (
            rows * width <= self.token_budget
            and rows * (width + cached) <= CACHE_READS * self.token_budget
            and (self.max_rows is None or rows <= self.max_rows)
            and (self.logit_rows is None or rows * scored_width <= self.logit_rows)
        )


def _chunks(lengths: Sequence[int], settings: BatchSettings, scored_all: bool, cached: int = 0,
            shared: int = 0, min_fill: float = 0.0) -> list[slice]:
    """Split length-sorted (descending) rows into consecutive slices that fit ``settings``.

    The first row of a slice is its longest, so its length is the padded width. ``scored_all``:
    logits are needed at every position (continuation pass), not only the last (prompt pass).
    ``cached``: KV-cache tokens each row attends to (continuation pass; see :data:`CACHE_READS`).
    ``shared``: leading tokens that come from a shared-prefix cache and are not computed; with
    ``min_fill`` a slice also ends where a row's computed part would fill less than that share of
    the slice's computed width (padding costs as much as real tokens). A row too long for the budget on its
    own still gets a slice of its own.
    """
    out: list[slice] = []
    start = 0
    for i in range(len(lengths)):
        width = lengths[start]
        underfilled = lengths[i] - shared < min_fill * (width - shared)
        if i > start and (underfilled or not settings.fits(i + 1 - start, width, width if scored_all else 1, cached)):
            out.append(slice(start, i))
            start = i
    if lengths:
        out.append(slice(start, len(lengths)))
    return out


def _pad(seqs: Sequence[Sequence[int]], width: int, left: bool, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token lists to ``width``; returns (ids, attention mask)."""
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, seq in enumerate(seqs):
        if seq:
            cols = slice(width - len(seq), width) if left else slice(0, len(seq))
            ids[r, cols] = torch.tensor(seq, dtype=torch.long)
            mask[r, cols] = 1
    return ids, mask


def shared_prefix(seqs: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The longest common token prefix of ``seqs``, cut so every sequence keeps one token of its own.

    The last token of each sequence must be run per row (its logits score what follows), so the
    prefix is at most ``min(len) - 1`` tokens. Fewer than two distinct sequences share nothing.
    """
    distinct = set(map(tuple, seqs))
    if len(distinct) < 2:
        return ()
    # The common prefix of all sequences is that of the lexicographically first and last ones.
    lo, hi = min(distinct), max(distinct)
    limit = min(map(len, distinct)) - 1
    n = 0
    while n < limit and lo[n] == hi[n]:
        n += 1
    return tuple(lo[:n])


def select_rows(states: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows ``rows`` of cached keys or values, as a new contiguous tensor: what ``states[rows]`` gives,
    3-6x faster on a CPU for a continuation call's rows (``index_select`` copies whole rows; advanced
    indexing goes element by element; measured in ``benchmarks/RESULTS.md``)."""
    return states.index_select(0, rows)


class FilledLayer(DynamicLayer):
    """A full-attention cache layer for a prompt call over a shared prefix, whose width is known
    before the call: keys and values live in one buffer each, the prefix is written once, shifted per
    row, and the call's own columns in place, so nothing is concatenated (``DynamicLayer`` repeats,
    gathers and concatenates: about 3x the time, measured in ``benchmarks/RESULTS.md``). Once full,
    attention reads the buffers themselves: the same numbers, contiguous."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, filled: int) -> None:
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self.buffers = (keys, values)
        self.filled = filled
        self.keys, self.values = keys[:, :, :filled], values[:, :, :filled]

    @classmethod
    def shifted(cls, keys: torch.Tensor, values: torch.Tensor, pads: torch.Tensor, width: int) -> FilledLayer:
        """Prefix states ``[streams, heads, K, dim]`` laid out for ``len(pads)`` left-padded rows per
        stream (stream-major): row ``r`` holds prefix entry ``j - pads[r]`` at column ``j`` and entry 0
        before it (padding, masked), with room up to ``width`` columns."""
        streams, rows = keys.shape[0], int(pads.shape[0])
        buffers = []
        for prefix in (keys, values):
            _, heads, length, dim = prefix.shape
            buffer = prefix.new_empty(streams * rows, heads, width, dim)
            grid = buffer.view(streams, rows, heads, width, dim)
            for row, pad in enumerate(min(int(p), length) for p in pads.tolist()):  # padding may pass the prefix
                grid[:, row, :, pad:length] = prefix[:, :, :length - pad]
                if pad:
                    grid[:, row, :, :pad] = prefix[:, :, :1]
            buffers.append(buffer)
        return cls(buffers[0], buffers[1], keys.shape[2])

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.buffers
        end = self.filled + key_states.shape[-2]
        if end > keys.shape[-2]:  # no room left (a continuation extends selected rows): grow as DynamicLayer does
            keys = torch.cat([keys[:, :, :self.filled], key_states], dim=-2)
            values = torch.cat([values[:, :, :self.filled], value_states], dim=-2)
            self.buffers = (keys, values)
        else:
            keys[:, :, self.filled:end] = key_states
            values[:, :, self.filled:end] = value_states
        self.filled = end
        self.keys, self.values = keys[:, :, :end], values[:, :, :end]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep rows ``indices`` (new tensors, full: a gather into a strided buffer measured twice as slow
        as gathering, then concatenating)."""
        keys, values = self.buffers
        self.buffers = (select_rows(keys.narrow(2, 0, self.filled), indices),
                        select_rows(values.narrow(2, 0, self.filled), indices))
        self.keys, self.values = self.buffers


class PrefixCache:
    """Keys/values of the shared prefix for the model as it is now (one batch-1 pass per evaluation).

    :meth:`expand` builds, per prompt batch, a new cache whose row ``r`` holds prefix entry
    ``j - pads[r]`` at column ``j`` (columns before ``pads[r]`` are left padding, masked).
    """

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]], length: int) -> None:
        self.layers = layers
        self.length = length

    @classmethod
    def compute(cls, model: Any, prefix: Sequence[int], device: torch.device) -> PrefixCache | None:
        """Run ``prefix`` once; None when the model's cache is not a plain full-length DynamicCache."""
        ids = torch.tensor([list(prefix)], dtype=torch.long, device=device)
        _, cache = _forward_logits(
            model,
            keep_last=True,
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            position_ids=torch.arange(len(prefix), device=device).unsqueeze(0),
            **kv_cache.cache_kwargs(model, DynamicCache()),  # no config: full-length layers, none slides or drops
            use_cache=True,
        )
        layers = getattr(cache, "layers", None)
        if not isinstance(cache, DynamicCache) or not layers:
            return None
        if any(type(layer) is not DynamicLayer or layer.keys is None or layer.keys.ndim != 4
               or layer.keys.shape[0] != 1 or layer.keys.shape[-2] != len(prefix) for layer in layers):
            return None
        return cls([(layer.keys, layer.values) for layer in layers], len(prefix))

    def expand(self, pads: torch.Tensor, width: int | None = None) -> DynamicCache:
        """A new cache of ``length`` columns for ``len(pads)`` rows, row ``r`` shifted right by ``pads[r]``.

        With ``width`` (the prompt call's padded width, known when scoring) its layers are
        :class:`FilledLayer` buffers of that width, which the call fills in place. The prefix tensors
        are only read: later forwards grow (and ``batch_select_indices`` re-index) the new cache, never this one.
        """
        if width is not None:
            cache = DynamicCache()
            cache.layers = [FilledLayer.shifted(keys, values, pads, width) for keys, values in self.layers]
            return cache
        rows = int(pads.shape[0])
        index = None
        if bool((pads > 0).any()):
            index = (torch.arange(self.length).unsqueeze(0) - pads.cpu().unsqueeze(1)).clamp(min=0)
        on_device: dict[torch.device, torch.Tensor] = {}  # layers may sit on several devices
        cache = DynamicCache()
        for layer_idx, (keys, values) in enumerate(self.layers):
            if index is None:
                k, v = keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1)
            else:
                if keys.device not in on_device:
                    on_device[keys.device] = index.to(keys.device)
                k, v = self._shift(keys, on_device[keys.device]), self._shift(values, on_device[keys.device])
            cache.update(k, v, layer_idx)
        return cache

    @staticmethod
    def _shift(states: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """[1, H, K, D] -> [rows, H, K, D] with row r's column j = column index[r, j] of ``states``."""
        rows, _ = index.shape
        _, heads, _, dim = states.shape
        gather = index.view(rows, 1, -1, 1).expand(rows, heads, -1, dim)
        return torch.gather(states.expand(rows, -1, -1, -1), 2, gather)


def prefix_for(model: Any, prefix: Sequence[int], share: bool) -> PrefixCache | None:
    """The prefix cache to use for one evaluation, or None (sharing off, prefix too short)."""
    if not share or len(prefix) < MIN_SHARED_PREFIX:
        return None
    return PrefixCache.compute(model, prefix, model_device(model))


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


@dataclass(frozen=True)
class _Scored:
    """Where to read log-probs: ``index`` into the logits (all but the vocab axis), target token, request."""

    index: tuple[torch.Tensor, ...]
    token: torch.Tensor
    request: torch.Tensor


@dataclass(frozen=True)
class _ContinuationChunk:
    source: torch.Tensor  # [R] rows of the prompt batch whose cache this chunk extends
    input_ids: torch.Tensor  # [R, L2] continuation[:-1], right-padded
    attention_mask: torch.Tensor  # [R, L + L2] prompt mask of the source row, then continuation mask
    position_ids: torch.Tensor  # [R, L2]
    scored: _Scored


@dataclass(frozen=True)
class _PromptBatch:
    input_ids: torch.Tensor  # [B, L] left-padded contexts
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    scored: _Scored  # first continuation token of every request of these contexts
    chunks: tuple[_ContinuationChunk, ...]


@dataclass(frozen=True)
class LoglikelihoodPlan:
    n_requests: int
    batches: tuple[_PromptBatch, ...]
    prefix: tuple[int, ...] = ()


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
# Log-likelihood: execution
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoglikelihoodOutput:
    """Per request: summed log-probability of the continuation, and whether it is the greedy one."""

    loglikelihood: torch.Tensor  # float64 [N]
    greedy: torch.Tensor  # bool [N]


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether ``model.forward`` can return logits for the last positions only (saves the full vocab rows)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _forward_logits(model: Any, keep_last: bool, **inputs: Any) -> tuple[torch.Tensor, Any]:
    """Run the model; logits for the last position only when ``keep_last`` (LM head skipped elsewhere)."""
    if accepts_logits_to_keep(model):
        out = model(**inputs, logits_to_keep=1 if keep_last else 0)
        logits = out.logits
    else:  # custom models without logits_to_keep: compute everything, keep what is needed
        out = model(**inputs)
        logits = out.logits[:, -1:] if keep_last else out.logits
    return logits, kv_cache.returned_cache(out)


def _accumulate(logits: torch.Tensor, scored: _Scored, total: torch.Tensor, misses: torch.Tensor) -> None:
    """Add the scored positions' log-probs and greedy misses to the per-request totals."""
    device = logits.device
    logits = logits.float()
    index = tuple(i.to(device) for i in scored.index)
    token = scored.token.to(device)
    logprob = logits[index + (token,)] - torch.logsumexp(logits, dim=-1)[index]
    miss = logits.argmax(dim=-1)[index] != token
    total.index_add_(0, scored.request, logprob.double().cpu())
    misses.index_add_(0, scored.request, miss.long().cpu())


class RowsOfLayer(CacheLayerMixin):
    """Rows ``index`` of a prompt call's cache layer, for one continuation call on top of it.

    The rows are gathered inside :meth:`update`, extended by the call's own keys and values as the
    source layer's class extends them, handed to attention and dropped: one layer's selection exists at
    a time. Selecting rows up front (``batch_select_indices`` on a copied cache) held a copy of every
    layer for the whole call, the continuation pass's largest allocation, which is why the plan counted
    cached tokens fully in its token budget (see :data:`CACHE_READS`). The source is never changed.
    """

    is_croppable = False

    def __init__(self, source: CacheLayerMixin, index: torch.Tensor) -> None:
        super().__init__()
        self.source, self.index = source, index
        self.is_initialized = True
        self.is_sliding = getattr(source, "is_sliding", False)
        self.appended = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise RuntimeError("a selection of a prompt cache layer is initialised by that layer")

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        # Shallow: the selection makes new tensors, the source keeps its own (every layer class can select).
        layer: Any = copy.copy(self.source)
        if type(layer).batch_select_indices is DynamicLayer.batch_select_indices and layer.get_seq_length() > 0:
            layer.keys, layer.values = select_rows(layer.keys, self.index), select_rows(layer.values, self.index)
        else:
            layer.batch_select_indices(self.index)
        self.appended += key_states.shape[-2]
        return layer.update(key_states, value_states, *args, **kwargs)

    def get_mask_sizes(self, *args: Any, **kwargs: Any) -> tuple[int, int]:
        return self.source.get_mask_sizes(*args, **kwargs)  # asked before the call, when both are alike

    def get_seq_length(self) -> int:
        return self.source.get_seq_length() + self.appended

    def get_max_length(self) -> int:
        return self.source.get_max_length()


def _select_cache(cache: Any, rows: torch.Tensor, keep_original: bool) -> Any:
    """The cache restricted to ``rows``, for one continuation call; the original is kept when asked.

    A cache of layers gets :class:`RowsOfLayer` views (nothing copied until each layer runs); any other
    cache is copied (when the original is still needed) and its rows selected up front.
    """
    layers = getattr(cache, "layers", None)
    if isinstance(cache, Cache) and layers and all(isinstance(layer, CacheLayerMixin) and layer.is_initialized
                                                   for layer in layers):
        selection = copy.copy(cache)
        selection.layers = [RowsOfLayer(layer, rows) for layer in layers]
        return selection
    if keep_original:
        if hasattr(cache, "layers"):
            clone = copy.copy(cache)
            clone.layers = [copy.copy(layer) for layer in cache.layers]
            cache = clone
        else:
            cache = copy.deepcopy(cache)
    cache.batch_select_indices(rows)
    return cache


def _prompt_inputs(model: Any, batch: _PromptBatch, prefix: PrefixCache | None,
                   device: torch.device) -> dict[str, Any]:
    """Model inputs of a left-padded prompt batch; with ``prefix``, its first columns come from the cache."""
    mask = batch.attention_mask
    if prefix is None:
        return {"input_ids": batch.input_ids.to(device), "attention_mask": mask.to(device),
                "position_ids": batch.position_ids.to(device)}
    cached = prefix.length
    return {
        "input_ids": batch.input_ids[:, cached:].to(device),
        "attention_mask": mask.to(device),  # covers the cached columns too
        "position_ids": batch.position_ids[:, cached:].to(device),
        **kv_cache.cache_kwargs(model, prefix.expand(mask.shape[1] - mask.sum(1), width=mask.shape[1])),
    }


def run_batch(model: Any, batch: _PromptBatch, prefix: PrefixCache | None, device: torch.device,
              total: torch.Tensor, misses: torch.Tensor) -> int:
    """Score one prompt batch and its continuation chunks into ``total``/``misses``.

    Makes one forward call for the prompts, then one per continuation chunk, in that order
    (the layer-sweep relies on the order); returns the number of calls.
    """
    logits, cache = _forward_logits(
        model,
        keep_last=True,
        **_prompt_inputs(model, batch, prefix, device),
        use_cache=bool(batch.chunks) or prefix is not None,
    )
    _accumulate(logits[:, -1], batch.scored, total, misses)
    for k, chunk in enumerate(batch.chunks):
        past = _select_cache(cache, chunk.source.to(device), keep_original=k < len(batch.chunks) - 1)
        logits, _ = _forward_logits(
            model,
            keep_last=False,
            input_ids=chunk.input_ids.to(device),
            attention_mask=chunk.attention_mask.to(device),
            position_ids=chunk.position_ids.to(device),
            **kv_cache.cache_kwargs(model, past),
            use_cache=True,
        )
        _accumulate(logits, chunk.scored, total, misses)
        del past, logits
    return 1 + len(batch.chunks)


def empty_totals(plan: LoglikelihoodPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-request accumulators: summed log-probability (float64) and greedy misses."""
    return torch.zeros(plan.n_requests, dtype=torch.float64), torch.zeros(plan.n_requests, dtype=torch.long)


@torch.inference_mode()
def run_loglikelihood(model: Any, plan: LoglikelihoodPlan, share_prefix: bool = True,
                      workers: int | None = None, on_batch: Callable[[], None] | None = None) -> LoglikelihoodOutput:
    """Score every request of ``plan`` with ``model`` (see the module docstring for the scheme).

    ``share_prefix``: run the contexts' common token prefix once instead of once per context.
    ``workers``: how many prompt batches run at once, each on one core (:func:`split_over_cores`;
    default: torch's thread count on a CPU, else 1). A request is scored within one batch, so
    per-batch totals add up exactly to the serial ones. ``on_batch()`` is called after each batch,
    in the calling thread (progress bars).
    """
    device = model_device(model)
    workers = workers if workers is not None else cores_for(device)
    total, misses = empty_totals(plan)
    with grouped_query_sdpa(model):
        prefix = prefix_for(model, plan.prefix, share_prefix)

        def score(batch: _PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
            totals = empty_totals(plan)
            run_batch(model, batch, prefix, device, *totals)
            return totals

        def add(totals: tuple[torch.Tensor, torch.Tensor]) -> None:
            total.add_(totals[0])
            misses.add_(totals[1])
            if on_batch is not None:
                on_batch()

        split_over_cores([partial(score, b) for b in plan.batches], workers, on_result=add)
    return LoglikelihoodOutput(total, misses == 0)


# --------------------------------------------------------------------------------------------
# Greedy generation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedGeneration:
    """Tokenised prompts plus stop settings; model-independent."""

    prompts: tuple[tuple[int, ...], ...]
    until: tuple[str, ...]
    max_new_tokens: int
    _plans: dict[BatchSettings, tuple[_GenerationBatch, ...]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def longest_input(self) -> int:
        return max((len(p) for p in self.prompts), default=0) + self.max_new_tokens

    @cached_property
    def prefix(self) -> tuple[int, ...]:
        """Token prefix common to all prompts (see :func:`shared_prefix`)."""
        return shared_prefix(self.prompts)

    @cached_property
    def highest_token_id(self) -> int:
        """The largest prompt token id (``generate`` also feeds the tokenizer's pad id to finished rows)."""
        return max((max(p) for p in self.prompts if p), default=-1)

    def plan(self, settings: BatchSettings) -> tuple[_GenerationBatch, ...]:
        if settings not in self._plans:
            order = sorted(range(len(self.prompts)), key=lambda i: -len(self.prompts[i]))
            widths = [len(self.prompts[i]) + self.max_new_tokens for i in order]
            batches = []
            for part in _chunks(widths, settings, scored_all=False):
                members = order[part]
                ids, mask = _pad([self.prompts[i] for i in members], len(self.prompts[members[0]]), left=True)
                batches.append(_GenerationBatch(tuple(members), ids, mask))
            self._plans[settings] = tuple(batches)
        return self._plans[settings]


@dataclass(frozen=True)
class _GenerationBatch:
    requests: tuple[int, ...]
    input_ids: torch.Tensor  # left-padded
    attention_mask: torch.Tensor


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """Text before the earliest occurrence of any stop string (lm-eval's post-processing)."""
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


class _StopOnStrings(StoppingCriteria):
    """Marks a row finished once its generated text contains a stop string."""

    def __init__(self, tokenizer: Any, until: Sequence[str], prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.until = [s for s in until if s]
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width:].tolist(), skip_special_tokens=True)
        done = [any(stop in text for stop in self.until) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]  # transformers annotates a BoolTensor


class _FiniteLogits(LogitsProcessor):
    """Refuses a step whose logits are not finite: greedy decoding over NaN logits still picks a token
    (the argmax of NaN), so a diverged model would generate text as if nothing were wrong. One
    reduction per step: a row's maximum is NaN or infinite exactly when the row is unusable."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not bool(torch.isfinite(scores.amax(dim=-1)).all()):
            raise NonFiniteScoreError(
                "greedy generation produced logits that are not finite (NaN or infinite)",
                "score in float32 (--dtype float32) if the weights are finite; otherwise the model diverged",
            )
        return scores


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS ids from the tokenizer and the model's generation config (either may list several)."""
    ids: set[int] = set()
    for value in (getattr(tokenizer, "eos_token_id", None), getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return sorted(ids)


def greedy_config(model: Any, tokenizer: Any, max_new_tokens: int) -> GenerationConfig:
    """Plain greedy decoding: logit processors a model's generation config may carry are neutralised."""
    eos = eos_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        temperature=1.0,
        top_k=50,
        top_p=1.0,
        eos_token_id=eos or None,
        pad_token_id=pad,
        use_cache=True,
    )


@torch.inference_mode()
def run_generation(
    model: Any, tokenizer: Any, prepared: PreparedGeneration, settings: BatchSettings, share_prefix: bool = True
) -> list[str]:
    """Greedy continuations of every prompt, cut at the first EOS and the first stop string.

    ``share_prefix``: run the prompts' common token prefix once; ``generate`` gets the full
    left-padded prompts and a cache covering their first columns, and computes only the rest.
    """
    texts: list[str] = [""] * len(prepared.prompts)
    with grouped_query_sdpa(model):
        _generate(model, tokenizer, prepared, settings, share_prefix, texts)
    return texts


def _generate(model: Any, tokenizer: Any, prepared: PreparedGeneration, settings: BatchSettings,
              share_prefix: bool, texts: list[str]) -> None:
    """Fill ``texts`` with the greedy continuations of :func:`run_generation`."""
    device = model_device(model)
    config = greedy_config(model, tokenizer, prepared.max_new_tokens)
    eos = torch.tensor(eos_token_ids(model, tokenizer), dtype=torch.long)
    prefix = prefix_for(model, prepared.prefix, share_prefix)
    for batch in prepared.plan(settings):
        width = batch.input_ids.shape[1]
        stops = StoppingCriteriaList([_StopOnStrings(tokenizer, prepared.until, width)]) if prepared.until else None
        past = kv_cache.generate_kwargs(None if prefix is None else prefix.expand(width - batch.attention_mask.sum(1)))
        out = model.generate(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            generation_config=config,
            logits_processor=LogitsProcessorList([_FiniteLogits()]),
            stopping_criteria=stops,
            **past,
        )
        new = out[:, width:].cpu()
        # Keep tokens before the first EOS (greedy rows that stopped early are padded after it).
        keep = torch.isin(new, eos).cumsum(1) == 0
        generated = [row[k].tolist() for row, k in zip(new, keep)]
        for i, text in zip(batch.requests, tokenizer.batch_decode(generated, skip_special_tokens=True)):
            texts[i] = cut_at_stop(text, prepared.until)
