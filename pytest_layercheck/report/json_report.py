"""A machine-readable report: the profile plus per-cell comparison results and a top-level verdict.

Each compared cell carries its test, raw and adjusted p, confidence interval, detectable drop and the
items that got worse or better, with their prompts and answers when the suite can be loaded and is
the version the profile scored (as lm-eval's ``--log_samples`` lets a reviewer read them).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from pytest_layercheck.atomic import atomic_write_text
from pytest_layercheck.comparison import EFFECT_FLOOR, CellComparison, ProfileComparison, sensitivity_warning
from pytest_layercheck.profile_data import DepthProfile

from .format import finite, json_text

REPORT_VERSION = 2

ItemTexts = Callable[[str, str], dict[str, dict[str, str]]]


def comparison_to_json(comparison: ProfileComparison, item_texts: ItemTexts | None = None) -> dict[str, Any]:
    """``item_texts(suite, content_hash)`` gives ``{id: {"prompt": ..., "answer": ...}}`` (default: the
    suite from ``resolve_suite`` when its content hash matches; ids alone otherwise)."""
    texts = item_texts or suite_item_texts
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
        "cells": [_cell_to_json(c, texts(c.suite, comparison.suite_hashes.get(c.suite, ""))) for c in comparison.cells],
    }


def _cell_to_json(cell: CellComparison, texts: dict[str, dict[str, str]]) -> dict[str, Any]:
    return {
        "suite": cell.suite, "capability": cell.capability, "protocol": cell.protocol, "metric": cell.metric,
        "band": cell.band, "layers": list(cell.layers), "ablations": list(cell.ablations),
        "baseline": cell.baseline, "current": cell.current, "delta": cell.delta, "allowed": cell.allowed,
        "test": cell.test, "items": cell.items, "p_value": cell.p_value, "p_adjusted": cell.p_adjusted,
        "ci_low": cell.ci_low, "ci_high": cell.ci_high, "detectable_drop": cell.detectable_drop,
        "flip_rate": cell.flip_rate, "status": cell.status, "failed": cell.failed,
        "worse_items": [{"id": i, **texts.get(i, {})} for i in cell.worse_items],
        "better_items": [{"id": i, **texts.get(i, {})} for i in cell.better_items],
        # (item, ablation) pairs, descriptive only: the test's unit is the item
        "worse": cell.worse, "better": cell.better, "pairs": cell.pairs,
    }


def suite_item_texts(suite: str, content_hash: str) -> dict[str, dict[str, str]]:
    """Prompt (the item's context) and answer per item id of the suite the profile scored, or ``{}``."""
    return dict(_item_texts(suite, content_hash))


@lru_cache(maxsize=16)
def _item_texts(suite: str, content_hash: str) -> tuple[tuple[str, dict[str, str]], ...]:
    from pytest_layercheck.errors import LayercheckError
    from pytest_layercheck.suites.builtin import resolve_suite

    try:
        loaded = resolve_suite(suite)
    except (LayercheckError, OSError, ValueError):
        return ()
    if not content_hash or loaded.content_hash != content_hash:
        return ()  # another version of the suite: its texts could belong to other items
    return tuple((item.id, {"prompt": item.context, **({"answer": item.answer_text} if item.answer_text else {})})
                 for item in loaded.items)


def build_json_report(profile: DepthProfile, comparison: ProfileComparison | None = None) -> dict[str, Any]:
    """``passed`` is true without a comparison: a run that only records a profile has nothing to fail."""
    return finite({
        "report_version": REPORT_VERSION,
        "passed": comparison.passed if comparison is not None else True,
        "profile": profile.to_json(),
        "comparison": comparison_to_json(comparison) if comparison is not None else None,
    })


def write_json_report(path: Path | str, profile: DepthProfile, comparison: ProfileComparison | None = None) -> Path:
    """Write the report atomically (a CI step reading it never sees half a file); returns the path."""
    path = Path(path)
    atomic_write_text(path, json_text(build_json_report(profile, comparison)))
    return path
