"""A comparison in words and in JSON: the one wording of a changed cell, shared by failure messages,
reports and analyses, so a cell reads the same everywhere.

Every number is shown next to its metric name (``acc`` vs ``acc_norm`` confusion is a known pitfall),
values use three decimals, and a JSON cell lists the items that got worse or better, with prompts and
answers when the suite can be loaded and is the version the profile scored (as lm-eval's
``--log_samples`` lets a reviewer read them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pytest_layercheck.data.profile_data import INTACT, DepthProfile
from pytest_layercheck.evaluation.comparison import sensitivity_warning
from pytest_layercheck.evaluation.comparison_result import EFFECT_FLOOR, SHIFT, CellComparison, ProfileComparison

if TYPE_CHECKING:
    from pytest_layercheck.suites.schema import SuiteItem


def fmt_value(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def fmt_delta(delta: float) -> str:
    return f"{delta:+.3f}" if math.isfinite(delta) else "n/a"


def fmt_p(p: float) -> str:
    """Three decimals, switching to scientific notation where that would print 0.000."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def unit_name(cell: CellComparison) -> str:
    """What the paired test counted: items (a band's item outcome is averaged over its ablations)."""
    return "items" if cell.band == INTACT else "items (averaged over the band's ablations)"


def describe_change(cell: CellComparison, with_label: bool = True) -> str:
    """``knowledge/shallow acc dropped 0.620 -> 0.410 (p=0.003)``: the one-line form (annotations). A shift
    cell: ``knowledge/shift p_correct moved deeper: centre of depth 0.310 -> 0.520 (p=0.001)``."""
    if cell.band == SHIFT:
        verb = "moved deeper" if cell.delta > 0 else "moved shallower" if cell.delta < 0 else "stayed"
        change = (
            f"{verb}: centre of depth {fmt_value(cell.baseline)} -> {fmt_value(cell.current)} (p={fmt_p(cell.p_value)})"
        )
        return f"{cell.label} {change}" if with_label else change
    verb = "dropped" if cell.delta < 0 else "rose" if cell.delta > 0 else "stayed at"
    change = f"{verb} {fmt_value(cell.baseline)} -> {fmt_value(cell.current)} (p={fmt_p(cell.p_value)})"
    return f"{cell.label} {change}" if with_label else change


def describe_detail(cell: CellComparison) -> str:
    """The evidence behind a status: effect vs tolerance and the discordant counts (a shift: the move vs the
    allowed one, over items x layers)."""
    if cell.band == SHIFT:
        return (
            f"Δ {fmt_delta(cell.delta)} of depth vs allowed {cell.allowed:g}; {cell.items} items x "
            f"{len(cell.layers)} single-layer removals"
        )
    return (
        f"Δ {fmt_delta(cell.delta)} vs tolerance {cell.allowed:g}; {len(cell.worse_items)} of {cell.items} "
        f"{unit_name(cell)} got worse, {len(cell.better_items)} better"
    )


#: ``(suite, content_hash) -> {item id: {"prompt": ..., "answer": gold text, "choices": [...]}}``; "choices"
#: (a list of strings) only for multiple-choice items, so that a recorded choice index can be shown as text.
ItemTexts = Callable[[str, str], dict[str, dict[str, Any]]]
#: ``suite -> {item id: what this run's model answered, as text}`` (:func:`answer_texts`).
AnswerTexts = Callable[[str], Mapping[str, str]]


def answer_texts(profile: DepthProfile, suite: str, texts: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """What ``profile``'s model answered per item of ``suite`` (its intact evaluation's recorded answers), as
    text: the chosen choice's text for a multiple-choice item (``choice N`` where the suite's texts are not
    known), the generated answer for a generation. Empty where nothing was recorded (a profile read from a
    file, a continuation protocol, an evaluation from an older cache entry)."""
    info = profile.suites.get(suite)
    evaluation = profile.evaluations.get((suite, info.protocol, INTACT)) if info is not None else None
    if info is None or evaluation is None or evaluation.answers is None:
        return {}
    shown: dict[str, str] = {}
    for item, answer in zip(info.item_ids, evaluation.answers):
        if isinstance(answer, int):
            choices = texts.get(item, {}).get("choices")
            known = isinstance(choices, (list, tuple)) and 0 <= answer < len(choices)
            shown[item] = str(choices[answer]) if known else f"choice {answer}"  # type: ignore[index]
        else:
            shown[item] = answer
    return shown


def profile_answers(
    profile: DepthProfile, item_texts: ItemTexts | None = None, hashes: Mapping[str, str] | None = None
) -> AnswerTexts:
    """:func:`answer_texts` of ``profile`` for any suite, with the item texts of ``item_texts``."""
    texts = item_texts or suite_item_texts

    def answers(suite: str) -> Mapping[str, str]:
        info = profile.suites.get(suite)
        content_hash = (hashes or {}).get(suite) or (info.content_hash if info is not None else "")
        return answer_texts(profile, suite, texts(suite, content_hash))

    return answers


def comparison_to_json(
    comparison: ProfileComparison, item_texts: ItemTexts | None = None, answers: AnswerTexts | None = None
) -> dict[str, Any]:
    """``item_texts(suite, content_hash)`` gives ``{id: {"prompt": ..., "answer": ...}}`` (default: the
    suite from ``resolve_suite`` when its content hash matches; ids alone otherwise). ``answers(suite)``
    gives this run's answer per item (:func:`profile_answers`), added to the changed items as
    ``candidate_answer`` where known."""
    texts = item_texts or suite_item_texts
    chosen = answers or (lambda suite: {})
    return {
        "passed": comparison.passed,
        "tolerance": {"max_drop": comparison.tolerance.max_drop, "relative": comparison.tolerance.relative},
        "alpha": comparison.alpha,
        "correction": comparison.correction,
        "family_size": comparison.family_size,
        "criteria": comparison.criteria(),
        "effect_floor": EFFECT_FLOOR,
        "power": comparison.power,
        "detection_alpha": comparison.detection_alpha,
        "flip_rate": comparison.flip_rate,
        "max_shift": comparison.max_shift,
        "precision_mismatch": comparison.precision_mismatch,
        "underpowered": [c.label for c in comparison.underpowered],
        "sensitivity_warning": sensitivity_warning(comparison),
        "fail_on_improvement": comparison.fail_on_improvement,
        "baseline_model": comparison.baseline_model,
        "counts": comparison.counts(),
        "warnings": list(comparison.warnings),
        "notes": list(comparison.notes),
        "missing_suites": list(comparison.missing_suites),
        "new_suites": list(comparison.new_suites),
        "cells": [
            _cell_to_json(c, texts(c.suite, comparison.suite_hashes.get(c.suite, "")), chosen(c.suite))
            for c in comparison.cells
        ],
    }


def _test_text(cell: CellComparison) -> str:
    """Which statistic and test a cell used, in words (every report says it)."""
    if cell.band == SHIFT:
        return (
            f"centre of depth of the {cell.metric} lost per removed layer; two-sided paired permutation test over items"
        )
    return {
        "McNemar": f"exact McNemar test of per-item {cell.metric}",
        "sign-flip": f"exact sign-flip test of per-item {cell.metric} shares over the band's removals",
        "score sign-flip": f"exact sign-flip test of the per-item change in mean {cell.metric}",
        "signed-rank": f"Wilcoxon signed-rank test of the per-item change in {cell.metric}",
    }.get(cell.test, cell.test)


def _item_to_json(item: str, texts: Mapping[str, Mapping[str, Any]], chosen: Mapping[str, str]) -> dict[str, Any]:
    entry = {"id": item, **{k: v for k, v in texts.get(item, {}).items() if k != "choices"}}
    if item in chosen:
        entry["candidate_answer"] = chosen[item]
    return entry


def _cell_to_json(
    cell: CellComparison, texts: Mapping[str, Mapping[str, Any]], chosen: Mapping[str, str]
) -> dict[str, Any]:
    """One cell as strict JSON: a number a cell does not have (``flip_rate`` of a score cell, an infinite
    detectable drop) is ``null``, since JSON readers reject NaN and Infinity."""
    fields = {
        "suite": cell.suite,
        "capability": cell.capability,
        "protocol": cell.protocol,
        "metric": cell.metric,
        "band": cell.band,
        "layers": list(cell.layers),
        "ablations": list(cell.ablations),
        "baseline": cell.baseline,
        "current": cell.current,
        "delta": cell.delta,
        "allowed": cell.allowed,
        "test": cell.test,
        "items": cell.items,
        "p_value": cell.p_value,
        "p_adjusted": cell.p_adjusted,
        "ci_low": cell.ci_low,
        "ci_high": cell.ci_high,
        "detectable_drop": cell.detectable_drop,
        "flip_rate": cell.flip_rate,
        "score_sd": cell.score_sd,
        "metric_test": _test_text(cell),
        "status": cell.status,
        "failed": cell.failed,
        "worse_items": [_item_to_json(i, texts, chosen) for i in cell.worse_items],
        "better_items": [_item_to_json(i, texts, chosen) for i in cell.better_items],
        # (item, ablation) pairs, descriptive only: the test's unit is the item
        "worse": cell.worse,
        "better": cell.better,
        "pairs": cell.pairs,
    }
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value for key, value in fields.items()
    }


def suite_item_texts(suite: str, content_hash: str) -> dict[str, dict[str, Any]]:
    """Prompt (the item's context) and answer per item id of the suite the profile scored, or ``{}``."""
    return dict(_item_texts(suite, content_hash))


@lru_cache(maxsize=16)
def _item_texts(suite: str, content_hash: str) -> tuple[tuple[str, dict[str, Any]], ...]:
    from pytest_layercheck.core.errors import LayercheckError
    from pytest_layercheck.suites.builtin import resolve_suite

    try:
        loaded = resolve_suite(suite)
    except (LayercheckError, OSError, ValueError):
        return ()
    if not content_hash or loaded.content_hash != content_hash:
        return ()  # another version of the suite: its texts could belong to other items
    return tuple((item.id, item_text(item)) for item in loaded.items)


def item_text(item: SuiteItem) -> dict[str, Any]:
    """What a report shows of one item: its prompt (context), gold answer text, and choices if it has any."""
    return {
        "prompt": item.context,
        **({"answer": item.answer_text} if item.answer_text else {}),
        **({"choices": list(item.choices)} if item.choices else {}),
    }
