"""The commands docs/contributing.md gives contributors, run as they type them: the fast tier leaves out
every slow and real-model test, and the suite runs without pytest-xdist."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from repo_files import REPO

pytestmark = pytest.mark.slow  # it collects the whole suite in a subprocess


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_the_fast_tier_deselects_the_slow_and_real_model_tests() -> None:
    fast = _pytest("-m", "not slow", "--collect-only", "-q", "-n", "0")
    assert fast.returncode == 0, fast.stdout[-2000:] + fast.stderr[-2000:]
    summary = fast.stdout.splitlines()[-1]  # "N/M tests collected (K deselected) in ..."
    selected, total, deselected = map(
        int, re.match(r"(\d+)/(\d+) tests collected \((\d+) deselected\)", summary).groups()
    )
    assert selected + deselected == total and deselected > 0
    collected = [line for line in fast.stdout.splitlines() if "::" in line]
    assert len(collected) == selected
    assert all("tests/journeys/test_quick_start.py" not in line for line in collected)  # real_model, so slow
    assert all("tests/journeys/test_user_journey.py" not in line for line in collected)
    assert any(line.startswith("tests/unit/") for line in collected)


def test_the_suite_runs_without_pytest_xdist() -> None:
    result = _pytest("-p", "no:xdist", "-q", "tests/meta/test_layers.py")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "passed" in result.stdout.splitlines()[-1] and "workers" not in result.stdout
