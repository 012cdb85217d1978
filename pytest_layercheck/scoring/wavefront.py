"""The wavefront part of a layer sweep: every zero-mode ablation as a stream, scored per prompt batch.

Per prompt batch the intact model runs once through its own forward while its block calls are
recorded; the streams then advance together, layer by layer (:func:`~.stacked_blocks._advance`). Per
stream this is the same computation as the ablated model's own forward: the same kernels on the same
inputs, rows of a batch never interact, and each stream's cache holds only its own layers' states
(layer ``L``'s cache type, full or sliding-window, is taken from the intact model's). Where only a
call's last position is read (a prompt call; the shared prefix, kept for its keys and values), the
streams' final layer runs its output projection and feed-forward on that position alone. The shared
prompt prefix is run once per stream (a batch-1 wavefront) and its states are expanded per prompt row
exactly as the engine does.

**Memory.** Work is batch-outer: recorded activations are bounded by one prompt batch. Streams
are processed in chunks sized per batch by a token cap (tokens in one block call) and a byte budget
(their hidden states, and the KV caches of the one layer being run: a prompt call and its
continuation calls advance through the layers together, so no stream holds a cache of all its
layers), see :class:`StreamBudget`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import torch
from torch import nn

from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.model.threads import split_over_cores
from pytest_layercheck.scoring.batching import LOGIT_BUDGET
from pytest_layercheck.scoring.block_recording import _BlockCall, _uses_cache
from pytest_layercheck.scoring.loglikelihood import _accumulate, _PromptBatch
from pytest_layercheck.scoring.model_head import _Head
from pytest_layercheck.scoring.prompt_cache import FilledLayer, PrefixCache, RowsOfLayer
from pytest_layercheck.scoring.stacked_blocks import _advance, _BlockEdits, _stack
from pytest_layercheck.scoring.streams import _Group, _Stream

T = TypeVar("T")


@dataclass(frozen=True)
class StreamBudget:
    """How many ablation streams advance together through one prompt batch.

    ``tokens``: rows × columns of one stacked block call (bounds activations and attention scores);
    ``bytes``: the streams' hidden states for the batch's calls and one layer's KV caches.
    """

    tokens: int
    bytes: int

    @classmethod
    def for_device(cls, device: torch.device) -> StreamBudget:
        if device.type == "cpu":  # CPU matmuls gain little from larger calls; memory matters more
            return cls(tokens=4096, bytes=256 * 2**20)
        return cls(tokens=131072, bytes=8 * 2**30)


class _Wavefront:
    """The wavefront part of one sweep: the streams, their prefix states, their chunking.

    On a CPU with ``workers`` > 1 torch threads, the chunks of one batch advance in waves of
    ``workers`` chunks, each chunk on its own core (:func:`split_over_cores`) within its share of the
    budget, and each scores its streams with the final norm and LM head applied directly
    (:class:`_Head`). Where that does not give the model's own logits, the head runs on the model
    itself, between waves, with all threads (that call briefly rewires the model, so no block call
    may run beside it).
    """

    def __init__(
        self,
        runtime: ModelRuntime,
        norm: nn.Module,
        streams: list[_Stream],
        budget: StreamBudget,
        totals: list[tuple[torch.Tensor, torch.Tensor]],
        workers: int = 1,
    ) -> None:
        adapter = runtime.adapter
        self.adapter, self.head = adapter, _Head(runtime, norm)
        self.streams, self.budget, self.totals, self.workers = streams, budget, totals, max(1, workers)
        self.edits = _BlockEdits()
        self.prefix: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (stream, layer) -> [1,h,K,d]
        config = adapter.config
        self.logit_rows = max(1, LOGIT_BUDGET // runtime.vocab_size)
        dtype = runtime.dtype
        self.kv_bytes = 2 * adapter.num_kv_heads * adapter.head_dim * torch.finfo(dtype).bits // 8
        self.hidden_size = int(getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0) or 1)
        self.elem = torch.finfo(dtype).bits // 8
        self.heads = adapter.num_heads

    def installed(self) -> AbstractContextManager[_BlockEdits]:
        """The edits' hooks, for the sweep: on the output projection of every block a stream masks heads
        of, and on the output projection and feed-forward module of every block a stream runs last."""
        masked = [module for s in self.streams for layer in s.heads if (module := s.blocks[layer]) is not None]
        final = [module for s in self.streams if (module := s.blocks[-1]) is not None]
        mlps = [mlp for module in final if (mlp := self.adapter.mlp_of(module)) is not None]
        return self.edits.installed([self.adapter.out_proj_of(m) for m in masked + final], mlps)

    def _in_waves(
        self,
        chunks: list[list[_Stream]],
        work: Callable[[list[_Stream]], T],
        then: Callable[[list[_Stream], T], None] | None = None,
    ) -> None:
        """``work`` on every chunk, ``self.workers`` chunks at a time; ``then`` on each result, between waves."""
        for start in range(0, len(chunks), self.workers):
            wave = chunks[start : start + self.workers]
            results = split_over_cores([partial(work, chunk) for chunk in wave], self.workers)
            for chunk, result in zip(wave, results):
                if then is not None:
                    then(chunk, result)

    # -- the shared prefix ------------------------------------------------------------------
    def run_prefix(self, calls: list[list[_BlockCall]]) -> None:
        """Each stream's own keys/values of the shared prefix (one batch-1 pass per stream)."""
        (prefix_call,) = calls
        length = prefix_call[0].hidden.shape[1]

        def keep(layer: int, group: _Group, state: Any) -> None:
            for s, k, v in zip(group.members, state.keys.split(1), state.values.split(1)):
                self.prefix[(s.index, layer)] = (k, v)

        def advance(chunk: list[_Stream]) -> None:
            _advance(
                self.adapter,
                self.edits,
                chunk,
                [prefix_call],
                [True],
                lambda layer, group, call: call.new_layer(),
                on_state=keep,
            )

        self._in_waves(self._chunks(self.streams, [length], cache_tokens=length, scores=length * length), advance)

    def _prefix_layer(self, group: _Group, layer: int, pads: torch.Tensor, width: int) -> FilledLayer:
        """The group's prefix states expanded to its prompt rows as :meth:`PrefixCache.expand` does per
        model, in a layer of the prompt call's full ``width``."""
        keys = torch.cat([self.prefix[(s.index, layer)][0] for s in group.members])
        values = torch.cat([self.prefix[(s.index, layer)][1] for s in group.members])
        return FilledLayer.shifted(keys, values, pads, width)

    # -- one prompt batch -------------------------------------------------------------------
    def run_batch(
        self,
        batch: _PromptBatch,
        calls: list[list[_BlockCall]],
        prefix: PrefixCache | None,
        on_stream: Callable[[], None],
    ) -> None:
        """Score ``batch`` for every stream, given the intact model's recorded calls of the batch."""
        tokens, cache_tokens, scores = _batch_sizes(batch, calls)
        first_state, later_state = self._batch_states(batch, prefix)
        score = partial(self._score_batch, batch)

        self.head.check(calls[0][-1].hidden)  # here, before any wave: the model's own head rewires it

        def advance(chunk: list[_Stream]) -> list[dict[int, torch.Tensor]] | None:
            hidden = _advance(
                self.adapter, self.edits, chunk, calls, [True] + [False] * (len(calls) - 1), first_state, later_state
            )
            if not self.head.direct:
                return hidden  # scored between waves
            score(chunk, hidden)
            return None

        def done(chunk: list[_Stream], hidden: list[dict[int, torch.Tensor]] | None) -> None:
            if hidden is not None:
                score(chunk, hidden)
            for _ in chunk:
                on_stream()

        self._in_waves(self._chunks(self.streams, tokens, cache_tokens, scores), advance, done)

    def _batch_states(
        self, batch: _PromptBatch, prefix: PrefixCache | None
    ) -> tuple[Callable[[int, _Group, _BlockCall], Any], Callable[[int, int, _Group, Any], Any]]:
        """The cache layers the streams start a batch's calls from (``first_state`` and ``later_state``
        of :func:`_advance`): the prompt call's holds the prefix states, if any; a continuation call's
        reads its prompt rows of the prompt call's."""
        rows, width = batch.attention_mask.shape
        pads = width - batch.attention_mask.sum(1)

        def first_state(layer: int, group: _Group, call: _BlockCall) -> Any:
            if not _uses_cache(call):
                return None
            return self._prefix_layer(group, layer, pads, width) if prefix is not None else call.new_layer()

        def later_state(k: int, layer: int, group: _Group, prompt_state: Any) -> Any:
            source = batch.chunks[k].source
            index = torch.cat([m * rows + source for m in range(len(group.members))])
            return RowsOfLayer(prompt_state, index.to(prompt_state.keys.device))

        return first_state, later_state

    def _score_batch(self, batch: _PromptBatch, chunk: list[_Stream], hidden: list[dict[int, torch.Tensor]]) -> None:
        """Into each stream's own totals: chunks on several threads never share one."""
        self._score(
            chunk,
            hidden[0],
            keep_last=True,
            scored=lambda logits, s: _accumulate(logits[:, -1], batch.scored, *self.totals[s.index]),
        )
        for plan, final in zip(batch.chunks, hidden[1:]):

            def scored(logits: torch.Tensor, s: Any, c: Any = plan) -> Any:
                return _accumulate(logits, c.scored, *self.totals[s.index])

            self._score(chunk, final, keep_last=False, scored=scored)
        hidden.clear()

    def _score(
        self,
        chunk: list[_Stream],
        hidden: dict[int, torch.Tensor],
        keep_last: bool,
        scored: Callable[[torch.Tensor, _Stream], None],
    ) -> None:
        """Final norm + LM head for the streams' hidden states, as few calls as the logit budget allows."""
        rows, columns = next(iter(hidden.values())).shape[:2]
        per_stream = rows * (1 if keep_last else columns)
        step = max(1, self.logit_rows // max(1, per_stream))
        for i in range(0, len(chunk), step):
            part = chunk[i : i + step]
            logits = self.head(_stack([hidden[s.index] for s in part]), keep_last)
            for s, piece in zip(part, logits.split(rows)):
                scored(piece, s)
            del logits

    def _chunks(
        self, streams: list[_Stream], tokens: Sequence[int], cache_tokens: int, scores: int
    ) -> list[list[_Stream]]:
        """The streams dealt into as few chunks as each worker's share of the token cap and the byte
        budget allows, a multiple of the workers, every ``n``-th stream to the same chunk: streams
        are ordered by branch point, so each chunk gets a like share of early (long) and late streams.

        ``tokens``: hidden-state tokens per stream of each call (all held until the head runs);
        ``cache_tokens``: KV-cache tokens per stream of one layer (the prompt's and one continuation's);
        ``scores``: (query, key) pairs per head of the largest call (attention scores and weights).
        """
        cost = (
            2 * sum(tokens) * self.hidden_size * self.elem  # hidden states of every call, in and out
            + cache_tokens * self.kv_bytes  # one layer's caches
            + 2 * scores * self.heads * 4
        )  # float32 attention scores and weights of one call
        fits = max(
            1,
            min(
                self.budget.tokens // self.workers // max(1, max(tokens)),
                self.budget.bytes // self.workers // max(1, cost),
            ),
        )
        count = -(-len(streams) // fits)
        if len(streams) >= self.workers:
            count = -(-count // self.workers) * self.workers
        return [chunk for j in range(count) if (chunk := streams[j::count])]


def _batch_sizes(batch: _PromptBatch, calls: list[list[_BlockCall]]) -> tuple[list[int], int, int]:
    """What one stream of ``batch`` holds, for :meth:`_Wavefront._chunks`: hidden-state tokens per call,
    KV-cache tokens of one layer (0 when no call uses a cache) and the largest call's attention scores."""
    rows, width = batch.attention_mask.shape
    tokens = [call[0].hidden.shape[0] * call[0].hidden.shape[1] for call in calls]
    cache_tokens = rows * width + max(
        (int(c.source.shape[0]) * (width + c.input_ids.shape[1]) for c in batch.chunks), default=0
    )
    scores = max(
        call[0].hidden.shape[0] * call[0].hidden.shape[1] * (width + extra)
        for call, extra in zip(calls, [0, *(c.input_ids.shape[1] for c in batch.chunks)])
    )
    uses_cache = any(_uses_cache(call[0]) for call in calls)
    return tokens, cache_tokens if uses_cache else 0, scores
