"""Ablation sweeps that reuse the intact model's activations, run as a wavefront.

A depth profile scores the same requests under ~31 ablations. An ablation whose first affected
layer is ``a`` (removing layer ``a``, masking heads of layer ``a``, swapping in a donor's layer
``a``) leaves layers ``0..a-1`` untouched, so the residual stream entering layer ``a`` and the
keys/values of layers ``0..a-1`` are exactly the intact model's. Each ablation is therefore a
STREAM that branches off the intact model at its first affected layer.

**Wavefront.** Per prompt batch the intact model runs once through its own forward, while every
decoder block's call is recorded (its input, attention mask, position ids/rotary embeddings, which
argument is the KV cache). The streams then advance together, layer by layer: at layer ``L``,
every stream that has branched off (first affected layer ``<= L``) and still runs layer ``L`` goes
through the block in ONE batched call: the streams' hidden states are stacked along the batch
axis, the recorded mask and position tensors are tiled to match, and the KV cache is the streams'
own states of that layer, stacked the same way. Streams that run different modules at ``L``
(a donor's layer swapped in) form separate calls; zero-mode head masks are applied per row inside
the shared call. A stream that skips ``L`` just carries its hidden state. After the last layer the
streams' final hidden states go through the model's final norm, LM head and logit soft-cap
(Gemma 2), applied directly so that chunks on several threads can. Once per sweep that is checked
against the model's own head (the model run with every layer skipped and the norm's input replaced),
which is used instead wherever the two differ. Where only a call's last position is read (a prompt
call, scored at its last token; the shared prefix, kept for its keys and values), the streams' final
layer runs its output projection and feed-forward on that position alone.

Per stream this is the same computation as the ablated model's own forward: the same kernels on
the same inputs, rows of a batch never interact, and each stream's cache holds only its own
layers' states (layer ``L``'s cache type, full or sliding-window, is taken from the intact
model's). Results equal scoring each ablated model from scratch up to float rounding, which tests
check on several families and protocols. The shared prompt prefix is run once per stream (a
batch-1 wavefront) and its states are expanded per prompt row exactly as the engine does.

**Memory.** Work is batch-outer: recorded activations are bounded by one prompt batch. Streams
are processed in chunks sized per batch by a token cap (tokens in one block call) and a byte budget
(their hidden states, and the KV caches of the one layer being run: a prompt call and its
continuation calls advance through the layers together, so no stream holds a cache of all its
layers), see :class:`StreamBudget`.

Ablations in ``uniform`` head mode switch the whole model's attention function, so they keep the
per-ablation path: the ablated model's own forward from its first affected layer, fed the recorded
input of that layer (the same reuse, one ablation at a time).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar, cast

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

from pytest_layercheck.model.ablation import Ablation, ablate, resolve_heads, skip_layers, swap_layers
from pytest_layercheck.model.architecture import ArchitectureAdapter, get_adapter
from pytest_layercheck.model.attention import grouped_query_sdpa
from pytest_layercheck.model.probes import block_input, probe_blocks
from pytest_layercheck.model.threads import cores_for, split_over_cores
from pytest_layercheck.scoring.engine import (
    LOGIT_BUDGET,
    FilledLayer,
    LoglikelihoodOutput,
    LoglikelihoodPlan,
    PrefixCache,
    RowsOfLayer,
    _accumulate,
    _forward_logits,
    _PromptBatch,
    empty_totals,
    model_device,
    prefix_for,
    run_batch,
    run_loglikelihood,
)

StepHook = Callable[[int, int], None]
T = TypeVar("T")

#: Final-norm attribute names on the backbone, by family (llama-like, GPT-2, GPT-NeoX).
_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm")


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


# --------------------------------------------------------------------------------------------
# Recording the intact model's block calls
# --------------------------------------------------------------------------------------------

_CACHE = object()  # stands for the KV cache in recorded block arguments


@dataclass
class _BlockCall:
    """One decoder block's call in the intact forward, with the cache taken out."""

    hidden: torch.Tensor
    args: tuple[Any, ...]  # positional arguments after the hidden states
    kwargs: dict[str, Any]
    fresh: Any = None  # an empty cache layer like the intact one, when the call started it empty

    def new_layer(self) -> Any:
        return copy.deepcopy(self.fresh) if self.fresh is not None else DynamicLayer()


def _fresh_layer(cache: Cache, index: int) -> Any:
    layers = cache.layers
    if index < len(layers):
        layer = layers[index]
        return copy.deepcopy(layer) if not getattr(layer, "is_initialized", True) else None
    replicate = getattr(cache, "layer_class_to_replicate", None)
    return replicate() if replicate is not None else None


class _Recorder:
    """Records every decoder block's call in the intact model, per forward call."""

    def __init__(self, blocks: Iterable[nn.Module]) -> None:
        self.blocks = list(blocks)
        self.records: list[_BlockCall] = []
        self.active = False

    def _probe(self, index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not self.active:
            return
        caches: list[Cache] = []

        def strip(value: Any) -> Any:
            if isinstance(value, Cache):
                caches.append(value)
                return _CACHE
            return value

        if args:
            hidden, rest, kw = args[0], tuple(strip(a) for a in args[1:]), {k: strip(v) for k, v in kwargs.items()}
        else:
            kw = {k: strip(v) for k, v in kwargs.items() if k != "hidden_states"}
            hidden, rest = kwargs["hidden_states"], ()
        fresh = _fresh_layer(caches[0], index) if caches else None
        self.records.append(_BlockCall(hidden, rest, kw, fresh))

    @contextmanager
    def installed(self) -> Iterator[_Recorder]:
        with probe_blocks(self.blocks, on_input=self._probe):
            yield self

    @contextmanager
    def recording(self) -> Iterator[list[list[_BlockCall]]]:
        """Yields a list that, on exit, holds one list of per-block calls per forward call made."""
        calls: list[list[_BlockCall]] = []
        self.records, self.active = [], True
        try:
            yield calls
        finally:
            self.active = False
        n = len(self.blocks)
        if len(self.records) % n:
            raise RuntimeError(f"recorded {len(self.records)} block calls, not a multiple of {n} blocks")
        calls.extend(self.records[i:i + n] for i in range(0, len(self.records), n))
        self.records = []


# --------------------------------------------------------------------------------------------
# Streams
# --------------------------------------------------------------------------------------------


@dataclass
class _Stream:
    """One ablation as a wavefront stream: what it runs at each layer from its branch point on."""

    index: int  # position in the caller's ablation list
    start: int  # first affected layer
    blocks: list[nn.Module | None]  # per layer: the module it runs (None: skipped)
    heads: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> bool [width] zeroed inputs

    def runs(self, layer: int) -> bool:
        return layer >= self.start and self.blocks[layer] is not None


@dataclass
class _Group:
    """Streams that share one block call at one layer."""

    module: nn.Module
    members: list[_Stream]
    drop: torch.Tensor | None  # bool [members, width]: head inputs each member zeroes, or None


def _groups(streams: Sequence[_Stream], layer: int) -> list[_Group]:
    by_module: dict[int, list[_Stream]] = {}
    modules: dict[int, nn.Module] = {}
    for stream in streams:
        if stream.runs(layer):
            module = stream.blocks[layer]
            assert module is not None
            by_module.setdefault(id(module), []).append(stream)
            modules[id(module)] = module
    groups = []
    for key, members in by_module.items():
        masks = [s.heads.get(layer) for s in members]
        drop = None
        if any(m is not None for m in masks):
            width = next(m for m in masks if m is not None).shape[0]
            drop = torch.stack([m if m is not None else torch.zeros(width, dtype=torch.bool) for m in masks])
        groups.append(_Group(modules[key], members, drop))
    return groups


def first_affected_layer(ablation: Ablation) -> int | None:
    """The lowest original layer index an ablation changes; None when it changes none."""
    touched = [*ablation.skip, *(layer for layer, _ in ablation.heads), *(target for target, _ in ablation.swap)]
    return min(touched) if touched else None


def resume_layer(ablation: Ablation, num_layers: int) -> int | None:
    """Where the per-ablation path's forward may start from recorded inputs: a layer with an
    unaffected input that the ablated model still runs. None: nothing to reuse (start at the embeddings)."""
    first = first_affected_layer(ablation)
    if not first:
        return None
    kept_after = [i for i in range(first, num_layers) if i not in ablation.skip]
    if kept_after:
        return first
    return first - 1  # everything from ``first`` on is removed: resume at the last kept layer


def in_wavefront(ablation: Ablation) -> bool:
    """Whether a sweep runs ``ablation`` as a wavefront stream (else on its own, the ablated model's forward)."""
    return ablation.head_mode == "zero"


def _streams_of(model: nn.Module, adapter: ArchitectureAdapter, ablations: Sequence[Ablation],
                indices: Sequence[int], donor: nn.Module | None) -> list[_Stream]:
    """Streams for ``ablations[i]``, ``i`` in ``indices`` (none of them intact)."""
    width = adapter.num_heads * adapter.head_dim
    originals = list(adapter.layers)
    swapped: dict[tuple[int, int], nn.Module] = {}
    streams = []
    for i in indices:
        ablation = ablations[i]
        start = first_affected_layer(ablation)
        assert start is not None
        blocks: list[nn.Module | None] = list(originals)
        if ablation.swap:
            missing = [pair for pair in ablation.swap if pair not in swapped]
            if missing:
                if donor is None:
                    with ablate(model, ablation):  # raises the usual "no donor" error
                        pass
                assert donor is not None
                with swap_layers(model, donor, dict(missing)):  # validated copies, installed briefly
                    for target, source in missing:
                        swapped[(target, source)] = adapter.layers[target]
            for pair in ablation.swap:
                blocks[pair[0]] = swapped[pair]
        heads: dict[int, torch.Tensor] = {}
        for layer, layer_heads in resolve_heads(model, ablation.heads, ablation.gqa).items():
            drop = torch.zeros(width, dtype=torch.bool)
            for h in layer_heads:
                drop[h * adapter.head_dim:(h + 1) * adapter.head_dim] = True
            heads[layer] = drop
        for layer in ablation.skip:
            blocks[layer] = None
        streams.append(_Stream(i, start, blocks, heads))
    return streams


class _StreamCache(DynamicCache):
    """The streams' states of ONE layer, stacked along the batch axis; every update goes to them."""

    def __init__(self, layer: Any) -> None:
        Cache.__init__(self, layers=[layer])

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        layer: Any = self.layers[0]  # a full-attention layer: the union's linear-attention member has no update
        return layer.update(key_states, value_states, *args, **kwargs)


def _tile(value: Any, rows: int, times: int, memo: dict[tuple[int, int], Any]) -> Any:
    """``value`` with every batch-sized tensor repeated ``times`` along the batch axis (memoised per call)."""
    if times == 1:
        return value
    if isinstance(value, torch.Tensor):
        if value.ndim < 2 or value.shape[0] != rows:
            return value
        key = (id(value), times)
        if key not in memo:
            memo[key] = (value, value.repeat(times, *([1] * (value.ndim - 1))))
        return memo[key][1]
    if isinstance(value, tuple):
        return tuple(_tile(v, rows, times, memo) for v in value)
    if isinstance(value, list):
        return [_tile(v, rows, times, memo) for v in value]
    if isinstance(value, dict):
        return {k: _tile(v, rows, times, memo) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class _BlockEdit:
    """What the calling thread's current block call changes inside the block."""

    proj: nn.Module  # the block's attention output projection
    mlp: nn.Module | None  # the block's feed-forward module
    drop: torch.Tensor | None  # bool [rows, width]: head inputs zeroed per row (zero-mode head masks)
    last_only: bool  # only the last position's output is read


class _BlockEdits:
    """Edits of stacked block calls that may run in several threads at once.

    Forward pre-hooks stay installed for the sweep; each acts only on the CALLING thread's current
    call (a hook registered per call would also act on another thread's call of the same module):

    - **head masks:** the output projection's input gets, per row, the heads the call masks zeroed;
    - **last position only:** in a final-layer call whose only output read is the last position
      (a prompt call, scored at its last token; the shared prefix, which needs only its keys and
      values), the output projection and the feed-forward module get that position alone. Both
      outputs are added to the residual stream, which broadcasts them, so the last position's
      output is exact, the others are never read, and every position's keys and values (computed
      before the output projection) are as before. This leaves out most of the final layer's work.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    @contextmanager
    def installed(self, projections: Iterable[nn.Module], mlps: Iterable[nn.Module]) -> Iterator[_BlockEdits]:
        with ExitStack() as stack:
            for proj in {id(p): p for p in projections}.values():
                stack.callback(proj.register_forward_pre_hook(self._projection_hook).remove)
            for mlp in {id(m): m for m in mlps}.values():
                stack.callback(mlp.register_forward_pre_hook(self._mlp_hook).remove)
            yield self

    @contextmanager
    def applied(self, edit: _BlockEdit | None) -> Iterator[None]:
        self._local.current = edit
        try:
            yield
        finally:
            self._local.current = None

    def _current(self) -> _BlockEdit | None:
        return getattr(self._local, "current", None)

    def _projection_hook(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        edit = self._current()
        if edit is None or edit.proj is not module or not args:
            return None
        x = args[0]
        if edit.drop is not None:
            if x.shape[-1] != edit.drop.shape[-1] or x.shape[0] != edit.drop.shape[0]:
                raise RuntimeError(f"output projection input {tuple(x.shape)} does not fit the head mask "
                                   f"{tuple(edit.drop.shape)}")
            x = x.masked_fill(edit.drop.to(x.device).view(x.shape[0], *([1] * (x.ndim - 2)), x.shape[-1]), 0)
        return (_last_position(x) if edit.last_only else x, *args[1:])

    def _mlp_hook(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        edit = self._current()
        if edit is None or not edit.last_only or edit.mlp is not module or not args:
            return None
        return (_last_position(args[0]), *args[1:])


def _last_position(x: torch.Tensor) -> torch.Tensor:
    """``x`` [rows, positions, features] at its last position only (other shapes as they are)."""
    return x[:, -1:] if x.ndim == 3 else x


def _run_block(adapter: ArchitectureAdapter, group: _Group, call: _BlockCall, hidden: torch.Tensor,
               layer: Any, memo: dict[tuple[int, int], Any], edits: _BlockEdits, last_only: bool) -> torch.Tensor:
    """One stacked block call for ``group`` with the recorded arguments of ``call``; with
    ``last_only``, only the output's last position is exact (see :class:`_BlockEdits`)."""
    rows, times = call.hidden.shape[0], len(group.members)
    cache = _StreamCache(layer) if layer is not None else None
    args = tuple(cache if a is _CACHE else _tile(a, rows, times, memo) for a in call.args)
    kwargs = {k: cache if v is _CACHE else _tile(v, rows, times, memo) for k, v in call.kwargs.items()}
    edit = None
    if group.drop is not None or last_only:
        drop = group.drop.repeat_interleave(rows, dim=0) if group.drop is not None else None
        edit = _BlockEdit(adapter.out_proj_of(group.module), adapter.mlp_of(group.module), drop, last_only)
    with edits.applied(edit):
        out = group.module(hidden, *args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def _stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors))


def _uses_cache(call: _BlockCall) -> bool:
    return any(a is _CACHE for a in (*call.args, *call.kwargs.values()))


def _advance(adapter: ArchitectureAdapter, edits: _BlockEdits, streams: Sequence[_Stream],
             calls: Sequence[list[_BlockCall]], last_only: Sequence[bool],
             first_state: Callable[[int, _Group, _BlockCall], Any],
             later_state: Callable[[int, int, _Group, Any], Any] | None = None,
             on_state: Callable[[int, _Group, Any], None] | None = None) -> list[dict[int, torch.Tensor]]:
    """Run ``streams`` through a prompt batch's recorded forward calls, ALL CALLS TOGETHER layer by layer.

    ``calls[0]`` is the prompt call, ``calls[1:]`` the continuation calls that extend its cache.
    ``last_only[c]``: only the last position of call ``c``'s final hidden states is read; those
    calls' final hidden states are returned at that position alone.
    ``first_state(layer, group, call)`` gives the group's cache layer before the prompt call (None:
    no cache); ``later_state(k, layer, group, prompt_state)`` the one of continuation call ``k``,
    made from the prompt call's state at the same layer; ``on_state`` receives the prompt call's
    state after the call. A layer's states are dropped once the layer is done, so streams hold one
    layer's cache at a time. Returns each stream's final hidden state, per call.
    """
    hidden: list[dict[int, torch.Tensor]] = [{} for _ in calls]
    final = len(calls[0]) - 1
    for layer in range(final + 1):
        memo: dict[tuple[int, int], Any] = {}  # tiled masks/positions, shared by the layer's groups
        for c, call in enumerate(calls):
            for stream in streams:
                if stream.start == layer:
                    hidden[c][stream.index] = call[layer].hidden
        for group in _groups(streams, layer):
            prompt_state = None
            for c, call in enumerate(calls):
                record = call[layer]
                if c == 0:
                    state = prompt_state = first_state(layer, group, record)
                else:
                    state = later_state(c - 1, layer, group, prompt_state) if later_state and _uses_cache(record) else None
                x = _stack([hidden[c][s.index] for s in group.members])
                out = _run_block(adapter, group, record, x, state, memo, edits, last_only[c] and layer == final)
                for s, part in zip(group.members, out.split(record.hidden.shape[0])):
                    hidden[c][s.index] = part
            if on_state is not None and prompt_state is not None:
                on_state(layer, group, prompt_state)
    for c, keep in enumerate(last_only):
        if keep:  # the rest is never read; a copy, so that the whole call's output is freed
            for index, state in hidden[c].items():
                hidden[c][index] = state[:, -1:].clone()
    return hidden


def _final_norm(adapter: ArchitectureAdapter) -> nn.Module | None:
    for name in _FINAL_NORMS:
        module = getattr(adapter.backbone, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


def _head_logits(model: nn.Module, norm: nn.Module, hidden: torch.Tensor, keep_last: bool) -> torch.Tensor:
    """The model's own final norm + LM head on ``hidden`` (run with every layer skipped)."""

    def replace(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (hidden, *args[1:])

    ids = torch.zeros(hidden.shape[:2], dtype=torch.long, device=model_device(model))
    with skip_layers(model, range(len(get_adapter(model).layers))):
        handle = norm.register_forward_pre_hook(replace)
        try:
            logits, _ = _forward_logits(model, keep_last=keep_last, input_ids=ids, use_cache=False)
        finally:
            handle.remove()
    return logits


class _Head:
    """The final norm, LM head and the family's logit soft-cap applied directly to hidden states.

    Unlike :func:`_head_logits` it leaves the model as it is, so chunks run it on their own threads
    beside other chunks' block calls. It is used only once :meth:`check` found it to give the
    model's own logits on the sweep's data; else every head runs through the model, between waves.
    """

    def __init__(self, model: nn.Module, adapter: ArchitectureAdapter, norm: nn.Module) -> None:
        self.model, self.norm = model, norm
        self.lm_head = cast(Any, adapter.model).get_output_embeddings()
        self.softcap = getattr(adapter.config, "final_logit_softcapping", None)
        self.direct: bool | None = None  # None: not checked yet

    def __call__(self, hidden: torch.Tensor, keep_last: bool) -> torch.Tensor:
        return self._apply(hidden, keep_last) if self.direct else _head_logits(self.model, self.norm, hidden, keep_last)

    def _apply(self, hidden: torch.Tensor, keep_last: bool) -> torch.Tensor:
        x = self.norm(hidden[:, -1:] if keep_last else hidden)  # the norm acts per position
        logits = self.lm_head(x)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def check(self, hidden: torch.Tensor) -> None:
        """Compare both ways on a few positions of ``hidden`` (real hidden states of the model), once per
        sweep. Call it where no block call runs beside it: the model's way rewires the model briefly."""
        if self.direct is None:
            sample = hidden[:1, -4:]
            self.direct = self.lm_head is not None and all(
                torch.allclose(self._apply(sample, keep), _head_logits(self.model, self.norm, sample, keep),
                               rtol=1e-5, atol=1e-4) for keep in (True, False))


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------


class _Wavefront:
    """The wavefront part of one sweep: the streams, their prefix states, their chunking.

    On a CPU with ``workers`` > 1 torch threads, the chunks of one batch advance in waves of
    ``workers`` chunks, each chunk on its own core (:func:`split_over_cores`) within its share of the
    budget, and each scores its streams with the final norm and LM head applied directly
    (:class:`_Head`). Where that does not give the model's own logits, the head runs on the model
    itself, between waves, with all threads (that call briefly rewires the model, so no block call
    may run beside it).
    """

    def __init__(self, model: nn.Module, adapter: ArchitectureAdapter, norm: nn.Module, streams: list[_Stream],
                 budget: StreamBudget, totals: list[tuple[torch.Tensor, torch.Tensor]], workers: int = 1) -> None:
        self.model, self.adapter, self.head = model, adapter, _Head(model, adapter, norm)
        self.streams, self.budget, self.totals, self.workers = streams, budget, totals, max(1, workers)
        self.edits = _BlockEdits()
        self.prefix: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (stream, layer) -> [1,h,K,d]
        config = adapter.config
        vocab = (getattr(getattr(model, "config", None), "vocab_size", None)
                 or cast(Any, model).get_output_embeddings().weight.shape[0])
        self.logit_rows = max(1, LOGIT_BUDGET // int(vocab))
        dtype = next(model.parameters()).dtype
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

    def _in_waves(self, chunks: list[list[_Stream]], work: Callable[[list[_Stream]], T],
                  then: Callable[[list[_Stream], T], None] | None = None) -> None:
        """``work`` on every chunk, ``self.workers`` chunks at a time; ``then`` on each result, between waves."""
        for start in range(0, len(chunks), self.workers):
            wave = chunks[start:start + self.workers]
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
            _advance(self.adapter, self.edits, chunk, [prefix_call], [True],
                     lambda layer, group, call: call.new_layer(), on_state=keep)

        self._in_waves(self._chunks(self.streams, [length], cache_tokens=length, scores=length * length), advance)

    def _prefix_layer(self, group: _Group, layer: int, pads: torch.Tensor, width: int) -> FilledLayer:
        """The group's prefix states expanded to its prompt rows as :meth:`PrefixCache.expand` does per
        model, in a layer of the prompt call's full ``width``."""
        keys = torch.cat([self.prefix[(s.index, layer)][0] for s in group.members])
        values = torch.cat([self.prefix[(s.index, layer)][1] for s in group.members])
        return FilledLayer.shifted(keys, values, pads, width)

    # -- one prompt batch -------------------------------------------------------------------
    def run_batch(self, batch: _PromptBatch, calls: list[list[_BlockCall]], prefix: PrefixCache | None,
                  on_stream: Callable[[], None]) -> None:
        """Score ``batch`` for every stream, given the intact model's recorded calls of the batch."""
        rows, width = batch.attention_mask.shape
        tokens = [call[0].hidden.shape[0] * call[0].hidden.shape[1] for call in calls]
        cache_tokens = rows * width + max((int(c.source.shape[0]) * (width + c.input_ids.shape[1])
                                           for c in batch.chunks), default=0)
        pads = width - batch.attention_mask.sum(1)

        def first_state(layer: int, group: _Group, call: _BlockCall) -> Any:
            if not _uses_cache(call):
                return None
            return self._prefix_layer(group, layer, pads, width) if prefix is not None else call.new_layer()

        def later_state(k: int, layer: int, group: _Group, prompt_state: Any) -> Any:
            source = batch.chunks[k].source
            index = torch.cat([m * rows + source for m in range(len(group.members))])
            return RowsOfLayer(prompt_state, index.to(prompt_state.keys.device))

        scores = max(call[0].hidden.shape[0] * call[0].hidden.shape[1] * (width + extra)
                     for call, extra in zip(calls, [0, *(c.input_ids.shape[1] for c in batch.chunks)]))
        uses_cache = any(_uses_cache(call[0]) for call in calls)

        def score(chunk: list[_Stream], hidden: list[dict[int, torch.Tensor]]) -> None:
            """Into each stream's own totals: chunks on several threads never share one."""
            self._score(chunk, hidden[0], keep_last=True,
                        scored=lambda logits, s: _accumulate(logits[:, -1], batch.scored, *self.totals[s.index]))
            for plan, final in zip(batch.chunks, hidden[1:]):
                def scored(logits: torch.Tensor, s: Any, c: Any = plan) -> Any:
                    return _accumulate(logits, c.scored, *self.totals[s.index])

                self._score(chunk, final, keep_last=False, scored=scored)
            hidden.clear()

        self.head.check(calls[0][-1].hidden)  # here, before any wave: the model's own head rewires it

        def advance(chunk: list[_Stream]) -> list[dict[int, torch.Tensor]] | None:
            hidden = _advance(self.adapter, self.edits, chunk, calls, [True] + [False] * (len(calls) - 1),
                              first_state, later_state)
            if not self.head.direct:
                return hidden  # scored between waves
            score(chunk, hidden)
            return None

        def done(chunk: list[_Stream], hidden: list[dict[int, torch.Tensor]] | None) -> None:
            if hidden is not None:
                score(chunk, hidden)
            for _ in chunk:
                on_stream()

        self._in_waves(self._chunks(self.streams, tokens, cache_tokens if uses_cache else 0, scores), advance, done)

    def _score(self, chunk: list[_Stream], hidden: dict[int, torch.Tensor], keep_last: bool,
               scored: Callable[[torch.Tensor, _Stream], None]) -> None:
        """Final norm + LM head for the streams' hidden states, as few calls as the logit budget allows."""
        rows, columns = next(iter(hidden.values())).shape[:2]
        per_stream = rows * (1 if keep_last else columns)
        step = max(1, self.logit_rows // max(1, per_stream))
        for i in range(0, len(chunk), step):
            part = chunk[i:i + step]
            logits = self.head(_stack([hidden[s.index] for s in part]), keep_last)
            for s, piece in zip(part, logits.split(rows)):
                scored(piece, s)
            del logits

    def _chunks(self, streams: list[_Stream], tokens: Sequence[int], cache_tokens: int,
                scores: int) -> list[list[_Stream]]:
        """The streams dealt into as few chunks as each worker's share of the token cap and the byte
        budget allows, a multiple of the workers, every ``n``-th stream to the same chunk: streams
        are ordered by branch point, so each chunk gets a like share of early (long) and late streams.

        ``tokens``: hidden-state tokens per stream of each call (all held until the head runs);
        ``cache_tokens``: KV-cache tokens per stream of one layer (the prompt's and one continuation's);
        ``scores``: (query, key) pairs per head of the largest call (attention scores and weights).
        """
        cost = (2 * sum(tokens) * self.hidden_size * self.elem  # hidden states of every call, in and out
                + cache_tokens * self.kv_bytes  # one layer's caches
                + 2 * scores * self.heads * 4)  # float32 attention scores and weights of one call
        fits = max(1, min(self.budget.tokens // self.workers // max(1, max(tokens)),
                          self.budget.bytes // self.workers // max(1, cost)))
        count = -(-len(streams) // fits)
        if len(streams) >= self.workers:
            count = -(-count // self.workers) * self.workers
        return [chunk for j in range(count) if (chunk := streams[j::count])]


class _Injector:
    """Replaces the first block's input with recorded hidden states, one tensor per forward call."""

    def __init__(self) -> None:
        self.queue: list[torch.Tensor] = []

    def __call__(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        hidden = block_input(args, kwargs)
        if not self.queue:
            raise RuntimeError("the layer sweep made more forward calls than it recorded")
        recorded = self.queue.pop(0)
        if recorded.shape != hidden.shape:
            raise RuntimeError(f"recorded hidden states {tuple(recorded.shape)} do not fit {tuple(hidden.shape)}")
        if args:
            return (recorded, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": recorded}


@contextmanager
def _tail_of(model: nn.Module, ablation: Ablation, donor: nn.Module | None, start: int | None,
             injector: _Injector) -> Iterator[None]:
    """The ablated model; with ``start``, also without layers ``0..start-1`` and fed recorded inputs."""
    with ExitStack() as stack:
        stack.enter_context(ablate(model, ablation, donor=donor))
        if start:
            stack.enter_context(skip_layers(model, range(start)))
            first_block = get_adapter(model).layers[0]
            stack.callback(first_block.register_forward_pre_hook(injector, with_kwargs=True).remove)
        yield


@torch.inference_mode()
def run_loglikelihood_sweep(
    model: nn.Module,
    plan: LoglikelihoodPlan,
    ablations: Sequence[Ablation],
    *,
    donor: nn.Module | None = None,
    share_prefix: bool = True,
    on_step: StepHook | None = None,
    wavefront: bool = True,
    budget: StreamBudget | None = None,
    workers: int | None = None,
) -> tuple[LoglikelihoodOutput, list[LoglikelihoodOutput]]:
    """Score ``plan`` intact and under each ablation; returns (intact, [per ablation]).

    ``wavefront=False`` runs every ablation on its own (from its first affected layer, fed the
    recorded input), as before the wavefront existed; benchmarks compare the two. ``budget``
    bounds the streams advanced together (default :meth:`StreamBudget.for_device`). ``workers``:
    how many chunks of streams run at once, each on one core (default: torch's thread count on a
    CPU, else 1); the results do not depend on it.
    ``on_step(done, total)`` is called after each (batch, model variant) step, for progress bars.
    """
    device = model_device(model)
    adapter = get_adapter(model)
    num_layers = adapter.num_layers
    recorder = _Recorder(adapter.layers)
    intact_totals = empty_totals(plan)
    totals = [empty_totals(plan) for _ in ablations]
    steps, done = len(plan.batches) * (1 + len(ablations)), 0

    def step() -> None:
        nonlocal done
        done += 1
        if on_step:
            on_step(done, steps)

    norm = _final_norm(adapter) if wavefront else None
    intact_copies = [i for i, a in enumerate(ablations) if a.is_intact]
    wave = [i for i, a in enumerate(ablations) if not a.is_intact and norm is not None and in_wavefront(a)]
    single = [i for i, a in enumerate(ablations) if not a.is_intact and i not in set(wave)]
    streams = _streams_of(model, adapter, ablations, wave, donor)
    workers = workers if workers is not None else cores_for(device)
    front = (_Wavefront(model, adapter, norm, streams, budget or StreamBudget.for_device(device), totals, workers)
             if streams and norm is not None else None)
    if front is None and not single:  # nothing branches off the intact model: its batches run on every core
        def batch_done() -> None:
            for _ in range(1 + len(intact_copies)):
                step()

        intact = run_loglikelihood(model, plan, share_prefix, workers, on_batch=batch_done)
        return intact, [LoglikelihoodOutput(intact.loglikelihood.clone(), intact.greedy.clone()) for _ in ablations]
    starts = {i: resume_layer(ablations[i], num_layers) for i in single}
    injector = _Injector()

    with grouped_query_sdpa(model), recorder.installed(), front.installed() if front is not None else nullcontext():
        with recorder.recording() as prefix_calls:
            prefix = prefix_for(model, plan.prefix, share_prefix)
        if front is not None and prefix is not None:
            front.run_prefix(prefix_calls)
        tail_prefixes: dict[int, PrefixCache | None] = {}
        for batch in plan.batches:
            with recorder.recording() as calls:
                run_batch(model, batch, prefix, device, *intact_totals)
            step()
            for _ in intact_copies:  # filled in at the end
                step()
            if front is not None:
                front.run_batch(batch, calls, prefix, step)
            for index in single:
                start = starts[index]
                with _tail_of(model, ablations[index], donor, start, injector):
                    if index not in tail_prefixes:  # the ablated model's own prefix cache, once
                        tail_prefixes[index] = None
                        if prefix is not None:
                            if start:
                                injector.queue = [prefix_calls[0][start].hidden]
                            tail_prefixes[index] = PrefixCache.compute(model, plan.prefix, device)
                    if start:
                        injector.queue = [call[start].hidden for call in calls]
                    run_batch(model, batch, tail_prefixes[index], device, *totals[index])
                    if injector.queue:
                        raise RuntimeError("the layer sweep made fewer forward calls than it recorded")
                step()
            del calls
    for i in intact_copies:
        totals[i] = (intact_totals[0].clone(), intact_totals[1].clone())
    outputs = [LoglikelihoodOutput(total, misses == 0) for total, misses in totals]
    return LoglikelihoodOutput(intact_totals[0], intact_totals[1] == 0), outputs
