"""A profile's evaluations shared out among the workers of one pytest-xdist run.

Under ``pytest -n N`` every worker needs the same profile. Rather than each computing all of it, the
workers split the evaluations and exchange them through the result cache; each ends with the whole
profile, and no evaluation is computed twice.

* **Units.** The unit of work is one call of the activation-reusing sweep (``evaluate_ablations``):
  the intact model once, then the ablations as streams branching off it. A sweep's ablations are
  dealt into ``N`` groups, balanced by their estimated cost; one group is one call (with its own
  intact pass as the base of the reuse), and each evaluation in it is its own cache entry. The
  numbers do not depend on the grouping: rows of a batched call never interact (on the CPU a split
  sweep is bit-identical to the whole one; tests check it).
* **Assignment.** Units go to workers by longest-processing-time on the estimated cost (the FLOPs
  the unit's evaluations require, ``scoring.flops``: suites differ tenfold in tokens per item, so
  items are no measure), deterministic for a given plan; worker ``k`` computes its units first,
  costliest first.
* **Claims.** A worker claims a unit's evaluations just before computing them: a file made atomically
  (``os.link``) in the run's shared folder. A claimed evaluation is computed by its claimant only,
  also when the workers plan different sets (marker checks ask for a partial profile,
  ``layercheck_profile`` for the complete one). Having done its own units, a worker takes the units
  nobody has claimed yet, each other worker's cheapest (last) first: an estimate that was off, or a
  worker that started late, costs at most about one unit instead of idling the others; and under
  xdist a worker that runs no profile test never claims its share, and nobody waits for it.
* **Waiting.** Then it waits for the evaluations others claimed to appear. Each worker touches a
  heartbeat file at every sweep step. When a claimant's process has ended (same host), it gave its
  claims up (its computation failed), or it showed no sign of life for ``timeout`` seconds, the
  waiting worker takes those claims over, computes the evaluations itself and says so (``log``): the
  profile stays complete and correct. With ``fallback=False`` it raises :class:`ShardTimeoutError`
  instead, naming the missing cells.
* **Exchange.** Results go to the result cache when it is writable (a later run reuses them). With
  the cache off (``--layercheck-no-cache``) or read-only they go to a folder inside the run's shared
  folder, which the controller deletes at the end of the run: nothing is written where the user said
  not to write, and with the cache off nothing from an earlier run is read.

Nothing here imports pytest: the plugin passes in the worker's :class:`Shard`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

from pytest_layercheck.core.atomic import atomic_write_text
from pytest_layercheck.core.errors import LayercheckError
from pytest_layercheck.data.profile_data import INTACT, Evaluation
from pytest_layercheck.evaluation.result_cache import ResultCache

#: Seconds without a sign of life (a sweep step) after which a claimant is taken for hung.
DEFAULT_TIMEOUT = 600.0
POLL_SECONDS = 0.2
HEARTBEAT_SECONDS = 1.0
HOST = socket.gethostname()


class ShardTimeoutError(LayercheckError):
    """Evaluations another xdist worker claimed did not appear in time (only with ``fallback=False``)."""


@dataclass(frozen=True)
class Shard:
    """This process's place in the run: worker ``index`` of ``count``, and the folder they share."""

    index: int
    count: int
    folder: Path
    worker: str = ""
    timeout: float = DEFAULT_TIMEOUT
    #: After a timeout, compute the missing evaluations here (True) or raise ShardTimeoutError.
    fallback: bool = True
    poll: float = POLL_SECONDS

    @property
    def name(self) -> str:
        return self.worker or f"worker {self.index}"


#: Computes the named keys of one sweep in ONE call; the second argument is called at every step.
Compute = Callable[[Sequence[str], Callable[[], None]], Mapping[str, Evaluation]]


class _Lookup(Protocol):
    """A stored evaluation of job ``j``'s ``key``, and whether the result cache had it (``run_sharded``)."""

    def __call__(self, j: int, key: str, polling: bool = True) -> tuple[Evaluation | None, bool]: ...


@dataclass(frozen=True)
class SweepJob:
    """One sweep the profile needs: its keys (``INTACT`` first when it has it, then the ablations in
    plan order), how to name a key's cache entry, and how to compute any subset of its keys."""

    label: str
    keys: tuple[str, ...]
    identity: Callable[[str], Mapping[str, object]]
    compute: Compute
    #: Estimated cost of the intact pass, which every call runs, and of each ablation key. Called only
    #: when some of the job's keys are to be computed (an estimate may need the suite tokenised).
    estimate: Callable[[], tuple[float, Mapping[str, float]]] = lambda: (1.0, {})

    @cached_property
    def _costs(self) -> tuple[float, Mapping[str, float]]:
        return self.estimate()

    def key_cost(self, key: str) -> float:
        base, costs = self._costs
        return costs.get(key, base)

    def cost(self, keys: Sequence[str]) -> float:
        return self._costs[0] + sum(self.key_cost(k) for k in keys if k != INTACT)


@dataclass(frozen=True)
class Unit:
    """Some keys of job ``job``, computed in one call."""

    job: int
    keys: tuple[str, ...]
    cost: float


def split(job: SweepJob, keys: Sequence[str], count: int) -> list[tuple[str, ...]]:
    """``keys`` of ``job`` in up to ``count`` groups of about equal cost (greedy, costliest first),
    each in plan order; ``INTACT`` goes with the first group (every call computes it anyway)."""
    ablations = [k for k in keys if k != INTACT]
    groups: list[list[str]] = [[] for _ in range(max(1, min(count, len(ablations))))]
    loads = [0.0] * len(groups)
    for key in sorted(ablations, key=lambda k: (-job.key_cost(k), keys.index(k))):
        g = loads.index(min(loads))
        groups[g].append(key)
        loads[g] += job.key_cost(key)
    if INTACT in keys:
        groups[0].append(INTACT)
    order = {k: i for i, k in enumerate(keys)}
    return [tuple(sorted(group, key=order.__getitem__)) for group in groups if group]


def plan_units(jobs: Sequence[SweepJob], pending: Sequence[Sequence[str]], count: int) -> list[Unit]:
    """The units of work: each job's pending keys split ``count`` ways."""
    return [
        Unit(j, group, jobs[j].cost(group))
        for j, keys in enumerate(pending)
        if keys
        for group in split(jobs[j], keys, count)
    ]


def assign(units: Sequence[Unit], count: int) -> list[int]:
    """The worker of each unit: longest-processing-time first, ties to the earlier unit and lower worker."""
    owners = [0] * len(units)
    loads = [0.0] * max(1, count)
    for i in sorted(range(len(units)), key=lambda i: (-units[i].cost, i)):
        w = loads.index(min(loads))
        owners[i] = w
        loads[w] += units[i].cost
    return owners


# ------------------------------------------------------------------------------------- claims
@dataclass(frozen=True)
class Claim:
    generation: int
    worker: str
    pid: int
    host: str
    state: str  # working, done or released
    path: Path


class Exchange:
    """The run's shared folder: claims (``claims/<entry key>.<generation>``), heartbeats
    (``alive/<worker>.<pid>``) and, when the result cache cannot take them, the results."""

    def __init__(self, shard: Shard, cache: ResultCache) -> None:
        self.shard = shard
        self.cache = cache
        if cache.writable:
            self.store = cache
        else:
            # Private to this run (the controller made the folder, mode 0700): a key derived from its
            # path signs the entries, so no per-user key file is created for a run without a cache.
            key = hashlib.sha256(str(shard.folder.resolve()).encode()).digest()
            self.store = ResultCache(shard.folder / "results", mode="readwrite", key=key)
        self.claims = shard.folder / "claims"
        self.claims.mkdir(parents=True, exist_ok=True)
        self.alive = shard.folder / "alive" / f"{_safe(shard.name)}.{os.getpid()}"
        self.alive.parent.mkdir(parents=True, exist_ok=True)
        self._beaten = 0.0
        self.heartbeat(force=True)

    # -- heartbeats ------------------------------------------------------------------------
    def heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._beaten >= HEARTBEAT_SECONDS:
            self._beaten = now
            self.alive.touch()

    def _silent_for(self, claim: Claim) -> float:
        """Seconds since the claimant's last sign of life (its heartbeat, else its claim)."""
        alive = self.shard.folder / "alive" / f"{_safe(claim.worker)}.{claim.pid}"
        for path in (alive, claim.path):
            with contextlib.suppress(OSError):
                return time.time() - path.stat().st_mtime
        return 0.0

    # -- claims ----------------------------------------------------------------------------
    def mine(self, claim: Claim) -> bool:
        return claim.worker == self.shard.name and claim.pid == os.getpid() and claim.host == HOST

    def holder(self, digest: str) -> Claim | None:
        """The newest claim of an entry, or None."""
        found = []
        for path in self.claims.glob(f"{digest}.*"):
            suffix = path.name.rsplit(".", 1)[1]
            if suffix.isdigit():
                found.append((int(suffix), path))
        for generation, path in sorted(found, reverse=True):
            try:
                data = json.loads(path.read_text())
                return Claim(
                    generation, str(data["worker"]), int(data["pid"]), str(data["host"]), str(data["state"]), path
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return None

    def claim(self, digest: str, generation: int = 0) -> bool:
        """Claim generation ``generation`` of an entry; False when someone has it. A takeover claims
        the generation after the holder's, so of several workers taking over one claim only one wins."""
        path = self.claims / f"{digest}.{generation}"
        staging = self.claims / f".{digest}.{os.getpid()}.{secrets.token_hex(4)}"
        staging.write_text(self._record("working"))
        try:
            os.link(staging, path)
            return True
        except FileExistsError:
            return False
        finally:
            staging.unlink()

    def _record(self, state: str) -> str:
        return json.dumps(
            {"worker": self.shard.name, "pid": os.getpid(), "host": HOST, "state": state, "time": time.time()}
        )

    def mark(self, digest: str, state: str) -> None:
        claim = self.holder(digest)
        if claim is not None and self.mine(claim):
            atomic_write_text(claim.path, self._record(state))

    def why_take_over(self, claim: Claim | None) -> str | None:
        """Why a waiting worker should compute a claimed evaluation itself; None: keep waiting."""
        if claim is None:
            return "nobody claimed it"
        if claim.state == "done":
            return f"{claim.worker} computed it but its result is not readable (see its warnings)"
        if claim.state == "released":
            return f"{claim.worker} gave it up (its computation failed)"
        if self.mine(claim):
            return "this worker claimed it earlier and did not finish it"
        if claim.host == HOST and not _process_alive(claim.pid):
            return f"{claim.worker}'s process {claim.pid} ended before computing it"
        silent = self._silent_for(claim)
        if silent > self.shard.timeout:
            return f"{claim.worker} showed no sign of life for {silent:.0f} s (timeout {self.shard.timeout:.0f} s)"
        return None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "worker"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists
        return True
    return True


# ------------------------------------------------------------------------------------ the run
def run_sharded(
    jobs: Sequence[SweepJob], shard: Shard, cache: ResultCache, log: Callable[[str], None] | None = None
) -> list[dict[str, Evaluation]]:
    """Every job's evaluations, computed here for this worker's share and taken from the others'.

    Counts on ``cache``: ``hits`` (found in the result cache before this run's workers computed
    them), ``misses`` (computed here) and ``shared`` (computed by another worker of this run).
    """
    exchange = Exchange(shard, cache)
    results: list[dict[str, Evaluation]] = [{} for _ in jobs]
    digests = [{k: ResultCache.key(job.identity(k)) for k in job.keys} for job in jobs]

    def lookup(j: int, key: str, polling: bool = True) -> tuple[Evaluation | None, bool]:
        """The evaluation if it is stored yet, and whether the result cache (not the run's folder) had it.
        The first look reports a cache entry that fails a check (it is then recomputed); polls do not."""
        identity = jobs[j].identity(key)
        found = (cache.peek(identity) if polling else cache.get(identity, count=False)) if cache.enabled else None
        if found is not None or exchange.store is cache:
            return found, found is not None
        return exchange.store.peek(identity), False

    _take_stored(jobs, exchange, results, digests, lookup)

    # 2. Own units first (claimed up front), then units nobody has claimed.
    pending = [[k for k in job.keys if k not in results[j]] for j, job in enumerate(jobs)]
    units = plan_units(jobs, pending, shard.count)
    order = work_order(units, assign(units, shard.count), shard.index, shard.count)

    def compute(j: int, keys: Sequence[str]) -> None:
        if not keys:
            return
        computed = jobs[j].compute(keys, exchange.heartbeat)
        for key in keys:
            evaluation = computed[key]
            exchange.store.put(jobs[j].identity(key), evaluation)
            exchange.mark(digests[j][key], "done")
            results[j][key] = evaluation
            cache.misses += 1

    try:
        for unit in order:
            compute(unit.job, [k for k in unit.keys if exchange.claim(digests[unit.job][k])])
        _wait(jobs, shard, exchange, pending, results, digests, lookup, compute, log)
    except BaseException:
        _release(exchange, pending, results, digests)
        raise
    return results


def _take_stored(
    jobs: Sequence[SweepJob],
    exchange: Exchange,
    results: list[dict[str, Evaluation]],
    digests: Sequence[Mapping[str, str]],
    lookup: _Lookup,
) -> None:
    """1. What the cache holds, or this run's workers computed already (for an earlier partial profile)."""
    cache = exchange.cache
    for j, job in enumerate(jobs):
        for key in job.keys:
            evaluation, cached = lookup(j, key, polling=False)
            if evaluation is not None:
                results[j][key] = evaluation
                claim = exchange.holder(digests[j][key])
                if claim is not None and not exchange.mine(claim):
                    cache.shared += 1
                elif cached:
                    cache.hits += 1  # as a run without xdist counts it; its own result in the run's folder: not at all


def _release(
    exchange: Exchange,
    pending: Sequence[Sequence[str]],
    results: Sequence[Mapping[str, Evaluation]],
    digests: Sequence[Mapping[str, str]],
) -> None:
    """Give up this worker's claims of the pending evaluations it has not computed (it is failing), so
    the waiting workers take them over at once instead of after the timeout."""
    for j, keys in enumerate(pending):
        for key in keys:
            if key not in results[j]:
                with contextlib.suppress(OSError):
                    exchange.mark(digests[j][key], "released")


def work_order(units: Sequence[Unit], owners: Sequence[int], index: int, count: int) -> list[Unit]:
    """The order worker ``index`` goes through the units in: its own, costliest first; then the other
    workers' in turn, the next worker's first, each one's cheapest first (the owner does those last)."""
    me = index % max(1, count)
    by_cost = sorted(range(len(units)), key=lambda i: (-units[i].cost, i))
    mine = [units[i] for i in by_cost if owners[i] == me]
    others = [
        units[i] for i in sorted(reversed(by_cost), key=lambda i: (owners[i] - me) % max(1, count)) if owners[i] != me
    ]
    return mine + others


def _wait(
    jobs: Sequence[SweepJob],
    shard: Shard,
    exchange: Exchange,
    pending: Sequence[Sequence[str]],
    results: list[dict[str, Evaluation]],
    digests: Sequence[Mapping[str, str]],
    lookup: _Lookup,
    compute: Callable[[int, Sequence[str]], None],
    log: Callable[[str], None] | None,
) -> None:
    """3. Wait for the evaluations other workers claimed; take over those whose claimant is gone."""
    waiting = [(j, k) for j, keys in enumerate(pending) for k in keys if k not in results[j]]
    while waiting:
        exchange.heartbeat()
        gone: list[tuple[int, str, Claim | None, str]] = []
        still: list[tuple[int, str]] = []
        for j, key in waiting:
            claim = exchange.holder(digests[j][key])  # before the result: a claim marked done has it
            evaluation, _ = lookup(j, key)
            if evaluation is not None:
                results[j][key] = evaluation
                exchange.cache.shared += 1
                continue
            reason = exchange.why_take_over(claim)
            if reason is None:
                still.append((j, key))
            else:
                gone.append((j, key, claim, reason))
        if gone and not shard.fallback:
            raise _timeout_error(jobs, gone, shard)
        taken: dict[int, list[str]] = {}
        notes: list[str] = []
        for j, key, claim, reason in gone:
            if exchange.claim(digests[j][key], claim.generation + 1 if claim is not None else 0):
                taken.setdefault(j, []).append(key)
                notes.append(f"{_cell(jobs[j], key)} ({reason})")
            else:
                still.append((j, key))  # another waiting worker took it over first
        for j, keys in taken.items():
            compute(j, sorted(keys, key=jobs[j].keys.index))
        if notes and log is not None:
            log(
                f"{shard.name} computed {len(notes)} evaluation(s) that another xdist worker had claimed: "
                + "; ".join(notes)
                + ". The profile is complete; if that worker was only slow, raise "
                f"--layercheck-shard-timeout (now {shard.timeout:.0f} s)"
            )
        waiting = still
        if waiting and not taken:
            time.sleep(shard.poll)


def _cell(job: SweepJob, key: str) -> str:
    return f"{job.label}/{key}"


def _timeout_error(
    jobs: Sequence[SweepJob], gone: Sequence[tuple[int, str, Claim | None, str]], shard: Shard
) -> ShardTimeoutError:
    cells = "; ".join(f"{_cell(jobs[j], key)} ({reason})" for j, key, _, reason in gone)
    return ShardTimeoutError(
        f"{shard.name} waited for evaluations other pytest-xdist workers had claimed, and they did not come: {cells}",
        "look for the failed or hung worker in the output above; if it was only slow, raise "
        f"--layercheck-shard-timeout (now {shard.timeout:.0f} s), or run without -n",
    )
