"""How many CPU threads torch should use, chosen on the machine as it is now, and how idle ones wait.

Why: torch's default (one thread per core) is right on a quiet machine and badly wrong on a shared one.
OpenMP threads wait for each other at every parallel region, so when another process keeps one of two
cores busy, two threads run several times slower than one. CI runners and developer machines are often
shared, so the count is chosen by measurement, not by core count (:func:`choose_threads`):

1. ``LAYERCHECK_THREADS=N`` (N ≥ 1) is used as given; ``auto`` or unset measures.
2. An explicit ``OMP_NUM_THREADS`` is the user's choice and is kept.
3. Otherwise the usable cores are those of the process's CPU affinity, capped by a cgroup CPU quota
   (containers). With one usable core the answer is 1.
4. Cores other processes keep busy now are not counted: :func:`busy_elsewhere` samples the kernel's
   per-CPU counters (``/proc/stat``) over :data:`SAMPLE_SECONDS`, less this process's own CPU time; use
   elsewhere beyond :data:`BUSY_SLACK` takes the whole core away, since a core taken costs far more than
   a second thread saves. Without ``/proc/stat`` the 1-minute load average stands in (it lags).
5. Under pytest-xdist (``-n N``) a worker's cores are its share, ``usable // N`` (at least 1), and the
   sample counts only the use beyond the other workers' shares.
6. With more than one core left, a short calibration times a matmul of the shape scoring runs
   (:data:`CALIBRATION_SHAPE`) with 1 thread and with every free core, alternating, best of
   :data:`CALIBRATION_ROUNDS`; more threads are kept when they are at least :data:`MIN_GAIN` per extra
   thread faster.

OpenMP reads its wait policy once, when its runtime starts (in practice at ``import torch``), so
:func:`prefer_sleeping_threads` sets ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once) while it
is unset and torch is not imported yet: spinning threads lose badly once another process takes a core,
and a machine that is quiet when a run starts need not stay so. A policy the user set, ``ACTIVE`` on a
dedicated machine included, is kept. :func:`split_over_cores` runs independent work one task per
thread, and :func:`share_malloc_arena` keeps those threads on one malloc arena.

The CLI and the pytest plugin call :func:`prepare_process` when they start and :func:`configure_threads`
once before loading a model; it is idempotent and applies ``torch.set_num_threads``. The measurements
behind these choices: ``docs/performance.md`` and ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pytest_layercheck.core.errors import positive_int

T = TypeVar("T")

ENV = "LAYERCHECK_THREADS"
#: Required speed-up per extra thread for more than one thread (2 threads: ≥ 1.2× of 1 thread).
MIN_GAIN = 0.2
#: Calibration matmul (rows × inner × outer): a prompt batch through an MLP projection of the
#: default model. Big enough to be compute-bound, small enough to time in tens of milliseconds.
CALIBRATION_SHAPE = (2048, 576, 1536)
CALIBRATION_ROUNDS = 5
#: How long :func:`busy_elsewhere` watches the CPU counters.
SAMPLE_SECONDS = 0.5
#: CPU use elsewhere below this share of a core does not take the core away (kernel threads, a shell).
BUSY_SLACK = 0.25
#: ``mallopt`` parameter for the number of malloc arenas (glibc's ``M_ARENA_MAX``).
_M_ARENA_MAX = -8


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count and why: ``source`` is ``LAYERCHECK_THREADS``, ``OMP_NUM_THREADS``,
    ``single core``, ``cores busy`` or ``measured``; ``timings`` holds the calibration's best seconds
    per count; ``busy`` the cores' worth of CPU other processes used when sampled."""

    threads: int
    source: str
    cores: int
    timings: dict[int, float] | None = None
    wait_policy: str | None = None
    busy: float | None = None
    #: No policy was set by anyone and torch was imported before layercheck could set PASSIVE.
    policy_late: bool = False

    def describe(self) -> str:
        text = f"{self.threads} torch thread{'s' if self.threads != 1 else ''} ({self.source}"
        if self.timings:
            text += ", " + ", ".join(
                f"{t} thread{'s' if t != 1 else ''}: {s * 1e3:.0f} ms" for t, s in sorted(self.timings.items())
            )
        text += f"; {self.cores} usable core{'s' if self.cores != 1 else ''}"
        if self.busy is not None:
            text += f", {self.busy:.1f} busy elsewhere"
        text += ")"
        if self.wait_policy:
            text += f"; OMP_WAIT_POLICY={self.wait_policy}"
        elif self.policy_late:
            text += "; OpenMP's default wait policy (torch was imported before layercheck could set PASSIVE)"
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


def _affinity() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    affinity = _affinity()
    cores = len(affinity) if affinity else (os.cpu_count() or 1)
    limit = _cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, math.floor(limit)))
    return max(1, cores)


def _cpu_counters(cpus: set[int] | None, stat: Path) -> tuple[int, int] | None:
    """(busy, total) clock ticks summed over ``cpus`` (all CPUs when None) from a ``/proc/stat`` file."""
    busy = total = 0
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or (cpus is not None and int(name[3:]) not in cpus):
            continue
        ticks = [int(v) for v in rest.split()]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        steal = ticks[7] if len(ticks) > 7 else 0  # counted busy: the hypervisor gave the time away
        total += sum(ticks[:7]) + steal
        busy += sum(ticks[:7]) + steal - idle
    return (busy, total) if total else None


def busy_elsewhere(seconds: float = SAMPLE_SECONDS, stat: Path = Path("/proc/stat")) -> float | None:
    """Cores' worth of CPU time other processes used over the next ``seconds``, on this process's CPUs.

    None where the kernel publishes no per-CPU counters (not Linux).
    """
    cpus = _affinity()
    first, own, start = _cpu_counters(cpus, stat), time.process_time(), time.monotonic()
    if first is None:
        return None
    time.sleep(seconds)
    second, own, elapsed = _cpu_counters(cpus, stat), time.process_time() - own, time.monotonic() - start
    if second is None or second[1] <= first[1]:
        return None
    cores = len(cpus) if cpus else (os.cpu_count() or 1)
    used = cores * (second[0] - first[0]) / (second[1] - first[1])
    return max(0.0, used - own / elapsed)


def free_cores(cores: int, busy: float | None) -> int:
    """Usable cores less the cores in use elsewhere, any share above ``BUSY_SLACK`` counting whole; at least 1."""
    if busy is None:
        return cores
    taken = max(0, math.ceil(busy - BUSY_SLACK))
    return max(1, cores - taken)


def calibrate(
    counts: tuple[int, ...], rounds: int = CALIBRATION_ROUNDS, shape: tuple[int, int, int] = CALIBRATION_SHAPE
) -> dict[int, float]:
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


def choose_threads(environ: Mapping[str, str] | None = None, measure: bool = True) -> ThreadChoice:
    """Decide the thread count (see the module docstring); changes nothing."""
    env = os.environ if environ is None else environ
    cores = usable_cores()
    requested = _requested(env.get(ENV, ""))
    if requested is not None:
        return ThreadChoice(requested, ENV, cores)
    omp = env.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return ThreadChoice(int(omp), "OMP_NUM_THREADS", cores)
    workers = xdist_workers(env)
    share = max(1, cores // workers)
    if share == 1:
        return ThreadChoice(1, "single core" if workers == 1 else f"1 core per xdist worker of {workers}", cores)
    busy = sample_busy()
    if busy is not None and workers > 1:
        busy = max(0.0, busy - (workers - 1) * share)  # the other workers' shares are theirs
    free = free_cores(share, busy)
    if free == 1:
        return ThreadChoice(1, "cores busy", cores, busy=busy)
    if not measure:
        return ThreadChoice(free, "free cores", cores, busy=busy)
    timings = calibrate((1, free))
    return ThreadChoice(pick(timings), "measured", cores, timings, busy=busy)


def xdist_workers(environ: Mapping[str, str]) -> int:
    """How many pytest-xdist workers share the machine: ``PYTEST_XDIST_WORKER_COUNT`` in a worker, else 1."""
    if not environ.get("PYTEST_XDIST_WORKER"):
        return 1
    count = environ.get("PYTEST_XDIST_WORKER_COUNT", "").strip()
    return int(count) if count.isdigit() and int(count) > 0 else 1


def sample_busy() -> float | None:
    """Cores in use elsewhere now (:func:`busy_elsewhere`), or the 1-minute load average without ``/proc/stat``."""
    busy = busy_elsewhere()
    return busy if busy is not None else load_average()


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), None where the system has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


_CHOSEN: ThreadChoice | None = None
_POLICY: str | None = None  # the wait policy this process set, if it did
_ARENA_SHARED: bool | None = None  # whether share_malloc_arena capped the arenas (None: not asked yet)


def prepare_process() -> None:
    """What must be settled before torch starts threads, called first by the CLI and the pytest plugin:
    OpenMP's wait policy (:func:`prefer_sleeping_threads`) and one shared malloc arena
    (:func:`share_malloc_arena`; set later, threads already started keep arenas of their own)."""
    prefer_sleeping_threads()
    share_malloc_arena()


def prefer_sleeping_threads() -> str | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` while it can still take effect (torch not imported) and nobody
    set a policy; returns the policy this process set, or None."""
    global _POLICY
    if _POLICY is None and "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = _POLICY = "PASSIVE"  # read when the OpenMP runtime starts
    return _POLICY


def configure_threads(force: bool = False) -> ThreadChoice:
    """Choose the thread count once per process and apply it to torch; returns the choice.

    Call it before a model is loaded (the CLI's ``load``, the plugin's session model). Later calls
    return the first choice unless ``force``.
    """
    global _CHOSEN
    if _CHOSEN is not None and not force:
        return _CHOSEN
    share_malloc_arena()  # before the calibration starts OpenMP's threads, so that they share it too
    policy = prefer_sleeping_threads()
    late = policy is None and "OMP_WAIT_POLICY" not in os.environ
    import torch

    choice = choose_threads()
    torch.set_num_threads(choice.threads)
    _CHOSEN = ThreadChoice(choice.threads, choice.source, choice.cores, choice.timings, policy, choice.busy, late)
    return _CHOSEN


def split_over_cores(
    tasks: Sequence[Callable[[], T]], workers: int, on_result: Callable[[T], None] | None = None
) -> list[T]:
    """Run independent ``tasks`` on ``workers`` threads of one torch thread each; their results, in order.

    Why: torch's intra-op threads meet at every operator, and on few cores that costs more than
    independent work on each core (``docs/performance.md``). The kernels release the GIL, so threads of
    one process are enough. Each task sees the caller's grad and inference mode (thread-local in torch); torch's
    thread count is restored when all are done. With ``workers <= 1`` or one task, they run here.
    ``on_result(result)`` is called in the calling thread for each result, in task order, as soon as
    it and those before it are done (progress bars).
    """

    def report(result: T) -> T:
        if on_result is not None:
            on_result(result)
        return result

    if workers <= 1 or len(tasks) <= 1:
        return [report(task()) for task in tasks]
    import torch

    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def run(task: Callable[[], T]) -> T:
        # In this thread too: MKL's thread count is per thread, and a new thread's first matmul would
        # otherwise take OpenMP's default (all cores), two threads per task.
        torch.set_num_threads(1)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return task()

    share_malloc_arena()
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # read by each new thread's first parallel operator (and MKL's global count)
    try:
        with ThreadPoolExecutor(max_workers=min(workers, len(tasks)), thread_name_prefix="layercheck") as pool:
            futures = [pool.submit(run, task) for task in tasks]
            try:
                return [report(future.result()) for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    finally:
        torch.set_num_threads(before)


def cores_for(device: Any) -> int:
    """How many tasks :func:`split_over_cores` runs at once for work on ``device``: torch's thread
    count on a CPU, else 1 (an accelerator is fed from one thread)."""
    import torch

    return torch.get_num_threads() if getattr(device, "type", None) == "cpu" else 1


def share_malloc_arena() -> bool:
    """Have threads started from now on allocate from the one main malloc arena (glibc), unless the
    user set ``MALLOC_ARENA_MAX``; returns whether the cap was set. :func:`prepare_process` calls it
    when the CLI starts and when pytest loads the plugin, before any other thread runs (threads that
    already have an arena keep it); :func:`configure_threads` calls it too, for library callers.

    Why: glibc gives each new thread an arena of its own, which keeps the blocks freed in it, and the
    layer sweep's chunks on several threads then peak higher than on one; capped only after OpenMP's
    threads have run, the cap helps less (``docs/performance.md``). Set ``MALLOC_ARENA_MAX`` yourself to
    keep glibc's own choice. Elsewhere than glibc this does nothing.
    """
    global _ARENA_SHARED
    if _ARENA_SHARED is None:
        _ARENA_SHARED = False
        if "MALLOC_ARENA_MAX" not in os.environ and sys.platform.startswith("linux"):
            import ctypes

            mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
            _ARENA_SHARED = bool(mallopt is not None and mallopt(_M_ARENA_MAX, 1) == 1)
    return _ARENA_SHARED
