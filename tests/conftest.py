"""Test-wide settings: tiny-model tests run single-threaded (thread start-up dominates their tiny
matmuls, and 2 threads on a busy 2-core machine made them ~100x slower)."""

from __future__ import annotations

import torch

pytest_plugins = ["pytester"]

torch.set_num_threads(1)
