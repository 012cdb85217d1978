"""A machine-readable report: the profile plus per-cell comparison results and a top-level verdict.

Each compared cell carries its test, raw and adjusted p, confidence interval, detectable drop and the
items that got worse or better, with their prompts and answers when the suite can be loaded and is
the version the profile scored (as lm-eval's ``--log_samples`` lets a reviewer read them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_layercheck.core.atomic import atomic_write_text
from pytest_layercheck.data.profile_data import DepthProfile
from pytest_layercheck.evaluation.comparison_result import ProfileComparison
from pytest_layercheck.evaluation.describe import comparison_to_json, profile_answers
from pytest_layercheck.report.format import finite, json_text

REPORT_VERSION = 3  # 3: ``passed`` is the run's verdict (a refused comparison or a failed check fails it)


def build_json_report(
    profile: DepthProfile,
    comparison: ProfileComparison | None = None,
    *,
    refused: str | None = None,
    failed_checks: Sequence[str] = (),
) -> dict[str, Any]:
    """``passed`` agrees with the exit status: false when the comparison with the baseline was refused
    (``refused`` says why) or a check failed (``failed_checks``, pytest node ids); true for a run that only
    records a profile, which has nothing to fail."""
    passed = refused is None and not failed_checks and (comparison.passed if comparison is not None else True)
    return finite(
        {
            "report_version": REPORT_VERSION,
            "passed": passed,
            "refused": refused,
            "failed_checks": list(failed_checks),
            "profile": profile.to_json(),
            "comparison": comparison_to_json(
                comparison, answers=profile_answers(profile, hashes=comparison.suite_hashes)
            )
            if comparison is not None
            else None,
        }
    )


def write_json_report(
    path: Path | str,
    profile: DepthProfile,
    comparison: ProfileComparison | None = None,
    *,
    refused: str | None = None,
    failed_checks: Sequence[str] = (),
) -> Path:
    """Write the report atomically (a CI step reading it never sees half a file); returns the path."""
    path = Path(path)
    atomic_write_text(
        path, json_text(build_json_report(profile, comparison, refused=refused, failed_checks=failed_checks))
    )
    return path
