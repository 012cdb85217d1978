"""Floating-point work a log-likelihood evaluation requires, counted from the model's shapes.

Benchmarks set measured time against this count to say how close scoring runs to the hardware:
useful FLOP/s = required FLOPs / seconds. Padding, recomputation and anything else the engine does
beyond the minimum is not counted, so it shows up as lost efficiency.

Counted per real token and layer: every linear map of the block (2·in·out, from the block's own
weights) plus causal attention (4·heads·head_dim per attended position: QKᵀ and AV). The LM head
(2·hidden·vocab) counts at scored positions only. In a sweep that reuses activations, the streams'
final layer computes its output projection and feed-forward only where its output is read (the
scored positions), so that is all it counts there. The shared prompt prefix counts once per
evaluation when the engine shares it (at least ``MIN_SHARED_PREFIX`` tokens). Norms, activations,
softmax and embedding lookups are linear in size and left out (well under 1% here).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from torch import nn

from pytest_layercheck.model.ablation import Ablation
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring.engine import MIN_SHARED_PREFIX, PreparedLoglikelihood
from pytest_layercheck.scoring.generation import PreparedGeneration
from pytest_layercheck.scoring.streams import first_affected_layer, in_wavefront


def _linear_flops(block: nn.Module) -> int:
    """2·in·out summed over the block's linear maps (``nn.Linear`` and GPT-2's ``Conv1D``)."""
    total = 0
    for module in block.modules():
        weight = getattr(module, "weight", None)
        if (
            weight is not None
            and weight.ndim == 2
            and (isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D")
        ):
            total += 2 * weight.numel()
    return total


@dataclass(frozen=True)
class ModelShape:
    """What the count needs from a model: per-layer linear work, attention width, LM head size."""

    linear_per_token: tuple[int, ...]  # per layer
    attention_per_pair: int  # per (query token, attended position) and layer: 4 · heads · head_dim
    lm_head_per_token: int  # 2 · hidden · vocab
    final_read_only_per_token: int = 0  # the final layer's output projection and feed-forward

    @classmethod
    def of(cls, runtime: ModelRuntime) -> ModelShape:
        adapter = runtime.adapter
        head = cast(Any, runtime.model).get_output_embeddings()
        final = adapter.layers[-1]
        mlp = adapter.mlp_of(final)
        return cls(
            linear_per_token=tuple(_linear_flops(block) for block in adapter.layers),
            attention_per_pair=4 * adapter.num_heads * adapter.head_dim,
            lm_head_per_token=2 * head.weight.numel(),
            final_read_only_per_token=_linear_flops(adapter.out_proj_of(final)) + (_linear_flops(mlp) if mlp else 0),
        )

    @property
    def num_layers(self) -> int:
        return len(self.linear_per_token)


@dataclass(frozen=True)
class TokenWork:
    """The token positions one evaluation computes, model-independently."""

    positions: tuple[int, ...]  # 0-based position of every computed token (its causal context is position + 1)
    scored: int  # LM-head rows

    @classmethod
    def of(cls, prepared: PreparedLoglikelihood) -> TokenWork:
        shared = len(prepared.prefix) if len(prepared.prefix) >= MIN_SHARED_PREFIX else 0
        positions: list[int] = list(range(shared))
        for context in prepared.contexts:
            positions += range(shared, len(context))
        for c, row in prepared.rows:
            start = len(prepared.contexts[c])
            positions += range(start, start + len(row))
        scored = len(prepared.contexts) + sum(len(row) for _, row in prepared.rows)
        return cls(tuple(positions), scored)

    @classmethod
    def of_generation(cls, prepared: PreparedGeneration) -> TokenWork:
        """Greedy generation at its longest: every prompt, then ``max_new_tokens`` tokens, each scored
        and all but the last fed back (an upper bound: a stop sequence ends a row earlier)."""
        shared = len(prepared.prefix) if len(prepared.prefix) >= MIN_SHARED_PREFIX else 0
        positions: list[int] = list(range(shared))
        for prompt in prepared.prompts:
            positions += range(shared, len(prompt) + prepared.max_new_tokens - 1)
        return cls(tuple(positions), len(prepared.prompts) * prepared.max_new_tokens)

    def flops(self, shape: ModelShape, layers: Iterable[int], final_read_only: bool = False) -> dict[str, int]:
        """FLOPs of running ``layers`` (then the LM head) on these tokens, by component; with
        ``final_read_only``, the final layer's output projection and feed-forward at scored positions only."""
        layers = list(layers)
        tokens = len(self.positions)
        attended = sum(p + 1 for p in self.positions)
        unread = tokens - self.scored if final_read_only and shape.num_layers - 1 in layers else 0
        return {
            "linear": tokens * sum(shape.linear_per_token[i] for i in layers)
            - unread * shape.final_read_only_per_token,
            "attention": attended * shape.attention_per_pair * len(layers),
            "lm_head": self.scored * shape.lm_head_per_token,
        }


def evaluation_flops(work: TokenWork, shape: ModelShape, ablation: Ablation | None = None, reuse: bool = False) -> int:
    """FLOPs of one evaluation under ``ablation``: the ablated model's layers, or with ``reuse`` only
    those the sweep computes (kept layers from the first affected one on, the wavefront's final layer
    where it is read; an intact entry in a sweep is a copy of the intact evaluation and costs nothing)."""
    ablation = ablation if ablation is not None else Ablation()
    kept = [i for i in range(shape.num_layers) if i not in ablation.skip]
    if reuse:
        start = first_affected_layer(ablation)
        if start is None:
            return 0
        kept = [i for i in kept if i >= start]
    return sum(work.flops(shape, kept, final_read_only=reuse and in_wavefront(ablation)).values())


def sweep_flops(work: TokenWork, shape: ModelShape, ablations: Sequence[Ablation]) -> tuple[int, int]:
    """(FLOPs scoring intact + each ablated model from scratch, FLOPs of the sweep that reuses activations)."""
    scratch = evaluation_flops(work, shape) + sum(evaluation_flops(work, shape, a) for a in ablations)
    reused = evaluation_flops(work, shape) + sum(evaluation_flops(work, shape, a, reuse=True) for a in ablations)
    return scratch, reused
