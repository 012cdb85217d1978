"""Batched greedy generation, cut at the first EOS and the first stop string, as lm-eval post-processes it.

Greedy generation shares the prompt prefix the way log-likelihood scoring does: ``generate`` receives
the full left-padded prompts plus the shifted prefix cache and only computes the columns the cache
does not cover. Logit processors a model's generation config may carry are neutralised, and steps
with logits that are not finite are refused, so a diverged model cannot pass for one that answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from pytest_layercheck.core.errors import NonFiniteScoreError
from pytest_layercheck.model import kv_cache
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring.batching import BatchSettings, _chunks, _pad, shared_prefix
from pytest_layercheck.scoring.prompt_cache import PrefixCache

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class PreparedGeneration:
    """Tokenised prompts plus stop settings; model-independent."""

    prompts: tuple[tuple[int, ...], ...]
    until: tuple[str, ...]
    max_new_tokens: int
    _plans: dict[BatchSettings, tuple[_GenerationBatch, ...]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def longest_input(self) -> int:
        return max((len(p) for p in self.prompts), default=0) + self.max_new_tokens

    @cached_property
    def prefix(self) -> tuple[int, ...]:
        """Token prefix common to all prompts (see :func:`shared_prefix`)."""
        return shared_prefix(self.prompts)

    @cached_property
    def highest_token_id(self) -> int:
        """The largest prompt token id (``generate`` also feeds the tokenizer's pad id to finished rows)."""
        return max((max(p) for p in self.prompts if p), default=-1)

    def plan(self, settings: BatchSettings) -> tuple[_GenerationBatch, ...]:
        if settings not in self._plans:
            order = sorted(range(len(self.prompts)), key=lambda i: -len(self.prompts[i]))
            widths = [len(self.prompts[i]) + self.max_new_tokens for i in order]
            batches = []
            for part in _chunks(widths, settings, scored_all=False):
                members = order[part]
                ids, mask = _pad([self.prompts[i] for i in members], len(self.prompts[members[0]]), left=True)
                batches.append(_GenerationBatch(tuple(members), ids, mask))
            self._plans[settings] = tuple(batches)
        return self._plans[settings]


@dataclass(frozen=True)
class _GenerationBatch:
    requests: tuple[int, ...]
    input_ids: torch.Tensor  # left-padded
    attention_mask: torch.Tensor


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """Text before the earliest occurrence of any stop string (lm-eval's post-processing)."""
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


class _StopOnStrings(StoppingCriteria):
    """Marks a row finished once its generated text contains a stop string."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, until: Sequence[str], prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.until = [s for s in until if s]
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width :].tolist(), skip_special_tokens=True)
        done = [any(stop in text for stop in self.until) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]  # transformers annotates a BoolTensor


class _FiniteLogits(LogitsProcessor):
    """Refuses a step whose logits are not finite: greedy decoding over NaN logits still picks a token
    (the argmax of NaN), so a diverged model would generate text as if nothing were wrong. One
    reduction per step: a row's maximum is NaN or infinite exactly when the row is unusable."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not bool(torch.isfinite(scores.amax(dim=-1)).all()):
            raise NonFiniteScoreError(
                "greedy generation produced logits that are not finite (NaN or infinite)",
                "score in float32 (--dtype float32) if the weights are finite; otherwise the model diverged",
            )
        return scores


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """EOS ids from the tokenizer and the model's generation config (either may list several)."""
    ids: set[int] = set()
    for value in (
        getattr(tokenizer, "eos_token_id", None),
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
    ):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return sorted(ids)


def greedy_config(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int) -> GenerationConfig:
    """Plain greedy decoding: logit processors a model's generation config may carry are neutralised."""
    eos = eos_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        temperature=1.0,
        top_k=50,
        top_p=1.0,
        eos_token_id=eos or None,
        pad_token_id=pad,
        use_cache=True,
    )


def _generate(
    runtime: ModelRuntime,
    tokenizer: PreTrainedTokenizerBase,
    prepared: PreparedGeneration,
    settings: BatchSettings,
    prefix: PrefixCache | None,
    texts: list[str],
) -> None:
    """Fill ``texts`` with the greedy continuations of ``run_generation``, on ``prefix`` when shared."""
    model, device = runtime.model, runtime.device
    config = greedy_config(model, tokenizer, prepared.max_new_tokens)
    eos = torch.tensor(eos_token_ids(model, tokenizer), dtype=torch.long)
    for batch in prepared.plan(settings):
        width = batch.input_ids.shape[1]
        stops = StoppingCriteriaList([_StopOnStrings(tokenizer, prepared.until, width)]) if prepared.until else None
        past = kv_cache.generate_kwargs(None if prefix is None else prefix.expand(width - batch.attention_mask.sum(1)))
        out = cast(Any, model).generate(  # from the GenerationMixin that every causal LM class mixes in
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            generation_config=config,
            logits_processor=LogitsProcessorList([_FiniteLogits()]),
            stopping_criteria=stops,
            **past,
        )
        new = out[:, width:].cpu()
        # Keep tokens before the first EOS (greedy rows that stopped early are padded after it).
        keep = torch.isin(new, eos).cumsum(1) == 0
        generated = [row[k].tolist() for row, k in zip(new, keep)]
        for i, text in zip(batch.requests, tokenizer.batch_decode(generated, skip_special_tokens=True)):
            texts[i] = cut_at_stop(text, prepared.until)
