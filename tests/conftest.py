"""Test-wide settings: tiny-model tests run single-threaded (thread start-up dominates their tiny
matmuls, and 2 threads on a busy 2-core machine made them ~100x slower); pytest-xdist's workers when it
is installed; the run order and the fast tier by markers (``early``, ``late``, ``slow``; see
docs/contributing.md); the fixtures many modules share."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

# The helpers hold asserts that tests share: pytest rewrites them as it does test modules, so that a
# failure shows its values (registered before any helper is imported).
pytest.register_assert_rewrite(*sorted(path.stem for path in (Path(__file__).parent / "helpers").glob("*.py")))

import torch  # noqa: E402
from repo_files import REPO  # noqa: E402
from run_shared import Scenario, run_once  # noqa: E402

from pytest_layercheck.model.loading import LoadedModel, load_model  # noqa: E402
from pytest_layercheck.scoring import engine  # noqa: E402

#: The helper modules that define fixtures, for every module: the fault-injection matrix's world, the plugin
#: tests' project and models, lm-eval's task folder (test modules import the helpers' functions themselves).
pytest_plugins = ["pytester", "fault_world", "plugin_project", "lm_eval_parity"]

torch.set_num_threads(1)
# The plugin and the CLI choose their thread count when they load a model; in this process (and the
# subprocesses of tests that do not set their own environment) that choice is one thread too.
os.environ.setdefault("LAYERCHECK_THREADS", "1")


#: The key in each xdist worker's input that says whether the run groups tests by ``xdist_group``.
LOADGROUP = "layercheck_tests_loadgroup"


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """With pytest-xdist installed, a run given no ``-n``, ``--dist`` or ``--tx`` uses one worker per core
    and ``--dist loadgroup``: the tests of one ``xdist_group`` share a worker where the installed pytest and
    pytest-xdist honour the mark (with pytest 9.2 and pytest-xdist 3.8 they do not, so work the workers
    must share goes through the run's folder: ``run_shared.once_per_run``), the others are handed out one
    at a time in the order :func:`pytest_collection_modifyitems` sets. Without xdist (or with ``-p
    no:xdist`` or ``-n 0``) the tests run in this process. Runs before xdist's own hook, which turns
    ``auto`` into the number of cores."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    option = config.option
    if hasattr(config, "workerinput"):
        # A worker parses the command line, not this default: it groups as the controller tells it.
        option.loadgroup = config.workerinput.get(LOADGROUP, option.loadgroup)
        return
    if option.numprocesses is None and option.dist == "no" and not option.tx and not option.distload:
        option.numprocesses, option.dist = "auto", "loadgroup"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist's hook on the controller, per worker: pass the grouping on (see pytest_cmdline_main)."""
    node.workerinput[LOADGROUP] = node.config.option.dist == "loadgroup"


#: Where a marked test goes in the run order; unmarked tests sit between, in collection order.
ORDER = {"early": 0, "late": 2}
UNMARKED = 1


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every ``real_model`` test is ``slow`` too (before ``-m`` deselects). Then the ``early`` tests first
    (``early(N)``: N-th among them), the ``late`` ones last: xdist hands tests out in this order, so the long ones start at once and no
    worker is left with one at the end. The sort is stable, so the run stays deterministic."""
    for item in items:
        if item.get_closest_marker("real_model"):
            item.add_marker(pytest.mark.slow)

    def rank(item: pytest.Item) -> tuple[int, int]:  # a late test in an early module is late
        place = max((place for name, place in ORDER.items() if item.get_closest_marker(name)), default=UNMARKED)
        early = item.get_closest_marker("early")
        return place, early.args[0] if place == ORDER["early"] and early is not None and early.args else 0

    items.sort(key=rank)


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
