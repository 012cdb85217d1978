"""Fast vs slow thinking: the same items answered directly and with chain-of-thought, paired per item.

"Decoupling Knowledge and Reasoning" (arXiv 2507.18178) asks one model
to answer directly (fast: knowledge retrieval only) and with chain-of-thought (slow: retrieval plus
a reasoning adjustment). The difference, per domain, splits into **corrections** (wrong → right)
and **overthinking** (right → wrong). Reasoning is reported to help maths and to hurt
knowledge-heavy domains such as medicine.

Prompts (zero-shot, the same question frame in both modes, so only the answer lead differs)::

    fast:  "Question: {question}\\nAnswer:"                            greedy, up to 24 tokens
    slow:  "Question: {question}\\nAnswer: Let's think step by step."  greedy, up to ``cot_tokens``

The fast answer stops at a blank line or "Question:" (a single newline would end it before it
starts: SmolLM2 often opens with one); the chain of thought stops at "Question:".

``question`` is the item's context; for sentence-completion items (non-numeric answers) it is
"Complete the sentence: {context} ...". Both modes run through the engine's batched greedy
generation (:func:`pytest_layercheck.scoring.engine.run_generation`), EOS-terminated.

Answer extraction is the SAME function for both modes (modelled on lm-eval's GSM8K chain-of-thought
filters, "strict" then "flexible"), so both modes are judged by one rule:

* numeric targets: the number stated after the last "answer is" that states one (the result after
  the last "=" when the statement is a calculation: "the answer is 8 * 8 = 64" answers 64);
  otherwise the LAST number in the text. Correct when it equals the target numerically.
* items with choices: the choice named after the last "answer is" that names one; otherwise the
  LAST choice mentioned anywhere. A restatement of the question at the start of the text is
  removed first, so a choice word inside the echoed question is never taken as the answer. Choices
  are matched as whole words, case-insensitively; when several start at the same place the longest
  wins. No choice mentioned → wrong (options are not shown, so the model answers in its own words
  and there is no letter bias).
* other items: the text after "answer is" (or the whole text) starts with the target, normalised.

Limits of flexible extraction: it can credit a choice named in passing (``The opposite of "cold"
is ...`` counts as answering "cold"), and a long chain of thought offers more mentions than a short
direct answer. The JSON output keeps every generation so such cases can be audited.

A second, answer-only generation pass (Kojima et al.'s "Therefore, the answer is") was tried on
SmolLM2-135M and dropped: the small model often answered it with a phrase from its own reasoning
("Let's think step by step.") or a different number than the one its reasoning reached.

Domain groups: the knowledge suite's ``medicine`` items, the rest of the knowledge suite
("other knowledge"), and the reasoning suite ("maths"); any other suite is its own group.

Fixture one-liner::

    think = lambda **kw: compare_thinking(layercheck_model, **kw)
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_layercheck.analysis.jsonable import attributes
from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.statistics import exact_mcnemar
from pytest_layercheck.scoring.engine import run_generation
from pytest_layercheck.scoring.generation import PreparedGeneration
from pytest_layercheck.scoring.protocols import batch_settings
from pytest_layercheck.scoring.tokenisation import (
    encode_texts,
    encoding_rule,
    truncate_prompt,
)
from pytest_layercheck.suites.builtin import resolve_suite
from pytest_layercheck.suites.schema import Suite, SuiteItem

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from pytest_layercheck.evaluation.profiler import ProgressHook
    from pytest_layercheck.model.loading import LoadedModel
    from pytest_layercheck.model.runtime import ModelRuntime

DEFAULT_SUITES: tuple[str, ...] = ("knowledge", "reasoning")
DEFAULT_LIMIT = 40
#: Tokens of chain-of-thought. SmolLM2-135M finishes most arithmetic within 64 tokens; longer
#: budgets mostly add repetition (and cost: generation dominates the analysis).
DEFAULT_COT_TOKENS = 96
#: Tokens of a direct answer: enough to restate a knowledge sentence and complete it.
DEFAULT_FAST_TOKENS = 24

COT_TRIGGER = "Let's think step by step."
FAST_UNTIL: tuple[str, ...] = ("\n\n", "Question:")
SLOW_UNTIL: tuple[str, ...] = ("Question:",)

MATHS = "maths"
MEDICINE = "medicine"
OTHER_KNOWLEDGE = "other knowledge"
GROUP_ORDER: tuple[str, ...] = (MEDICINE, OTHER_KNOWLEDGE, MATHS)
ALL = "all"


# --------------------------------------------------------------------------------------------------
# Prompts and answer extraction


def is_numeric(text: str | None) -> bool:
    return text is not None and re.fullmatch(r"\s*-?\d+(?:\.\d+)?\s*", text) is not None


def question_text(item: SuiteItem) -> str:
    """The question both modes ask: the context, or "Complete the sentence: ..." for completions."""
    if is_numeric(item.answer_text) or item.context.rstrip().endswith("?"):
        return item.context.strip()
    return f"Complete the sentence: {item.context.strip()} ..."


def fast_prompt(item: SuiteItem) -> str:
    return f"Question: {question_text(item)}\nAnswer:"


def slow_prompt(item: SuiteItem) -> str:
    return f"Question: {question_text(item)}\nAnswer: {COT_TRIGGER}"


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_ANSWER_IS = re.compile(r"answer is", re.IGNORECASE)
_PUNCT = str.maketrans({c: " " for c in string.punctuation if c not in "-'"})


def _normalise(text: str) -> str:
    """Lowercase, punctuation (except hyphen and apostrophe) to spaces, single spaces."""
    return " ".join(text.lower().translate(_PUNCT).split())


def _numbers(text: str) -> list[float]:
    values = []
    for match in _NUMBER.finditer(text):
        try:
            values.append(float(match.group(0).replace(",", "")))
        except ValueError:
            continue
    return values


def _after_answer_is(text: str) -> list[str]:
    """The rest of the line after each "answer is", last first."""
    tails = [text[m.end() :].split("\n", 1)[0] for m in _ANSWER_IS.finditer(text)]
    return tails[::-1]


def extract_number(text: str) -> float | None:
    """Strict: the number stated after the last "answer is" that states one (after its last "=" when
    the statement is a calculation, "the answer is 8 * 8 = 64"); flexible: the last number."""
    for tail in _after_answer_is(text):
        found = _numbers(tail.rsplit("=", 1)[-1]) or _numbers(tail)
        if found:
            return found[0]
    found = _numbers(text)
    return found[-1] if found else None


def _choice_mentions(text: str, choices: Sequence[str]) -> list[tuple[int, int]]:
    """(position, choice index) of every whole-word mention; at one position only the longest choice."""
    norm = f" {_normalise(text)} "
    hits: dict[int, int] = {}
    for index, choice in enumerate(choices):
        needle = _normalise(choice)
        if not needle:
            continue
        for match in re.finditer(re.escape(f" {needle} "), norm):
            at = match.start()
            if at not in hits or len(_normalise(choices[hits[at]])) < len(needle):
                hits[at] = index
    # A space-delimited search misses overlapping mentions ("A B" twice in "A B B"); good enough for
    # short answers, and both modes share it.
    return sorted(hits.items())


def _strip_echo(text: str, context: str | None) -> str:
    """Drop a restatement of the question from the start of ``text`` (word-normalised comparison)."""
    if not context:
        return text
    words, echo = _normalise(text).split(), _normalise(context.rstrip(" .")).split()
    if echo and words[: len(echo)] == echo:
        return " ".join(words[len(echo) :])
    return text


def match_choice(text: str, choices: Sequence[str], context: str | None = None) -> int | None:
    """The choice the text answers with (strict "answer is" first, else the last mention), or None."""
    text = _strip_echo(text, context)
    for tail in _after_answer_is(text):
        mentions = _choice_mentions(tail, choices)
        if mentions:
            return mentions[0][1]
    mentions = _choice_mentions(text, choices)
    return mentions[-1][1] if mentions else None


@dataclass(frozen=True)
class Judgement:
    """What was extracted from one generation and whether it is right."""

    answer: str | None
    correct: bool


def judge(item: SuiteItem, text: str) -> Judgement:
    """Extract the answer from ``text`` and compare it with the item's target (see module docstring)."""
    target = item.answer_text
    if target is None:
        raise ConfigError(
            f"item {item.id!r} has no target or gold choice to judge an answer against",
            "give the item a 'target', or 'choices' with 'gold'",
        )
    if is_numeric(target):
        value = extract_number(text)
        return Judgement(None if value is None else f"{value:g}", value is not None and value == float(target))
    if item.is_multiple_choice:
        index = match_choice(text, item.choices, item.context)
        return Judgement(None if index is None else item.choices[index], index == item.gold)
    tails = _after_answer_is(text) or [text]
    answer = _normalise(tails[0])
    return Judgement(answer or None, answer.startswith(_normalise(target)) and bool(_normalise(target)))


# --------------------------------------------------------------------------------------------------
# Paired outcomes


@dataclass(frozen=True)
class PairedItem:
    """One item answered both ways."""

    item_id: str
    suite: str
    domain: str
    group: str
    target: str
    fast_text: str
    slow_text: str
    fast: Judgement
    slow: Judgement


@dataclass(frozen=True)
class Shift:
    """Fast vs slow on one set of items: accuracies, the split of the change, and its McNemar p."""

    group: str
    items: int
    fast_correct: int
    slow_correct: int
    corrections: int  # wrong -> right
    overthinking: int  # right -> wrong

    @property
    def fast_accuracy(self) -> float:
        return self.fast_correct / self.items if self.items else float("nan")

    @property
    def slow_accuracy(self) -> float:
        return self.slow_correct / self.items if self.items else float("nan")

    @property
    def difference(self) -> float:
        """Slow minus fast accuracy = (corrections - overthinking) / items."""
        return self.slow_accuracy - self.fast_accuracy

    @property
    def p_value(self) -> float:
        """Exact McNemar on the discordant pairs (corrections vs overthinking)."""
        return exact_mcnemar(self.corrections, self.overthinking)

    @property
    def both_right(self) -> int:
        return self.fast_correct - self.overthinking

    @property
    def both_wrong(self) -> int:
        return self.items - self.fast_correct - self.corrections


def paired_shift(group: str, fast: Sequence[bool], slow: Sequence[bool]) -> Shift:
    """Count corrections (wrong→right) and overthinking (right→wrong) over paired outcomes."""
    if len(fast) != len(slow):
        raise ConfigError(
            f"{len(fast)} fast outcomes but {len(slow)} slow ones", "pair every item's fast and slow outcome"
        )
    return Shift(
        group=group, items=len(fast), fast_correct=sum(map(bool, fast)), slow_correct=sum(map(bool, slow)),
        corrections=sum(1 for f, s in zip(fast, slow) if not f and s),
        overthinking=sum(1 for f, s in zip(fast, slow) if f and not s),
    )  # fmt: skip


def domain_group(suite: Suite, item: SuiteItem) -> str:
    """medicine / other knowledge (knowledge suites), maths (reasoning suites), else the suite name."""
    if suite.capability == "knowledge":
        return MEDICINE if item.domain == MEDICINE else OTHER_KNOWLEDGE
    if suite.capability == "reasoning":
        return MATHS
    return suite.name


@dataclass(frozen=True)
class ThinkingResult:
    """Paired fast/slow outcomes with the per-group and overall shifts."""

    model: str
    items: tuple[PairedItem, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)

    def groups(self) -> list[str]:
        present = {p.group for p in self.items}
        return [g for g in GROUP_ORDER if g in present] + sorted(present - set(GROUP_ORDER))

    def shift(self, group: str = ALL) -> Shift:
        chosen = [p for p in self.items if group == ALL or p.group == group]
        return paired_shift(group, [p.fast.correct for p in chosen], [p.slow.correct for p in chosen])

    def shifts(self) -> list[Shift]:
        """One row per group, then all items."""
        return [*(self.shift(g) for g in self.groups()), self.shift(ALL)]

    def by_domain(self) -> list[Shift]:
        """The finer split: one row per (suite, domain)."""
        keys = sorted({(p.suite, p.domain) for p in self.items})
        return [
            paired_shift(
                f"{suite}/{domain}",
                [p.fast.correct for p in self.items if (p.suite, p.domain) == (suite, domain)],
                [p.slow.correct for p in self.items if (p.suite, p.domain) == (suite, domain)],
            )
            for suite, domain in keys
        ]

    def to_json(self) -> dict[str, Any]:
        def row(s: Shift) -> dict[str, Any]:
            fields = ("group", "items", "fast_accuracy", "slow_accuracy", "difference", "corrections")
            return attributes(s, *fields, "overthinking", "p_value")

        return {
            "model": self.model, "settings": dict(self.settings), "groups": [row(s) for s in self.shifts()],
            "domains": [row(s) for s in self.by_domain()],
            "items": [{"id": p.item_id, "suite": p.suite, "group": p.group, "target": p.target,
                       "fast": p.fast.answer, "fast_correct": p.fast.correct, "slow": p.slow.answer,
                       "slow_correct": p.slow.correct, "fast_text": p.fast_text, "slow_text": p.slow_text}
                      for p in self.items],
        }  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Running it


def generate(
    runtime: ModelRuntime,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    until: Sequence[str],
    batch_size: int | None = None,
) -> list[str]:
    """Greedy continuations through the engine's batched generation (left-truncated to the window)."""
    if not prompts:
        return []
    rule = encoding_rule(tokenizer)
    limit = runtime.max_length
    encoded = [tuple(truncate_prompt(ids, limit, max_new_tokens)) for ids in encode_texts(tokenizer, rule, prompts)]
    prepared = PreparedGeneration(prompts=tuple(encoded), until=tuple(until), max_new_tokens=max_new_tokens)
    return run_generation(runtime, tokenizer, prepared, batch_settings(runtime, batch_size))


def compare_thinking(
    loaded: LoadedModel,
    *,
    suites: Sequence[str | Suite] = DEFAULT_SUITES,
    limit: int | None = DEFAULT_LIMIT,
    cot_tokens: int = DEFAULT_COT_TOKENS,
    fast_tokens: int = DEFAULT_FAST_TOKENS,
    batch_size: int | None = None,
    progress: ProgressHook | None = None,
) -> ThinkingResult:
    """Answer the first ``limit`` items of each suite fast and slow; pair the outcomes per item."""
    if cot_tokens < 1 or fast_tokens < 1:
        raise ConfigError(
            f"token budgets must be positive (cot_tokens={cot_tokens}, fast_tokens={fast_tokens})",
            "give the chain of thought and the direct answer at least one token each",
        )
    chosen: list[tuple[Suite, SuiteItem]] = []
    for spec in suites:
        suite = resolve_suite(spec)
        chosen += [(suite, item) for item in suite.limited(limit).items]
    if not chosen:
        raise ConfigError("no items to answer", "pass at least one suite with items (and a limit above 0)")
    runtime, tokenizer = loaded.runtime, loaded.tokenizer
    if progress:
        progress("fast (direct answer)", 0, 2)
    fast_texts = generate(runtime, tokenizer, [fast_prompt(i) for _, i in chosen], fast_tokens, FAST_UNTIL, batch_size)
    if progress:
        progress("slow (chain of thought)", 1, 2)
    slow_texts = generate(runtime, tokenizer, [slow_prompt(i) for _, i in chosen], cot_tokens, SLOW_UNTIL, batch_size)
    if progress:
        progress("done", 2, 2)
    items = tuple(
        PairedItem(
            item_id=item.id, suite=suite.name, domain=item.domain, group=domain_group(suite, item),
            target=item.answer_text or "", fast_text=fast, slow_text=slow,
            fast=judge(item, fast), slow=judge(item, slow),
        )
        for (suite, item), fast, slow in zip(chosen, fast_texts, slow_texts)
    )  # fmt: skip
    settings = {
        "suites": list(dict.fromkeys(s.name for s, _ in chosen)),
        "limit": limit,
        "cot_tokens": cot_tokens,
        "fast_tokens": fast_tokens,
        "decoding": "greedy",
        "cot_trigger": COT_TRIGGER,
    }
    return ThinkingResult(loaded.name, items, settings)
