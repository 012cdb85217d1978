"""Peak memory of a profile, call by call: the resident set and the live heap, against the weights.

    python benchmarks/profile_memory.py [--model default] [--append benchmarks/RESULTS.md]
                                        [-- more `layercheck profile` options]

It runs ``layercheck profile --no-cache`` in this process (the thread choice left to layercheck)
while a thread samples, every 20 ms, the resident set (``/proc/self/statm``) and glibc's live heap
(``mallinfo2``: bytes handed out by malloc, so the resident set less the heap's free holes, the
libraries and the weights' file mapping). Each ``evaluate_ablations`` call of the profile is one
row: what it scored, how long it took, and the largest values seen during it. The issue's target,
peak memory at most the weights + 1 GiB, is read against the process's peak resident set, which
also holds torch's and transformers' own code and data (the first line of the output).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pytest_layercheck.model.threads import prepare_process

GIB = 2**30


class _Heap(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap_reader() -> Callable[[], float] | None:
    """GiB that malloc has handed out and not got back (glibc's ``mallinfo2``), or None without glibc."""
    try:
        info = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    info.restype = _Heap

    def live() -> float:
        heap = info()
        return (heap.uordblks + heap.hblkhd) / GIB

    return live


def resident() -> float:
    """GiB resident now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GIB


class Sampler:
    """Largest resident set and live heap per phase, sampled on a thread of its own."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.heap = interval, heap_reader()
        self.phase = "start"
        self.peaks: dict[str, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def sample(self) -> None:
        rss, heap = self.peaks.get(self.phase, (0.0, 0.0))
        self.peaks[self.phase] = (max(rss, resident()), max(heap, self.heap() if self.heap else 0.0))

    def enter(self, phase: str) -> None:
        self.sample()
        self.phase = phase
        self.sample()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def weights_bytes(model: Any) -> int:
    """Bytes of the model's parameters and buffers, each storage once (tied embeddings share one)."""
    seen: dict[int, int] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--append", default=None, help="add the result section to this markdown file")
    parser.add_argument("profile_options", nargs="*", help="more `layercheck profile` options, after --")
    args = parser.parse_args(argv)
    prepare_process()  # as the CLI does, before torch starts any thread
    import tempfile

    import torch
    import transformers

    import pytest_layercheck.evaluation.profiler as profiler
    from pytest_layercheck.cli import main as layercheck

    libraries = resident()
    rows: list[list[object]] = []
    weights: list[int] = []
    with Sampler() as sampler:
        evaluate, build = profiler.evaluate_ablations, profiler.build_profile

        def measured_evaluate(model: Any, tokenizer: Any, suite: Any, info: Any, ablations: Any, **kwargs: Any) -> Any:
            phase = f"{info.name}: {len(suite.items)} items × {len(ablations) + 1}"
            sampler.enter(phase)
            started = time.perf_counter()
            try:
                return evaluate(model, tokenizer, suite, info, ablations, **kwargs)
            finally:
                seconds = time.perf_counter() - started
                sampler.enter("between calls")
                rss, heap = sampler.peaks[phase]
                rows.append([phase, f"{seconds:.1f}", f"{rss:.2f}", f"{heap:.2f}" if sampler.heap else "-"])

        def measured_build(loaded: Any, *a: Any, **kwargs: Any) -> Any:
            weights.append(weights_bytes(loaded.model))
            return build(loaded, *a, **kwargs)

        profiler.evaluate_ablations, profiler.build_profile = measured_evaluate, measured_build
        try:
            with tempfile.TemporaryDirectory() as folder:
                status = layercheck(
                    ["profile", args.model, "--no-cache", "--baseline-dir", folder, *args.profile_options]
                )
        finally:
            profiler.evaluate_ablations, profiler.build_profile = evaluate, build
    if status not in (0, 1) or not weights:
        print(f"layercheck profile ended with {status}", file=sys.stderr)
        return 2
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # KiB on Linux
    weight = weights[0] / GIB
    from depth_sweep import publish, section  # a sibling script

    description = (
        f"transformers {transformers.__version__}. `layercheck profile {args.model} --no-cache"
        f"{''.join(' ' + option for option in args.profile_options)}`, {torch.get_num_threads()} torch "
        f"threads. Resident after importing torch and transformers: {libraries:.2f} GiB; weights: "
        f"{weight:.2f} GiB; peak resident set: {peak:.2f} GiB = weights + {peak - weight:.2f} GiB "
        "(target: weights + 1 GiB)."
    )
    text = section("Profile memory", description, rows, ["call", "seconds", "peak resident GiB", "peak live heap GiB"])
    publish(text, args.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
