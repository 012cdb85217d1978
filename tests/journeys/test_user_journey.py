"""A new user's first hour, run as that user would: subprocesses in a temporary project folder.

The README's path, on the real default model (SmolLM2-135M-Instruct): every ``--help``; ``layercheck
baseline`` writing, merging and refusing; the committed ``baselines/`` reproduced exactly by
``layercheck baseline default``; the copied ``examples/`` passing on the default model; and the
examples guarding two candidates made by ``examples/finetune_scenario.py --quick``: the harmful one
fails through the knowledge/intact marker check (with the job summary, the JSON report, JUnit
properties and a GitHub annotation), the harmless one passes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from repo_files import REPO
from run_shared import Scenario, run_once
from user_shell import sh, user_env

pytestmark = [pytest.mark.real_model, pytest.mark.early(3)]  # minutes of CLI runs on the default model: started first

BASELINE = "smollm2-135m-instruct"
SUBCOMMANDS = (
    "profile",
    "baseline",
    "compare",
    "heads",
    "retrieval-heads",
    "redundancy",
    "thinking",
    "transfer",
    "info",
    "cache",
)


def output(process: subprocess.CompletedProcess[str]) -> str:
    return process.stdout + process.stderr


@pytest.fixture(scope="module")
def user_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's project: the examples copied in, the committed baselines beside them."""
    root = tmp_path_factory.mktemp("user-project")
    for name in ("test_model_guard.py", "layercheck_guards.yaml", "pytest.ini"):
        shutil.copy(REPO / "examples" / name, root / name)
    shutil.copytree(REPO / "baselines", root / "baselines")
    return root


#: A held-out harmful fine-tune, unlike the scenario's recipe: chain-of-thought arithmetic SFT on the
#: shallow layers 0-8 only, 8 steps at lr 1e-3, seed 1 (calibrated once to cost intact knowledge about
#: 0.08-0.1 on the full suite, measured in test_a_held_out_harmful_fine_tune_fails).
HELD_OUT = ("--layers", "0-8", "--harmful-steps", "8", "--harmful-lr", "1e-3", "--seed", "1")


@pytest.fixture(scope="session")
def candidates(run_folder: Path, finetune_scenario: Scenario) -> dict[str, Path]:
    """Fine-tunes of the default model made by the documented script (its CI-sized variant, shared with
    test_finetune_scenario), and a held-out harmful one made with other layers, steps, rate and seed
    (each made once per run, on one worker)."""
    made = finetune_scenario.process
    assert made.returncode == 0, output(made)
    made = run_once(
        run_folder,
        "held-out",
        [sys.executable, str(REPO / "examples" / "finetune_scenario.py"), "--quick", "--only", "harmful", *HELD_OUT],
        timeout=1200,
        env=user_env(),
    )
    assert made.returncode == 0, output(made)
    held_out = run_folder / "held-out"
    assert not (held_out / "benign").exists()  # --only harmful: the held-out fine-tune is built alone
    return {
        "harmful": finetune_scenario.harmful,
        "harmless": finetune_scenario.benign,
        "held-out": held_out / "harmful",
    }


def test_every_help_works(user_project: Path) -> None:
    pytest_help = sh(sys.executable, "-m", "pytest", "--help", cwd=user_project)
    assert pytest_help.returncode == 0, output(pytest_help)
    for option in (
        "--layercheck-max-drop",
        "--layercheck-update",
        "--layercheck-sweep-limit",
        "--layercheck-allow-model-change",
        "5%",
    ):
        assert option in pytest_help.stdout, option
    main_help = sh("layercheck", "--help", cwd=user_project)
    assert main_help.returncode == 0 and all(name in main_help.stdout for name in SUBCOMMANDS), output(main_help)
    version = sh("layercheck", "--version", cwd=user_project)
    assert version.returncode == 0 and version.stdout.strip().startswith("layercheck "), output(version)
    for name in SUBCOMMANDS:
        sub = sh("layercheck", name, "--help", cwd=user_project)
        assert sub.returncode == 0 and f"usage: layercheck {name}" in sub.stdout, output(sub)


def test_layercheck_profile_prints_where_each_capability_lives(user_project: Path) -> None:
    """README quick start: ``layercheck profile`` (here on fewer items, with --no-compare: the committed
    baseline found by the model's name holds other items); no library warnings leak into what the user reads."""
    short = ("--suites", "knowledge", "--limit", "12", "--sweep-limit", "3")
    run = sh("layercheck", "profile", *short, "--no-compare", "--json", "profile.json", cwd=user_project)
    text = output(run)
    assert run.returncode == 0, text
    assert "where each capability lives" in run.stdout and "knowledge" in run.stdout
    assert "Warning" not in text, text
    assert json.loads((user_project / "profile.json").read_text())["comparison"] is None
    assert json.loads((user_project / "profile.json").read_text())["profile"]["suites"]["knowledge"]
    # Without --no-compare, a baseline found by name that holds other items is an error, never a silent pass.
    found = sh("layercheck", "profile", *short, cwd=user_project)
    assert found.returncode == 2 and "found the baseline" in found.stderr, output(found)
    assert "--no-compare" in found.stderr
    named = sh(
        "layercheck",
        "profile",
        "--suites",
        "knowledge",
        "--limit",
        "12",
        "--sweep-limit",
        "3",
        "--baseline",
        BASELINE,
        cwd=user_project,
    )
    assert named.returncode == 2 and "How to fix" in named.stderr, output(named)  # asked for by name: an error


def test_layercheck_baseline_writes_keeps_merges_and_refuses(user_project: Path) -> None:
    folder = user_project / "small-baselines"
    small = ("--baseline-dir", folder, "--name", "small", "--mode", "bands", "--sweep-limit", "4")
    path = folder / "small.json"

    first = sh("layercheck", "baseline", "default", "--suites", "knowledge", "--limit", "12", *small, cwd=user_project)
    assert first.returncode == 0 and "baseline written" in first.stdout, output(first)
    assert "+ knowledge/intact p_correct" in first.stdout and path.is_file()

    again = sh("layercheck", "baseline", "default", "--suites", "knowledge", "--limit", "12", *small, cwd=user_project)
    assert again.returncode == 0 and "baseline unchanged" in again.stdout, output(again)

    # Another suite is merged in: the knowledge entries stay as they were.
    before = json.loads(path.read_text())
    merged = sh(
        "layercheck",
        "baseline",
        "default",
        "--suites",
        "reasoning",
        "--limit",
        "6",
        *small,
        "--update",
        cwd=user_project,
    )
    assert merged.returncode == 0 and "baseline updated" in merged.stdout, output(merged)
    assert "+ reasoning/intact" in merged.stdout and "- knowledge" not in merged.stdout
    after = json.loads(path.read_text())
    assert set(after["suites"]) == {"knowledge", "reasoning"}
    assert after["evaluations"]["knowledge"] == before["evaluations"]["knowledge"]

    # A different measurement of a recorded suite is refused without --update, and nothing changes.
    text = path.read_text()
    refused = sh(
        "layercheck", "baseline", "default", "--suites", "knowledge", "--limit", "13", *small, cwd=user_project
    )
    assert refused.returncode == 2, output(refused)
    said = " ".join(refused.stderr.split())
    assert "exists and this run differs from it: ~ knowledge/intact p_correct" in said and "--update" in said
    assert path.read_text() == text


# Runs after the early tests, when the run's result cache holds part of its work: the committed baseline's
# knowledge suite shares 11 of its 32 evaluations with the examples on the default model (on the quiet
# 2-core CPU, 22.5 s wall after them against 40.3 s with an empty result cache).
@pytest.mark.late
def test_the_committed_baseline_is_what_layercheck_baseline_computes(user_project: Path) -> None:
    """README: ``layercheck baseline default``. On the committed file it must change nothing: the
    shipped baseline is reproduced exactly by today's code at the default settings. (The knowledge
    suite, every item intact and the full 30-layer sweep, re-recorded and merged, to keep CI short.)"""
    path = user_project / "baselines" / f"{BASELINE}.json"
    before = path.read_bytes()
    run = sh("layercheck", "baseline", "default", "--suites", "knowledge", cwd=user_project)
    assert run.returncode == 0, output(run)
    assert f"baseline unchanged: baselines/{BASELINE}.json" in run.stdout, output(run)
    assert path.read_bytes() == before


def test_the_examples_pass_on_the_default_model(user_project: Path) -> None:
    run = sh(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", cwd=user_project)
    assert run.returncode == 0, output(run)
    assert "layercheck depth-sensitivity profile" in run.stdout
    assert "FutureWarning" not in output(run)


#: The example's knowledge guards. The harmful candidate runs only these (what it must fail, at a fifth
#: of the whole examples' cost); the harmless one runs every guard, since green must mean all of them.
KNOWLEDGE_GUARDS = (
    "test_model_guard.py::test_knowledge_not_lost",
    "test_model_guard.py::test_knowledge_still_lives_in_the_shallow_layers",
)


def test_a_harmful_fine_tune_fails_the_knowledge_check(user_project: Path, candidates: dict[str, Path]) -> None:
    summary = user_project / "summary-harmful.md"
    env = user_env(GITHUB_STEP_SUMMARY=str(summary), GITHUB_ACTIONS="true")
    run = sh(
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        f"--layercheck-model={candidates['harmful']}",
        f"--layercheck-baseline={BASELINE}",
        "--layercheck-report=report.json",
        "--junitxml=junit.xml",
        *KNOWLEDGE_GUARDS,
        cwd=user_project,
        env=env,
    )
    text = output(run)
    assert run.returncode == 1, text
    assert "FAILED test_model_guard.py::test_knowledge_not_lost" in run.stdout, text
    assert "knowledge/intact: p_correct fell from" in run.stdout, text
    assert "::error file=test_model_guard.py,line=" in run.stdout and "title=layercheck::knowledge/intact" in run.stdout
    report = json.loads((user_project / "report.json").read_text())
    assert report["comparison"]["passed"] is False
    failing = {(c["suite"], c["band"]) for c in report["comparison"]["cells"] if c["failed"]}
    assert ("knowledge", "intact") in failing
    assert "knowledge" in summary.read_text() and "intact" in summary.read_text()
    junit = (user_project / "junit.xml").read_text()
    assert 'name="layercheck_cell" value="knowledge/intact"' in junit


def test_a_harmless_fine_tune_passes(user_project: Path, candidates: dict[str, Path]) -> None:
    summary = user_project / "summary-harmless.md"
    run = sh(
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        f"--layercheck-model={candidates['harmless']}",
        f"--layercheck-baseline={BASELINE}",
        "--layercheck-report=report-harmless.json",
        cwd=user_project,
        env=user_env(GITHUB_STEP_SUMMARY=str(summary)),
    )
    assert run.returncode == 0, output(run)
    report = json.loads((user_project / "report-harmless.json").read_text())
    assert report["comparison"]["passed"] is True
    assert summary.is_file()


def test_recording_the_candidate_as_its_own_baseline_is_refused(
    user_project: Path, candidates: dict[str, Path]
) -> None:
    before = (user_project / "baselines" / f"{BASELINE}.json").read_bytes()
    run = sh(
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        f"--layercheck-model={candidates['harmful']}",
        f"--layercheck-baseline={BASELINE}",
        "--layercheck-update",
        "test_model_guard.py::test_knowledge_not_lost",
        cwd=user_project,
    )
    assert run.returncode == 1, output(run)
    assert "refusing to record the baseline" in run.stdout and "--layercheck-allow-model-change" in run.stdout
    assert (user_project / "baselines" / f"{BASELINE}.json").read_bytes() == before


def test_a_held_out_harmful_fine_tune_fails(user_project: Path, candidates: dict[str, Path]) -> None:
    """A fine-tune that costs intact knowledge at least 0.08 on the full suite fails the example's
    ``test_knowledge_not_lost`` at the default settings (that check alone: the knowledge suite intact, in
    its two parts: the 140 items a sweep would score intact anyway, and the others)."""
    run = sh(
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        f"--layercheck-model={candidates['held-out']}",
        f"--layercheck-baseline={BASELINE}",
        "--layercheck-report=report-held-out.json",
        "test_model_guard.py::test_knowledge_not_lost",
        cwd=user_project,
    )
    assert run.returncode == 1, output(run)
    cell = next(
        c
        for c in json.loads((user_project / "report-held-out.json").read_text())["comparison"]["cells"]
        if (c["suite"], c["band"]) == ("knowledge", "intact")
    )
    print(f"held-out fine-tune: knowledge/intact {cell['baseline']:.3f} -> {cell['current']:.3f}")
    assert cell["baseline"] - cell["current"] >= 0.08 and cell["failed"]
    counts = re.search(r"\(evaluations: (\d+) from cache, (\d+) computed", run.stdout)
    assert counts and sum(map(int, counts.groups())) == 2, run.stdout  # the two parts, from cache on a rerun


def test_profile_judges_by_the_metric_and_shift_the_user_names(user_project: Path, tmp_path: Path) -> None:
    """``layercheck profile --metric acc --max-shift 0.2`` against a baseline recorded the same way: the cells
    are the acc ones, the criteria name the allowed shift; a misspelt metric is a usage error naming the fix."""
    small = ("--suites", "knowledge", "--limit", "12", "--sweep-limit", "3", "--baseline-dir", tmp_path)
    recorded = sh("layercheck", "baseline", "default", *small, cwd=user_project)
    assert recorded.returncode == 0 and "baseline written" in recorded.stdout, output(recorded)
    run = sh(
        "layercheck", "profile", *small, "--metric", "acc", "--max-shift", "0.2", "--json", "acc.json", cwd=user_project
    )
    assert run.returncode == 0, output(run)
    cells = json.loads((user_project / "acc.json").read_text())["comparison"]["cells"]
    assert {c["metric"] for c in cells} == {"acc"} and any(c["band"] == "shift" for c in cells)
    assert " ".join(run.stdout.split()).count("0.5 x 0.2 of depth") == 1
    typo = sh("layercheck", "profile", *small, "--metric", "p_corect", cwd=user_project)
    assert typo.returncode == 2 and "unknown metric 'p_corect' (did you mean 'p_correct'?)" in typo.stderr, output(typo)
