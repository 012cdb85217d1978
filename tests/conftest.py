"""Test-wide settings: tiny-model tests run single-threaded (thread start-up dominates their tiny
matmuls, and 2 threads on a busy 2-core machine made them ~100x slower)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from repo_files import REPO
from run_shared import Scenario, run_once

from pytest_layercheck.model.loading import LoadedModel, load_model
from pytest_layercheck.scoring import engine

#: The helper modules that define fixtures, for every module: the fault-injection matrix's world, the plugin
#: tests' project and models, lm-eval's task folder (test modules import the helpers' functions themselves).
pytest_plugins = ["pytester", "fault_world", "plugin_project", "lm_eval_parity"]

torch.set_num_threads(1)
# The plugin and the CLI choose their thread count when they load a model; in this process (and the
# subprocesses of tests that do not set their own environment) that choice is one thread too.
os.environ.setdefault("LAYERCHECK_THREADS", "1")


#: Modules of long tests, first to last: xdist hands tests out one by one in collection order, so these
#: start first and no worker is left with a long one at the end. The fine-tune scenario leads (one
#: worker makes the candidates while the other runs the quick start's installs).
LONG_FIRST = ("test_finetune_scenario.py", "test_quick_start.py", "test_user_journey.py", "test_harmless_noise.py")
#: Tests that find part of their work in the run's result cache when they run after the long ones: the
#: committed baseline's knowledge suite shares 11 of its 32 evaluations with the examples on the default
#: model (on the quiet 2-core CPU, 22.5 s wall after them against 40.3 s with an empty result cache).
LAST = ("test_the_committed_baseline_is_what_layercheck_baseline_computes",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest work first, then the rest as collected, then :data:`LAST`; the order within each group is
    kept, so the run stays deterministic."""

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        if getattr(item, "originalname", item.name) in LAST:
            return len(LONG_FIRST) + 1
        return LONG_FIRST.index(name) if name in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)  # stable


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every xdist worker of this run shares (the run's base temporary folder when serial)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def smollm() -> LoadedModel:
    """The real default model (SmolLM2-135M-Instruct) on the CPU, loaded once for every real-model test."""
    return load_model("default", device="cpu")


@pytest.fixture
def one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompt batches mix any lengths (no split where padding dominates), as some engine tests need."""
    monkeypatch.setattr(engine, "MIN_FILL", 0.0)


@pytest.fixture(scope="session")
def finetune_scenario(run_folder: Path) -> Scenario:
    """The documented fine-tune scenario, CI-sized, run once as a user runs it (a subprocess): two
    fine-tunes of the default model, then the guard with localisation. Its candidates serve every test
    that needs a harmful or a benign fine-tune, so the fine-tuning is paid once per run, on one worker."""
    process = run_once(
        run_folder,
        "scenario",
        [
            sys.executable,
            str(REPO / "examples" / "finetune_scenario.py"),
            "--quick",
            "--compare",
            "--limit",
            "40",
            "--localise",
            "changed",
            "--threads",
            "1",
        ],
        timeout=1800,
    )
    return Scenario(run_folder / "scenario", process)


#: What the fine-tune tests leave in the run's shared folder: two or three 0.5 GB checkpoints.
LARGE_SHARED = ("scenario", "held-out")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller (or a run without xdist) removes the fine-tuned checkpoints once every worker is done."""
    if hasattr(session.config, "workerinput"):
        return
    base = session.config._tmp_path_factory.getbasetemp()  # the workers' shared folder, as run_folder gives it
    for name in LARGE_SHARED:
        shutil.rmtree(base / name, ignore_errors=True)
