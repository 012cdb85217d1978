"""Threads and OpenMP wait policy: one layer sweep timed under each, on a quiet machine and beside a busy core.

    python benchmarks/wait_policy.py [--suite knowledge] [--items 20] [--cells CELL ...] [--append benchmarks/RESULTS.md]

OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads, so every cell runs in a fresh process:
1 thread, and all usable cores under ``PASSIVE`` (idle threads sleep at once), the runtime's default
(they spin a while, then sleep) and ``ACTIVE`` (they spin). Each cell runs once quiet and once
while a busy-looping process holds one core, the shared-runner case. The table is what
``pytest_layercheck.model.threads`` decides from.

``--cells`` replaces the default cells: ``THREADS`` or ``THREADS:VAR=VALUE,...``, for example
``2:OMP_WAIT_POLICY=PASSIVE`` or ``2:GOMP_SPINCOUNT=10000`` (libgomp's spin count before sleeping).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from depth_sweep import publish, section  # a sibling script

WORKER = """
import sys, time, torch
from pytest_layercheck.model.ablation import Ablation
from pytest_layercheck.model.loading import load_model
from pytest_layercheck.scoring.protocols import prepare, score_sweep
from pytest_layercheck.suites.builtin import load_builtin_suite
torch.set_num_threads(int(sys.argv[1]))
loaded = load_model("default")
suite = load_builtin_suite(sys.argv[2])
prepared = prepare(suite.limited(int(sys.argv[3])), suite.default_protocol, loaded.tokenizer)
layers = [Ablation.skipping(i) for i in range(loaded.num_layers)]
score_sweep(loaded.runtime, prepare(suite.limited(2), suite.default_protocol, loaded.tokenizer), layers[:2])  # warm-up
start = time.perf_counter()
score_sweep(loaded.runtime, prepared, layers)
print(time.perf_counter() - start)
"""

BUSY = "while True: pass"


OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "LAYERCHECK_THREADS")


def parse_cell(text: str) -> tuple[int, dict[str, str]]:
    """``2:OMP_WAIT_POLICY=PASSIVE,GOMP_SPINCOUNT=0`` -> (2, {...})."""
    threads, _, settings = text.partition(":")
    return int(threads), dict(pair.split("=", 1) for pair in settings.split(",") if pair)


def run_cell(threads: int, settings: dict[str, str], suite: str, items: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARIABLES}
    env.update(settings)
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(threads), suite, str(items)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="knowledge")
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--cells", nargs="+", default=None, help="THREADS[:VAR=VALUE,...] per cell")
    parser.add_argument("--append", default=None, help="append the table, machine and date to this markdown file")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    cells = (
        [parse_cell(c) for c in args.cells]
        if args.cells
        else [(1, {}), *((cores, {"OMP_WAIT_POLICY": p}) for p in ("PASSIVE", "ACTIVE")), (cores, {})]
    )
    rows = []
    for threads, settings in cells:
        row: list[object] = [threads, ", ".join(f"{k}={v}" for k, v in settings.items()) or "(OpenMP defaults)"]
        for busy in (False, True):
            hog = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
            try:
                if hog:
                    time.sleep(1.0)
                seconds = run_cell(threads, settings, args.suite, args.items)
            finally:
                if hog:
                    hog.kill()
                    hog.wait()
            row.append(f"{seconds:.1f}")
            print(row, flush=True)
        rows.append(row)
    text = section(
        f"Threads and wait policy (`python benchmarks/wait_policy.py --suite {args.suite} --items {args.items}`)",
        f"{cores} usable cores; per-layer sweep of {args.items} {args.suite} items (31 evaluations), each "
        "cell in a fresh process; the busy core is a Python busy loop started 1 s before.",
        rows,
        ["threads", "OpenMP settings", "quiet s", "one core busy s"],
    )
    publish(text, args.append)


if __name__ == "__main__":
    main()
