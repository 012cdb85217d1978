"""Test-wide settings: tiny-model tests run single-threaded (thread start-up dominates their tiny
matmuls, and 2 threads on a busy 2-core machine made them ~100x slower)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from pytest_layercheck.model.loading import LoadedModel, load_model
from pytest_layercheck.scoring import engine

pytest_plugins = ["pytester"]

torch.set_num_threads(1)
# The plugin and the CLI choose their thread count when they load a model; in this process (and the
# subprocesses of tests that do not set their own environment) that choice is one thread too.
os.environ.setdefault("LAYERCHECK_THREADS", "1")


#: The tests that need the fine-tune scenario's candidates: one worker makes them, so one worker runs these.
FINETUNE_GROUP = "finetune_scenario"
#: Modules of long tests, started right after that group so that no worker is left with one at the end.
LONG_FIRST = ("test_quick_start.py", "test_user_journey.py", "test_harmless_noise.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest work first, for xdist (``--dist loadgroup`` hands out work in collection order): the
    fine-tune group (several minutes on one worker), then the modules of long tests, then the rest as
    collected. The order within each part is kept, so the run stays deterministic."""
    def rank(item: pytest.Item) -> int:
        if any(mark.args == (FINETUNE_GROUP,) for mark in item.iter_markers("xdist_group")):
            return 0
        return 1 if item.path.name in LONG_FIRST else 2

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


@dataclass(frozen=True)
class Scenario:
    """What ``examples/finetune_scenario.py`` made and printed: both candidates, the guard's report."""

    folder: Path
    process: subprocess.CompletedProcess[str]

    @property
    def harmful(self) -> Path:
        return self.folder / "harmful"

    @property
    def benign(self) -> Path:
        return self.folder / "benign"


@pytest.fixture(scope="session")
def finetune_scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """The documented fine-tune scenario, CI-sized, run once as a user runs it (a subprocess): two
    fine-tunes of the default model, then the guard with localisation. Its candidates serve every test
    that needs a harmful or a benign fine-tune, so the fine-tuning is paid once per run."""
    folder = tmp_path_factory.mktemp("scenario")
    script = Path(__file__).resolve().parents[1] / "examples" / "finetune_scenario.py"
    process = subprocess.run(
        [sys.executable, str(script), "--out", str(folder), "--quick", "--compare", "--limit", "40",
         "--localise", "changed", "--threads", "1"],
        cwd=folder, capture_output=True, text=True, timeout=1800, check=False,
    )
    yield Scenario(folder, process)
    shutil.rmtree(folder, ignore_errors=True)  # two 0.5 GB candidates
