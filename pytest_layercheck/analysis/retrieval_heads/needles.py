"""Needle-in-a-haystack tests and the retrieval score of Wu et al. (arXiv 2404.15574), on recorded attention.

Definition (as in the paper, "Retrieval Head Mechanistically Explains Long-Context Factuality", and
its code). On needle-in-a-haystack tests the
model greedily decodes its answer. At each decoding step every head's top-1 attended input
position is recorded; head ``h`` *copies* at that step when the generated token ``w`` equals the
token at that position and the position lies inside the needle span. Per test,
``retrieval_score(h) = copies / number of needle tokens``; a test counts only when the answer
recovers more than half of the needle, and a head's score is its mean over the counted tests.
Heads scoring above 0.1 are retrieval heads.

Choices of this implementation, where the paper leaves room:

* Needles are generated here (:func:`needle_tests`): a sentence "The secret code for X is 5308
  7291." in a haystack of the retrieval suite's filler sentences with three decoy numbers, asked
  with the needle's opening words as a cue. The *needle span* is the code's tokens (the part the
  answer must copy); the paper's needles were whole sentences the model repeated.
* "Recovers more than half" is the token-level ROUGE-1 recall (multiset overlap of generated and
  needle tokens / needle tokens) > 0.5; the paper computed ROUGE-1 recall over words.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.scoring.tokenisation import encoding_rule
from pytest_layercheck.suites.retrieval_problems import DECOYS, DEPTHS, FILLER, HAYSTACK_WORDS, NEEDLE_THINGS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: Needle tests by default: SmolLM2-135M decodes one in about 1-2 s on one CPU thread.
DEFAULT_TESTS = 20
#: Haystack sizes cycled by default (about 150 and 300 tokens; see ``HAYSTACK_WORDS``).
DEFAULT_SIZES: tuple[str, ...] = ("short", "medium")


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
class TokenisedNeedle:
    """A needle test as model input: prompt ids and the needle's token span ``[start, end)``."""

    test: NeedleTest
    prompt_ids: tuple[int, ...]
    span: tuple[int, int]

    @property
    def needle_ids(self) -> tuple[int, ...]:
        return self.prompt_ids[self.span[0] : self.span[1]]


def tokenise_needle(test: NeedleTest, tokenizer: PreTrainedTokenizerBase) -> TokenisedNeedle:
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
    return TokenisedNeedle(test, (*rule.prefix, *ids), (inside[0] + shift, inside[-1] + 1 + shift))


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
