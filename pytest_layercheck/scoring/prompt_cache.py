"""KV caches laid out for prefix sharing and continuation calls, exactly as the unshared passes would make them.

**Shared-prefix reuse.** Few-shot suites put the same examples before every prompt, so most of a
prompt is a token prefix common to all of them. With ``share_prefix`` (the default) and a common
prefix of at least ``MIN_SHARED_PREFIX`` tokens, each evaluation first runs that prefix ONCE
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

**Continuation calls** read their rows of a prompt call's cache one layer at a time
(:class:`RowsOfLayer`), so no copy of every layer is held for a whole call.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicLayer

from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring.forward import _forward_logits


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
                grid[:, row, :, pad:length] = prefix[:, :, : length - pad]
                if pad:
                    grid[:, row, :, :pad] = prefix[:, :, :1]
            buffers.append(buffer)
        return cls(buffers[0], buffers[1], keys.shape[2])

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.buffers
        end = self.filled + key_states.shape[-2]
        if end > keys.shape[-2]:  # no room left (a continuation extends selected rows): grow as DynamicLayer does
            keys = torch.cat([keys[:, :, : self.filled], key_states], dim=-2)
            values = torch.cat([values[:, :, : self.filled], value_states], dim=-2)
            self.buffers = (keys, values)
        else:
            keys[:, :, self.filled : end] = key_states
            values[:, :, self.filled : end] = value_states
        self.filled = end
        self.keys, self.values = keys[:, :, :end], values[:, :, :end]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep rows ``indices`` (new tensors, full: a gather into a strided buffer measured twice as slow
        as gathering, then concatenating)."""
        keys, values = self.buffers
        self.buffers = (
            select_rows(keys.narrow(2, 0, self.filled), indices),
            select_rows(values.narrow(2, 0, self.filled), indices),
        )
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
    def compute(cls, runtime: ModelRuntime, prefix: Sequence[int]) -> PrefixCache | None:
        """Run ``prefix`` once through the model as it is now; None when its cache is not a plain full-length
        DynamicCache."""
        device = runtime.device
        ids = torch.tensor([list(prefix)], dtype=torch.long, device=device)
        _, cache = _forward_logits(
            runtime.model,
            keep_last=True,
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            position_ids=torch.arange(len(prefix), device=device).unsqueeze(0),
            **runtime.cache_kwargs(DynamicCache()),  # no config: full-length layers, none slides or drops
            use_cache=True,
        )
        layers = getattr(cache, "layers", None)
        if not isinstance(cache, DynamicCache) or not layers:
            return None
        if any(
            type(layer) is not DynamicLayer
            or layer.keys is None
            or layer.keys.ndim != 4
            or layer.keys.shape[0] != 1
            or layer.keys.shape[-2] != len(prefix)
            for layer in layers
        ):
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

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
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
    if (
        isinstance(cache, Cache)
        and layers
        and all(isinstance(layer, CacheLayerMixin) and layer.is_initialized for layer in layers)
    ):
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
