"""Running a log-likelihood plan: one prompt call per batch, then its continuation calls on the prompt's cache.

Requests are ``(context tokens, continuation tokens)``. All requests with the same context (the
choices of a multiple-choice item) share one forward pass of that context:

1. *Prompt pass*: unique contexts, longest first, LEFT-padded with an attention mask and explicit
   ``position_ids`` (so rotary and GPT-2-style absolute positions are those of the unpadded
   sequence), ``logits_to_keep=1``. The last position is then the last real token of every row,
   and its logits score the FIRST token of every continuation of that context — for single-token
   continuations (``mc_letters``: " A", " B", ...) this is the whole score, exactly lm-eval's
   one-token-continuation cache.
2. *Continuation pass* (only for continuations longer than one token): the prompt pass's KV
   cache is selected per continuation row (inside each layer, :class:`~.prompt_cache.RowsOfLayer`) and
   ``continuation[:-1]`` is run on top of it, RIGHT-padded (padding after the real tokens never
   influences them under causal attention), with positions continuing from the real context length.
   Its logits score tokens 1..n-1.

This is the same computation as running each ``context + continuation`` separately (lm-eval's
way), evaluated in a different order; numbers agree to float rounding, as for any batching.
Log-probabilities are ``logit[target] - logsumexp(logits)`` in float32, gathered for all scored
positions at once; ``greedy`` is whether every target token is the argmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring.forward import _forward_logits
from pytest_layercheck.scoring.prompt_cache import PrefixCache, _select_cache


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


@dataclass(frozen=True)
class LoglikelihoodOutput:
    """Per request: summed log-probability of the continuation, and whether it is the greedy one."""

    loglikelihood: torch.Tensor  # float64 [N]
    greedy: torch.Tensor  # bool [N]


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


def _prompt_inputs(runtime: ModelRuntime, batch: _PromptBatch, prefix: PrefixCache | None) -> dict[str, Any]:
    """Model inputs of a left-padded prompt batch; with ``prefix``, its first columns come from the cache."""
    device = runtime.device
    mask = batch.attention_mask
    if prefix is None:
        return {
            "input_ids": batch.input_ids.to(device),
            "attention_mask": mask.to(device),
            "position_ids": batch.position_ids.to(device),
        }
    cached = prefix.length
    return {
        "input_ids": batch.input_ids[:, cached:].to(device),
        "attention_mask": mask.to(device),  # covers the cached columns too
        "position_ids": batch.position_ids[:, cached:].to(device),
        **runtime.cache_kwargs(prefix.expand(mask.shape[1] - mask.sum(1), width=mask.shape[1])),
    }


def run_batch(
    runtime: ModelRuntime, batch: _PromptBatch, prefix: PrefixCache | None, total: torch.Tensor, misses: torch.Tensor
) -> int:
    """Score one prompt batch and its continuation chunks into ``total``/``misses``.

    Makes one forward call for the prompts, then one per continuation chunk, in that order
    (the layer-sweep relies on the order); returns the number of calls.
    """
    model, device = runtime.model, runtime.device
    logits, cache = _forward_logits(
        model,
        keep_last=True,
        **_prompt_inputs(runtime, batch, prefix),
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
            **runtime.cache_kwargs(past),
            use_cache=True,
        )
        _accumulate(logits, chunk.scored, total, misses)
        del past, logits
    return 1 + len(batch.chunks)


def empty_totals(plan: LoglikelihoodPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-request accumulators: summed log-probability (float64) and greedy misses."""
    return torch.zeros(plan.n_requests, dtype=torch.float64), torch.zeros(plan.n_requests, dtype=torch.long)
