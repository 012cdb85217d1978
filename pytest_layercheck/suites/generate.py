"""Generate the built-in reasoning and retrieval suites, deterministically, with hypothesis.

Reasoning rests on procedures that transfer across instances, so the reasoning suite asks each
procedure (arithmetic, unit conversion, algebra, ...) with many different numbers; hypothesis
strategies describe "the same procedure with any numbers" and a fixed seed picks the instances. The retrieval suite puts the answer only in the context: key-value
lookups and needles hidden at several depths of haystacks of several lengths.

Determinism: each group of problems runs one ``@given`` test under ``@seed`` (derived from
:data:`SEED` and the group's label) with the database off, only the generate phase and no health
checks or deadlines, so nothing depends on timing or on earlier runs; literals of local modules are
kept out of the draws (see :func:`_without_local_constants`). Hypothesis promises the same
examples only for the same seed and hypothesis version, so the header ``metadata`` records both.
Every answer (and every distractor) is computed here from the drawn numbers; items also carry an
``expression`` or the lookup key so tests can recompute them.

Usage: ``python -m pytest_layercheck.suites.generate [--check] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import hypothesis
import yaml
from hypothesis import HealthCheck, Phase, Verbosity, assume, given, seed, settings
from hypothesis import strategies as st

from pytest_layercheck.suites.builtin import source_suites_dir
from pytest_layercheck.suites.yaml_style import SuiteDumper, flow_lists

T = TypeVar("T")

#: The generator seed (the arXiv id of "Demystifying the Roles of LLM Layers").
SEED = 2510_02091

NAMES: tuple[str, ...] = (
    "Anna", "Boris", "Carla", "David", "Elena", "Felix", "Greta", "Hugo", "Irene", "James",
    "Karen", "Lucas", "Maria", "Nina", "Olga", "Pablo", "Rosa", "Simon", "Tara", "Omar",
    "Vera", "Walter", "Sofia", "Peter", "Zoe", "Aaron", "Bella", "Chris", "Diana", "Ethan",
    "Fiona", "Leo",
)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Deterministic drawing and ordering


def _settings(max_examples: int) -> settings:
    """Explicit values for everything a user profile could change (CI profiles, other backends)."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        print_blob=False,
        report_multiple_bugs=False,
        backend="hypothesis",
    )


@contextlib.contextmanager
def _without_local_constants() -> Iterator[None]:
    """Stop hypothesis from mixing literals of *local* modules into its draws while we generate.

    Since 6.131 hypothesis occasionally draws integer and string literals found in the non-installed
    modules that happen to be imported (this project, in an editable install). The suites would
    then change with unrelated edits anywhere in the package and differ between a plain run and a
    pytest run (which imports more modules). The hook is internal, so if it moves this is a no-op
    and ``tests/test_suites.py`` (which imports an extra module full of constants) notices.
    """
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:  # pragma: no cover - older or newer hypothesis without the feature
        yield
        return
    original = getattr(providers, "_get_local_constants", None)
    cache = getattr(providers, "CONSTANTS_CACHE", None)
    if original is None or cache is None:  # pragma: no cover
        yield
        return
    providers._get_local_constants = lambda: Constants()
    cache.cache.clear()
    try:
        yield
    finally:
        providers._get_local_constants = original
        cache.cache.clear()


def group_seed(label: str) -> int:
    """A seed per group derived from :data:`SEED`: groups with the same strategy shape must not
    receive the same draws."""
    return int.from_bytes(hashlib.sha256(f"{SEED}/{label}".encode()).digest()[:8], "big")


def draw_distinct(
    label: str,
    strategy: st.SearchStrategy[T],
    count: int,
    key: Callable[[T], str],
    exclude: Collection[str] = frozenset(),
) -> list[T]:
    """``count`` distinct examples of ``strategy``, the same ones on every run.

    Hypothesis starts with its simplest examples and repeats values, so we over-draw, de-duplicate
    by ``key`` and keep the ``count`` examples whose keys hash lowest (a seed-free, stable shuffle).
    Keys in ``exclude`` (the few-shot examples) are never returned.
    """
    found: dict[str, T] = {}

    @seed(group_seed(label))
    @_settings(max_examples=count * 4)
    @given(strategy)
    def collect(example: T) -> None:
        if key(example) not in exclude:
            found.setdefault(key(example), example)

    with _without_local_constants():
        collect()
    if len(found) < count:
        raise RuntimeError(
            f"{label}: hypothesis produced only {len(found)} distinct examples, {count} needed"
        )
    ordered = sorted(found, key=lambda k: hashlib.sha256(k.encode("utf-8")).hexdigest())
    return [found[k] for k in ordered[:count]]


def interleave(groups: Sequence[Sequence[T]]) -> list[T]:
    """Merge groups so that every prefix holds each group in proportion to its size.

    Users run quick profiles on the first N items, so the first N must be a balanced sample.
    """
    slots = [
        ((index + 0.5) / len(group), g, index)
        for g, group in enumerate(groups)
        for index in range(len(group))
    ]
    return [groups[g][index] for _, g, index in sorted(slots)]


def arrange_choices(answer: str, wrong: Iterable[str], position: int) -> tuple[list[str], int]:
    """Four choices: the first three distinct entries of ``wrong``, the gold at ``position % 4``."""
    distractors: list[str] = []
    for candidate in wrong:
        if candidate != answer and candidate not in distractors:
            distractors.append(candidate)
        if len(distractors) == 3:
            break
    if len(distractors) < 3:
        raise ValueError(f"not enough distractors for {answer!r}: {distractors}")
    gold = position % 4
    return distractors[:gold] + [answer] + distractors[gold:], gold


#: The shapes of a numeric item's four choices: the answer with its tens digit wrong (the mark of
#: a carry mistake), {b, b+10, b+20, b+30}; where that cannot hold the answer at every rank
#: (answers below 40, one-digit answers), consecutive numbers {b, ..., b+3}. The shape depends on
#: the answer alone and the answer's rank in size cycles within each kind (``Problem.item``), so
#: "the smallest" or "the middle one" is never a shortcut. (An earlier version let the rank fall
#: back to 0 when a shape did not fit: the answer was then the smallest choice in 48% of items and
#: the model's preference for small numbers passed for skill.)
_SHAPES: tuple[tuple[int, ...], ...] = ((0, 10, 20, 30), (0, 1, 2, 3))
_NEAR_MISSES: tuple[int, ...] = (1, -1, 2, -2, 3, -3, 10, -10, 4, -4, 5, -5, 11, -11, 20, -20)


def numeric_distractors(answer: int, rank: int) -> list[str]:
    """Three near misses in the shape of :data:`_SHAPES` with the answer at ``rank`` in size where
    possible, never negative and with as many digits as the answer.

    Digits are separate tokens, so under summed log-likelihood a shorter number wins by length alone
    (measured: "60" beat "600" for "How many centimetres are in 6 metres?"). We also tried computed
    slips (wrong operation, precedence slip, wrong factor) as distractors: SmolLM2-135M preferred
    them to the answer (word problems 0.16, the suite 0.44 on its first 100 items, against 0.51
    with near misses), leaving too little room to measure a drop when layers are removed.
    """

    def valid(number: int) -> bool:
        return number >= 0 and len(str(number)) == len(str(answer))

    def choices(shape: tuple[int, ...], at: int) -> list[int]:
        base = answer - shape[at]
        return [base + step for step in shape if base + step != answer]

    # The shape depends on the answer alone (the first that fits at every rank), so the answer's
    # rank stays uniform within each shape.
    for shape in _SHAPES:
        if all(all(map(valid, choices(shape, at))) for at in range(len(shape))):
            return [str(w) for w in choices(shape, rank % len(shape))]
    return [str(answer + d) for d in _NEAR_MISSES if valid(answer + d)]  # answers 0..2, 10..12


# --------------------------------------------------------------------------------------------------
# Problems


@dataclass(frozen=True)
class Problem:
    """One generated question with its computed answer and the wrong answers offered with it.

    ``wrong`` are fixed distractors (values from the context, the other numbers compared); numeric
    problems are then topped up with :func:`numeric_distractors` at the rank the item is given.
    """

    domain: str
    kind: str
    context: str
    answer: str
    wrong: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    numeric: bool = False

    def item(self, item_id: str, index: int) -> dict[str, Any]:
        """The item as the ``index``-th of its kind: gold position and the answer's rank in size
        both cycle, decorrelated ((i + i // 4) % 4), so each kind is balanced in both."""
        wrong = self.wrong
        if self.numeric:
            wrong += tuple(numeric_distractors(int(self.answer), (index + index // 4) % 4))
        choices, gold = arrange_choices(self.answer, wrong, index)
        return {
            "id": item_id, "domain": self.domain, "kind": self.kind, "context": self.context,
            "choices": choices, "gold": gold, "target": self.answer,
            "metadata": dict(self.metadata),
        }  # fmt: skip


def _numeric(domain: str, kind: str, context: str, answer: int, expression: str) -> Problem:
    """A numeric problem; ``expression`` (also computing the answer) lets tests re-check it."""
    return Problem(
        domain, kind, context, str(answer), metadata={"expression": expression}, numeric=True
    )


# Reasoning procedures. Each is a plain function of its numbers (the few-shot examples call them
# with fixed numbers) plus a strategy that draws the numbers. Answers are computed by the lambdas;
# the expression strings are a second, textual record of the same computation.

_Compute = Callable[[int, int, int], int]

#: kind -> (question text, answer)
ARITHMETIC: Mapping[str, tuple[str, _Compute]] = {
    "add": ("{a} + {b}", lambda a, b, c: a + b),
    "subtract": ("{a} - {b}", lambda a, b, c: a - b),
    "multiply": ("{a} * {b}", lambda a, b, c: a * b),
}
MULTI_STEP: Mapping[str, tuple[str, _Compute]] = {
    "add_subtract": ("{a} + {b} - {c}", lambda a, b, c: a + b - c),
    "multiply_add": ("{a} * {b} + {c}", lambda a, b, c: a * b + c),
    "add_multiply": ("{a} + {b} * {c}", lambda a, b, c: a + b * c),  # precedence
    "parenthesised": ("({a} + {b}) * {c}", lambda a, b, c: (a + b) * c),
}
#: kind -> (equation in x, its right-hand side given x, a, b; expression solving it for x)
ALGEBRA: Mapping[str, tuple[str, _Compute, str]] = {
    "add": ("x + {a}", lambda x, a, b: x + a, "{r} - {a}"),
    "subtract": ("x - {a}", lambda x, a, b: x - a, "{r} + {a}"),
    "multiply": ("{a} * x", lambda x, a, b: a * x, "{r} // {a}"),
    "two_step": ("{a} * x + {b}", lambda x, a, b: a * x + b, "({r} - {b}) // {a}"),
}
#: kind -> (story, answer, expression); one step or two steps, GSM8K-style. {ab} is a * b.
STORIES: Mapping[str, tuple[str, _Compute, str]] = {
    "buy": (
        "{name} has {a} apples and buys {b} more. How many apples does {name} have now?",
        lambda a, b, c: a + b, "{a} + {b}",
    ),
    "give": (
        "{name} had {a} stickers and gave {b} of them to a friend. "
        "How many stickers does {name} have left?",
        lambda a, b, c: a - b, "{a} - {b}",
    ),
    "boxes": (
        "A box holds {a} pencils. How many pencils are in {b} boxes?",
        lambda a, b, c: a * b, "{a} * {b}",
    ),
    "share": (
        "{name} shares {ab} sweets equally among {b} friends. "
        "How many sweets does each friend get?",
        lambda a, b, c: a, "{ab} // {b}",
    ),
    "packs_give": (
        "{name} buys {a} packs of {b} cards and gives away {c} cards. "
        "How many cards does {name} have left?",
        lambda a, b, c: a * b - c, "{a} * {b} - {c}",
    ),
    "pages": (
        "{name} reads {a} pages every day for {b} days and then {c} more pages. "
        "How many pages did {name} read in total?",
        lambda a, b, c: a * b + c, "{a} * {b} + {c}",
    ),
}  # fmt: skip


def arithmetic(kind: str, a: int, b: int, c: int = 0) -> Problem:
    """One operation (``ARITHMETIC``) or two (``MULTI_STEP``), asked as "What is ...?"."""
    domain, (text, compute) = (
        ("arithmetic", ARITHMETIC[kind]) if kind in ARITHMETIC else ("multi_step", MULTI_STEP[kind])
    )
    expression = text.format(a=a, b=b, c=c)
    return _numeric(domain, kind, f"What is {expression}?", compute(a, b, c), expression)


def comparison(kind: str, values: Sequence[int]) -> Problem:
    """Two numbers ("larger"/"smaller") or three ("largest"/"smallest"); the other numbers are the
    first distractors. (Asked about four numbers, SmolLM2-135M scored 0.25, i.e. chance.)"""
    pick = max if kind in ("larger", "largest") else min
    answer = pick(values)
    listed = ", ".join(map(str, values))
    if len(values) == 2:
        context = f"Which number is {kind}: {values[0]} or {values[1]}?"
    else:
        context = f"Which number is the {kind}: {listed}?"
    others = tuple(str(v) for v in values if v != answer)
    expression = f"{pick.__name__}({listed})"
    return Problem(
        "comparison", kind, context, str(answer), others, {"expression": expression}, True
    )


#: (big unit, small unit, small units per big unit)
UNITS: tuple[tuple[str, str, int], ...] = (
    ("metres", "centimetres", 100), ("kilometres", "metres", 1000), ("kilograms", "grams", 1000),
    ("litres", "millilitres", 1000), ("hours", "minutes", 60), ("minutes", "seconds", 60),
    ("days", "hours", 24), ("weeks", "days", 7), ("years", "months", 12), ("dozen", "eggs", 12),
)  # fmt: skip


def unit_conversion(kind: str, unit: int, amount: int) -> Problem:
    """``to_small``: "How many minutes are in 3 hours?"; ``to_big``: the inverse division."""
    big, small, factor = UNITS[unit]
    if kind == "to_small":
        question, answer = f"How many {small} are in {amount} {big}?", amount * factor
        return _numeric("unit_conversion", kind, question, answer, f"{amount} * {factor}")
    total = amount * factor
    question = f"How many {big} make {total} {small}?"
    return _numeric("unit_conversion", kind, question, total // factor, f"{total} // {factor}")


def algebra(kind: str, x: int, a: int, b: int = 0) -> Problem:
    """Solve a linear equation for x (one step, or two for ``two_step``)."""
    equation, rhs, solve = ALGEBRA[kind]
    r = rhs(x, a, b)
    context = f"If {equation.format(a=a, b=b)} = {r}, what is x?"
    return _numeric("algebra", kind, context, x, solve.format(r=r, a=a, b=b))


def word_problem(kind: str, name: str, a: int, b: int, c: int = 0) -> Problem:
    """A short story from :data:`STORIES` about ``name`` with the numbers filled in."""
    story, compute, expression = STORIES[kind]
    numbers = {"a": a, "b": b, "c": c, "ab": a * b}
    context = story.format(name=name, **numbers)
    return _numeric("word_problem", kind, context, compute(a, b, c), expression.format(**numbers))


# Strategies: "the same procedure with any numbers".


def numbers(low: int, high: int) -> st.SearchStrategy[int]:
    """Integers in ``[low, high]`` without hypothesis's preference for small and boundary values.

    Hypothesis hunts bugs, so it draws the low end (and 0, 1, the maximum) far more often than a
    benchmark should: in a first version 9 of the first 100 reasoning answers were "2". Mapping its
    draw through a fixed permutation of the range (multiply by a prime coprime to the size, shift
    to the middle) keeps every value reachable and spreads the favoured ones out.
    """
    size = high - low + 1
    step = next(p for p in (7919, 7907, 7901) if math.gcd(p, size) == 1)
    return st.integers(0, size - 1).map(lambda i: low + (i * step + size // 2) % size)


def pick(options: Sequence[T]) -> st.SearchStrategy[T]:
    """One of ``options``, spread like :func:`numbers`."""
    return numbers(0, len(options) - 1).map(options.__getitem__)


@st.composite
def arithmetic_problems(draw: st.DrawFn, kind: str) -> Problem:
    """One or two operations (``ARITHMETIC`` or ``MULTI_STEP`` kinds)."""
    if kind == "multiply":
        return arithmetic(kind, draw(numbers(2, 12)), draw(numbers(2, 12)))
    if kind in ("add", "subtract"):
        a, b = draw(numbers(2, 60)), draw(numbers(2, 40))
        assume(a != b)
        return (
            arithmetic(kind, max(a, b), min(a, b)) if kind == "subtract" else arithmetic(kind, a, b)
        )
    if kind == "add_subtract":
        a, b = draw(numbers(5, 40)), draw(numbers(2, 30))
        return arithmetic(kind, a, b, draw(numbers(1, a + b - 1)))
    return arithmetic(kind, draw(numbers(2, 9)), draw(numbers(2, 9)), draw(numbers(2, 9)))


@st.composite
def comparison_problems(draw: st.DrawFn, kind: str) -> Problem:
    size = 2 if kind in ("larger", "smaller") else 3
    return comparison(
        kind, draw(st.lists(numbers(10, 99), min_size=size, max_size=size, unique=True))
    )


@st.composite
def unit_conversion_problems(draw: st.DrawFn, kind: str) -> Problem:
    return unit_conversion(kind, draw(numbers(0, len(UNITS) - 1)), draw(numbers(2, 9)))


@st.composite
def algebra_problems(draw: st.DrawFn, kind: str) -> Problem:
    if kind in ("multiply", "two_step"):
        return algebra(kind, draw(numbers(2, 12)), draw(numbers(2, 9)), draw(numbers(1, 20)))
    x, a = draw(numbers(2, 20)), draw(numbers(2, 12))
    return algebra(kind, x + a if kind == "subtract" else x, a)  # keep x - a positive


@st.composite
def word_problems(draw: st.DrawFn, kind: str) -> Problem:
    name = draw(pick(NAMES))
    if kind in ("buy", "give"):
        a, b = draw(numbers(5, 30)), draw(numbers(2, 20))
        return word_problem(kind, name, *((max(a, b) + 1, min(a, b)) if kind == "give" else (a, b)))
    a, b = draw(numbers(2, 9)), draw(numbers(2, 9))
    c = draw(numbers(2, a * b - 1)) if kind == "packs_give" else draw(numbers(2, 20))
    return word_problem(kind, name, a, b, c)


#: Two worked examples per domain. Measured on SmolLM2-135M (mc_text, all items): 0.45 without
#: examples, 0.49 with one per domain, 0.52 with two (and the plain "{context}\nAnswer:" prompt).
REASONING_FEWSHOT: tuple[Problem, ...] = (
    arithmetic("add", 23, 14),
    word_problem("give", "Maya", 15, 6),
    unit_conversion("to_small", 4, 3),  # hours -> minutes
    algebra("add", 9, 5),
    comparison("smallest", (42, 17, 63)),
    arithmetic("multiply_add", 4, 5, 3),
    arithmetic("multiply", 7, 8),
    word_problem("boxes", "Maya", 6, 4),
    algebra("multiply", 4, 7),
    comparison("larger", (38, 71)),
    arithmetic("subtract", 45, 12),
    unit_conversion("to_big", 6, 4),  # days from hours
)


# Retrieval: the answer is only in the context, and the wrong choices are other values from it.

ATTRIBUTES: tuple[str, ...] = ("room number", "locker number", "phone extension", "badge number")

#: Haystack sentences: no digits, so the only numbers in a haystack are the ones we plant.
FILLER: tuple[str, ...] = (
    "The morning air was cool and the streets were still quiet.",
    "A small dog slept in the shade of an old oak tree.",
    "The baker opened his shop early and the smell of bread filled the lane.",
    "Clouds drifted slowly over the hills to the west of the town.",
    "A group of children walked to school along the river path.",
    "The old clock in the square had stopped years ago.",
    "Fresh vegetables were piled high on the market stalls.",
    "A gentle wind moved the leaves of the tall poplar trees.",
    "The library was quiet except for the sound of turning pages.",
    "Two fishermen sat on the pier and waited patiently.",
    "The painter mixed blue and yellow to find the right shade of green.",
    "A cat watched the birds from a sunny windowsill.",
    "The train rolled slowly through fields of golden wheat.",
    "Someone had left a red umbrella leaning against the bench.",
    "The garden behind the house was full of roses and lavender.",
    "An old man fed the pigeons with crumbs from his pocket.",
    "The café on the corner served tea in tall glasses.",
    "Snow still covered the tops of the distant mountains.",
    "A bicycle bell rang as a courier hurried past.",
    "The teacher wrote a long poem on the blackboard.",
    "Boats with white sails crossed the calm blue bay.",
    "The village held a small festival at the end of every summer.",
    "A farmer led his cows slowly across the narrow road.",
    "The museum guard walked from room to room without a sound.",
    "Lanterns were hung along the street for the evening market.",
    "The bridge over the river was painted a deep shade of green.",
    "A young girl practised the violin by an open window.",
    "The smell of rain hung in the air before the storm.",
    "Workers repaired the roof of the old church on the hill.",
    "A row of pine trees sheltered the cottage from the wind.",
    "The postman greeted everyone he met on his morning round.",
    "Children built a sandcastle near the edge of the water.",
    "The bakery sold out of croissants before noon.",
    "An owl called softly from the edge of the dark forest.",
    "The shopkeeper swept the steps in front of her store.",
    "Thin mist rose from the lake as the sun came up.",
    "A tourist studied a paper map at the corner of the street.",
    "The choir rehearsed their songs in the chapel every evening.",
    "Apples ripened slowly in the orchard behind the barn.",
    "A kite with a long tail danced above the open meadow.",
    "The ferry sounded its horn as it left the harbour.",
    "Grandmother told stories about the winters of her childhood.",
    "The market square was crowded with people and music.",
    "A tired hiker rested on a flat rock beside the trail.",
    "The neighbours shared a long table for dinner in the courtyard.",
    "Ivy climbed the stone walls of the old school building.",
    "A carpenter measured the wood twice before cutting it.",
    "The town band played marches in the park on Sundays.",
    "Bees moved busily from flower to flower in the warm sun.",
    "The lighthouse keeper polished the great lamp every night.",
    "A quiet path led through the woods to a hidden pond.",
    "The students laughed at a joke their professor told.",
    "Rain tapped gently on the glass roof of the greenhouse.",
    "A street musician played the guitar near the fountain.",
    "The mayor planted a young tree in front of the town hall.",
    "Horses grazed peacefully in the field beside the stream.",
    "A delivery van stopped outside the flower shop.",
    "The old bookshop smelled of leather and dust.",
    "Swallows flew low over the water in the late afternoon.",
    "The chef tasted the soup and added a pinch of salt.",
)

#: Sentences that plant a wrong answer of the same shape as the needle's value.
DECOYS: tuple[str, ...] = (
    "The old library holds {} books.",
    "The bridge over the river is {} metres long.",
    "The museum counted {} visitors on its opening day.",
    "The mountain hut stands {} metres above the sea.",
    "The bakery sold {} loaves of bread last spring.",
    "The stadium in the next town has {} seats.",
)

NEEDLE_THINGS: tuple[str, ...] = (
    "the vault",
    "the blue door",
    "the garden gate",
    "the old safe",
    "the storage room",
)

#: Haystack sizes in words (about 1.3 tokens per word for SmolLM2's tokenizer: ~150/~300/~600).
HAYSTACK_WORDS: Mapping[str, int] = {"short": 80, "medium": 230, "long": 450}
DEPTHS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


#: Planted numbers are four-digit codes at least this far apart, so no two are easily confused.
MIN_GAP = 50


def codes(count: int) -> st.SearchStrategy[list[int]]:
    """``count`` distinct four-digit codes, pairwise at least :data:`MIN_GAP` apart.

    Each code is a distinct hundred (1000, 1100, ... 9900) plus an offset below 50, both drawn
    with :func:`numbers` so hypothesis's favourite runs (0, 1, 2) do not become 1000, 1100, 1200.
    """
    hundreds = st.lists(numbers(10, 99), min_size=count, max_size=count, unique=True)
    offsets = st.lists(numbers(0, MIN_GAP - 1), min_size=count, max_size=count)
    return st.tuples(hundreds, offsets).map(
        lambda drawn: [h * 100 + o for h, o in zip(*drawn, strict=True)]
    )


def key_value(names: Sequence[str], values: Sequence[int], attribute: str, query: int) -> Problem:
    """A list of ``name: value`` lines, a question about one name and the cue ``name:``.

    Without the cue SmolLM2-135M answered 0 of 16 by generation (it copied the last value); with it
    the lookup works like the associative recall small models are good at. The wrong choices are
    the values on the lines nearest the asked one, the easiest to confuse with it.
    """
    lines = "\n".join(f"{n}: {v}" for n, v in zip(names, values, strict=True))
    key = names[query]
    question = f"What is the {attribute} of {key}?\n{key}:"
    context = f"The {attribute}s of the guests are listed below.\n{lines}\n{question}"
    nearest = sorted((i for i in range(len(values)) if i != query), key=lambda i: abs(i - query))
    wrong = tuple(str(values[i]) for i in nearest)
    return Problem(
        "kv_lookup", f"pairs-{len(names)}", context, str(values[query]), wrong,
        {"key": key, "pairs": len(names), "position": query},
    )  # fmt: skip


def needle(
    size: str,
    depth: float,
    filler: Sequence[str],
    thing: str,
    code: int,
    decoys: Sequence[tuple[int, int, int]],
) -> Problem:
    """A haystack of about ``size`` words with the needle at ``depth`` and three decoy numbers.

    ``decoys`` holds (index into :data:`DECOYS`, number, insertion slot among the filler sentences).
    The question is followed by the needle's own opening words as a cue, as in Wu et al.'s needle
    tests; with a bare "Answer:" SmolLM2-135M generated no code at all.
    """
    sentences: list[str] = []
    words = 0
    for sentence in filler:
        if words >= HAYSTACK_WORDS[size]:
            break
        sentences.append(sentence)
        words += len(sentence.split())
    for template, number, position in decoys:
        sentences.insert(position % (len(sentences) + 1), DECOYS[template].format(number))
    needle_sentence = f"The secret code for {thing} is {code}."
    at = round(depth * len(sentences))
    sentences.insert(at, needle_sentence)
    question = f"What is the secret code for {thing}?\nThe secret code for {thing} is"
    context = " ".join(sentences) + "\n" + question
    wrong = tuple(str(number) for _, number, _ in decoys)
    return Problem(
        "needle", size, context, str(code), wrong,
        {"depth": depth, "sentence_index": at, "sentences": len(sentences),
         "needle": needle_sentence},
    )  # fmt: skip


@st.composite
def key_value_problems(draw: st.DrawFn, pairs: int) -> Problem:
    names = draw(st.permutations(NAMES))[:pairs]
    values = draw(codes(pairs))
    return key_value(names, values, draw(pick(ATTRIBUTES)), draw(numbers(0, pairs - 1)))


@st.composite
def needle_problems(draw: st.DrawFn, size: str, depth: float) -> Problem:
    filler = draw(st.permutations(FILLER))
    code, *others = draw(codes(4))
    templates = draw(st.lists(numbers(0, len(DECOYS) - 1), min_size=3, max_size=3, unique=True))
    slots = draw(st.lists(numbers(0, 60), min_size=3, max_size=3))
    decoys = list(zip(templates, others, slots, strict=True))
    return needle(size, depth, filler, draw(pick(NEEDLE_THINGS)), code, decoys)


#: No few-shot examples: with one key-value example in front, SmolLM2-135M often copied that
#: example's answer, and lookups by generation fell from 6 to 2 of 16.
RETRIEVAL_FEWSHOT: tuple[Problem, ...] = ()


# --------------------------------------------------------------------------------------------------
# Suite documents

#: (label, strategy, item count); the label also derives the group's seed.
_Group = tuple[str, st.SearchStrategy[Problem], int]


def _per_kind(
    domain: str, build: Callable[[str], st.SearchStrategy[Problem]], counts: Mapping[str, int]
) -> list[_Group]:
    return [(f"{domain}/{kind}", build(kind), count) for kind, count in counts.items()]


def reasoning_groups() -> list[list[_Group]]:
    """Per domain, one group per kind (a fixed count each, so kinds are balanced).

    Weighted towards one-step arithmetic and unit conversion, which SmolLM2-135M does well above
    chance; algebra, comparisons and word problems sit near chance for it but separate larger
    models, so they stay, fewer.
    """
    comparisons = ("larger", "smaller", "largest", "smallest")
    return [
        _per_kind("arithmetic", arithmetic_problems, {"add": 20, "subtract": 16, "multiply": 24}),
        _per_kind("multi_step", arithmetic_problems, dict.fromkeys(MULTI_STEP, 7)),
        _per_kind("comparison", comparison_problems, dict.fromkeys(comparisons, 7)),
        _per_kind("unit_conversion", unit_conversion_problems, {"to_small": 28, "to_big": 12}),
        _per_kind("algebra", algebra_problems, dict.fromkeys(ALGEBRA, 7)),
        _per_kind("word_problem", word_problems, dict.fromkeys(STORIES, 5)),
    ]


def retrieval_groups() -> list[list[_Group]]:
    return [
        [(f"kv_lookup/{pairs}", key_value_problems(pairs), 30) for pairs in (4, 8, 16)],
        [
            (f"needle/{size}/{depth}", needle_problems(size, depth), 8)
            for size in HAYSTACK_WORDS
            for depth in DEPTHS
        ],
    ]


@dataclass(frozen=True)
class SuiteSpec:
    """Everything that defines one generated suite file except the drawn items."""

    name: str
    description: str
    default_protocol: str
    protocols: Mapping[str, Mapping[str, Any]]
    fewshot: tuple[Problem, ...]
    groups: Callable[[], list[list[_Group]]]
    #: Items of a group must differ in this (reasoning: the question; retrieval: the answer).
    distinct_by: Callable[[Problem], str]


def _domain_items(
    spec: SuiteSpec, groups: Sequence[_Group], taken: set[str]
) -> list[dict[str, Any]]:
    """Draw every group, split by kind, interleave kinds; gold positions cycle within each kind.

    ``taken`` holds the ``distinct_by`` keys used so far (few-shot examples, earlier groups): they
    must differ across the whole suite, or hypothesis's favourite example recurs in every group.
    """
    by_kind: dict[str, list[Problem]] = {}
    for label, strategy, count in groups:
        for problem in draw_distinct(label, strategy, count, spec.distinct_by, taken):
            taken.add(spec.distinct_by(problem))
            by_kind.setdefault(problem.kind, []).append(problem)
    problems = interleave([list(enumerate(group)) for group in by_kind.values()])
    items = [problem.item("", index) for index, problem in problems]
    for n, item in enumerate(items, 1):
        item["id"] = f"{item['domain']}-{n:03d}"
    return items


def _protocols(prompt: str, letters: str, answer_regex: str) -> dict[str, dict[str, Any]]:
    """The four protocols: ``prompt`` for the likelihood and generation protocols, ``letters`` (with
    ``{choices_block}``) for mc_letters. Answers are numbers, so generation stops at a line end."""
    generation = {
        "template": prompt,
        "until": ["\n"],
        "max_gen_toks": 12,
        "answer_regex": answer_regex,
    }
    return {
        "mc_text": {"template": prompt},
        "mc_letters": {"template": letters},
        "continuation": {"template": prompt},
        "generate_until": generation,
    }


SPECS: tuple[SuiteSpec, ...] = (
    SuiteSpec(
        name="reasoning",
        description=(
            "Procedures asked with many different numbers: one-step and multi-step "
            "arithmetic, comparisons, unit conversions, simple algebra and short word problems. "
            "Numeric targets; the wrong choices are near misses with as many digits as the answer "
            "(comparisons: the other numbers asked about)."
        ),
        default_protocol="mc_text",
        protocols=_protocols(
            "{context}\nAnswer:", "{context}\n{choices_block}\nAnswer:", r"(-?\d+)"
        ),
        fewshot=REASONING_FEWSHOT,
        groups=reasoning_groups,
        distinct_by=lambda p: p.context,
    ),
    SuiteSpec(
        name="retrieval",
        description=(
            "The answer appears only in the context: key-value lookups in lists of 4, 8 and 16 "
            "pairs, and a needle sentence hidden at depths 0, 0.25, 0.5, 0.75 and 1 of haystacks "
            "of about 150, 300 and 600 tokens. Wrong choices are other values from the context."
        ),
        default_protocol="mc_text",
        protocols=_protocols("{context}", "{context} ...\n{choices_block}\nAnswer:", r"(\d+)"),
        fewshot=RETRIEVAL_FEWSHOT,
        groups=retrieval_groups,
        distinct_by=lambda p: p.answer,
    ),
)


def build_document(spec: SuiteSpec) -> dict[str, Any]:
    """The suite file's content as plain data, in file order."""
    taken = {spec.distinct_by(problem) for problem in spec.fewshot}
    domains = [_domain_items(spec, groups, taken) for groups in spec.groups()]
    fewshot = []
    for n, problem in enumerate(spec.fewshot, 1):
        example = problem.item(f"fewshot-{n}", n)
        del example["metadata"]
        fewshot.append(example)
    return {
        "name": spec.name,
        "capability": spec.name,
        "description": spec.description,
        "version": 1,
        "default_protocol": spec.default_protocol,
        "protocols": spec.protocols,
        "fewshot": fewshot,
        "metadata": {
            "generator": "python -m pytest_layercheck.suites.generate",
            "seed": SEED,
            "hypothesis_version": hypothesis.__version__,
        },
        "items": interleave(domains),
    }


# --------------------------------------------------------------------------------------------------
# YAML output


def render_yaml(document: Mapping[str, Any]) -> str:
    """The file text: a header comment, then the document (round-trips through the safe loader)."""
    from pytest_layercheck.suites.loader import FORMAT_SUMMARY

    header = (
        f"# Built-in '{document['name']}' suite of pytest-layercheck.\n"
        "# GENERATED by `python -m pytest_layercheck.suites.generate` from hypothesis strategies\n"
        "# under a fixed seed (see metadata). Do not edit by hand: change generate.py and\n"
        "# regenerate; `python -m pytest_layercheck.suites.generate --check` checks the file.\n#\n"
        + "".join(f"# {line}".rstrip() + "\n" for line in FORMAT_SUMMARY.splitlines())
    )
    body = yaml.dump(
        flow_lists(document), Dumper=SuiteDumper, sort_keys=False, allow_unicode=True, width=1_000_000
    )
    return header + body


# --------------------------------------------------------------------------------------------------
# Command line


def generate_texts() -> dict[str, str]:
    """Suite name -> file text for every generated suite; each text is validated by the loader."""
    from pytest_layercheck.suites.loader import load_suite_text

    texts = {}
    for spec in SPECS:
        text = render_yaml(build_document(spec))
        load_suite_text(text, f"<generated {spec.name}.yaml>")
        texts[spec.name] = text
    return texts


def _recorded_version(path: Path) -> str | None:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        return str(document["metadata"]["hypothesis_version"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_layercheck.suites.generate",
        description="Write (or with --check verify) suites/reasoning.yaml and retrieval.yaml.",
    )
    parser.add_argument(
        "--check", action="store_true", help="fail if a file differs from what would be written"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="folder to write to (default: <repo>/suites)"
    )
    args = parser.parse_args(argv)
    out = args.out or source_suites_dir()
    if out is None:
        parser.error("no source checkout found; pass --out DIR")
    from pytest_layercheck.core.atomic import atomic_write_text

    stale = []
    for name, text in generate_texts().items():
        path = out / f"{name}.yaml"
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            print(f"{path}: up to date")
        elif args.check:
            stale.append(path)
            recorded = _recorded_version(path) if current is not None else None
            note = ""
            if recorded and recorded != hypothesis.__version__:
                note = f" (generated with hypothesis {recorded}, this is {hypothesis.__version__})"
            print(f"{path}: differs from the generator output{note}", file=sys.stderr)
        else:
            atomic_write_text(path, text)
            print(f"{path}: written")
    if stale:
        print("regenerate with: python -m pytest_layercheck.suites.generate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
