"""Recording the intact model's decoder-block calls, so ablations can branch off it without recomputing.

An ablation leaves every layer before its first affected one untouched, so the inputs the intact
forward hands those blocks (hidden states, masks, positions) are exactly the ablated model's. The
recorder keeps them per forward call, with the KV cache taken out (each stream brings its own).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicLayer

from pytest_layercheck.model.probes import probe_blocks

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
        calls.extend(self.records[i : i + n] for i in range(0, len(self.records), n))
        self.records = []


def _uses_cache(call: _BlockCall) -> bool:
    return any(a is _CACHE for a in (*call.args, *call.kwargs.values()))
