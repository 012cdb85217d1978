"""Transfer across numbers: property-based checks of the variant generator against an independent
solver, the stability score by hand, and a tiny-model run checked against separate scoring."""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import tiny_model, tiny_tokenizer
from trained_tiny import save

from pytest_layercheck.analysis.transfer.render import transfer_markdown, transfer_renderable
from pytest_layercheck.analysis.transfer.stability import (
    cohen_kappa,
    knowledge_siblings,
    reasoning_variants,
    stability_from_outcomes,
    transfer_stability,
    variant_strategy,
)
from pytest_layercheck.cli import main
from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.evaluation.service import score_suite
from pytest_layercheck.model.loading import LoadedModel
from pytest_layercheck.report.format import render_text
from pytest_layercheck.suites.builtin import load_builtin_suite
from pytest_layercheck.suites.schema import SuiteItem

REASONING = load_builtin_suite("reasoning")
KNOWLEDGE = load_builtin_suite("knowledge")

# ---------------------------------------------------------------------------------------------
# An independent solver: reads the question text, knows nothing of the generator's lambdas.

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
#: (big unit, small unit) -> small units per big unit, written out by hand.
FACTORS = {
    ("metres", "centimetres"): 100,
    ("kilometres", "metres"): 1000,
    ("kilograms", "grams"): 1000,
    ("litres", "millilitres"): 1000,
    ("hours", "minutes"): 60,
    ("minutes", "seconds"): 60,
    ("days", "hours"): 24,
    ("weeks", "days"): 7,
    ("years", "months"): 12,
    ("dozen", "eggs"): 12,
}


def arithmetic(expression: str, x: int | None = None) -> int:
    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id == "x" and x is not None:
            return x
        raise ValueError(f"unexpected {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval").body)


def solve(question: str) -> int:
    if m := re.fullmatch(r"What is ([\d +*()-]+)\?", question):
        return arithmetic(m.group(1))
    if m := re.fullmatch(r"Which number is (?:the )?(larger|smaller|largest|smallest): (.+)\?", question):
        values = [int(v) for v in re.findall(r"\d+", m.group(2))]
        return max(values) if m.group(1) in ("larger", "largest") else min(values)
    if m := re.fullmatch(r"How many (\w+) are in (\d+) (\w+)\?", question):
        return int(m.group(2)) * FACTORS[(m.group(3), m.group(1))]
    if m := re.fullmatch(r"How many (\w+) make (\d+) (\w+)\?", question):
        total, factor = int(m.group(2)), FACTORS[(m.group(1), m.group(3))]
        assert total % factor == 0
        return total // factor
    if m := re.fullmatch(r"If (.+) = (-?\d+), what is x\?", question):
        roots = [x for x in range(-200, 1000) if arithmetic(m.group(1), x) == int(m.group(2))]
        assert len(roots) == 1, question
        return roots[0]
    numbers = [int(v) for v in re.findall(r"\d+", question)]
    stories = [
        (r"\w+ has \d+ apples and buys \d+ more\..*", lambda a, b: a + b),
        (r"\w+ had \d+ stickers and gave \d+ of them.*", lambda a, b: a - b),
        (r"A box holds \d+ pencils\. How many pencils are in \d+ boxes\?", lambda a, b: a * b),
        (r"\w+ shares \d+ sweets equally among \d+ friends\..*", lambda a, b: a // b),
        (r"\w+ buys \d+ packs of \d+ cards and gives away \d+ cards\..*", lambda a, b, c: a * b - c),
        (r"\w+ reads \d+ pages every day for \d+ days and then \d+ more pages\..*", lambda a, b, c: a * b + c),
    ]
    for pattern, compute in stories:
        if re.fullmatch(pattern, question):
            return compute(*numbers)
    raise ValueError(f"no solver for {question!r}")


def test_the_solver_agrees_with_every_built_in_reasoning_item() -> None:
    """The solver is checked on the suite itself before it checks the variants."""
    for it in REASONING.items:
        assert solve(it.context) == int(it.target), it.id


# ---------------------------------------------------------------------------------------------
# Property-based: the variant generator


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_variant_is_well_formed_and_its_gold_is_the_procedures_result(data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(REASONING.items), label="original")
    variant = data.draw(variant_strategy(original), label="variant")
    assert (variant.domain, variant.kind) == (original.domain, original.kind)
    assert variant.context != original.context
    assert len(variant.choices) == 4 and len(set(variant.choices)) == 4
    assert variant.gold == original.gold and variant.target == variant.choices[variant.gold]
    assert int(variant.target) == solve(variant.context)
    assert all(len(c) == len(variant.target) for c in variant.choices if original.domain != "comparison")
    assert variant.metadata["variant_of"] == original.id


#: The first item of every (domain, kind): every procedure the generator knows. (reasoning_variants runs
#: hypothesis itself, and hypothesis refuses a nested @given, so these are parametrised.)
ONE_PER_KIND = list({(i.domain, i.kind): i for i in reversed(REASONING.items)}.values())


@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize("original", ONE_PER_KIND, ids=lambda i: i.id)
def test_seeded_variants_are_distinct_new_and_reproducible(original: SuiteItem, seed: int) -> None:
    exclude = [i.context for i in REASONING.items]
    first = reasoning_variants(original, 3, seed, exclude)
    assert [v.id for v in first] == [f"{original.id}~v{k}" for k in (1, 2, 3)]
    contexts = [v.context for v in first]
    assert len(set(contexts)) == 3 and not set(contexts) & set(exclude)
    assert reasoning_variants(original, 3, seed, exclude) == first
    for v in first:
        assert (v.domain, v.kind, v.gold) == (original.domain, original.kind, original.gold)
        assert int(v.target) == solve(v.context)


def test_another_seed_draws_other_numbers_and_bad_requests_fail_clearly() -> None:
    original = REASONING.items[0]
    assert [v.context for v in reasoning_variants(original, 3, 0)] != [
        v.context for v in reasoning_variants(original, 3, 1)
    ]
    with pytest.raises(ConfigError, match="at least 1"):
        reasoning_variants(original, 0)
    with pytest.raises(ConfigError, match="no number generator"):
        reasoning_variants(KNOWLEDGE.items[0], 2)


def test_knowledge_siblings_are_other_items_of_the_same_kind() -> None:
    for it in KNOWLEDGE.items[:30]:
        siblings = knowledge_siblings(KNOWLEDGE, it, 3)
        same_kind = [o for o in KNOWLEDGE.items if (o.domain, o.kind) == (it.domain, it.kind) and o.id != it.id]
        assert len(siblings) == min(3, len(same_kind))
        assert all(s.id != it.id and (s.domain, s.kind) == (it.domain, it.kind) for s in siblings)
        assert knowledge_siblings(KNOWLEDGE, it, 3) == siblings


# ---------------------------------------------------------------------------------------------
# The score by hand


def test_stability_score_by_hand() -> None:
    original = {"a": True, "b": True, "c": False, "d": False}
    variants = {"a": [True, True, False], "b": [False, False, False], "c": [True, False, False], "d": [False] * 3}
    score = stability_from_outcomes(original, variants, seed=0, resamples=500)
    assert (score.both_right, score.right_wrong, score.wrong_right, score.both_wrong) == (2, 4, 1, 5)
    assert score.pairs == 12 and score.base_accuracy == 0.5 and score.variant_accuracy == pytest.approx(3 / 12)
    assert score.stability == pytest.approx(2 / 6) and score.agreement == pytest.approx(7 / 12)
    # observed 7/12; chance 0.5 * 0.25 + 0.5 * 0.75 = 0.5; kappa = (7/12 - 1/2) / (1/2) = 1/6
    assert score.kappa == pytest.approx(1 / 6)
    low, high = score.stability_ci
    assert 0 <= low <= score.stability <= high <= 1
    assert stability_from_outcomes(original, variants, seed=0, resamples=500) == score  # seeded
    assert cohen_kappa(3, 0, 0, 2) == pytest.approx(1.0) and cohen_kappa(2, 2, 2, 2) == pytest.approx(0.0)
    assert math.isnan(cohen_kappa(4, 0, 0, 0))
    empty = stability_from_outcomes({"a": False}, {"a": [True]}, resamples=0)
    assert math.isnan(empty.stability) and empty.variant_accuracy == 1.0


# ---------------------------------------------------------------------------------------------
# A tiny model


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return LoadedModel(
        model=tiny_model("llama", layers=2, seed=5),
        tokenizer=tiny_tokenizer(),
        spec="tiny",
        name="tiny",
        kind="test",
        device=torch.device("cpu"),
        dtype=torch.float32,
    )


def test_stability_on_a_tiny_model_matches_separate_scoring(tiny: LoadedModel) -> None:
    suite = replace(REASONING, fewshot=())
    result = transfer_stability(tiny, suite, limit=6, variants=2, resamples=50)
    assert result.method == "numbers" and result.metric == "acc" and result.score.pairs == 12
    originals = score_suite(tiny, suite, "mc_text", limit=6)
    assert [p.correct for p in result.pairs] == [bool(v) for v in originals.values("acc")]
    exclude = [i.context for i in REASONING.items] + [f.context for f in REASONING.fewshot]
    kids = [v for it in suite.items[:6] for v in reasoning_variants(it, 2, 0, exclude)]
    scored = score_suite(tiny, replace(suite, items=tuple(kids)), "mc_text")
    assert [c for p in result.pairs for c in p.variant_correct] == [bool(v) for v in scored.values("acc")]
    table = result.score
    assert table.both_right + table.right_wrong == 2 * sum(p.correct for p in result.pairs)
    assert sum(s.originals for s in result.by_domain.values()) == 6


def test_knowledge_contrast_and_reports(tiny: LoadedModel) -> None:
    knowledge = replace(KNOWLEDGE, fewshot=())
    facts = transfer_stability(tiny, knowledge, limit=5, variants=2, resamples=50)
    assert facts.method == "siblings" and facts.score.originals == 5
    for pair in facts.pairs:
        assert all(k.startswith(pair.item_id.split("-")[0]) for k in pair.variant_ids)
    numbers = transfer_stability(tiny, replace(REASONING, fewshot=()), limit=3, variants=2, resamples=50)
    text = render_text(transfer_renderable([numbers, facts], by_domain=True), width=220)
    assert "new numbers" in text and "same-kind items" in text and "reasoning/arithmetic" in text
    markdown = transfer_markdown([numbers, facts])
    assert markdown.count("\n|") == 4  # header, rule, two suites
    assert len({line.count("|") for line in markdown.splitlines() if line.startswith("|")}) == 1  # no stray pipes
    json.dumps([numbers.to_json(), facts.to_json()])
    with pytest.raises(ConfigError, match="retrieval"):
        transfer_stability(tiny, load_builtin_suite("retrieval"), limit=2)
    with pytest.raises(ConfigError, match="unknown transfer method"):
        transfer_stability(tiny, knowledge, method="entities")


def test_cli_runs_on_a_saved_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = save(tiny_model("llama", layers=2, seed=5), tmp_path / "tiny")
    out = tmp_path / "t.json"
    assert (
        main(
            [
                "transfer",
                str(folder),
                "--device",
                "cpu",
                "--limit",
                "2",
                "--variants",
                "2",
                "--json",
                str(out),
                "--markdown",
                str(tmp_path / "t.md"),
            ]
        )
        == 0
    )
    assert "layercheck transfer" in capsys.readouterr().out
    payload = json.loads(out.read_text())
    assert [p["suite"] for p in payload] == ["reasoning", "knowledge"]
    assert payload[0]["score"]["pairs"] == 4


@pytest.mark.real_model
def test_real_model_originals_score_as_in_a_profile(smollm: LoadedModel) -> None:
    """The originals' outcomes are the suite's own mc_text outcomes; variants add pairs, not noise to them."""
    result = transfer_stability(smollm, "reasoning", limit=4, variants=1, resamples=100)
    plain = score_suite(smollm, REASONING, "mc_text", limit=4)
    assert [p.correct for p in result.pairs] == [bool(v) for v in plain.values("acc")]
    assert result.score.pairs == 4 and 0 <= result.score.variant_accuracy <= 1
