"""Retrieval heads (Wu et al., arXiv 2404.15574): the sparse heads that copy from the context.

Definition (as in the paper, "Retrieval Head Mechanistically Explains Long-Context Factuality", and
its code). On needle-in-a-haystack tests the
model greedily decodes its answer. At each decoding step every head's top-1 attended input
position is recorded; head ``h`` *copies* at that step when the generated token ``w`` equals the
token at that position and the position lies inside the needle span. Per test,
``retrieval_score(h) = copies / number of needle tokens``; a test counts only when the answer
recovers more than half of the needle, and a head's score is its mean over the counted tests.
Heads scoring above 0.1 are retrieval heads.

As in the paper's code, the prompt minus its last token is prefilled and every generated token
comes from a single-token decoding step (the first from the prompt's last token), so the first
answer token is scored too and masking "during decoding only" covers every answer token.

Choices of this implementation, where the paper leaves room:

* Needles are generated here (:func:`needle_tests`): a sentence "The secret code for X is 5308
  7291." in a haystack of the retrieval suite's filler sentences with three decoy numbers, asked
  with the needle's opening words as a cue. The *needle span* is the code's tokens (the part the
  answer must copy); the paper's needles were whole sentences the model repeated.
* "Recovers more than half" is the token-level ROUGE-1 recall (multiset overlap of generated and
  needle tokens / needle tokens) > 0.5; the paper computed ROUGE-1 recall over words.

:func:`compare_masking` then masks the top-k retrieval heads with the paper's uniform attention
(pre-softmax scores 0, during decoding only) and, as the control, k random non-retrieval heads, and
compares retrieval-suite accuracy with a paired exact McNemar test.
"""

from __future__ import annotations

import math
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pytest_layercheck.analysis.heads import model_and_tokenizer
from pytest_layercheck.core.errors import ConfigError, LayercheckError
from pytest_layercheck.data.profile_data import PRIMARY_METRIC
from pytest_layercheck.data.statistics import mean
from pytest_layercheck.evaluation.comparison import exact_mcnemar
from pytest_layercheck.evaluation.service import deterministic
from pytest_layercheck.model import kv_cache
from pytest_layercheck.model.ablation import Ablation, ablate, eager_attention, mask_heads, original_layers
from pytest_layercheck.model.architecture import get_adapter
from pytest_layercheck.model.loading import LoadedModel
from pytest_layercheck.model.probes import probe_attention
from pytest_layercheck.scoring.engine import accepts_logits_to_keep, cut_at_stop, eos_token_ids, model_device
from pytest_layercheck.scoring.protocols import extract_answer, normalize_answer, prepare, score
from pytest_layercheck.scoring.tokenization import encoding_rule, model_max_length
from pytest_layercheck.suites.builtin import resolve_suite
from pytest_layercheck.suites.generate import DECOYS, DEPTHS, FILLER, HAYSTACK_WORDS, NEEDLE_THINGS
from pytest_layercheck.suites.schema import Suite

#: The paper's threshold: heads whose retrieval score exceeds it are retrieval heads.
RETRIEVAL_THRESHOLD = 0.1
#: A needle test counts only if the answer recovers more than this share of the needle.
MIN_RECALL = 0.5
#: Needle tests by default: SmolLM2-135M decodes one in about 1-2 s on one CPU thread.
DEFAULT_TESTS = 20
#: Haystack sizes cycled by default (about 150 and 300 tokens; see ``HAYSTACK_WORDS``).
DEFAULT_SIZES: tuple[str, ...] = ("short", "medium")

HeadKey = tuple[int, int]
ProgressHook = Callable[[str, int, int], None]


# --------------------------------------------------------------------------------------------------
# Needle tests
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NeedleTest:
    """One needle-in-a-haystack prompt. ``needle`` is the text the answer must copy."""

    id: str
    prompt: str
    needle: str
    needle_sentence: str
    depth: float
    size: str


def needle_tests(
    count: int = DEFAULT_TESTS, seed: int = 0, sizes: Sequence[str] = DEFAULT_SIZES, groups: int = 2
) -> list[NeedleTest]:
    """``count`` deterministic needle tests: depths cycle through 0, 0.25, ..., 1, then sizes.

    Each test has its own generator seeded by ``(seed, index)``, so the first N tests are the same
    whatever ``count`` is. The needle's code is ``groups`` four-digit groups ("5308 7291": nine
    tokens for SmolLM2, whose digits are single tokens), so a test's score moves in steps of about
    0.1 rather than the 0.25 of the retrieval suite's one-group codes. Decoys are other four-digit
    numbers, so only the needle's position holds the right digits in the right order.
    """
    if count < 1:
        raise ConfigError(f"need at least one needle test, got {count}", "pass tests >= 1")
    if groups < 1:
        raise ConfigError(f"a needle code needs at least one group, got {groups}", "pass groups >= 1")
    unknown = [s for s in sizes if s not in HAYSTACK_WORDS]
    if unknown or not sizes:
        raise ConfigError(
            f"unknown haystack size(s) {unknown or list(sizes)}", f"use some of {', '.join(HAYSTACK_WORDS)}"
        )
    tests = []
    for index in range(count):
        rng = random.Random(f"layercheck-needle/{seed}/{index}")
        depth = DEPTHS[index % len(DEPTHS)]
        size = sizes[(index // len(DEPTHS)) % len(sizes)]
        numbers = rng.sample(range(1000, 10000), groups + 3)
        code = " ".join(str(n) for n in numbers[:groups])
        sentences: list[str] = []
        words = 0
        for sentence in rng.sample(FILLER, len(FILLER)):
            if words >= HAYSTACK_WORDS[size]:
                break
            sentences.append(sentence)
            words += len(sentence.split())
        for template, number in zip(rng.sample(range(len(DECOYS)), 3), numbers[groups:]):
            sentences.insert(rng.randrange(len(sentences) + 1), DECOYS[template].format(number))
        thing = rng.choice(NEEDLE_THINGS)
        needle_sentence = f"The secret code for {thing} is {code}."
        sentences.insert(round(depth * len(sentences)), needle_sentence)
        question = f"What is the secret code for {thing}?\nThe secret code for {thing} is"
        prompt = " ".join(sentences) + "\n" + question
        tests.append(NeedleTest(f"needle-{seed}-{index:03d}", prompt, code, needle_sentence, depth, size))
    return tests


@dataclass(frozen=True)
class TokenizedNeedle:
    """A needle test as model input: prompt ids and the needle's token span ``[start, end)``."""

    test: NeedleTest
    prompt_ids: tuple[int, ...]
    span: tuple[int, int]

    @property
    def needle_ids(self) -> tuple[int, ...]:
        return self.prompt_ids[self.span[0] : self.span[1]]


def tokenize_needle(test: NeedleTest, tokenizer: Any) -> TokenizedNeedle:
    """Encode the prompt (with the model's BOS rule) and find the needle's tokens by character offsets.

    The span is every token overlapping the needle's characters inside the needle sentence.
    """
    rule = encoding_rule(tokenizer)
    try:
        encoded = tokenizer(test.prompt, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"the tokenizer cannot report character offsets ({exc})",
            "use a fast (Rust-backed) tokenizer; load the model with use_fast=True",
        ) from None
    ids, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
    at = test.prompt.find(test.needle_sentence)
    if at < 0:
        raise ConfigError(f"needle test {test.id!r}: the needle sentence is not in the prompt", "rebuild the test")
    begin = at + test.needle_sentence.rindex(test.needle)
    end = begin + len(test.needle)
    inside = [i for i, (s, e) in enumerate(offsets) if e > begin and s < end and e > s]
    if not inside:
        raise ConfigError(f"needle test {test.id!r}: no token covers the needle", "use a non-empty needle")
    shift = len(rule.prefix)
    return TokenizedNeedle(test, (*rule.prefix, *ids), (inside[0] + shift, inside[-1] + 1 + shift))


# --------------------------------------------------------------------------------------------------
# The score, on recorded attention (pure functions: unit-testable on synthetic tensors)
# --------------------------------------------------------------------------------------------------


def copy_counts(
    argmax_positions: torch.Tensor, generated: Sequence[int], prompt_ids: Sequence[int], span: tuple[int, int]
) -> torch.Tensor:
    """Per head, the decoding steps at which it copied from the needle: ``(layers, heads)`` ints.

    ``argmax_positions[s, l, h]`` is head ``(l, h)``'s top-1 attended key position at step ``s``, whose
    output token is ``generated[s]``. A copy: ``start <= position < end`` and
    ``prompt_ids[position] == generated[s]``.
    """
    positions = torch.as_tensor(argmax_positions, dtype=torch.long)
    if positions.ndim != 3 or positions.shape[0] != len(generated):
        raise ValueError(
            f"argmax_positions must be (steps, layers, heads) with {len(generated)} steps, got {tuple(positions.shape)}"
        )
    start, end = span
    if not 0 <= start < end <= len(prompt_ids):
        raise ValueError(f"needle span {span} is not inside a prompt of {len(prompt_ids)} tokens")
    prompt = torch.as_tensor(list(prompt_ids), dtype=torch.long)
    in_span = (positions >= start) & (positions < end)
    token_there = prompt[positions.clamp(0, len(prompt_ids) - 1)]
    produced = torch.as_tensor(list(generated), dtype=torch.long).view(-1, 1, 1)
    return (in_span & (token_there == produced)).sum(0)


def needle_scores(
    argmax_positions: torch.Tensor, generated: Sequence[int], prompt_ids: Sequence[int], span: tuple[int, int]
) -> torch.Tensor:
    """One test's retrieval score per head: copies / number of needle tokens."""
    return copy_counts(argmax_positions, generated, prompt_ids, span).double() / (span[1] - span[0])


def needle_recall(generated: Sequence[int], needle_ids: Sequence[int]) -> float:
    """Token-level ROUGE-1 recall: multiset overlap of generated and needle tokens / needle tokens."""
    if not needle_ids:
        raise ValueError("empty needle")
    overlap = Counter(generated) & Counter(needle_ids)
    return sum(overlap.values()) / len(needle_ids)


# --------------------------------------------------------------------------------------------------
# Greedy decoding with per-head top-1 positions recorded
# --------------------------------------------------------------------------------------------------


class _ArgmaxRecorder:
    """Attention probes that keep each head's top-1 key for the last query, per decoding step."""

    def __init__(self, attentions: Sequence[nn.Module]) -> None:
        self.attentions = list(attentions)
        self.current: list[torch.Tensor | None] = [None] * len(self.attentions)
        self.steps: list[torch.Tensor] = []

    def _probe(self, index: int, module: nn.Module, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if not isinstance(weights, torch.Tensor) or weights.ndim != 4:
            raise LayercheckError(
                f"attention module {type(module).__name__} returned no attention weights",
                "this model family does not return weights from its attention function; please report it",
            )
        self.current[index] = weights[0, :, -1, :].argmax(-1).cpu()

    @contextmanager
    def attached(self) -> Iterator[_ArgmaxRecorder]:
        with probe_attention(self.attentions, self._probe):
            yield self

    def end_step(self) -> None:
        missing = [i for i, t in enumerate(self.current) if t is None]
        if missing:
            raise LayercheckError(f"no attention recorded for layers {missing}", "please report it")
        self.steps.append(torch.stack([t for t in self.current if t is not None]))  # none is, checked above
        self.current = [None] * len(self.attentions)


@dataclass(frozen=True)
class Decoded:
    """Greedy output: generated token ids (EOS excluded) and, if recorded, (steps, layers, heads)
    top-1 positions aligned with ``tokens``."""

    tokens: tuple[int, ...]
    argmax: torch.Tensor | None


@torch.inference_mode()
def greedy_decode(
    model: nn.Module,
    tokenizer: Any,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    *,
    until: Sequence[str] = ("\n",),
    record: bool = False,
    masked: Mapping[int, Iterable[int]] | None = None,
) -> Decoded:
    """Greedy decoding the paper's way: prefill ``prompt_ids[:-1]``, then one token per step.

    ``masked``: heads masked with uniform attention during the decoding steps only (the prefill is
    intact), as in the paper. ``record``: keep each head's top-1 attended position per step (layers
    run eager attention during decoding). Stops at an EOS token (not returned) or once the decoded
    text contains a string of ``until``.
    """
    if not prompt_ids:
        raise ConfigError("cannot decode from an empty prompt", "pass at least one prompt token")
    device = model_device(model)
    eos = set(eos_token_ids(model, tokenizer))
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    past = None
    if ids.shape[1] > 1:  # only the cache is needed: skip the LM head on the prefilled positions
        keep = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
        past = kv_cache.returned_cache(model(input_ids=ids[:, :-1], use_cache=True, **keep))
    step_input = ids[:, -1:]
    tokens: list[int] = []
    recorder = _ArgmaxRecorder([get_adapter(model).attention_of(b) for b in original_layers(model)])
    stops = [s for s in until if s]
    with ExitStack() as stack:
        if masked:
            stack.enter_context(mask_heads(model, masked, mode="uniform"))
        if record:
            stack.enter_context(eager_attention(model))
            stack.enter_context(recorder.attached())
        for _ in range(max_new_tokens):
            out = model(input_ids=step_input, use_cache=True, **kv_cache.cache_kwargs(model, past))
            past = kv_cache.returned_cache(out)
            token = int(out.logits[0, -1].argmax())
            if token in eos:
                break
            tokens.append(token)
            if record:
                recorder.end_step()
            if stops and any(s in tokenizer.decode(tokens, skip_special_tokens=True) for s in stops):
                break
            step_input = torch.tensor([[token]], dtype=torch.long, device=device)
    argmax = torch.stack(recorder.steps) if record and recorder.steps else None
    if record and argmax is None:
        adapter = get_adapter(model)
        argmax = torch.zeros((0, len(recorder.attentions), adapter.num_heads), dtype=torch.long)
    return Decoded(tuple(tokens), argmax)


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
        _check_k(k, len(self.scores), "heads in the model")
        return [key for key, _ in self.ranked()[:k]]

    def score(self, layer: int, head: int) -> float:
        return self.scores[(layer, head)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "analysis": "retrieval_heads",
            "model": self.model,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "threshold": self.threshold,
            "min_recall": self.min_recall,
            "tests": len(self.tests),
            "valid_tests": self.valid_tests,
            "share": _json_float(self.share),
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


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


def _check_k(k: int, available: int, what: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be a positive number of heads, got {k!r}", "pass k >= 1, e.g. 5% of the heads")
    if k > available:
        raise ConfigError(f"k = {k} is more than the {available} {what}", f"pass k <= {available}")


def find_retrieval_heads(
    model: LoadedModel | Any,
    tokenizer: Any | None = None,
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
    net, tok, name = model_and_tokenizer(model, tokenizer)
    adapter = get_adapter(net)
    num_layers = len(original_layers(net))
    cases = needle_tests(tests, seed, sizes) if isinstance(tests, int) else list(tests)
    if not cases:
        raise ConfigError("no needle tests given", "pass tests=N or a non-empty list of NeedleTest")
    limit = model_max_length(net)
    totals = torch.zeros((num_layers, adapter.num_heads), dtype=torch.float64)
    outcomes: list[NeedleOutcome] = []
    with deterministic(seed):
        for done, case in enumerate(cases):
            if progress:
                progress(f"needle {case.id}", done, len(cases))
            needle = tokenize_needle(case, tok)
            new_tokens = max_new_tokens or len(needle.needle_ids) + 4
            if limit is not None and len(needle.prompt_ids) + new_tokens > limit:
                raise ConfigError(
                    f"needle test {case.id!r} needs {len(needle.prompt_ids) + new_tokens} positions, "
                    f"more than the model's {limit}",
                    "use smaller haystacks (sizes=('short',))",
                )
            decoded = greedy_decode(net, tok, needle.prompt_ids, new_tokens, until=("\n",), record=True)
            recall = needle_recall(decoded.tokens, needle.needle_ids)
            valid = recall > min_recall
            if valid and decoded.tokens:
                assert decoded.argmax is not None
                totals += needle_scores(decoded.argmax, decoded.tokens, needle.prompt_ids, needle.span)
            outcomes.append(
                NeedleOutcome(
                    id=case.id,
                    needle=case.needle,
                    answer=tok.decode(list(decoded.tokens), skip_special_tokens=True),
                    recall=recall,
                    valid=valid,
                    depth=case.depth,
                    size=case.size,
                    prompt_tokens=len(needle.prompt_ids),
                    needle_tokens=len(needle.needle_ids),
                )
            )
    if progress:
        progress("done", len(cases), len(cases))
    valid_count = sum(o.valid for o in outcomes)
    means = totals / valid_count if valid_count else totals
    scores = {
        (layer, head): float(means[layer, head]) for layer in range(num_layers) for head in range(adapter.num_heads)
    }
    return RetrievalHeads(
        model=name,
        num_layers=num_layers,
        num_heads=adapter.num_heads,
        threshold=threshold,
        min_recall=min_recall,
        scores=scores,
        tests=tuple(outcomes),
        settings={"seed": seed, "sizes": list(sizes), "max_new_tokens": max_new_tokens},
    )


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
            "model": self.model,
            "suite": self.suite,
            "protocol": self.protocol,
            "metric": self.metric,
            "k": self.k,
            "seed": self.seed,
            "decode_only": self.decode_only,
            "items": len(self.item_ids),
            "intact": self.intact_accuracy,
            "top_k_masked": self.top_accuracy,
            "random_masked": self.random_accuracy,
            "difference": self.difference,
            "p_value": self.p_value,
            "p_top_vs_intact": self.p_top_vs_intact,
            "p_random_vs_intact": self.p_random_vs_intact,
            "top_heads": [list(h) for h in self.top_heads],
            "top_scores": list(self.top_scores),
            "retrieval_heads_masked": self.retrieval_heads_masked,
            "random_heads": [list(h) for h in self.random_heads],
            "outcomes": {
                "item_ids": list(self.item_ids),
                "intact": list(self.intact),
                "top_k_masked": list(self.top_masked),
                "random_masked": list(self.random_masked),
            },
            "answers": {condition: list(texts) for condition, texts in self.answers.items()},
        }


def random_control_heads(heads: RetrievalHeads, k: int, seed: int = 0) -> list[HeadKey]:
    """``k`` heads drawn uniformly (seeded) from the non-retrieval heads: score <= threshold and not
    among the top k."""
    top = set(heads.top(k))
    pool = sorted(key for key, s in heads.scores.items() if s <= heads.threshold and key not in top)
    _check_k(k, len(pool), "non-retrieval heads to draw the random control from")
    return sorted(random.Random(f"layercheck-random-heads/{seed}").sample(pool, k))


def _as_spec(heads: Iterable[HeadKey]) -> dict[int, list[int]]:
    spec: dict[int, list[int]] = {}
    for layer, head in heads:
        spec.setdefault(layer, []).append(head)
    return spec


def _generation_outcomes(
    net: nn.Module, tok: Any, prepared: Any, masked: Mapping[int, Iterable[int]] | None, progress: Callable[[], None]
) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """Exact match and generated text per item, each decoded the paper's way (masking during decoding
    only), judged like ``score``'s generate_until: cut at the stop strings, extract, normalise."""
    generation = prepared.generation
    regex = prepared.settings.answer_regex
    outcomes, texts = [], []
    for rendered, prompt in zip(prepared.items, generation.prompts):
        decoded = greedy_decode(net, tok, prompt, generation.max_new_tokens, until=generation.until, masked=masked)
        text = cut_at_stop(tok.decode(list(decoded.tokens), skip_special_tokens=True), generation.until)
        answer = extract_answer(text, regex)
        target = rendered.candidates[0]
        outcomes.append(float(answer is not None and normalize_answer(answer) == normalize_answer(target)))
        texts.append(text)
        progress()
    return tuple(outcomes), tuple(texts)


def compare_masking(
    model: LoadedModel | Any,
    tokenizer: Any | None = None,
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
    net, tok, name = model_and_tokenizer(model, tokenizer)
    if heads is None:
        heads = find_retrieval_heads(net, tok, tests=tests, seed=seed)
    adapter = get_adapter(net)
    if (heads.num_layers, heads.num_heads) != (len(original_layers(net)), adapter.num_heads):
        raise ConfigError(
            f"the retrieval heads were found on a model with {heads.num_layers} layers x {heads.num_heads} heads, "
            f"this one has {len(original_layers(net))} x {adapter.num_heads}",
            "find the retrieval heads on this model (or one of the same architecture)",
        )
    _check_k(k, len(heads.scores), "heads in the model")
    top = heads.top(k)
    control = random_control_heads(heads, k, seed)
    suite_obj = resolve_suite(suite)
    limited = suite_obj.limited(limit)
    prepared = prepare(limited, protocol, tok, max_length=model_max_length(net))
    metric = PRIMARY_METRIC[protocol]
    item_ids = tuple(r.item.id for r in prepared.items)
    total = 3 * len(item_ids)
    done = 0
    results: list[tuple[float, ...]] = []
    answers: dict[str, tuple[str, ...]] = {}
    decode_only = prepared.generation is not None
    conditions = (
        ("intact", "intact", None),
        ("top", f"top-{k} masked", _as_spec(top)),
        ("random", f"random {k} masked", _as_spec(control)),
    )
    with deterministic(seed):
        for condition, label, masked in conditions:
            if decode_only:

                def step(label: str = label) -> None:
                    nonlocal done
                    done += 1
                    if progress:
                        progress(label, done, total)

                outcomes, answers[condition] = _generation_outcomes(net, tok, prepared, masked, step)
                results.append(outcomes)
            else:
                with ablate(net, Ablation.masking(masked, mode="uniform") if masked else Ablation()):
                    result = score(net, prepared)
                by_id = {o.item_id: o for o in result.outcomes}
                results.append(tuple(float(by_id[i].scores[metric]) for i in item_ids))
                done += len(item_ids)
                if progress:
                    progress(label, done, total)
    return MaskingComparison(
        model=name,
        suite=limited.name,
        protocol=protocol,
        metric=metric,
        k=k,
        seed=seed,
        decode_only=decode_only,
        item_ids=item_ids,
        top_heads=tuple(top),
        top_scores=tuple(heads.scores[h] for h in top),
        random_heads=tuple(control),
        threshold=heads.threshold,
        intact=results[0],
        top_masked=results[1],
        random_masked=results[2],
        answers=answers,
    )
