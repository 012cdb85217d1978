"""Ablation sweeps that reuse the intact model's activations: :func:`run_loglikelihood_sweep`.

A depth profile scores the same requests under ~31 ablations. An ablation whose first affected
layer is ``a`` (removing layer ``a``, masking heads of layer ``a``, swapping in a donor's layer
``a``) leaves layers ``0..a-1`` untouched, so the residual stream entering layer ``a`` and the
keys/values of layers ``0..a-1`` are exactly the intact model's. Each ablation is therefore a
STREAM that branches off the intact model at its first affected layer (:mod:`.streams`); the
intact model's block calls are recorded once per prompt batch (:mod:`.block_recording`) and the
streams advance together on them as a wavefront (:mod:`.wavefront`). Results equal scoring each
ablated model from scratch up to float rounding, which tests check on several families and protocols.

Ablations in ``uniform`` head mode switch the whole model's attention function, so they keep the
per-ablation path: the ablated model's own forward from its first affected layer, fed the recorded
input of that layer (the same reuse, one ablation at a time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pytest_layercheck.model.ablation import Ablation, ablate
from pytest_layercheck.model.layer_skipping import skip_layers
from pytest_layercheck.model.probes import block_input
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring.block_recording import _BlockCall, _Recorder
from pytest_layercheck.scoring.engine import prefix_for, run_loglikelihood
from pytest_layercheck.scoring.loglikelihood import (
    LoglikelihoodOutput,
    LoglikelihoodPlan,
    _PromptBatch,
    empty_totals,
    run_batch,
)
from pytest_layercheck.scoring.model_head import _final_norm
from pytest_layercheck.scoring.prompt_cache import PrefixCache
from pytest_layercheck.scoring.streams import _streams_of, in_wavefront, resume_layer
from pytest_layercheck.scoring.wavefront import StreamBudget, _Wavefront

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["StepHook", "run_loglikelihood_sweep"]


StepHook = Callable[[int, int], None]


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
def _tail_of(
    runtime: ModelRuntime,
    ablation: Ablation,
    donor: PreTrainedModel | None,
    start: int | None,
    injector: _Injector,
) -> Iterator[None]:
    """The ablated model; with ``start``, also without layers ``0..start-1`` and fed recorded inputs."""
    with ExitStack() as stack:
        stack.enter_context(ablate(runtime.model, ablation, donor=donor))
        if start:
            stack.enter_context(skip_layers(runtime.model, range(start)))
            first_block = runtime.adapter.layers[0]  # the first block left once the others are skipped
            stack.callback(first_block.register_forward_pre_hook(injector, with_kwargs=True).remove)
        yield


class _OneByOne:
    """The per-ablation part of one sweep: each ablation's own forward, from the layer it may resume at
    (:func:`resume_layer`), fed the intact model's recorded input there."""

    def __init__(
        self,
        runtime: ModelRuntime,
        ablations: Sequence[Ablation],
        indices: Sequence[int],
        donor: PreTrainedModel | None,
        totals: list[tuple[torch.Tensor, torch.Tensor]],
        prefix_tokens: Sequence[int],
    ) -> None:
        self.runtime, self.ablations, self.indices, self.donor = runtime, ablations, indices, donor
        self.totals, self.prefix_tokens = totals, prefix_tokens
        self.starts = {i: resume_layer(ablations[i], runtime.adapter.num_layers) for i in indices}
        self.injector = _Injector()
        self.prefixes: dict[int, PrefixCache | None] = {}  # each ablated model's own prefix cache, made once

    def run_batch(
        self,
        batch: _PromptBatch,
        calls: list[list[_BlockCall]],
        prefix: PrefixCache | None,
        prefix_calls: list[list[_BlockCall]],
        on_ablation: Callable[[], None],
    ) -> None:
        """Score ``batch`` under each ablation, given the intact model's recorded calls of the batch (and of
        the shared prefix, when ``prefix`` is shared)."""
        for index in self.indices:
            start = self.starts[index]
            with _tail_of(self.runtime, self.ablations[index], self.donor, start, self.injector):
                if index not in self.prefixes:
                    self.prefixes[index] = None
                    if prefix is not None:
                        if start:
                            self.injector.queue = [prefix_calls[0][start].hidden]
                        self.prefixes[index] = PrefixCache.compute(self.runtime, self.prefix_tokens)
                if start:
                    self.injector.queue = [call[start].hidden for call in calls]
                run_batch(self.runtime, batch, self.prefixes[index], *self.totals[index])
                if self.injector.queue:
                    raise RuntimeError("the layer sweep made fewer forward calls than it recorded")
            on_ablation()


class _Progress:
    """Counts (batch, model variant) steps and reports each as ``on_step(done, total)``."""

    def __init__(self, total: int, on_step: StepHook | None) -> None:
        self.total, self.done, self.on_step = total, 0, on_step

    def __call__(self) -> None:
        self.done += 1
        if self.on_step:
            self.on_step(self.done, self.total)


def _intact_only(
    runtime: ModelRuntime,
    plan: LoglikelihoodPlan,
    ablations: int,
    share_prefix: bool,
    workers: int,
    step: Callable[[], None],
    steps_per_batch: int,
) -> tuple[LoglikelihoodOutput, list[LoglikelihoodOutput]]:
    """The sweep when nothing branches off the intact model: its batches run on every core."""

    def batch_done() -> None:
        for _ in range(steps_per_batch):
            step()

    intact = run_loglikelihood(runtime, plan, share_prefix, workers, on_batch=batch_done)
    return intact, [LoglikelihoodOutput(intact.loglikelihood.clone(), intact.greedy.clone()) for _ in range(ablations)]


@torch.inference_mode()
def run_loglikelihood_sweep(
    runtime: ModelRuntime,
    plan: LoglikelihoodPlan,
    ablations: Sequence[Ablation],
    *,
    donor: PreTrainedModel | None = None,
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
    adapter = runtime.adapter
    recorder = _Recorder(adapter.layers)
    intact_totals = empty_totals(plan)
    totals = [empty_totals(plan) for _ in ablations]
    step = _Progress(len(plan.batches) * (1 + len(ablations)), on_step)
    norm = _final_norm(adapter) if wavefront else None
    intact_copies = [i for i, a in enumerate(ablations) if a.is_intact]
    wave = [i for i, a in enumerate(ablations) if not a.is_intact and norm is not None and in_wavefront(a)]
    single = [i for i, a in enumerate(ablations) if not a.is_intact and i not in set(wave)]
    streams = _streams_of(runtime, ablations, wave, donor)
    workers = workers if workers is not None else runtime.workers
    front = (
        _Wavefront(runtime, norm, streams, budget or StreamBudget.for_device(runtime.device), totals, workers)
        if streams and norm is not None
        else None
    )
    if front is None and not single:
        return _intact_only(runtime, plan, len(ablations), share_prefix, workers, step, 1 + len(intact_copies))
    one_by_one = _OneByOne(runtime, ablations, single, donor, totals, plan.prefix)
    with runtime.grouped_query_sdpa(), recorder.installed(), front.installed() if front is not None else nullcontext():
        with recorder.recording() as prefix_calls:
            prefix = prefix_for(runtime, plan.prefix, share_prefix)
        if front is not None and prefix is not None:
            front.run_prefix(prefix_calls)
        for batch in plan.batches:
            with recorder.recording() as calls:
                run_batch(runtime, batch, prefix, *intact_totals)
            for _ in range(1 + len(intact_copies)):  # the intact model, and its copies (filled in at the end)
                step()
            if front is not None:
                front.run_batch(batch, calls, prefix, step)
            one_by_one.run_batch(batch, calls, prefix, prefix_calls, step)
            del calls
    for i in intact_copies:
        totals[i] = (intact_totals[0].clone(), intact_totals[1].clone())
    outputs = [LoglikelihoodOutput(total, misses == 0) for total, misses in totals]
    return LoglikelihoodOutput(intact_totals[0], intact_totals[1] == 0), outputs
