"""The default profile under pytest-xdist: wall time and evaluations computed, serial against sharded.

    python benchmarks/xdist_profile.py [--workers 0 2] [--rounds 1] [--model default]
                                       [--append benchmarks/RESULTS.md]

It runs what a user's CI runs: the example guards (``examples/test_model_guard.py`` and
``examples/layercheck_guards.yaml``) copied into a fresh folder beside the committed baselines, as
``python -m pytest -n N --layercheck-no-cache``, each run in its own process with the thread choice
left to layercheck. The worker counts alternate round by round, so a drifting machine affects both
alike. Per run it reports the wall time of the whole pytest process, the profile time and the
evaluations computed and the torch threads each process chose (from the summary), and whether the
profile equals the first run's (every item's outcome, from the JSON report).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from depth_sweep import publish, section  # a sibling script

REPO = Path(__file__).resolve().parent.parent
THREADS = re.compile(r"^torch threads(?: of ([^:]+))?: (\d+) torch threads? \(([^;,)]+)", re.M)
SUMMARY = re.compile(
    r"profile computed in ([\d.]+) s(?: by (\d+) xdist workers?)? "
    r"\(evaluations: (\d+) from cache, (\d+) computed(?:: ([^)]*))?"
)


def project(root: Path) -> Path:
    """A user's project: the example guards and the committed baselines."""
    for name in ("test_model_guard.py", "layercheck_guards.yaml"):
        shutil.copy(REPO / "examples" / name, root / name)
    shutil.copytree(REPO / "baselines", root / "baselines")
    return root


def run(folder: Path, workers: str, model: str) -> dict[str, object]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "GITHUB_")) and k not in ("CI", "LAYERCHECK_THREADS", "OMP_NUM_THREADS")
    }
    report = folder / f"report-{workers}.json"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-n",
        workers,
        "--layercheck-no-cache",
        f"--layercheck-model={model}",
        f"--layercheck-report={report}",
        "-q",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    match = SUMMARY.search(done.stdout)
    if done.returncode not in (0, 1) or match is None or not report.exists():
        sys.exit(f"pytest -n {workers} ended with {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    data = json.loads(report.read_text())
    for line in done.stdout.splitlines():
        if line.startswith("torch threads"):
            print(f"-n {workers}: {line}", flush=True)
    outcome = re.findall(r"(\d+) (passed|failed)", done.stdout.splitlines()[-1])
    threads = "; ".join(
        f"{who + ': ' if who else ''}{count} ({why})" for who, count, why in THREADS.findall(done.stdout)
    )
    return {
        "wall": wall,
        "profile": float(match[1]),
        "computed": int(match[4]),
        "per_worker": match[5] or "",
        "threads": threads,
        "evaluations": data["profile"]["evaluations"],
        "tests": ", ".join(f"{n} {w}" for n, w in outcome),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", nargs="+", default=["0", "2"], help="xdist worker counts, alternated")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--model", default="default")
    parser.add_argument("--append", default=None, help="append the table, machine and date to this markdown file")
    args = parser.parse_args()
    rows: list[list[object]] = []
    first: object = None
    with tempfile.TemporaryDirectory(prefix="layercheck-xdist-") as tmp:
        folder = project(Path(tmp))
        for round_ in range(args.rounds):
            for workers in args.workers:
                result = run(folder, workers, args.model)
                first = result["evaluations"] if first is None else first
                rows.append(
                    [
                        round_ + 1,
                        workers,
                        result["threads"],
                        f"{result['wall']:.1f}",
                        f"{result['profile']:.1f}",
                        result["computed"],
                        result["per_worker"] or "-",
                        result["tests"],
                        "yes" if result["evaluations"] == first else "NO",
                    ]
                )
                print(rows[-1], flush=True)
    cores = len(os.sched_getaffinity(0))
    text = section(
        f"The example guards under pytest-xdist (`python benchmarks/xdist_profile.py --workers "
        f"{' '.join(args.workers)} --rounds {args.rounds}`)",
        f"{cores} usable cores; model {args.model}; `pytest -n N --layercheck-no-cache` on the example "
        "guards beside the committed baselines, each run a fresh process, threads chosen by layercheck.",
        rows,
        [
            "round",
            "-n",
            "torch threads",
            "wall s",
            "profile s",
            "evaluations computed",
            "per worker",
            "tests",
            "profile equal to the first run's",
        ],
    )
    publish(text, args.append)


if __name__ == "__main__":
    main()
