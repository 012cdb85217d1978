"""Retrieval heads (Wu et al., arXiv 2404.15574): every head's retrieval score on needle tests.

Each test is decoded greedily (:mod:`.decoding`) while every head's top-1 attended position is recorded;
a head's score is the share of the needle's tokens it copied (:mod:`.needles`), averaged over the tests
whose answer recovers the needle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from pytest_layercheck.analysis.heads.importance import HeadKey, model_and_tokenizer
from pytest_layercheck.analysis.jsonable import attributes, json_float
from pytest_layercheck.analysis.retrieval_heads.decoding import decode, greedy_decode
from pytest_layercheck.analysis.retrieval_heads.needles import (
    DEFAULT_SIZES,
    DEFAULT_TESTS,
    NeedleTest,
    needle_recall,
    needle_scores,
    needle_tests,
    tokenise_needle,
)
from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.evaluation.service import deterministic
from pytest_layercheck.model.layer_skipping import original_layers

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from pytest_layercheck.evaluation.profiler import ProgressHook
    from pytest_layercheck.model.loading import LoadedModel
    from pytest_layercheck.model.runtime import ModelRuntime

#: The paper's threshold: heads whose retrieval score exceeds it are retrieval heads.
RETRIEVAL_THRESHOLD = 0.1
#: A needle test counts only if the answer recovers more than this share of the needle.
MIN_RECALL = 0.5


# --------------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NeedleOutcome:
    """What one needle test produced and whether it counted."""

    id: str
    needle: str
    answer: str
    recall: float
    valid: bool
    depth: float
    size: str
    prompt_tokens: int
    needle_tokens: int


@dataclass(frozen=True)
class RetrievalHeads:
    """Retrieval score of every head, mean over the valid needle tests (all zero if none is valid)."""

    model: str
    num_layers: int
    num_heads: int
    threshold: float
    min_recall: float
    scores: Mapping[HeadKey, float]
    tests: tuple[NeedleOutcome, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def valid_tests(self) -> int:
        """Tests whose answer recovered more than ``min_recall`` of the needle."""
        return sum(t.valid for t in self.tests)

    def ranked(self) -> list[tuple[HeadKey, float]]:
        """Every head with its score, highest first (ties: lower layer, then lower head)."""
        return sorted(self.scores.items(), key=lambda entry: (-entry[1], entry[0]))

    @property
    def retrieval_heads(self) -> list[HeadKey]:
        """Heads scoring above ``threshold`` (0.1 in the paper), highest first."""
        return [key for key, s in self.ranked() if s > self.threshold]

    @property
    def share(self) -> float:
        """Share of all heads that are retrieval heads (the paper: about 3-6%)."""
        return len(self.retrieval_heads) / len(self.scores) if self.scores else float("nan")

    def top(self, k: int) -> list[HeadKey]:
        """The ``k`` highest-scoring heads, whether or not they pass the threshold."""
        check_k(k, len(self.scores), "heads in the model")
        return [key for key, _ in self.ranked()[:k]]

    def score(self, layer: int, head: int) -> float:
        return self.scores[(layer, head)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "analysis": "retrieval_heads",
            **attributes(self, "model", "num_layers", "num_heads", "threshold", "min_recall"),
            "tests": len(self.tests),
            "valid_tests": self.valid_tests,
            "share": json_float(self.share),
            "retrieval_heads": [
                {"layer": layer, "head": head, "score": self.scores[(layer, head)]}
                for layer, head in self.retrieval_heads
            ],
            "scores": [
                [self.scores[(layer, head)] for head in range(self.num_heads)] for layer in range(self.num_layers)
            ],
            "needle_tests": [vars(t) for t in self.tests],
            "settings": dict(self.settings),
        }


def check_k(k: int, available: int, what: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be a positive number of heads, got {k!r}", "pass k >= 1, e.g. 5% of the heads")
    if k > available:
        raise ConfigError(f"k = {k} is more than the {available} {what}", f"pass k <= {available}")


def find_retrieval_heads(
    model: LoadedModel | PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    tests: int | Sequence[NeedleTest] = DEFAULT_TESTS,
    seed: int = 0,
    sizes: Sequence[str] = DEFAULT_SIZES,
    threshold: float = RETRIEVAL_THRESHOLD,
    min_recall: float = MIN_RECALL,
    max_new_tokens: int | None = None,
    progress: ProgressHook | None = None,
) -> RetrievalHeads:
    """Each head's retrieval score on needle-in-a-haystack tests (generated, or given as ``tests``).

    Every test is decoded greedily (at most needle tokens + 4 new tokens unless ``max_new_tokens``,
    stopping at a newline or EOS) while each head's top-1 attended position is recorded; scores are
    averaged over the tests whose answer recovers more than ``min_recall`` of the needle.
    """
    runtime, tok, name = model_and_tokenizer(model, tokenizer)
    num_layers, num_heads = len(original_layers(runtime.model)), runtime.adapter.num_heads
    cases = needle_tests(tests, seed, sizes) if isinstance(tests, int) else list(tests)
    if not cases:
        raise ConfigError("no needle tests given", "pass tests=N or a non-empty list of NeedleTest")
    totals = torch.zeros((num_layers, num_heads), dtype=torch.float64)
    outcomes: list[NeedleOutcome] = []
    with deterministic(seed):
        for done, case in enumerate(cases):
            if progress:
                progress(f"needle {case.id}", done, len(cases))
            outcome, scores = _needle_test(runtime, tok, case, max_new_tokens, min_recall)
            if scores is not None:
                totals += scores
            outcomes.append(outcome)
    if progress:
        progress("done", len(cases), len(cases))
    valid_count = sum(o.valid for o in outcomes)
    means = totals / valid_count if valid_count else totals
    return RetrievalHeads(
        model=name,
        num_layers=num_layers,
        num_heads=num_heads,
        threshold=threshold,
        min_recall=min_recall,
        scores={(layer, head): float(means[layer, head]) for layer in range(num_layers) for head in range(num_heads)},
        tests=tuple(outcomes),
        settings={"seed": seed, "sizes": list(sizes), "max_new_tokens": max_new_tokens},
    )


def _needle_test(
    runtime: ModelRuntime,
    tok: PreTrainedTokenizerBase,
    case: NeedleTest,
    max_new_tokens: int | None,
    min_recall: float,
) -> tuple[NeedleOutcome, torch.Tensor | None]:
    """One test decoded with attention recorded: its outcome, and every head's score when it counts."""
    needle = tokenise_needle(case, tok)
    new_tokens = max_new_tokens or len(needle.needle_ids) + 4
    limit = runtime.max_length
    if limit is not None and len(needle.prompt_ids) + new_tokens > limit:
        raise ConfigError(
            f"needle test {case.id!r} needs {len(needle.prompt_ids) + new_tokens} positions, "
            f"more than the model's {limit}",
            "use smaller haystacks (sizes=('short',))",
        )
    decoded = greedy_decode(runtime.model, tok, needle.prompt_ids, new_tokens, until=("\n",), record=True)
    recall = needle_recall(decoded.tokens, needle.needle_ids)
    valid = recall > min_recall
    scores = None
    if valid and decoded.tokens:
        assert decoded.argmax is not None
        scores = needle_scores(decoded.argmax, decoded.tokens, needle.prompt_ids, needle.span)
    outcome = NeedleOutcome(
        id=case.id,
        needle=case.needle,
        answer=decode(tok, decoded.tokens),
        recall=recall,
        valid=valid,
        depth=case.depth,
        size=case.size,
        prompt_tokens=len(needle.prompt_ids),
        needle_tokens=len(needle.needle_ids),
    )
    return outcome, scores
