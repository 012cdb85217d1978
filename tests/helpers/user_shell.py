"""Commands run as a user runs them: a subprocess in the user's folder, with the environment of the user's
shell rather than this test run's."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

#: The scripts folder of this Python (``layercheck``, ``pytest``), first on the user's ``PATH``.
BIN = Path(sys.executable).parent
#: Variables of this test run that a user's shell does not have (besides ``PYTEST_*`` and ``GITHUB_*``);
#: without ``LAYERCHECK_THREADS`` the command chooses its thread count as it does for a user.
RUN_ONLY = ("CI", "COV_CORE_SOURCE", "LAYERCHECK_THREADS")


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: the venv's commands first, no pytest, CI or GitHub variables
    leaking in, and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GITHUB_")) and k not in RUN_ONLY}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def quiet_env(**extra: str) -> dict[str, str]:
    """A user's shell for commands on tiny models: this run's thread count (one, tests/conftest.py sets it)
    and no Hugging Face hub access, so that they run side by side on a busy machine and fetch nothing."""
    threads = os.environ.get("LAYERCHECK_THREADS", "1")
    quiet = {"LAYERCHECK_THREADS": threads, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return user_env(**{**quiet, **extra})


def sh(
    *command: str | Path, cwd: Path, env: Mapping[str, str] | None = None, timeout: int = 1200
) -> subprocess.CompletedProcess[str]:
    """Run a command as a user would, in ``cwd`` (with :func:`user_env` unless ``env`` is given); returns
    the finished process (never raises on exit codes)."""
    return subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=env or user_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
