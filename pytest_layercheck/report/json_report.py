"""A machine-readable report: the profile plus per-cell comparison results and a top-level verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_layercheck.atomic import atomic_write_text
from pytest_layercheck.comparison import CellComparison, ProfileComparison
from pytest_layercheck.profile_data import DepthProfile

from .format import finite, json_text

REPORT_VERSION = 1


def comparison_to_json(comparison: ProfileComparison) -> dict[str, Any]:
    return {
        "passed": comparison.passed,
        "tolerance": {"max_drop": comparison.tolerance.max_drop, "relative": comparison.tolerance.relative},
        "alpha": comparison.alpha,
        "fail_on_improvement": comparison.fail_on_improvement,
        "baseline_model": comparison.baseline_model,
        "counts": comparison.counts(),
        "warnings": list(comparison.warnings),
        "notes": list(comparison.notes),
        "missing_suites": list(comparison.missing_suites),
        "new_suites": list(comparison.new_suites),
        "cells": [_cell_to_json(c) for c in comparison.cells],
    }


def _cell_to_json(cell: CellComparison) -> dict[str, Any]:
    return {
        "suite": cell.suite, "capability": cell.capability, "protocol": cell.protocol, "metric": cell.metric,
        "band": cell.band, "layers": list(cell.layers), "ablations": list(cell.ablations),
        "baseline": cell.baseline, "current": cell.current, "delta": cell.delta, "allowed": cell.allowed,
        "worse": cell.worse, "better": cell.better, "pairs": cell.pairs, "p_value": cell.p_value,
        "status": cell.status, "failed": cell.failed,
    }


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
