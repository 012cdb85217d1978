"""Depth-sweep benchmark: throughput, work against the hardware limit, and lm-eval as the baseline.

    python benchmarks/depth_sweep.py [--model default] [--threads N] [--no-reuse-row]
                                     [--lm-eval-limits knowledge=6,reasoning=3,retrieval=2 | --skip-lm-eval]
                                     [--append benchmarks/RESULTS.md]

On the default model and the built-in suites (default-profile item counts) it measures:

* items × evaluations per second for an intact evaluation, a band sweep (3 bands) and a
  per-layer sweep (every layer removed in turn), as ``layercheck profile`` runs them;
* the FLOPs each run requires (``pytest_layercheck.scoring.flops``: model shapes × real tokens)
  and the useful FLOP/s achieved, against the float32 matmul peak measured in this process;
* optionally the per-layer sweep without activation reuse (``--no-reuse-row``), scoring each
  ablated model from scratch with the same engine;
* the same per-layer sweep through lm-evaluation-harness (``HFLM(pretrained=ablated model)``, one
  ``loglikelihood`` call per ablated model) on fewer items, our engine on the same items, the
  throughput ratio and whether the accuracies agree. lm-eval is installed on demand; it is not a
  dependency of pytest-layercheck.
* peak RSS next to the model's weight bytes.

``--append`` adds the table, machine and date to a markdown file.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

from pytest_layercheck.data.bands import DepthBands
from pytest_layercheck.evaluation.settings import DEFAULT_SWEEP_LIMITS
from pytest_layercheck.model.ablation import Ablation, ablate
from pytest_layercheck.model.loading import LoadedModel, load_model
from pytest_layercheck.scoring.flops import ModelShape, TokenWork, evaluation_flops, sweep_flops
from pytest_layercheck.scoring.protocols import PreparedSuite, prepare, score, score_sweep
from pytest_layercheck.suites.builtin import BUILTIN_SUITES, load_builtin_suite


@dataclass
class Row:
    run: str
    items: int
    evaluations: int
    seconds: float
    flops: float  # executed (required) FLOPs
    note: str = ""

    def cells(self, peak: float) -> list[object]:
        rate = self.flops / self.seconds
        return [
            self.run,
            self.items,
            self.evaluations,
            f"{self.seconds:.1f}",
            f"{self.items * self.evaluations / self.seconds:.1f}",
            f"{self.flops / 1e12:.2f}",
            f"{rate / 1e9:.0f}",
            f"{100 * rate / peak:.0f}%",
            self.note,
        ]


HEADERS = ["run", "items", "evals", "s", "items×evals/s", "TFLOP", "GFLOP/s", "of peak", "note"]


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """Best FLOP/s of a square matmul (2·n³ FLOPs) over ``repeats`` runs after a warm-up."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for i in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def timed(fn, device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


#: The default profile's sweep items, the work this benchmark times.
SWEEP_LIMITS_TEXT = ",".join(f"{k}={v}" for k, v in DEFAULT_SWEEP_LIMITS.items())


def parse_limits(text: str) -> dict[str, int]:
    return {k.strip(): int(v) for k, v in (p.split("=") for p in text.split(",") if p.strip())}


#: The lm-eval the benchmarks compare with, pinned: the version RESULTS.md was measured with.
LM_EVAL_REQUIREMENT = "lm-eval==0.4.13"


def ensure_lm_eval(install: bool) -> bool:
    """True when lm-eval can be imported, installing the pinned version first if allowed."""
    if importlib.util.find_spec("lm_eval") is not None:
        return True
    if not install:
        print("lm-eval is not installed and --no-install was given: skipping the lm-eval comparison")
        return False
    print(f"installing {LM_EVAL_REQUIREMENT} into", sys.prefix, flush=True)
    constraints = Path(__file__).resolve().parent.parent / "constraints.txt"  # keep torch as it is
    extra = ["-c", str(constraints)] if constraints.exists() else []
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", LM_EVAL_REQUIREMENT, *extra])
    return True


def lm_eval_sweep(loaded: LoadedModel, prepared: PreparedSuite, ablations: list[Ablation], batch_size: int):
    """Accuracy per ablated model through lm-eval's HF backend, and the seconds it took."""
    import numpy as np
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    delimiter = prepared.settings.target_delimiter
    requests = [(r, c) for r in prepared.items for c in r.candidates]
    accuracies = []
    start = time.perf_counter()
    for ablation in ablations:
        with ablate(loaded.model, ablation):
            lm = HFLM(
                pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size, device=str(loaded.device)
            )
            answers = iter(
                lm.loglikelihood(
                    [Instance("loglikelihood", {}, (r.prompt, delimiter + c), k) for k, (r, c) in enumerate(requests)],
                    disable_tqdm=True,
                )
            )
            correct = [
                float(np.argmax([next(answers)[0] for _ in r.candidates]) == r.item.gold) for r in prepared.items
            ]
        accuracies.append(sum(correct) / len(correct))
    return accuracies, time.perf_counter() - start


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        cpu += f"; GPU {torch.cuda.get_device_name(0)}"
    return f"{cpu}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--limits", default=SWEEP_LIMITS_TEXT, help=f"items swept per suite (default {SWEEP_LIMITS_TEXT})"
    )
    parser.add_argument("--no-reuse-row", action="store_true", help="also time the per-layer sweep without reuse")
    parser.add_argument("--lm-eval-limits", default="knowledge=6,reasoning=3,retrieval=2")
    parser.add_argument("--lm-eval-batch-size", type=int, default=8)
    parser.add_argument("--skip-lm-eval", action="store_true")
    parser.add_argument("--no-install", action="store_true")
    parser.add_argument("--append", default=None, help="append the results to this markdown file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = load_model(args.model, device=args.device)
    device, model, runtime = loaded.device, loaded.model, loaded.runtime
    shape = ModelShape.of(runtime)
    num_layers = shape.num_layers
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    peak = matmul_peak(device, loaded.dtype)
    layers = [Ablation.skipping(i) for i in range(num_layers)]
    bands = [Ablation.skipping(b) for b in DepthBands().as_dict(num_layers).values() if b]
    limits = parse_limits(args.limits)
    print(
        f"{loaded.name} on {device} ({loaded.dtype}), {torch.get_num_threads()} threads; "
        f"matmul peak {peak / 1e9:.0f} GFLOP/s",
        flush=True,
    )

    rows: list[Row] = []
    sweep_seconds = sweep_flops_total = 0.0
    prepared_of: dict[str, PreparedSuite] = {}
    for name in BUILTIN_SUITES:
        suite = load_builtin_suite(name)
        prepared = prepare(suite.limited(limits.get(name)), suite.default_protocol, loaded.tokenizer)
        prepared_of[name] = prepared
        assert prepared.loglikelihood is not None
        work, n = TokenWork.of(prepared.loglikelihood), len(prepared.items)
        score(runtime, prepared)  # warm-up (plans, allocator)
        seconds, _ = timed(lambda prepared=prepared: score(runtime, prepared), device)
        rows.append(Row(f"{name}: intact", n, 1, seconds, evaluation_flops(work, shape)))
        seconds, _ = timed(lambda prepared=prepared: score_sweep(runtime, prepared, bands), device)
        rows.append(Row(f"{name}: band sweep", n, 1 + len(bands), seconds, sweep_flops(work, shape, bands)[1]))
        seconds, _ = timed(lambda prepared=prepared: score_sweep(runtime, prepared, layers), device)
        scratch, reused = sweep_flops(work, shape, layers)
        rows.append(
            Row(
                f"{name}: per-layer sweep",
                n,
                1 + num_layers,
                seconds,
                reused,
                f"reuse saves {100 * (1 - reused / scratch):.0f}% of FLOPs",
            )
        )
        sweep_seconds, sweep_flops_total = sweep_seconds + seconds, sweep_flops_total + reused
        if args.no_reuse_row:

            def plain(prepared: Any = prepared) -> None:
                for ablation in [Ablation(), *layers]:
                    with ablate(model, ablation):
                        score(runtime, prepared)

            seconds, _ = timed(plain, device)
            rows.append(Row(f"{name}: per-layer, no reuse", n, 1 + num_layers, seconds, scratch))
        print(tabulate([r.cells(peak) for r in rows[-4:]], headers=HEADERS), flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    total_items = sum(len(p.items) for p in prepared_of.values())
    rows.append(
        Row(
            "three suites: per-layer sweep (the default profile's work)",
            total_items,
            1 + num_layers,
            sweep_seconds,
            sweep_flops_total,
        )
    )

    comparison: list[list[object]] = []
    if not args.skip_lm_eval and ensure_lm_eval(install=not args.no_install):
        lm_limits = parse_limits(args.lm_eval_limits)
        ours_s = theirs_s = 0.0
        items = 0
        for name in BUILTIN_SUITES:
            suite = load_builtin_suite(name)
            prepared = prepare(suite.limited(lm_limits.get(name)), suite.default_protocol, loaded.tokenizer)
            seconds, (intact, ablated) = timed(lambda prepared=prepared: score_sweep(runtime, prepared, layers), device)
            ours = [r.mean("acc") for r in [intact, *ablated]]
            theirs, their_seconds = lm_eval_sweep(loaded, prepared, [Ablation(), *layers], args.lm_eval_batch_size)
            differ = sum(abs(a - b) > 1e-9 for a, b in zip(ours, theirs))
            n = len(prepared.items)
            comparison.append(
                [
                    name,
                    n,
                    1 + num_layers,
                    f"{seconds:.1f}",
                    f"{their_seconds:.1f}",
                    f"{their_seconds / seconds:.1f}×",
                    f"{differ} of {len(ours)}",
                ]
            )
            ours_s, theirs_s, items = ours_s + seconds, theirs_s + their_seconds, items + n
            print(tabulate([comparison[-1]], headers=LMEVAL_HEADERS), flush=True)
        comparison.append(
            ["three suites", items, 1 + num_layers, f"{ours_s:.1f}", f"{theirs_s:.1f}", f"{theirs_s / ours_s:.1f}×", ""]
        )

    table = tabulate([r.cells(peak) for r in rows], headers=HEADERS, tablefmt="github")
    lines = [
        f"### Depth sweep (`python benchmarks/depth_sweep.py`), {datetime.date.today().isoformat()}",
        "",
        f"{machine()}; {loaded.name}, {device}, {str(loaded.dtype).removeprefix('torch.')}, "
        f"{torch.get_num_threads()} torch threads; torch {torch.__version__}. 1-minute load average at the end: "
        f"{os.getloadavg()[0]:.1f}. Float32 matmul peak measured in the same process (2048³): "
        f"{peak / 1e9:.0f} GFLOP/s. FLOPs are the work the run requires (model shapes × real tokens; "
        f"padding not counted).",
        "",
        table,
        "",
        f"Peak RSS {rss / 2**30:.2f} GiB with {weights / 2**30:.2f} GiB of weights "
        f"(weights + {(rss - weights) / 2**30:.2f} GiB), measured before the lm-eval part.",
    ]
    if comparison:
        lines += [
            "",
            "Per-layer sweep through lm-evaluation-harness (`HFLM(pretrained=ablated model)`) vs ours, "
            "same items, same protocol (mc_text, acc):",
            "",
            tabulate(comparison, headers=LMEVAL_HEADERS, tablefmt="github"),
        ]
    publish("\n".join(lines), args.append)


def section(title: str, description: str, rows: list[list[object]], headers: list[str]) -> str:
    """A dated result section: title, the machine and what was run, then the table."""
    table = tabulate(rows, headers=headers, tablefmt="github")
    return (
        f"### {title}, {datetime.date.today().isoformat()}\n\n{machine()}; torch {torch.__version__}. "
        f"{description}\n\n{table}\n"
    )


def publish(text: str, append: str | None) -> None:
    """Print a result section and, with ``--append FILE``, add it to that markdown file."""
    print()
    print(text)
    if append:
        with open(append, "a") as f:
            f.write("\n" + text.rstrip("\n") + "\n")
        print(f"appended to {append}")


LMEVAL_HEADERS = ["suite", "items", "evals", "ours s", "lm-eval s", "lm-eval / ours", "accuracies that differ"]


if __name__ == "__main__":
    main()
