"""The residual stream the redundancy metrics read: each block's input and output, gathered by block probes.

``x^l`` is the hidden state entering decoder layer ``l`` (``x^0`` the embedding output, ``x^N`` the output
of the last layer BEFORE the final norm). Why hooks and not ``output_hidden_states``: in transformers 5.x
``hidden_states[i]`` is the input of layer ``i`` for ``i < N``, but ``hidden_states[N]`` is replaced by the
*final-normed* output (``last_hidden_state``), which is not the residual stream a block feeds; and not
every family records hidden states the same way. A forward pre-hook and a forward hook on every decoder
block give ``x^0 .. x^N`` uniformly for all supported families (tests check them against
``output_hidden_states`` for ``i < N``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.model.probes import block_input, block_output, probe_blocks
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring.batching import default_token_budget, shared_prefix
from pytest_layercheck.scoring.engine import MIN_SHARED_PREFIX
from pytest_layercheck.scoring.forward import accepts_logits_to_keep
from pytest_layercheck.scoring.prompt_cache import PrefixCache
from pytest_layercheck.scoring.tokenisation import (
    encode_texts,
    encoding_rule,
    tokenizer_max_length,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


# --------------------------------------------------------------------------------------------------
# Residual-stream statistics


@dataclass(frozen=True)
class LayerStates:
    """What the metrics need from one pass over the prompts.

    ``last``: ``[prompts, N+1, hidden]`` float64, the last real token's ``x^0 .. x^N``.
    ``cos_sum``: ``[N]`` float64, summed ``cos(x^i, x^{i+1})`` over every real token.
    ``tokens``: the number of real tokens summed.
    """

    last: torch.Tensor
    cos_sum: torch.Tensor
    tokens: int

    @property
    def num_layers(self) -> int:
        return int(self.cos_sum.shape[0])

    @property
    def num_prompts(self) -> int:
        return int(self.last.shape[0])


class _StreamRecorder:
    """Per-token cosines of each block's input vs output, and last-token states, via block probes."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        self.blocks = list(blocks)
        self.mask: torch.Tensor | None = None  # [rows, width] bool, real tokens
        self.inputs: list[torch.Tensor | None] = [None] * len(self.blocks)
        self.last: list[torch.Tensor | None] = [None] * (len(self.blocks) + 1)
        self.cos: list[torch.Tensor | None] = [None] * len(self.blocks)

    @contextmanager
    def installed(self) -> Iterator[_StreamRecorder]:
        with probe_blocks(self.blocks, on_input=self._before, on_output=self._after):
            yield self

    def _before(self, index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = block_input(args, kwargs)
        self.inputs[index] = hidden
        self.last[index] = hidden[:, -1].double().cpu()

    def _after(self, index: int, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        out = block_output(output)
        before = self.inputs[index]
        assert before is not None and self.mask is not None
        cos = F.cosine_similarity(before.double(), out.double(), dim=-1)  # [rows, width]
        self.cos[index] = cos.cpu().masked_select(self.mask).sum()
        self.inputs[index] = None
        if index == len(self.blocks) - 1:
            self.last[index + 1] = out[:, -1].double().cpu()


def _batches(lengths: Sequence[int], budget: int, skip: int = 0) -> list[list[int]]:
    """Prompt indices, longest first, grouped so rows x (width - skip) stays within ``budget`` tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * (lengths[groups[-1][0]] - skip) <= budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@torch.inference_mode()
def collect_layer_states(
    runtime: ModelRuntime,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    token_budget: int | None = None,
    share_prefix: bool = True,
) -> LayerStates:
    """Run ``prompts`` (left-padded batches, explicit positions) and gather :class:`LayerStates`.

    Padding never enters a statistic: with left padding the last column is every row's last real
    token, and per-token cosines are summed under the attention mask. Prompts longer than the
    model's window lose tokens from the left, as everywhere in layercheck.

    ``share_prefix``: few-shot suites repeat one long token prefix in every prompt. It is run once
    (the engine's :class:`~pytest_layercheck.scoring.prompt_cache.PrefixCache`) and its tokens enter
    Block Influence once, not once per prompt; the last-token states are unchanged (a prefix
    token's states do not depend on what follows it). Without sharing, every prompt's copy of the
    prefix counts.
    """
    if not prompts:
        raise ConfigError("no prompts to measure redundancy on", "pass at least one prompt (or a non-empty suite)")
    blocks = list(runtime.adapter.layers)
    if not blocks:
        raise ConfigError("the model has no decoder layers installed", "measure a model with at least two layers")
    encoded, pad = _encode(runtime, tokenizer, prompts)
    model, device = runtime.model, runtime.device
    budget = token_budget or default_token_budget(device)
    recorder = _StreamRecorder(blocks)
    rows_last: dict[int, torch.Tensor] = {}
    cos_sum = torch.zeros(len(blocks), dtype=torch.float64)
    tokens = 0
    keep = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    with recorder.installed():
        prefix: PrefixCache | None = None
        common = shared_prefix(encoded) if share_prefix else ()
        if len(common) >= MIN_SHARED_PREFIX:
            recorder.mask = torch.ones((1, len(common)), dtype=torch.bool)
            prefix = PrefixCache.compute(runtime, common)
            if prefix is not None:  # None: a cache layout the prefix cache does not handle
                cos_sum += torch.stack(recorder.cos)  # type: ignore[arg-type]
                tokens += len(common)
        for group in _batches([len(ids) for ids in encoded], budget, prefix.length if prefix is not None else 0):
            inputs, recorder.mask = _batch_inputs(runtime, [encoded[i] for i in group], pad, prefix)
            model(**inputs, **keep)
            stacked = torch.stack(recorder.last, dim=1)  # type: ignore[arg-type]
            for row, index in enumerate(group):
                rows_last[index] = stacked[row]
            cos_sum += torch.stack(recorder.cos)  # type: ignore[arg-type]
            tokens += int(recorder.mask.sum())
    last = torch.stack([rows_last[i] for i in range(len(encoded))])
    return LayerStates(last=last, cos_sum=cos_sum, tokens=tokens)


def _encode(
    runtime: ModelRuntime, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]
) -> tuple[list[list[int]], int]:
    """The prompts' token ids (with the model's BOS rule, cut from the left to the window) and the pad id."""
    rule = encoding_rule(tokenizer)
    encoded = encode_texts(tokenizer, rule, list(prompts))
    limit = runtime.max_length or tokenizer_max_length(tokenizer)
    if limit is not None:
        encoded = [ids[-limit:] for ids in encoded]
    if any(not ids for ids in encoded):
        raise ConfigError("a prompt encodes to no tokens", "drop empty prompts")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else rule.empty_context_token
    return encoded, int(pad)


def _batch_inputs(
    runtime: ModelRuntime, seqs: Sequence[Sequence[int]], pad: int, prefix: PrefixCache | None
) -> tuple[dict[str, Any], torch.Tensor]:
    """One left-padded batch's forward arguments, and the mask of the tokens its statistics count."""
    device = runtime.device
    width = len(seqs[0])
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    inputs: dict[str, Any] = {"attention_mask": mask.to(device), "use_cache": prefix is not None}
    if prefix is None:
        inputs.update(input_ids=ids.to(device), position_ids=positions.to(device))
        return inputs, mask.bool()
    # Columns before ``skip`` come from the prefix cache (row r shifted by its padding);
    # re-run prefix tokens of padded rows (position < skip) are not counted again.
    skip = prefix.length
    inputs.update(
        input_ids=ids[:, skip:].to(device),
        position_ids=positions[:, skip:].to(device),
        **runtime.cache_kwargs(prefix.expand(width - mask.sum(1))),
    )
    return inputs, mask[:, skip:].bool() & (positions[:, skip:] >= skip)


def merge_states(parts: Sequence[LayerStates]) -> LayerStates:
    """Pool states gathered in several passes (one per suite, so each suite's prefix is shared)."""
    if not parts:
        raise ConfigError("no states to merge", "gather states from at least one group of prompts")
    if len({p.num_layers for p in parts}) != 1:
        raise ConfigError("states come from models with different layer counts", "merge states of one model")
    return LayerStates(
        last=torch.cat([p.last for p in parts]),
        cos_sum=torch.stack([p.cos_sum for p in parts]).sum(0),
        tokens=sum(p.tokens for p in parts),
    )
