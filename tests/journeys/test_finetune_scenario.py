"""The fine-tune scenario of examples/finetune_scenario.py, CI-sized, on the real default model.

Fine-tunes SmolLM2-135M-Instruct twice on a CPU (a hard chain-of-thought SFT and a gentle in-distribution
one), saves both candidates, and runs the guard on them, as a user runs the script (the session's
``finetune_scenario`` fixture, whose candidates the user-journey test guards too). The guard must fail the harmful candidate and
pass the benign one, and the comparison must localise the harmful loss to the fine-tuned layers.
About 1.5-3 minutes on one CPU thread (see examples/README.md for measured times).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from repo_files import EXAMPLES
from run_shared import Scenario

#: Minutes of fine-tuning, started first: its candidates serve the user journey too.
pytestmark = [pytest.mark.real_model, pytest.mark.early(1)]

SCRIPT = EXAMPLES / "finetune_scenario.py"


def load_script():  # noqa: ANN201 - a module object
    spec = importlib.util.spec_from_file_location("finetune_scenario", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_guard_fails_the_harmful_fine_tune_and_passes_the_benign_one(finetune_scenario: Scenario) -> None:
    scenario = load_script()
    folder, process = finetune_scenario.folder, finetune_scenario.process
    output = process.stdout + process.stderr
    assert process.returncode == 0, output
    timings = json.loads((folder / "timings.json").read_text())
    harmful, benign = timings["guard"]["harmful"], timings["guard"]["benign"]

    assert not harmful["passed"] and harmful["candidate_acc"] < harmful["base_acc"] - 0.1
    assert harmful["p_value"] < 0.05
    assert benign["passed"] and benign["candidate_acc"] >= benign["base_acc"] - 0.05
    assert "guard told the candidates apart" in process.stdout

    report = json.loads((folder / "harmful-report.json").read_text())
    trained = set(scenario.TRAINED_LAYERS)
    assert set(report["weights"]["most_changed"]) <= trained  # only the fine-tuned layers moved
    untouched = [row for row in report["weights"]["layers"] if row["layer"] not in trained]
    assert all(row["relative"] == 0 for row in untouched)
    entry = report["localisation"]["suites"][0]
    restorations = {tuple(r["group"]["layers"]): r for r in entry["restorations"]}
    # Reverting every fine-tuned layer gives back exactly the base accuracy (the rest is identical).
    assert restorations[tuple(sorted(trained))]["accuracy"] == entry["base"]
    assert entry["restored_by"] is not None and set(entry["restored_by"]["layers"]) <= trained
    assert report["verdicts"] and "is restored by reverting layers" in report["verdicts"][0]


@pytest.mark.parametrize("guard", ["--compare", "--guard-only"])
def test_only_one_candidate_cannot_be_guarded(tmp_path: Path, guard: str) -> None:
    """``--only`` builds one candidate (the user-journey's held-out fine-tune uses it); the guard needs
    both, so asking for both is a usage error that names the fix, before any model loads."""
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--only", "harmful", guard],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "--only harmful builds one candidate" in run.stderr and "drop --only" in run.stderr
    assert not (tmp_path / "out").exists()
