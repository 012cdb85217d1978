"""The README's quick start, run literally on a copy of the repository, as a new user runs it.

Its two command lines are read from the README itself, so the test follows the text. The user's
Python is a fresh one whose scripts folder is on ``PATH`` in every shell, as pyenv's shims are (a
virtual environment made for the test, never activated, so this machine's own Python is left alone).
Each command line runs in a new ``bash`` with that environment: step 1 installs torch and the project,
step 2 the test extras. Only the two long runs are left out, the default profile (about four minutes;
``test_user_journey.py`` runs it on fewer items) and the test suite itself (this test is part of it). In
their place, the installed commands answer: ``layercheck --help`` in the same shell, then in a new shell
``layercheck --help``, ``layercheck profile --help`` and ``layercheck info`` on the default model, and
pytest with the plugin registered.

The installs take about a minute each when pip's cache holds the wheels (CI's own install fills it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from repo_files import REPO, quick_start_commands

# layercheck info loads the default model; two pip installs take minutes, so they start first.
pytestmark = [pytest.mark.real_model, pytest.mark.early(2)]

#: What a clone has that a user's copy must not inherit from this checkout.
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".cache",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "*.egg-info",
    "build",
    "dist",
)
#: The step of the quick start that is too long for a test, and what runs instead.
LONG_STEPS = {"layercheck profile": "layercheck --help", "python -m pytest": "python -m pytest --help"}


def shortened(command: str) -> str:
    """``command`` with its last step, a long run, replaced by that command's help (asserted to be there)."""
    steps = [step.strip() for step in command.split("&&")]
    assert steps[-1] in LONG_STEPS, f"the quick start step {command!r} no longer ends as this test expects"
    return " && ".join([*steps[:-1], LONG_STEPS[steps[-1]]])


def fresh_shell_env(python_bin: Path) -> dict[str, str]:
    """A new user's shell whose Python is ``python_bin``'s: this test run's virtual environment and pytest's
    variables gone, caches kept."""
    active = Path(sys.prefix) / "bin"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "LAYERCHECK_THREADS", "CI") and not k.startswith("PYTEST_")
    }
    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != active]
    env["PATH"] = os.pathsep.join([str(python_bin), *rest])
    return env


def bash(script: str, cwd: Path, python_bin: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` as the user types it, in a new non-interactive bash."""
    return subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=fresh_shell_env(python_bin),
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[Path]:
    """A copy of the repository in a temporary folder; removed afterwards with the user's Python."""
    root = tmp_path / "pytest-layercheck"
    shutil.copytree(REPO, root, ignore=NOT_COPIED)
    yield root
    shutil.rmtree(tmp_path, ignore_errors=True)  # the installs take about 1.9 GB


@pytest.fixture
def user_python(tmp_path: Path) -> Path:
    """The scripts folder of a new user's Python, made from the Python this machine's ``python3`` is."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    made = subprocess.run(
        [str(base), "-m", "venv", str(tmp_path / "user-python")], capture_output=True, text=True, check=False
    )
    assert made.returncode == 0, made.stderr
    return tmp_path / "user-python" / "bin"


def test_the_readme_quick_start_installs_working_commands(clone: Path, user_python: Path) -> None:
    step1, step2 = quick_start_commands((REPO / "README.md").read_text())

    first = bash(shortened(step1), clone, user_python)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "usage: layercheck" in first.stdout and "profile" in first.stdout
    assert (user_python / "layercheck").is_file()  # installed next to the user's Python, not somewhere off PATH

    # A new shell, nothing activated: the command is there, lists its subcommands and loads the model.
    again = bash("layercheck --help && layercheck profile --help && layercheck info", clone, user_python)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "usage: layercheck profile" in again.stdout
    assert "num_layers: 30" in again.stdout and "Paris" in again.stdout  # info: the 30 layers and its check

    second = bash(shortened(step2), clone, user_python)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "--layercheck-update" in second.stdout  # the plugin is registered through its entry point

    # The user's install is the set CI tests: every version constraints.txt pins.
    pins = dict(
        line.split("==")
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    listed = bash("python -m pip list --format=freeze", clone, user_python)
    installed = dict(line.split("==", 1) for line in listed.stdout.splitlines() if "==" in line)
    installed = {name.lower().replace("_", "-"): version.split("+")[0] for name, version in installed.items()}
    assert {name: installed.get(name) for name in pins} == pins
