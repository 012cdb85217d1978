"""Streams advanced together, layer by layer, through stacked block calls on the recorded arguments.

At layer ``L`` every stream that runs the same module goes through it in ONE call: the streams'
hidden states stacked along the batch axis, the recorded mask and position tensors tiled to match,
the KV cache the streams' own states of that layer, stacked the same way. Zero-mode head masks are
applied per row inside the shared call, through hooks that act only on the calling thread's call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import Cache

from pytest_layercheck.model.architecture import ArchitectureAdapter
from pytest_layercheck.scoring.block_recording import _CACHE, _BlockCall, _uses_cache
from pytest_layercheck.scoring.streams import _Group, _groups, _Stream


class _StreamCache(DynamicCache):
    """The streams' states of ONE layer, stacked along the batch axis; every update goes to them."""

    def __init__(self, layer: Any) -> None:
        Cache.__init__(self, layers=[layer])

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
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
                raise RuntimeError(
                    f"output projection input {tuple(x.shape)} does not fit the head mask {tuple(edit.drop.shape)}"
                )
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


def _run_block(
    adapter: ArchitectureAdapter,
    group: _Group,
    call: _BlockCall,
    hidden: torch.Tensor,
    layer: Any,
    memo: dict[tuple[int, int], Any],
    edits: _BlockEdits,
    last_only: bool,
) -> torch.Tensor:
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


def _advance(
    adapter: ArchitectureAdapter,
    edits: _BlockEdits,
    streams: Sequence[_Stream],
    calls: Sequence[list[_BlockCall]],
    last_only: Sequence[bool],
    first_state: Callable[[int, _Group, _BlockCall], Any],
    later_state: Callable[[int, int, _Group, Any], Any] | None = None,
    on_state: Callable[[int, _Group, Any], None] | None = None,
) -> list[dict[int, torch.Tensor]]:
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
                    state = (
                        later_state(c - 1, layer, group, prompt_state) if later_state and _uses_cache(record) else None
                    )
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
