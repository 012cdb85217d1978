"""Transfer across numbers: does an item's correctness survive a change of its numbers (or its fact)?

Research notes, section 5: reasoning rests on procedures that transfer across instances (the same
method with different numbers), factual recall on specific memorised facts. So:

* **Reasoning items** get *variants*: the same procedure (the item's ``domain``/``kind`` strategy in
  :mod:`pytest_layercheck.suites.reasoning_problems`) with freshly drawn numbers, under a seed. A variant
  keeps the original's gold position and, where the distractor shape allows, the answer's rank in
  size among the choices, so only the numbers change. Variants never repeat the original, a
  few-shot example or any other item of the suite.
* **Knowledge items** get *siblings*: other items of the suite with the same ``domain`` and ``kind``
  ("same template, different entity": another capital, another organ), picked by a seeded hash.

Each (original, variant) pair is scored under the suite's protocol, and the pairs give:

* ``stability`` = P(variant right | original right), pooled over pairs. If correctness were a
  property of the single instance (no transfer), this would equal the variants' own accuracy;
  if it were a property of the procedure, it would be 1.
* ``agreement`` = P(variant outcome == original outcome).
* ``kappa`` = Cohen's kappa of the (original, variant) outcome table: agreement corrected for the
  agreement the two accuracies alone would produce. 0 = no transfer beyond the base rates,
  1 = correctness fully determined by the procedure (or, for knowledge, the kind of fact). This is
  the number to compare between suites: stability alone rises with accuracy itself.

Pairs are pooled within kinds, so a model that is good at one kind and bad at another already
shows some kappa: that is the kind-level (procedure-level) signal the contrast is about, present
for both suites alike. Confidence intervals (95 %, percentile) come from a seeded bootstrap that
resamples ORIGINAL items with all their variants (pairs of one item are not independent).

Fixture one-liner::

    transfer = lambda suite="reasoning", **kw: transfer_stability(layercheck_model, suite, **kw)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from hypothesis import strategies as st

from pytest_layercheck.analysis.jsonable import attributes
from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.scoring.protocols import prepare, score
from pytest_layercheck.suites.builtin import resolve_suite
from pytest_layercheck.suites.drawing import draw_distinct
from pytest_layercheck.suites.problems import Problem
from pytest_layercheck.suites.protocols import get_protocol
from pytest_layercheck.suites.reasoning_problems import (
    algebra_problems,
    arithmetic_problems,
    comparison_problems,
    unit_conversion_problems,
    word_problems,
)
from pytest_layercheck.suites.schema import Suite, SuiteItem

if TYPE_CHECKING:
    from pytest_layercheck.evaluation.profiler import ProgressHook
    from pytest_layercheck.model.loading import LoadedModel

DEFAULT_LIMIT = 40
DEFAULT_VARIANTS = 3
DEFAULT_SEED = 0
DEFAULT_RESAMPLES = 1000

#: Reasoning domains whose procedure has a strategy in suites/reasoning_problems.py: domain -> kind -> strategy.
VARIANT_STRATEGIES: Mapping[str, Callable[[str], st.SearchStrategy[Problem]]] = {
    "arithmetic": arithmetic_problems,
    "multi_step": arithmetic_problems,
    "comparison": comparison_problems,
    "unit_conversion": unit_conversion_problems,
    "algebra": algebra_problems,
    "word_problem": word_problems,
}


# --------------------------------------------------------------------------------------------------
# Variants


def _choice_rank(item: SuiteItem) -> int | None:
    """The gold answer's rank in numeric size among the choices (None for non-numeric choices)."""
    try:
        values = [float(c) for c in item.choices]
    except ValueError:
        return None
    gold = values[item.gold]  # type: ignore[index]
    return sorted(values).index(gold)


def _shape_index(item: SuiteItem) -> int:
    """The ``index`` for :meth:`Problem.item` that reproduces the original's gold position and,
    where possible, its answer's rank in size (``Problem.item`` cycles both with the index)."""
    gold = item.gold or 0
    rank = _choice_rank(item)
    candidates = [i for i in range(16) if i % 4 == gold % 4]
    for index in candidates:
        if rank is not None and (index + index // 4) % 4 == rank:
            return index
    return candidates[0]


def _to_item(problem: Problem, original: SuiteItem, item_id: str) -> SuiteItem:
    record = problem.item(item_id, _shape_index(original))
    return SuiteItem(
        id=item_id, context=record["context"], domain=record["domain"], kind=record["kind"],
        choices=tuple(record["choices"]), gold=record["gold"], target=record["target"],
        metadata={**record["metadata"], "variant_of": original.id},
    )  # fmt: skip


def _strategy_for(item: SuiteItem) -> st.SearchStrategy[Problem]:
    build = VARIANT_STRATEGIES.get(item.domain)
    if build is None:
        raise ConfigError(
            f"item {item.id!r} is in domain {item.domain!r}, which has no number generator",
            f"transfer variants exist for the generated reasoning domains ({', '.join(VARIANT_STRATEGIES)}); "
            "use the built-in reasoning suite or items of those domains",
        )
    try:
        return build(item.kind)
    except KeyError:
        raise ConfigError(
            f"item {item.id!r}: kind {item.kind!r} is unknown in domain {item.domain!r}",
            "use the kinds of the built-in reasoning suite",
        ) from None


def variant_strategy(item: SuiteItem, variant_id: str | None = None) -> st.SearchStrategy[SuiteItem]:
    """Hypothesis strategy: ``item``'s procedure with any other numbers, as a suite item."""
    strategy = _strategy_for(item)
    item_id = variant_id or f"{item.id}~v"
    return strategy.filter(lambda p: p.context != item.context).map(lambda p: _to_item(p, item, item_id))


def reasoning_variants(
    item: SuiteItem, count: int = DEFAULT_VARIANTS, seed: int = DEFAULT_SEED, exclude: Sequence[str] = ()
) -> list[SuiteItem]:
    """``count`` distinct variants of ``item`` (ids ``<id>~v1`` ...), the same for the same seed.

    Drawn with the suite generator's deterministic machinery (:func:`suites.drawing.draw_distinct`,
    seeded by ``seed`` and the item id). ``exclude`` lists contexts never to produce (other items,
    few-shot examples); the original's context is always excluded.
    """
    if count < 1:
        raise ConfigError(f"variants per item must be at least 1, got {count}", "ask for 1 or more variants")
    strategy = _strategy_for(item)
    try:
        problems = draw_distinct(
            f"transfer/{seed}/{item.id}",
            strategy,
            count,
            lambda p: p.context,
            exclude=frozenset(exclude) | {item.context},
        )
    except RuntimeError as exc:
        raise ConfigError(
            f"cannot draw {count} distinct variants of {item.id!r}: {exc}", "ask for fewer variants per item"
        ) from None
    return [_to_item(p, item, f"{item.id}~v{k}") for k, p in enumerate(problems, 1)]


def _stable_order(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def knowledge_siblings(
    suite: Suite, item: SuiteItem, count: int = DEFAULT_VARIANTS, seed: int = DEFAULT_SEED
) -> list[SuiteItem]:
    """Up to ``count`` other items of ``suite`` with the same domain and kind (seeded hash order)."""
    same = [o for o in suite.items if o.id != item.id and (o.domain, o.kind) == (item.domain, item.kind)]
    same.sort(key=lambda o: _stable_order(f"{seed}/{item.id}/{o.id}"))
    return same[:count]


# --------------------------------------------------------------------------------------------------
# The score


@dataclass(frozen=True)
class StabilityScore:
    """The (original, variant) outcome table and what it says about transfer."""

    originals: int
    pairs: int
    original_correct: int
    both_right: int
    right_wrong: int  # original right, variant wrong
    wrong_right: int  # original wrong, variant right
    both_wrong: int
    stability_ci: tuple[float, float] = (float("nan"), float("nan"))
    kappa_ci: tuple[float, float] = (float("nan"), float("nan"))

    @property
    def base_accuracy(self) -> float:
        """Accuracy on the original items (each counted once)."""
        return self.original_correct / self.originals if self.originals else float("nan")

    @property
    def variant_accuracy(self) -> float:
        return (self.both_right + self.wrong_right) / self.pairs if self.pairs else float("nan")

    @property
    def stability(self) -> float:
        """P(variant right | original right); NaN when no original is right."""
        right = self.both_right + self.right_wrong
        return self.both_right / right if right else float("nan")

    @property
    def agreement(self) -> float:
        return (self.both_right + self.both_wrong) / self.pairs if self.pairs else float("nan")

    @property
    def kappa(self) -> float:
        return cohen_kappa(self.both_right, self.right_wrong, self.wrong_right, self.both_wrong)


def cohen_kappa(both_right: int, right_wrong: int, wrong_right: int, both_wrong: int) -> float:
    """Cohen's kappa of a 2x2 table (rows: original right/wrong; columns: variant right/wrong).

    NaN when the chance agreement is 1 (every outcome the same on both sides): nothing to correct.
    """
    n = both_right + right_wrong + wrong_right + both_wrong
    if n == 0:
        return float("nan")
    observed = (both_right + both_wrong) / n
    p_orig, p_var = (both_right + right_wrong) / n, (both_right + wrong_right) / n
    expected = p_orig * p_var + (1 - p_orig) * (1 - p_var)
    return float("nan") if expected >= 1 else (observed - expected) / (1 - expected)


def stability_from_outcomes(
    original: Mapping[str, bool],
    variants: Mapping[str, Sequence[bool]],
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
) -> StabilityScore:
    """The score of paired outcomes: ``original[id]`` and the outcomes of that item's variants.

    Originals without variants count towards ``base_accuracy`` only.
    """
    ids = list(original)
    o = np.array([bool(original[i]) for i in ids], dtype=float)
    right = np.array([sum(map(bool, variants.get(i, ()))) for i in ids], dtype=float)
    total = np.array([len(variants.get(i, ())) for i in ids], dtype=float)
    table = _table(np.ones(len(ids)), o, right, total)
    stability_ci = kappa_ci = (float("nan"), float("nan"))
    if resamples > 0 and len(ids) > 1:
        rng = np.random.default_rng(seed)
        weights = rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=resamples).astype(float)
        br, rw, wr, bw = _table(weights, o, right, total)
        with np.errstate(invalid="ignore", divide="ignore"):
            stab = br / (br + rw)
        kap = np.array([cohen_kappa(*map(int, cells)) for cells in zip(br, rw, wr, bw)])
        stability_ci, kappa_ci = _interval(stab), _interval(kap)
    return StabilityScore(
        originals=len(ids), pairs=int(total.sum()), original_correct=int(o.sum()),
        both_right=int(table[0]), right_wrong=int(table[1]), wrong_right=int(table[2]), both_wrong=int(table[3]),
        stability_ci=stability_ci, kappa_ci=kappa_ci,
    )  # fmt: skip


def _table(weights: np.ndarray, o: np.ndarray, right: np.ndarray, total: np.ndarray) -> tuple[Any, ...]:
    """(both right, right->wrong, wrong->right, both wrong) pair counts, weighted per original."""
    wrong = total - right
    return (weights @ (o * right), weights @ (o * wrong), weights @ ((1 - o) * right), weights @ ((1 - o) * wrong))


def _interval(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    low, high = np.percentile(finite, [2.5, 97.5])
    return (float(low), float(high))


@dataclass(frozen=True)
class PairOutcome:
    """One original item with its variants' ids and outcomes."""

    item_id: str
    domain: str
    kind: str
    correct: bool
    variant_ids: tuple[str, ...]
    variant_correct: tuple[bool, ...]


@dataclass(frozen=True)
class TransferStability:
    """Stability of one suite: how variants fare given the original's outcome."""

    suite: str
    capability: str
    method: str  # "numbers" (regenerated) or "siblings" (same kind, other item)
    protocol: str
    metric: str
    variants_per_item: int
    seed: int
    score: StabilityScore
    pairs: tuple[PairOutcome, ...]
    by_domain: Mapping[str, StabilityScore] = field(default_factory=dict)

    @property
    def stability(self) -> float:
        return self.score.stability

    @property
    def kappa(self) -> float:
        return self.score.kappa

    def to_json(self) -> dict[str, Any]:
        def score_json(s: StabilityScore) -> dict[str, Any]:
            counts = attributes(s, "originals", "pairs", "base_accuracy", "variant_accuracy", "stability")
            return {
                **counts,
                **attributes(s, "stability_ci", "agreement", "kappa", "kappa_ci"),
                "table": [s.both_right, s.right_wrong, s.wrong_right, s.both_wrong],
            }

        return {
            "suite": self.suite, "capability": self.capability, "method": self.method,
            "protocol": self.protocol, "metric": self.metric, "variants_per_item": self.variants_per_item,
            "seed": self.seed, "score": score_json(self.score),
            "by_domain": {d: score_json(s) for d, s in self.by_domain.items()},
            "pairs": [{"id": p.item_id, "correct": p.correct, "variants": list(p.variant_ids),
                       "variant_correct": list(p.variant_correct)} for p in self.pairs],
        }  # fmt: skip


def _metric(protocol: str) -> str:
    return get_protocol(protocol).primary_metric


def _method(suite: Suite, method: str | None) -> str:
    if method is not None:
        if method not in ("numbers", "siblings"):
            raise ConfigError(f"unknown transfer method {method!r}", "use 'numbers' or 'siblings'")
        return method
    if suite.capability == "reasoning":
        return "numbers"
    if suite.capability == "knowledge":
        return "siblings"
    raise ConfigError(
        f"suite {suite.name!r} is a {suite.capability} suite; transfer variants are defined for reasoning "
        "(new numbers) and knowledge (other items of the same kind)",
        "pass method='numbers' or method='siblings' explicitly, or use the reasoning/knowledge suites",
    )


def transfer_stability(
    loaded: LoadedModel,
    suite: str | Suite = "reasoning",
    *,
    limit: int | None = DEFAULT_LIMIT,
    variants: int = DEFAULT_VARIANTS,
    protocol: str | None = None,
    seed: int = DEFAULT_SEED,
    method: str | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    batch_size: int | None = None,
) -> TransferStability:
    """Score the first ``limit`` items of ``suite`` and ``variants`` variants of each; the stability.

    ``method``: "numbers" (reasoning default) regenerates the procedure with new numbers;
    "siblings" (knowledge default) uses other items of the same domain and kind. ``protocol``
    defaults to the suite's own.
    """
    suite = resolve_suite(suite)
    how = _method(suite, method)
    protocol = protocol or suite.default_protocol
    originals = suite.limited(limit).items
    if not originals:
        raise ConfigError(f"suite {suite.name!r} has no items to test", "use a limit above 0")
    children = _children(suite, originals, how, variants, seed)
    unique: dict[str, SuiteItem] = {i.id: i for i in originals}
    for kids in children.values():
        unique.update({k.id: k for k in kids})
    scored_suite = replace(suite, items=tuple(unique.values()))
    runtime = loaded.runtime
    prepared = prepare(scored_suite, protocol, loaded.tokenizer, max_length=runtime.max_length)
    result = score(runtime, prepared, batch_size=batch_size)
    metric = _metric(protocol)
    outcome = {o.item_id: bool(o.scores[metric]) for o in result.outcomes}
    pairs = tuple(
        PairOutcome(
            item.id,
            item.domain,
            item.kind,
            outcome[item.id],
            tuple(k.id for k in children[item.id]),
            tuple(outcome[k.id] for k in children[item.id]),
        )
        for item in originals
    )
    by_domain = {
        domain: _score_of([p for p in pairs if p.domain == domain], seed, 0)
        for domain in dict.fromkeys(p.domain for p in pairs)
    }
    overall = _score_of(pairs, seed, resamples)
    return TransferStability(
        suite.name, suite.capability, how, protocol, metric, variants, seed, overall, pairs, by_domain
    )


def _children(
    suite: Suite, originals: Sequence[SuiteItem], how: str, variants: int, seed: int
) -> dict[str, list[SuiteItem]]:
    """Each original's variants: regenerated numbers (``how="numbers"``) or sibling items."""
    if how == "numbers":
        taken = [i.context for i in suite.items] + [f.context for f in suite.fewshot]
        return {item.id: reasoning_variants(item, variants, seed, exclude=taken) for item in originals}
    return {item.id: knowledge_siblings(suite, item, variants, seed) for item in originals}


def _score_of(pairs: Sequence[PairOutcome], seed: int, resamples: int) -> StabilityScore:
    """The stability score of some (original, variants) pairs."""
    return stability_from_outcomes(
        {p.item_id: p.correct for p in pairs}, {p.item_id: p.variant_correct for p in pairs}, seed, resamples
    )


def contrast(
    loaded: LoadedModel,
    suites: Sequence[str | Suite] = ("reasoning", "knowledge"),
    progress: ProgressHook | None = None,
    **kwargs: Any,
) -> list[TransferStability]:
    """:func:`stability` for each suite (reasoning vs knowledge: procedural vs factual)."""
    results = []
    for step, spec in enumerate(suites):
        if progress:
            progress(str(spec if isinstance(spec, str) else spec.name), step, len(suites))
        results.append(transfer_stability(loaded, spec, **kwargs))
    if progress:
        progress("done", len(suites), len(suites))
    return results
