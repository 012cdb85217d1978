"""Masking the top-k retrieval heads against k random non-retrieval heads (Wu et al., arXiv 2404.15574).

:func:`compare_masking` masks the top-k retrieval heads with the paper's uniform attention (pre-softmax
scores 0, during decoding only) and, as the control, k random non-retrieval heads, and compares
retrieval-suite accuracy with a paired exact McNemar test.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_layercheck.analysis.heads.importance import HeadKey, model_and_tokenizer
from pytest_layercheck.analysis.jsonable import attributes, plain
from pytest_layercheck.analysis.retrieval_heads.decoding import decode, greedy_decode
from pytest_layercheck.analysis.retrieval_heads.detection import RetrievalHeads, check_k, find_retrieval_heads
from pytest_layercheck.analysis.retrieval_heads.needles import DEFAULT_TESTS, NeedleTest
from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.records import PRIMARY_METRIC
from pytest_layercheck.data.statistics import exact_mcnemar, mean
from pytest_layercheck.evaluation.service import deterministic
from pytest_layercheck.model.ablation import Ablation, ablate
from pytest_layercheck.model.architecture import get_adapter
from pytest_layercheck.model.layer_skipping import original_layers
from pytest_layercheck.scoring.generation import cut_at_stop
from pytest_layercheck.scoring.protocols import PreparedSuite, extract_answer, normalise_answer, prepare, score
from pytest_layercheck.suites.builtin import resolve_suite
from pytest_layercheck.suites.schema import Suite

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from pytest_layercheck.evaluation.profiler import ProgressHook
    from pytest_layercheck.model.loading import LoadedModel
    from pytest_layercheck.model.runtime import ModelRuntime


# --------------------------------------------------------------------------------------------------
# Masking comparison
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskingComparison:
    """Retrieval-suite outcomes intact, with the top-k retrieval heads masked and with k random
    non-retrieval heads masked (per item, aligned with ``item_ids``)."""

    model: str
    suite: str
    protocol: str
    metric: str
    k: int
    seed: int
    decode_only: bool
    item_ids: tuple[str, ...]
    top_heads: tuple[HeadKey, ...]
    top_scores: tuple[float, ...]
    random_heads: tuple[HeadKey, ...]
    threshold: float
    intact: tuple[float, ...]
    top_masked: tuple[float, ...]
    random_masked: tuple[float, ...]
    #: Generated answers per condition ("intact", "top", "random"), for generation protocols.
    answers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def intact_accuracy(self) -> float:
        return mean(self.intact)

    @property
    def top_accuracy(self) -> float:
        return mean(self.top_masked)

    @property
    def random_accuracy(self) -> float:
        return mean(self.random_masked)

    @property
    def difference(self) -> float:
        """Random-masked minus top-k-masked accuracy: how much more the retrieval heads matter."""
        return self.random_accuracy - self.top_accuracy

    @property
    def retrieval_heads_masked(self) -> int:
        """How many of the masked top-k heads pass the threshold (the rest scored <= 0.1)."""
        return sum(s > self.threshold for s in self.top_scores)

    @staticmethod
    def _pvalue(a: Sequence[float], b: Sequence[float]) -> float:
        """Paired exact McNemar p-value on 0/1 outcomes."""
        right_a = sum(1 for x, y in zip(a, b) if x >= 0.5 > y)
        right_b = sum(1 for x, y in zip(a, b) if y >= 0.5 > x)
        return exact_mcnemar(right_a, right_b)

    @property
    def p_value(self) -> float:
        """Top-k masked vs random masked, paired by item."""
        return self._pvalue(self.random_masked, self.top_masked)

    @property
    def p_top_vs_intact(self) -> float:
        return self._pvalue(self.intact, self.top_masked)

    @property
    def p_random_vs_intact(self) -> float:
        return self._pvalue(self.intact, self.random_masked)

    def to_dict(self) -> dict[str, Any]:
        return {
            "analysis": "retrieval_masking",
            **attributes(self, "model", "suite", "protocol", "metric", "k", "seed", "decode_only"),
            "items": len(self.item_ids),
            "intact": self.intact_accuracy,
            "top_k_masked": self.top_accuracy,
            "random_masked": self.random_accuracy,
            **attributes(self, "difference", "p_value", "p_top_vs_intact", "p_random_vs_intact", "top_heads"),
            **attributes(self, "top_scores", "retrieval_heads_masked", "random_heads"),
            "outcomes": {
                "item_ids": list(self.item_ids),
                "intact": list(self.intact),
                "top_k_masked": list(self.top_masked),
                "random_masked": list(self.random_masked),
            },
            "answers": plain(self.answers),
        }


def random_control_heads(heads: RetrievalHeads, k: int, seed: int = 0) -> list[HeadKey]:
    """``k`` heads drawn uniformly (seeded) from the non-retrieval heads: score <= threshold and not
    among the top k."""
    top = set(heads.top(k))
    pool = sorted(key for key, s in heads.scores.items() if s <= heads.threshold and key not in top)
    check_k(k, len(pool), "non-retrieval heads to draw the random control from")
    return sorted(random.Random(f"layercheck-random-heads/{seed}").sample(pool, k))


def _as_spec(heads: Iterable[HeadKey]) -> dict[int, list[int]]:
    spec: dict[int, list[int]] = {}
    for layer, head in heads:
        spec.setdefault(layer, []).append(head)
    return spec


#: A masking condition: its name in ``answers``, its progress label, and the heads masked (None: intact).
Condition = tuple[str, str, dict[int, list[int]] | None]


def _generation_outcomes(
    net: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prepared: PreparedSuite,
    masked: Mapping[int, Iterable[int]] | None,
    progress: Callable[[], None],
) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """Exact match and generated text per item, each decoded the paper's way (masking during decoding
    only), judged like ``score``'s generate_until: cut at the stop strings, extract, normalise."""
    generation = prepared.generation
    assert generation is not None
    regex = prepared.settings.answer_regex
    outcomes, texts = [], []
    for rendered, prompt in zip(prepared.items, generation.prompts):
        decoded = greedy_decode(net, tok, prompt, generation.max_new_tokens, until=generation.until, masked=masked)
        text = cut_at_stop(decode(tok, decoded.tokens), generation.until)
        answer = extract_answer(text, regex)
        target = rendered.candidates[0]
        outcomes.append(float(answer is not None and normalise_answer(answer) == normalise_answer(target)))
        texts.append(text)
        progress()
    return tuple(outcomes), tuple(texts)


def _condition_outcomes(
    runtime: ModelRuntime,
    tok: PreTrainedTokenizerBase,
    prepared: PreparedSuite,
    metric: str,
    conditions: Sequence[Condition],
    progress: ProgressHook | None,
) -> tuple[list[tuple[float, ...]], dict[str, tuple[str, ...]]]:
    """Per condition, the outcome of every item (and, under a generation protocol, the answers by condition)."""
    item_ids = tuple(r.item.id for r in prepared.items)
    total = len(conditions) * len(item_ids)
    done = 0
    results: list[tuple[float, ...]] = []
    answers: dict[str, tuple[str, ...]] = {}
    for condition, label, masked in conditions:
        if prepared.generation is not None:

            def step(label: str = label) -> None:
                nonlocal done
                done += 1
                if progress:
                    progress(label, done, total)

            outcomes, answers[condition] = _generation_outcomes(runtime.model, tok, prepared, masked, step)
            results.append(outcomes)
        else:
            with ablate(runtime.model, Ablation.masking(masked, mode="uniform") if masked else Ablation()):
                result = score(runtime, prepared)
            by_id = {o.item_id: o for o in result.outcomes}
            results.append(tuple(float(by_id[i].scores[metric]) for i in item_ids))
            done += len(item_ids)
            if progress:
                progress(label, done, total)
    return results, answers


def _check_same_shape(heads: RetrievalHeads, net: PreTrainedModel) -> None:
    """Refuse retrieval heads found on a model with other layer or head counts."""
    shape = (len(original_layers(net)), get_adapter(net).num_heads)
    if (heads.num_layers, heads.num_heads) != shape:
        raise ConfigError(
            f"the retrieval heads were found on a model with {heads.num_layers} layers x {heads.num_heads} heads, "
            f"this one has {shape[0]} x {shape[1]}",
            "find the retrieval heads on this model (or one of the same architecture)",
        )


def compare_masking(
    model: LoadedModel | PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    k: int,
    heads: RetrievalHeads | None = None,
    suite: str | os.PathLike[str] | Suite = "retrieval",
    protocol: str = "generate_until",
    limit: int | None = 40,
    seed: int = 0,
    tests: int | Sequence[NeedleTest] = DEFAULT_TESTS,
    progress: ProgressHook | None = None,
) -> MaskingComparison:
    """Retrieval-suite accuracy intact, with the top-k retrieval heads masked (uniform attention, the
    paper's masking) and with k random non-retrieval heads masked (seeded), paired per item.

    ``heads``: a :func:`find_retrieval_heads` result; computed on ``tests`` needle tests if omitted.
    With ``protocol="generate_until"`` (default) every item is decoded greedily and masking applies
    during decoding only, as in the paper. Likelihood protocols have no decoding step; there the
    heads are masked at every position (``decode_only`` is False in the result).
    """
    runtime, tok, name = model_and_tokenizer(model, tokenizer)
    net = runtime.model
    if heads is None:
        heads = find_retrieval_heads(net, tok, tests=tests, seed=seed)
    _check_same_shape(heads, net)
    check_k(k, len(heads.scores), "heads in the model")
    top = heads.top(k)
    control = random_control_heads(heads, k, seed)
    limited = resolve_suite(suite).limited(limit)
    prepared = prepare(limited, protocol, tok, max_length=runtime.max_length)
    metric = PRIMARY_METRIC[protocol]
    conditions: tuple[Condition, ...] = (
        ("intact", "intact", None),
        ("top", f"top-{k} masked", _as_spec(top)),
        ("random", f"random {k} masked", _as_spec(control)),
    )
    with deterministic(seed):
        results, answers = _condition_outcomes(runtime, tok, prepared, metric, conditions, progress)
    return MaskingComparison(
        model=name,
        suite=limited.name,
        protocol=protocol,
        metric=metric,
        k=k,
        seed=seed,
        decode_only=prepared.generation is not None,
        item_ids=tuple(r.item.id for r in prepared.items),
        top_heads=tuple(top),
        top_scores=tuple(heads.scores[h] for h in top),
        random_heads=tuple(control),
        threshold=heads.threshold,
        intact=results[0],
        top_masked=results[1],
        random_masked=results[2],
        answers=answers,
    )
