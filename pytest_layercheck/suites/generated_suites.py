"""What the built-in ``reasoning`` and ``retrieval`` suites hold: their groups of problems, protocols and order.

Each suite is a :class:`SuiteSpec`; :func:`build_document` draws its groups and interleaves them so
that every prefix of the items is a balanced sample (quick profiles run the first N items).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hypothesis
from hypothesis import strategies as st

from pytest_layercheck.suites.drawing import SEED, draw_distinct, interleave
from pytest_layercheck.suites.problems import Problem
from pytest_layercheck.suites.reasoning_problems import (
    ALGEBRA,
    MULTI_STEP,
    REASONING_FEWSHOT,
    STORIES,
    algebra_problems,
    arithmetic_problems,
    comparison_problems,
    unit_conversion_problems,
    word_problems,
)
from pytest_layercheck.suites.retrieval_problems import (
    DEPTHS,
    HAYSTACK_WORDS,
    RETRIEVAL_FEWSHOT,
    key_value_problems,
    needle_problems,
)

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
        [(f"needle/{size}/{depth}", needle_problems(size, depth), 8) for size in HAYSTACK_WORDS for depth in DEPTHS],
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


def _domain_items(spec: SuiteSpec, groups: Sequence[_Group], taken: set[str]) -> list[dict[str, Any]]:
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
        protocols=_protocols("{context}\nAnswer:", "{context}\n{choices_block}\nAnswer:", r"(-?\d+)"),
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
