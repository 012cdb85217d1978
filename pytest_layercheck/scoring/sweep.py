"""Ablation sweeps that reuse the intact model's activations.

A depth profile scores the same requests under ~31 ablations. An ablation whose first affected
layer is ``a`` (removing layer ``a``, masking heads of layer ``a``, swapping in a donor's layer
``a``) leaves layers ``0..a-1`` untouched, so their output — the residual stream entering layer
``a`` — and their keys/values are exactly the intact model's. The sweep therefore runs the intact
model once per batch while recording the input of every decoder block, then evaluates each
ablation on the TAIL only: layers ``0..a-1`` are removed as well and the recorded input of layer
``a`` is fed to the first remaining block. For a per-layer sweep that halves the layer work.

The KV cache needs no special care: the tail's cache holds only tail layers, and a continuation
pass over the tail attends only to them, as the tail model's own forward does.

Execution is batch-outer, ablation-inner, so recorded activations are bounded by one batch
(``num_layers × batch tokens × hidden size``) and never grow with the suite. Results equal
scoring each ablated model separately (the same kernels on the same inputs, up to float rounding,
which tests check).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from ..ablation import Ablation, ablate, skip_layers
from ..architecture import get_adapter
from .engine import (
    LoglikelihoodOutput,
    LoglikelihoodPlan,
    PrefixCache,
    empty_totals,
    model_device,
    prefix_for,
    run_batch,
)

StepHook = Callable[[int, int], None]


def _hidden_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


class _BlockInputRecorder:
    """Records the hidden states entering every decoder block of the intact model, per forward call."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        self.blocks = list(blocks)
        self.inputs: list[torch.Tensor] = []
        self.active = False

    def _hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.active:
            self.inputs.append(_hidden_of(args, kwargs))

    @contextmanager
    def installed(self) -> Iterator[_BlockInputRecorder]:
        with ExitStack() as stack:
            for block in self.blocks:
                stack.callback(block.register_forward_pre_hook(self._hook, with_kwargs=True).remove)
            yield self

    @contextmanager
    def recording(self) -> Iterator[list[list[torch.Tensor]]]:
        """Yields a list that, on exit, holds one list of per-block inputs per forward call made."""
        calls: list[list[torch.Tensor]] = []
        self.inputs, self.active = [], True
        try:
            yield calls
        finally:
            self.active = False
        n = len(self.blocks)
        if len(self.inputs) % n:
            raise RuntimeError(f"recorded {len(self.inputs)} block inputs, not a multiple of {n} blocks")
        calls.extend(self.inputs[i:i + n] for i in range(0, len(self.inputs), n))
        self.inputs = []


class _Injector:
    """Replaces the first block's input with recorded hidden states, one tensor per forward call."""

    def __init__(self) -> None:
        self.queue: list[torch.Tensor] = []

    def __call__(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        hidden = _hidden_of(args, kwargs)
        if not self.queue:
            raise RuntimeError("the layer sweep made more forward calls than it recorded")
        recorded = self.queue.pop(0)
        if recorded.shape != hidden.shape:
            raise RuntimeError(f"recorded hidden states {tuple(recorded.shape)} do not fit {tuple(hidden.shape)}")
        if args:
            return (recorded, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": recorded}


def first_affected_layer(ablation: Ablation) -> int | None:
    """The lowest original layer index an ablation changes; None when it changes none."""
    touched = [*ablation.skip, *(layer for layer, _ in ablation.heads), *(target for target, _ in ablation.swap)]
    return min(touched) if touched else None


def resume_layer(ablation: Ablation, num_layers: int) -> int | None:
    """Where the ablated forward may start from recorded inputs: a layer with an unaffected input
    that the ablated model still runs. None: nothing to reuse (start at the embeddings)."""
    first = first_affected_layer(ablation)
    if not first:
        return None
    kept_after = [i for i in range(first, num_layers) if i not in ablation.skip]
    if kept_after:
        return first
    return first - 1  # everything from ``first`` on is removed: resume at the last kept layer


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
) -> tuple[LoglikelihoodOutput, list[LoglikelihoodOutput]]:
    """Score ``plan`` intact and under each ablation; returns (intact, [per ablation]).

    ``on_step(done, total)`` is called after each (batch, model variant) step, for progress bars.
    """
    device = model_device(model)
    adapter = get_adapter(model)
    num_layers = adapter.num_layers
    recorder = _BlockInputRecorder(adapter.layers)
    starts = [resume_layer(a, num_layers) for a in ablations]
    intact_totals = empty_totals(plan)
    totals = [empty_totals(plan) for _ in ablations]
    injector = _Injector()
    steps, done = len(plan.batches) * (1 + len(ablations)), 0

    with recorder.installed():
        with recorder.recording() as prefix_calls:
            prefix = prefix_for(model, plan.prefix, share_prefix)
        tail_prefixes: dict[int, PrefixCache | None] = {}
        for batch in plan.batches:
            with recorder.recording() as calls:
                run_batch(model, batch, prefix, device, *intact_totals)
            done += 1
            if on_step:
                on_step(done, steps)
            for index, (ablation, start) in enumerate(zip(ablations, starts)):
                with _tail_of(model, ablation, donor, start, injector):
                    if index not in tail_prefixes:  # the ablated model's own prefix cache, once
                        tail_prefixes[index] = None
                        if prefix is not None:
                            if start:
                                injector.queue = [prefix_calls[0][start]]
                            tail_prefixes[index] = PrefixCache.compute(model, plan.prefix, device)
                    if start:
                        injector.queue = [call[start] for call in calls]
                    run_batch(model, batch, tail_prefixes[index], device, *totals[index])
                    if injector.queue:
                        raise RuntimeError("the layer sweep made fewer forward calls than it recorded")
                done += 1
                if on_step:
                    on_step(done, steps)
            del calls
    outputs = [LoglikelihoodOutput(total, misses == 0) for total, misses in totals]
    return LoglikelihoodOutput(intact_totals[0], intact_totals[1] == 0), outputs
