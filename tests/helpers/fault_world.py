"""The fault-injection matrix's shared world: a tiny fact model, a damaged copy, a recorded baseline.

Rows run the real entry point (``python -m pytest_layercheck.cli``) in a temporary folder, as a user
would, and assert the exit status, the message, that no traceback was printed, and that no file was lost.
The ``world`` is made once per run (by the first worker to ask); each test gets a private copy of its
baseline and cache (``ws``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from run_shared import once_per_run
from tiny_models import tiny_tokenizer
from trained_tiny import perturbed, save, shared_fact_model, write_fact_suite

SUITE = ("--suites", "facts.yaml", "--limit", "0")
RECORDED = ("--baseline-dir", "baselines", "--baseline", "facts")


def environment(folder: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CI", "GITHUB_STEP_SUMMARY", "LAYERCHECK_CACHE_SECRET", "LAYERCHECK_CACHE_MODE")
    }
    env.update(
        LAYERCHECK_CACHE_DIR=str(folder / "cache"),
        XDG_CONFIG_HOME=str(folder / "config"),
        OMP_NUM_THREADS="1",
        LAYERCHECK_OFFLINE="1",
        COLUMNS="200",
        NO_COLOR="1",
        **extra,
    )
    return env


def layercheck(
    folder: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``layercheck ARGS`` in ``folder``, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "pytest_layercheck.cli", *args],
        cwd=folder,
        env=env or environment(folder),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_exit(result: subprocess.CompletedProcess[str], code: int, *messages: str) -> str:
    """The exit status, no traceback, and every message in stdout+stderr (whitespace-normalised)."""
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == code, f"exit {result.returncode}, expected {code}:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in output, output
    for message in messages:
        assert " ".join(message.split()) in output, f"{message!r} not in:\n{output}"
    return output


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cache_hits(output: str) -> int:
    return sum(int(n) for n in re.findall(r"(\d+) (?:evaluations )?from cache", output))


@pytest.fixture(scope="session")
def world(run_folder: Path) -> Path:
    """Models, the fact suite, a recorded baseline of the good model and a cache holding both models:
    made once per run and shared read-only by every worker (tests change copies: ``ws``)."""
    return once_per_run(run_folder, "fault-world", partial(_make_world, run_folder))


def _make_world(run_folder: Path, root: Path) -> None:
    root.mkdir(parents=True)
    model = shared_fact_model(run_folder)
    save(model, root / "good")
    save(perturbed(model, [0, 1], scale=2.0), root / "damaged")
    model.save_pretrained(root / "good-bos")  # same weights, a tokenizer that adds a BOS token
    tiny_tokenizer(add_bos=True).save_pretrained(root / "good-bos")
    write_fact_suite(root / "facts.yaml")
    assert_exit(layercheck(root, "baseline", "good", *SUITE, "--baseline-dir", "baselines", "--name", "facts"), 0)
    assert_exit(layercheck(root, "profile", "damaged", *SUITE, *RECORDED), 1, "regressed")


@pytest.fixture
def ws(world: Path, tmp_path: Path) -> Path:
    """A private copy of the world's baseline, cache and key; the models are shared read-only."""
    for name in ("baselines", "cache", "config"):
        shutil.copytree(world / name, tmp_path / name)
    shutil.copy(world / "facts.yaml", tmp_path / "facts.yaml")
    for name in ("good", "damaged", "good-bos"):
        (tmp_path / name).symlink_to(world / name)
    return tmp_path


def entries(folder: Path) -> dict[Path, dict]:
    return {path: json.loads(path.read_text()) for path in sorted((folder / "cache" / "results").glob("*/*.json"))}


def fingerprint_of(folder: Path, model: str) -> str:
    from pytest_layercheck.model.loading import load_model

    return load_model(folder / model, device="cpu").fingerprint
