"""Work made once per test run and shared by every pytest-xdist worker of that run, through files.

xdist runs each worker in its own process, so a session fixture is made once per worker. For the
costly ones (a fine-tuned checkpoint, a trained tiny model) the first worker to ask makes the files
under a lock in the run's shared folder; the others wait for it and reuse them.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def once_per_run(folder: Path, name: str, make: Callable[[Path], None]) -> Path:
    """``folder/name``, made by ``make(path)`` once per run (``folder``: the run's shared folder). A
    path left without its completion mark (its maker crashed) is made again."""
    target = folder / name
    done = folder / f"{name}.complete"
    with open(folder / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if not done.is_file():
            shutil.rmtree(target, ignore_errors=True)
            make(target)
            done.write_text("")
    return target


def run_once(
    folder: Path, name: str, command: Sequence[str], timeout: int, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``command`` run once per run with ``--out folder/name`` as its output folder, as a user runs it; every
    worker gets the finished process (exit status and output, kept beside what it made)."""

    def make(out: Path) -> None:
        out.mkdir(parents=True)
        done = subprocess.run(
            [*command, "--out", str(out)],
            cwd=out,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        (out / "process.json").write_text(
            json.dumps({"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr})
        )

    out = once_per_run(folder, name, make)
    kept = json.loads((out / "process.json").read_text())
    return subprocess.CompletedProcess(
        [*command, "--out", str(out)], kept["returncode"], kept["stdout"], kept["stderr"]
    )


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
