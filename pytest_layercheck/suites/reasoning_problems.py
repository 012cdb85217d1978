"""Reasoning procedures (arithmetic, comparisons, unit conversion, algebra, word problems) and their strategies.

Reasoning rests on procedures that transfer across instances, so each procedure is asked with many
different numbers: a hypothesis strategy describes "the same procedure with any numbers" and a fixed
seed picks the instances. Every answer is computed here from the drawn numbers, and items carry an
``expression`` so tests (and the transfer analysis) can recompute them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from hypothesis import assume
from hypothesis import strategies as st

from pytest_layercheck.suites.drawing import numbers, pick
from pytest_layercheck.suites.problems import NAMES, Problem, _numeric

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
    return Problem("comparison", kind, context, str(answer), others, {"expression": expression}, True)


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


@st.composite
def arithmetic_problems(draw: st.DrawFn, kind: str) -> Problem:
    """One or two operations (``ARITHMETIC`` or ``MULTI_STEP`` kinds)."""
    if kind == "multiply":
        return arithmetic(kind, draw(numbers(2, 12)), draw(numbers(2, 12)))
    if kind in ("add", "subtract"):
        a, b = draw(numbers(2, 60)), draw(numbers(2, 40))
        assume(a != b)
        return arithmetic(kind, max(a, b), min(a, b)) if kind == "subtract" else arithmetic(kind, a, b)
    if kind == "add_subtract":
        a, b = draw(numbers(5, 40)), draw(numbers(2, 30))
        return arithmetic(kind, a, b, draw(numbers(1, a + b - 1)))
    return arithmetic(kind, draw(numbers(2, 9)), draw(numbers(2, 9)), draw(numbers(2, 9)))


@st.composite
def comparison_problems(draw: st.DrawFn, kind: str) -> Problem:
    size = 2 if kind in ("larger", "smaller") else 3
    return comparison(kind, draw(st.lists(numbers(10, 99), min_size=size, max_size=size, unique=True)))


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
