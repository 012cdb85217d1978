"""The README's quick start, run literally on a copy of the repository, as a new user runs it.

Its two command lines are read from the README itself, so the test follows the text. Each is run in
``bash`` in a fresh folder with the environment of a fresh shell: no virtual environment active, the
system ``python3`` first on ``PATH``. Step 1 makes its own virtual environment and installs torch and the
project into it; step 2 installs the test extras. Only the two long runs are left out, the default
profile (about four minutes; ``test_user_journey.py`` runs it on fewer items) and the test suite itself
(this test is part of it). In their place, the installed commands answer: ``layercheck --help``, in the
same shell and in a new one that activates the environment as the README says, ``layercheck info`` on the
default model, and pytest with the plugin registered.

The installs take about a minute each when pip's cache holds the wheels (CI's own install fills it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.real_model  # layercheck info loads the default model

REPO = Path(__file__).resolve().parents[1]
#: What a clone has that a user's copy must not inherit from this checkout.
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", ".cache", "__pycache__", ".pytest_cache", ".mypy_cache",
                                    ".ruff_cache", "*.egg-info", "build", "dist")
#: The step of the quick start that is too long for a test, and what runs instead.
LONG_STEPS = {"layercheck profile": "layercheck --help", "python -m pytest": "python -m pytest --help"}


def quick_start_commands(readme: str) -> list[str]:
    """The command lines of the README's quick start block, comments dropped."""
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's quick start has no ```bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def shortened(command: str) -> str:
    """``command`` with its last step, a long run, replaced by that command's help (asserted to be there)."""
    steps = [step.strip() for step in command.split("&&")]
    assert steps[-1] in LONG_STEPS, f"the quick start step {command!r} no longer ends as this test expects"
    return " && ".join([*steps[:-1], LONG_STEPS[steps[-1]]])


def fresh_shell_env() -> dict[str, str]:
    """A new user's shell: this test run's virtual environment and pytest's variables gone, caches kept."""
    active = Path(sys.prefix) / "bin"
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "LAYERCHECK_THREADS", "CI") and not k.startswith("PYTEST_")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != active)
    return env


def bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` as the user types it, in a new non-interactive bash."""
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=fresh_shell_env(), capture_output=True, text=True,
                          timeout=1200, check=False)


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[Path]:
    """A copy of the repository in a temporary folder; removed afterwards (its venv holds about 1.9 GB)."""
    root = tmp_path / "pytest-layercheck"
    shutil.copytree(REPO, root, ignore=NOT_COPIED)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_the_readme_quick_start_installs_working_commands(clone: Path) -> None:
    step1, step2 = quick_start_commands((REPO / "README.md").read_text())
    assert step1.startswith("python3 -m venv .venv && . .venv/bin/activate && ")

    first = bash(shortened(step1), clone)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "usage: layercheck" in first.stdout and "profile" in first.stdout
    assert (clone / ".venv" / "bin" / "layercheck").is_file()

    # A new shell, as the README says: activate, then the command lists its subcommands and loads the model.
    again = bash(". .venv/bin/activate && layercheck --help && layercheck profile --help && layercheck info", clone)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "usage: layercheck profile" in again.stdout
    assert "num_layers: 30" in again.stdout and "Paris" in again.stdout  # info: the 30 layers and its check

    second = bash(". .venv/bin/activate && " + shortened(step2), clone)  # "the environment of step 1 still active"
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "--layercheck-update" in second.stdout  # the plugin is registered through its entry point
