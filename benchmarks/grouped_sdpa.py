"""Grouped-query SDPA against transformers' repeat_kv path: the same layer sweep timed both ways.

    python benchmarks/grouped_sdpa.py [--limits knowledge=40,reasoning=40,retrieval=10] [--threads N]
                                      [--append benchmarks/RESULTS.md]

On the CPU, scoring switches grouped-query models to ``pytest_layercheck.model.attention``'s SDPA
function, which leaves the key/value heads to the kernel (``enable_gqa=True``) instead of copying them
once per query head. This script runs the per-layer sweep of each suite with the switch and with it
disabled, alternating in one process, and reports the times and the largest log-likelihood difference.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import torch
from depth_sweep import publish, section  # a sibling script

import pytest_layercheck.scoring.sweep as sweep
from pytest_layercheck.model.ablation import Ablation
from pytest_layercheck.model.loading import load_model
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring.protocols import batch_settings, prepare
from pytest_layercheck.suites.builtin import load_builtin_suite

LIMITS = "knowledge=40,reasoning=40,retrieval=10"


@contextlib.contextmanager
def repeat_kv_path():
    """Scoring without the grouped-query switch: transformers' own SDPA function throughout."""
    kept = ModelRuntime.grouped_query_sdpa
    ModelRuntime.grouped_query_sdpa = lambda self: contextlib.nullcontext()  # type: ignore[method-assign]
    try:
        yield
    finally:
        ModelRuntime.grouped_query_sdpa = kept  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limits", default=LIMITS)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--append", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model("default")
    layers = [Ablation.skipping(i) for i in range(loaded.num_layers)]
    rows = []
    for part in args.limits.split(","):
        name, limit = part.split("=")
        suite = load_builtin_suite(name)
        prepared = prepare(suite.limited(int(limit)), suite.default_protocol, loaded.tokenizer)
        assert prepared.loglikelihood is not None
        plan = prepared.loglikelihood.plan(batch_settings(loaded.runtime))
        seconds: dict[str, list[float]] = {"grouped": [], "repeat_kv": []}
        outputs = {}
        for _ in range(2):
            for path in ("repeat_kv", "grouped"):
                with repeat_kv_path() if path == "repeat_kv" else contextlib.nullcontext():
                    start = time.perf_counter()
                    intact, ablated = sweep.run_loglikelihood_sweep(loaded.runtime, plan, layers)
                    seconds[path].append(time.perf_counter() - start)
                outputs[path] = [intact, *ablated]
        difference = max(
            float((a.loglikelihood - b.loglikelihood).abs().max())
            for a, b in zip(outputs["grouped"], outputs["repeat_kv"])
        )
        flips = sum(int((a.greedy != b.greedy).sum()) for a, b in zip(outputs["grouped"], outputs["repeat_kv"]))
        best = {k: min(v) for k, v in seconds.items()}
        rows.append(
            [
                name,
                limit,
                f"{best['repeat_kv']:.1f}",
                f"{best['grouped']:.1f}",
                f"{best['repeat_kv'] / best['grouped']:.2f}×",
                f"{difference:.1e}",
                flips,
            ]
        )
        print(rows[-1], flush=True)
    text = section(
        "Grouped-query SDPA (`python benchmarks/grouped_sdpa.py`)",
        f"{loaded.name}, {loaded.device}, {str(loaded.dtype).removeprefix('torch.')}, "
        f"{torch.get_num_threads()} torch threads, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}; per-layer sweep (31 evaluations), best of 2 "
        "alternating runs per path.",
        rows,
        ["suite", "items", "repeat_kv s", "grouped s", "speed-up", "max |Δll|", "greedy flips"],
    )
    publish(text, args.append)


if __name__ == "__main__":
    main()
