"""How many CPU threads torch should use, measured on the machine as it is now.

torch's default (one thread per core) is right on a quiet machine and badly wrong on a shared one:
OpenMP threads spin-wait for each other at every parallel region, so when another process keeps
one of two cores busy, two threads run several times SLOWER than one (a default profile took
716 s with 2 threads against 154 s quiet; ``benchmarks/RESULTS.md``). CI runners and developer
machines are often shared, so the thread count is chosen by measurement, not by core count:

1. ``LAYERCHECK_THREADS=N`` (N ≥ 1) is used as given; ``auto`` or unset measures.
2. An explicit ``OMP_NUM_THREADS`` is the user's choice and is kept.
3. Otherwise the usable cores are those of the process's CPU affinity, capped by a cgroup CPU
   quota (containers). With one usable core the answer is 1.
4. Cores other processes keep busy are not counted: the usable cores less the 1-minute load
   average (rounded), at least 1. A load average of 1 on 2 cores means 1 thread, without measuring.
5. With more left, a short calibration times a matmul of the shape scoring runs (2048 tokens × 576 →
   1536, float32) with 1 thread and with every usable core, alternating, best of a few runs
   (about 0.3 s in all). More threads are kept only when they are at least ``MIN_GAIN`` per extra
   thread faster: on a shared core the extra thread gains little (and the spin-waiting costs much
   more across a whole profile than the calibration shows), so near-ties go to 1 thread.

The choice is made once, at the start: the stakes are asymmetric (on 2 cores a second thread
saves at most about a third of the time on a quiet machine, and cost 3.4× in a side-by-side run
when another process took a core mid-run), so a machine that is busy on average gets 1 thread even
when the calibration catches a quiet moment. ``LAYERCHECK_THREADS`` overrides all of this.

OpenMP reads its wait policy once, when the runtime starts (in practice at ``import torch``).
:func:`configure_threads` sets ``OMP_WAIT_POLICY=PASSIVE`` when it is unset and torch is not
imported yet, so that idle threads sleep instead of spinning; later in the process it cannot take
effect and is left alone (with the thread count measured, a busy machine gets 1 thread anyway).

The CLI and the pytest plugin call :func:`configure_threads` once before loading a model; it is
idempotent and applies ``torch.set_num_threads``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_layercheck.core.errors import positive_int

ENV = "LAYERCHECK_THREADS"
#: Required speed-up per extra thread for more than one thread (2 threads: ≥ 1.45× of 1 thread).
MIN_GAIN = 0.45
#: Calibration matmul (rows × inner × outer): a prompt batch through an MLP projection of the
#: default model. Big enough to be compute-bound, small enough to time in tens of milliseconds.
CALIBRATION_SHAPE = (2048, 576, 1536)
CALIBRATION_ROUNDS = 3


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count and why: ``source`` is ``LAYERCHECK_THREADS``, ``OMP_NUM_THREADS``,
    ``single core`` or ``measured``; ``timings`` holds the calibration's best seconds per count."""

    threads: int
    source: str
    cores: int
    timings: dict[int, float] | None = None
    wait_policy: str | None = None
    load: float | None = None

    def describe(self) -> str:
        text = f"{self.threads} torch thread{'s' if self.threads != 1 else ''} ({self.source}"
        if self.timings:
            text += ", " + ", ".join(f"{t} thread{'s' if t != 1 else ''}: {s * 1e3:.0f} ms"
                                     for t, s in sorted(self.timings.items()))
        text += f"; {self.cores} usable core{'s' if self.cores != 1 else ''}"
        if self.load is not None:
            text += f", load average {self.load:.1f}"
        text += ")"
        if self.wait_policy:
            text += f"; OMP_WAIT_POLICY={self.wait_policy}"
        return text


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), None without one."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, math.floor(limit)))
    return max(1, cores)


def calibrate(counts: tuple[int, ...], rounds: int = CALIBRATION_ROUNDS,
              shape: tuple[int, int, int] = CALIBRATION_SHAPE) -> dict[int, float]:
    """Best seconds of one float32 matmul of ``shape`` per thread count, counts alternating each round.

    Leaves torch's thread count as it found it.
    """
    import torch

    rows, inner, outer = shape
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(rows, inner, generator=generator)
    b = torch.randn(inner, outer, generator=generator)
    before = torch.get_num_threads()
    best = {count: float("inf") for count in counts}
    try:
        for count in counts:  # warm-up: thread pools start, caches fill
            torch.set_num_threads(count)
            torch.mm(a, b)
        for _ in range(rounds):
            for count in counts:
                torch.set_num_threads(count)
                start = time.perf_counter()
                torch.mm(a, b)
                best[count] = min(best[count], time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return best


def pick(timings: dict[int, float], min_gain: float = MIN_GAIN) -> int:
    """The most threads whose speed-up over 1 thread is at least ``1 + min_gain·(threads - 1)``."""
    one = timings[1]
    good = [t for t, s in timings.items() if t == 1 or one / s >= 1 + min_gain * (t - 1)]
    return max(good)


def _requested(value: str) -> int | None:
    """The thread count ``LAYERCHECK_THREADS`` asks for; None for ``auto``/empty."""
    text = value.strip().lower()
    if text in ("", "auto", "0"):
        return None
    return positive_int(text, f"{ENV}={value!r} is not a thread count", f"set {ENV} to a positive integer or 'auto'")


def choose_threads(environ: dict[str, str] | None = None, measure: bool = True) -> ThreadChoice:
    """Decide the thread count (see the module docstring); changes nothing."""
    env = os.environ if environ is None else environ
    cores = usable_cores()
    requested = _requested(env.get(ENV, ""))
    if requested is not None:
        return ThreadChoice(requested, ENV, cores)
    omp = env.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return ThreadChoice(int(omp), "OMP_NUM_THREADS", cores)
    if cores == 1:
        return ThreadChoice(1, "single core", cores)
    load = load_average()
    free = max(1, cores - round(load)) if load is not None else cores
    if free == 1:
        return ThreadChoice(1, "cores busy", cores, load=load)
    if not measure:
        return ThreadChoice(free, "free cores", cores, load=load)
    timings = calibrate((1, free))
    return ThreadChoice(pick(timings), "measured", cores, timings, load=load)


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), None where the system has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


_CHOSEN: ThreadChoice | None = None


def configure_threads(force: bool = False) -> ThreadChoice:
    """Choose the thread count once per process and apply it to torch; returns the choice.

    Call it before a model is loaded (the CLI's ``load``, the plugin's session model). Later calls
    return the first choice unless ``force``.
    """
    global _CHOSEN
    if _CHOSEN is not None and not force:
        return _CHOSEN
    policy = None
    if "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = policy = "PASSIVE"  # read when the OpenMP runtime starts
    import torch

    choice = choose_threads()
    torch.set_num_threads(choice.threads)
    _CHOSEN = ThreadChoice(choice.threads, choice.source, choice.cores, choice.timings, policy, choice.load)
    return _CHOSEN
