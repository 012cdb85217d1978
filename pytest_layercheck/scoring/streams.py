"""Ablations as streams that branch off the intact model at their first affected layer.

What each stream runs at each layer (its own block, a donor's block, nothing) and which heads it
zeroes, so streams that run the same module at a layer can share one batched block call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from pytest_layercheck.model.ablation import Ablation, ablate
from pytest_layercheck.model.head_masking import resolve_heads
from pytest_layercheck.model.layer_swapping import swap_layers
from pytest_layercheck.model.runtime import ModelRuntime

if TYPE_CHECKING:
    from transformers import PreTrainedModel


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


def _streams_of(
    runtime: ModelRuntime, ablations: Sequence[Ablation], indices: Sequence[int], donor: PreTrainedModel | None
) -> list[_Stream]:
    """Streams for ``ablations[i]``, ``i`` in ``indices`` (none of them intact)."""
    model, adapter = runtime.model, runtime.adapter
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
                drop[h * adapter.head_dim : (h + 1) * adapter.head_dim] = True
            heads[layer] = drop
        for layer in ablation.skip:
            blocks[layer] = None
        streams.append(_Stream(i, start, blocks, heads))
    return streams
