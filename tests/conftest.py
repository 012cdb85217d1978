"""Test-wide settings: tiny-model tests run single-threaded (thread start-up dominates their tiny
matmuls, and 2 threads on a busy 2-core machine made them ~100x slower)."""

from __future__ import annotations

import os

import pytest
import torch

from pytest_layercheck.model.loading import LoadedModel, load_model
from pytest_layercheck.scoring import engine

pytest_plugins = ["pytester"]

torch.set_num_threads(1)
# The plugin and the CLI choose their thread count when they load a model; in this process (and the
# subprocesses of tests that do not set their own environment) that choice is one thread too.
os.environ.setdefault("LAYERCHECK_THREADS", "1")


@pytest.fixture(scope="session")
def smollm() -> LoadedModel:
    """The real default model (SmolLM2-135M-Instruct) on the CPU, loaded once for every real-model test."""
    return load_model("default", device="cpu")


@pytest.fixture
def one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompt batches mix any lengths (no split where padding dominates), as some engine tests need."""
    monkeypatch.setattr(engine, "MIN_FILL", 0.0)
