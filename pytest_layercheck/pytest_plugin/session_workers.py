"""What the xdist workers of one run share: each worker's share of the profile's evaluations, the
controller's exchange folder, and the counts and notes each worker sends the controller.

Under pytest-xdist the controller makes a folder for the run (:meth:`WorkerExchange.folder`) and hands it
to the workers; each worker computes its share of the profile's evaluations and takes the others' through
the result cache, or through that folder when the cache is off or read-only (:mod:`..evaluation.sharding`).
When the workers cannot reach the folder (workers on other hosts), each computes the whole profile, as
before sharding existed, and the summary says so.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_layercheck.data.profile_data import DepthProfile
from pytest_layercheck.evaluation.sharding import Shard

if TYPE_CHECKING:
    from pytest_layercheck.evaluation.result_cache import ResultCache
    from pytest_layercheck.pytest_plugin.session_options import SessionOptions


def worker_index(worker: str | None) -> int | None:
    """The number of an xdist worker id: ``gw3`` -> 3; None for anything else."""
    digits = (worker or "").removeprefix("gw")
    return int(digits) if digits.isdigit() else None


class WorkerExchange:
    """One process's side of the run's sharing: a worker's shard and payload, the controller's folder and
    what it received from its workers (per worker: counts of evaluations, thread choice)."""

    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        #: This worker's notes for the controller's summary.
        self.notes: list[str] = []
        self.stats: dict[str, dict[str, float]] = {}
        self.threads: dict[str, str] = {}
        self._folder: Path | None = None
        self.shard = self._shard()

    def _shard(self) -> Shard | None:
        """This worker's share of the profile's evaluations; None outside xdist, or when the workers
        have no folder in common (then each computes the whole profile, and the summary says so)."""
        options = self.options
        if not options.is_xdist_worker or options.workers < 2:
            return None
        name = options.worker or "this worker"
        if options.exchange is None or not options.exchange.is_dir():
            where = (
                "the controller passed no shared folder"
                if options.exchange is None
                else f"the controller's folder {options.exchange} is not on this worker's filesystem"
            )
            self.notes.append(
                f"{name}: the profile's evaluations were not shared out among the xdist workers ({where}); "
                "each worker computed the whole profile. Run the workers on one machine (-n N) to share them"
            )
            return None
        index = worker_index(options.worker) or 0
        return Shard(
            index=index, count=options.workers, folder=options.exchange, worker=name, timeout=options.shard_timeout
        )

    def folder(self) -> Path:
        """The controller's folder for its workers' claims and exchanged results, made on first use
        (private to the user) and deleted by :meth:`cleanup`."""
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="layercheck-xdist-"))
        return self._folder

    def cleanup(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def payload(
        self, profile: DepthProfile | None, seconds: float, cache: ResultCache, threads: str | None
    ) -> str | None:
        """What a worker sends the controller: its profile, its counts of evaluations, its notes."""
        if profile is None and not self.notes:
            return None
        return json.dumps(
            {
                "worker": self.options.worker,
                "profile": profile.to_json() if profile is not None else None,
                "seconds": seconds,
                "from_cache": cache.hits,
                "computed": cache.misses if profile is not None else 0,
                "notes": self.notes,
                "threads": threads,
            }
        )

    def absorb(self, payload: str, messages: list[str]) -> DepthProfile | None:
        """Take a worker's counts and thread choice for the summary, add its notes to ``messages``, and
        return its profile (None when it sent none)."""
        data = json.loads(payload)
        profile = None
        if data.get("profile") is not None:
            profile = DepthProfile.from_json(data["profile"])
            self.stats[str(data.get("worker"))] = {
                key: float(data.get(key) or 0) for key in ("seconds", "from_cache", "computed")
            }
        if data.get("threads"):
            self.threads[str(data.get("worker"))] = str(data["threads"])
        for note in data.get("notes") or ():
            if note not in messages:
                messages.append(note)
        return profile

    def summary_line(self) -> str | None:
        """``profile computed in 3.1 s by 2 xdist workers (evaluations: 0 from cache, 9 computed: gw0 4, gw1 5)``."""
        stats = self.stats
        if not stats:
            return None
        seconds = max(s["seconds"] for s in stats.values())
        hits = int(max(s["from_cache"] for s in stats.values()))
        computed = int(sum(s["computed"] for s in stats.values()))
        per_worker = ", ".join(f"{w} {int(s['computed'])}" for w, s in sorted(stats.items()))
        return (
            f"profile computed in {seconds:.1f} s by {len(stats)} xdist worker{'s' * (len(stats) > 1)} "
            f"(evaluations: {hits} from cache, {computed} computed: {per_worker})"
        )

    def threads_lines(self, own: str | None, profiled: bool) -> list[str]:
        """``torch threads: 2 torch threads (measured, ...)``, or per xdist worker (the same choice said once)."""
        if not self.threads:
            return [f"torch threads: {own}"] if own and profiled else []
        by_choice: dict[str, list[str]] = {}
        for worker, choice in sorted(self.threads.items()):
            by_choice.setdefault(choice, []).append(worker)
        return [f"torch threads of {', '.join(workers)}: {choice}" for choice, workers in by_choice.items()]
