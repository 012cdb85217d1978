"""Wavefront vs per-ablation layer sweeps against the measured matmul peak, on a GPU (or the CPU).

    python benchmarks/gpu_sweep.py                      # CUDA: the issue's rows, about 5 minutes on an H200
    python benchmarks/gpu_sweep.py --device cpu --limits knowledge=40,reasoning=40,retrieval=10 --skip-7b
    python benchmarks/gpu_sweep.py ... --append benchmarks/RESULTS.md

Rows (each suite under its default protocol; every layer removed in turn, 1 + layers evaluations):

* the default model (SmolLM2-135M-Instruct) on every item of each suite (``--limits``; default all);
* a random-initialised 7B-shaped Llama (32 layers, hidden 4096, MLP 11008, 32 heads; bf16) on the
  default profile's sweep items (``--limits-7b``), skipped with ``--skip-7b`` and on the CPU.

Each row is timed with the wavefront (all ablation streams that need a layer in one stacked call)
and, side by side in the same process, with the per-ablation path (one forward per ablation from
its first affected layer), after a warm-up. FLOPs are the work the sweep requires
(``scoring.flops``: shapes × real tokens, padding not counted); the share is of the dense matmul
peak (bf16 on CUDA, float32 on the CPU) measured in this process. The last columns compare the
two paths' per-request log-likelihoods and greedy flags (bf16 kernels may round differently at
different batch sizes; float32 agrees to about 1e-5).

Without CUDA it refuses unless ``--device cpu`` is given. A deadline (``--deadline``, 540 s)
skips the remaining rows rather than overrun a 10-minute device slot.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

from pytest_layercheck.model.ablation import Ablation
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring.flops import ModelShape, TokenWork, sweep_flops
from pytest_layercheck.scoring.protocols import PreparedSuite, batch_settings, prepare
from pytest_layercheck.scoring.sweep import run_loglikelihood_sweep

sys.path.insert(0, str(Path(__file__).resolve().parent))
from depth_sweep import machine, matmul_peak, parse_limits, publish, timed  # a sibling script

SUITES = ("knowledge", "reasoning", "retrieval")
HEADERS = [
    "model",
    "suite",
    "items",
    "evals",
    "wavefront s",
    "per-ablation s",
    "speed-up",
    "TFLOP",
    "wavefront TFLOP/s",
    "of peak",
    "max |Δll|",
    "greedy flips",
]


def random_llama(
    device: torch.device,
    dtype: torch.dtype,
    vocab: int,
    layers: int = 32,
    hidden: int = 4096,
    intermediate: int = 11008,
    heads: int = 32,
    kv_heads: int = 32,
) -> torch.nn.Module:
    """A random-initialised Llama of the given shape (default: Llama-2-7B's), built on ``device``."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


@dataclass
class Row:
    model: str
    suite: str
    items: int
    evaluations: int
    wavefront_s: float
    per_ablation_s: float | None
    flops: float
    max_delta: float | None
    flips: int | None

    def cells(self, peak: float) -> list[object]:
        rate = self.flops / self.wavefront_s
        speedup = f"{self.per_ablation_s / self.wavefront_s:.2f}×" if self.per_ablation_s else "—"
        return [
            self.model,
            self.suite,
            self.items,
            self.evaluations,
            f"{self.wavefront_s:.2f}",
            f"{self.per_ablation_s:.2f}" if self.per_ablation_s else "—",
            speedup,
            f"{self.flops / 1e12:.2f}",
            f"{rate / 1e12:.2f}",
            f"{100 * rate / peak:.0f}%",
            f"{self.max_delta:.1e}" if self.max_delta is not None else "—",
            self.flips if self.flips is not None else "—",
        ]


def sweep_row(
    model: torch.nn.Module, name: str, prepared: PreparedSuite, device: torch.device, compare: bool = True
) -> Row:
    """Time the per-layer sweep of ``prepared`` with the wavefront and, if ``compare``, per ablation."""
    assert prepared.loglikelihood is not None
    runtime = ModelRuntime.of(model)
    shape = ModelShape.of(runtime)
    layers = [Ablation.skipping(i) for i in range(shape.num_layers)]
    plan = prepared.loglikelihood.plan(batch_settings(runtime))
    _, flops = sweep_flops(TokenWork.of(prepared.loglikelihood), shape, layers)
    wave_s, (_, wave) = timed(lambda: run_loglikelihood_sweep(runtime, plan, layers), device)
    per_s = delta = flips = None
    if compare:
        per_s, (_, single) = timed(lambda: run_loglikelihood_sweep(runtime, plan, layers, wavefront=False), device)
        delta = max(float((a.loglikelihood - b.loglikelihood).abs().max()) for a, b in zip(wave, single))
        flips = sum(int((a.greedy != b.greedy).sum()) for a, b in zip(wave, single))
    return Row(name, prepared.suite.name, len(prepared.items), 1 + len(layers), wave_s, per_s, flops, delta, flips)


def prepared_suites(tokenizer: Any, limits: dict[str, int], max_length: int | None) -> list[PreparedSuite]:
    from pytest_layercheck.suites.builtin import load_builtin_suite

    out = []
    for name in SUITES:
        if name in limits:
            suite = load_builtin_suite(name)
            out.append(
                prepare(suite.limited(limits[name] or None), suite.default_protocol, tokenizer, max_length=max_length)
            )
    return out


def run_rows(
    model: torch.nn.Module,
    label: str,
    suites: Sequence[PreparedSuite],
    device: torch.device,
    deadline: float,
    compare: bool,
    peak: float,
) -> list[Row]:
    rows = []
    for prepared in suites:
        if time.monotonic() > deadline:
            print(f"deadline reached: skipping {label} / {prepared.suite.name}", flush=True)
            continue
        rows.append(sweep_row(model, label, prepared, device, compare=compare))
        print(tabulate([rows[-1].cells(peak)], headers=HEADERS), flush=True)
    if len(rows) > 1:
        total = Row(
            label,
            "three suites" if len(rows) == 3 else "total",
            sum(r.items for r in rows),
            rows[0].evaluations,
            sum(r.wavefront_s for r in rows),
            sum(r.per_ablation_s for r in rows) if compare else None,
            sum(r.flops for r in rows),
            max(r.max_delta for r in rows) if compare else None,
            sum(r.flips for r in rows) if compare else None,
        )
        rows.append(total)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="default")
    parser.add_argument("--limits", default="knowledge=0,reasoning=0,retrieval=0", help="items per suite, 0 = all")
    parser.add_argument("--limits-7b", default="knowledge=40,reasoning=40,retrieval=10")
    parser.add_argument("--skip-7b", action="store_true")
    parser.add_argument("--no-compare", action="store_true", help="time the wavefront only")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--deadline", type=float, default=540.0, help="seconds after which rows are skipped")
    parser.add_argument("--append", default=None, help="append the tables to this markdown file")
    args = parser.parse_args(argv)
    started = time.monotonic()
    deadline = started + args.deadline
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_sweep: CUDA is not available; pass --device cpu for the CPU rows", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_peak(device, dtype, 8192 if device.type == "cuda" else 2048)
    from pytest_layercheck.model.loading import load_model

    loaded = load_model(args.model, device=str(device), dtype=dtype)
    compare = not args.no_compare
    threads = f", {torch.get_num_threads()} torch threads" if device.type == "cpu" else ""
    rate = f"{peak / 1e12:.1f} TFLOP/s" if device.type == "cuda" else f"{peak / 1e9:.0f} GFLOP/s"
    header = (
        f"{machine()}; torch {torch.__version__}{threads}; {str(dtype).removeprefix('torch.')} matmul "
        f"peak measured in this process: {rate}"
    )
    print(header, flush=True)
    warm = prepared_suites(loaded.tokenizer, {"knowledge": 4}, loaded.runtime.max_length)
    sweep_row(loaded.model, "warm-up", warm[0], device, compare=False)  # kernels, allocator, plans
    small = prepared_suites(loaded.tokenizer, parse_limits(args.limits), loaded.runtime.max_length)
    rows = run_rows(loaded.model, loaded.name, small, device, deadline, compare, peak)
    memory = []
    if device.type == "cpu":
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        weights = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
        memory.append(f"Peak RSS {rss / 2**30:.2f} GiB with {weights / 2**30:.2f} GiB of weights.")
    if device.type == "cuda":
        memory.append(f"{loaded.name}: peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    if device.type == "cuda" and not args.skip_7b and time.monotonic() < deadline:
        big = random_llama(device, dtype, vocab=len(loaded.tokenizer))
        torch.cuda.reset_peak_memory_stats(device)
        suites = prepared_suites(loaded.tokenizer, parse_limits(args.limits_7b), 4096)
        sweep_row(big, "warm-up", prepared_suites(loaded.tokenizer, {"knowledge": 2}, 4096)[0], device, compare=False)
        rows += run_rows(big, "random 7B-shaped Llama", suites, device, deadline, compare, peak)
        memory.append(f"7B-shaped: peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    table = tabulate([r.cells(peak) for r in rows], headers=HEADERS, tablefmt="github")
    text = "\n".join(
        [
            (
                f"### Layer sweeps, wavefront vs per-ablation (`python benchmarks/gpu_sweep.py`), "
                f"{datetime.date.today().isoformat()}"
            ),
            "",
            (
                f"{header}; 1-minute load average at the end {os.getloadavg()[0]:.1f}; "
                f"{time.monotonic() - started:.0f} s in all."
            ),
            "",
            table,
            "",
            *memory,
        ]
    )
    publish(text, args.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
