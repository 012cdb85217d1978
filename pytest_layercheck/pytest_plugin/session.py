"""State of one pytest session: options, the lazily loaded model, its profile and the baseline.

Everything expensive is computed on first use, once; tests that never ask for the model cost nothing.

Under pytest-xdist the controller makes a folder for the run (:meth:`LayercheckSession.exchange_folder`)
and hands it to the workers; each worker computes its share of the profile's evaluations and takes the
others' through the result cache, or through that folder when the cache is off or read-only
(:mod:`..evaluation.sharding`). When the workers cannot reach the folder (workers on other hosts), each
computes the whole profile, as before sharding existed, and the summary says so.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_layercheck.core.errors import BaselineError, ConfigError, LayercheckError
from pytest_layercheck.data.profile_data import INTACT, DepthProfile
from pytest_layercheck.evaluation.baseline import UPDATE_FLAG, BaselineStore, slugify
from pytest_layercheck.evaluation.checks import CellCheck, CheckOutcome
from pytest_layercheck.evaluation.comparison_result import ProfileComparison
from pytest_layercheck.evaluation.options import model_arguments, profile_settings, verdict
from pytest_layercheck.evaluation.result_cache import ResultCache
from pytest_layercheck.evaluation.sharding import DEFAULT_TIMEOUT, Shard

if TYPE_CHECKING:
    from pytest_layercheck.evaluation.profiler import ProgressHook
    from pytest_layercheck.model.loading import LoadedModel
    from pytest_layercheck.pytest_plugin.session_analyses import SessionAnalyses


@dataclass(frozen=True)
class SessionOptions:
    """Raw option values (command line over ini); parsed and validated by ``LayercheckSession``.

    ``shared`` holds the settings the ``layercheck`` command has too (:mod:`..evaluation.options`),
    keyed by option name; the fields are the plugin's own.
    """

    model: str = "default"
    reference: str | None = None
    baseline_dir: Path = Path("baselines")
    baseline_name: str | None = None
    report: str | None = None
    html: str | None = None
    heatmap: str | None = None
    update: bool = False
    allow_model_change: bool = False
    is_xdist_worker: bool = False
    #: Under pytest-xdist: this worker's id ("gw1"), how many workers the run has, and the folder the
    #: controller made for them (None: nothing to share through; every worker computes everything).
    worker: str | None = None
    workers: int = 1
    exchange: Path | None = None
    #: Seconds without a sign of life from a worker whose claimed evaluations another worker awaits.
    shard_timeout: float = DEFAULT_TIMEOUT
    shared: Mapping[str, Any] = field(default_factory=dict)

    def setting(self, key: str) -> Any:
        """A shared setting's value, or its default."""
        from pytest_layercheck.evaluation.options import MODEL, PROFILE, VERDICT

        option = next(o for o in (*MODEL, *PROFILE, *VERDICT) if o.key == key)
        value = self.shared.get(key)
        return option.default if value is None else value


class LayercheckSession:
    """Lazily loads the model, builds the profile the checks need, reads and writes the baseline."""

    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self.settings = profile_settings(options.shared)
        self.verdict = verdict(options.shared)
        self.store = BaselineStore(options.baseline_dir)
        self.cache = ResultCache(enabled=not options.setting("no_cache"))
        self.progress: ProgressHook | None = None
        self.messages: list[str] = []
        self.check_outcomes: list[tuple[CellCheck, CheckOutcome]] = []
        self._needs: dict[str, set[str]] = {}
        self._capabilities: dict[str, str] | None = None
        self._model: LoadedModel | None = None
        self._reference: LoadedModel | None = None
        self._analyses: SessionAnalyses | None = None
        self._profile: DepthProfile | None = None
        self._complete = False
        self._profile_seconds = 0.0
        self._baseline: DepthProfile | None = None
        self._comparison: ProfileComparison | None = None
        self._refused: str | None = None  # why the comparison with the baseline was refused
        #: Node ids of the layercheck checks that failed in this run (the controller sees every worker's).
        self.failed_checks: list[str] = []
        self._update_confirmed = False
        #: Notes of this worker for the controller's summary (sharding), and what the controller
        #: received from its workers: per worker, its counts of evaluations.
        self.worker_notes: list[str] = []
        self.worker_stats: dict[str, dict[str, float]] = {}
        self.worker_threads: dict[str, str] = {}
        #: The torch thread count this process chose (:func:`configure_threads`), said in the summary.
        self.threads: str | None = None
        self._exchange: Path | None = None
        self.shard = self._shard()

    # ------------------------------------------------------------------ models
    @property
    def analyses(self) -> SessionAnalyses:
        """Analyses of the session model (the ``layercheck_analyses`` fixture), created on first use."""
        if self._analyses is None:
            from pytest_layercheck.pytest_plugin.session_analyses import SessionAnalyses

            self._analyses = SessionAnalyses(self.model, self.reference_model, self.cache, self.settings, self.verdict)
        return self._analyses

    @property
    def has_analyses(self) -> bool:
        return self._analyses is not None and len(self._analyses) > 0

    def model(self) -> LoadedModel:
        if self._model is None:
            from pytest_layercheck.model.loading import load_model
            from pytest_layercheck.model.threads import configure_threads

            # Before the first matmul: busy cores make extra threads wait for each other.
            self.threads = configure_threads().describe()
            self._model = load_model(self.options.model, **self._model_arguments())
        return self._model

    def reference_model(self) -> LoadedModel:
        if self._reference is None:
            if not self.options.reference:
                raise ConfigError("no reference model configured", "pass --layercheck-reference=MODEL")
            from pytest_layercheck.model.loading import load_model

            self._reference = load_model(self.options.reference, **{**self._model_arguments(), "adapter_base": None})
        return self._reference

    def _model_arguments(self) -> dict[str, Any]:
        """``load_model``'s arguments; an xdist worker with no device pinned gets its own GPU when there
        are several (worker gwN: cuda:N)."""
        arguments = model_arguments(self.options.shared)
        index = worker_index(self.options.worker) if self.options.is_xdist_worker else None
        if index is not None:
            from pytest_layercheck.model.devices import device_for_worker

            arguments["device"] = device_for_worker(arguments["device"], arguments["device_map"], index)
        return arguments

    # ----------------------------------------------------------------- profile
    def plan_check(self, check: CellCheck) -> None:
        """Note what a collected check will need, so one computation serves every check of the run."""
        suite = self._suite_name(check.capability)
        if suite is not None:
            bands = self._needs.setdefault(suite, set())
            if check.band != INTACT:
                bands.add(check.band)

    def _suite_name(self, capability: str) -> str | None:
        """The suite a check's capability (or suite name) refers to; None when ambiguous or unknown
        (the check itself reports that, with the fix, when it runs)."""
        from pytest_layercheck.suites.builtin import resolve_suites

        if self._capabilities is None:
            self._capabilities = {suite.name: suite.capability for suite in resolve_suites(self.settings.suites)}
        names = self._capabilities
        if capability in names:
            return capability
        matches = [name for name, cap in names.items() if cap == capability]
        return matches[0] if len(matches) == 1 else None

    @property
    def profile(self) -> DepthProfile:
        """The complete profile of every configured suite (the ``layercheck_profile`` fixture)."""
        if not self._complete:
            self._compute(None)
            self._complete = True
        assert self._profile is not None
        return self._profile

    def profile_for(self, check: CellCheck) -> DepthProfile:
        """A profile holding at least what ``check`` needs: the first call computes the needs of every
        collected check at once (intact-only checks cost one evaluation per suite)."""
        self.plan_check(check)
        if self._complete or (self._profile is not None and self._covers(self._profile)):
            assert self._profile is not None
            return self._profile
        self._compute({name: frozenset(bands) for name, bands in self._needs.items()})
        assert self._profile is not None
        return self._profile

    def _covers(self, profile: DepthProfile) -> bool:
        for suite, bands in self._needs.items():
            if suite not in profile.suites:
                return False
            if any(not profile.band_ablations(suite, band) for band in bands if band in profile.bands):
                return False
        return True

    def _compute(self, needs: dict[str, frozenset[str]] | None) -> None:
        from pytest_layercheck.evaluation.profiler import build_profile  # torch: imported when a test needs it

        started = time.perf_counter()
        if needs is not None and self._profile is not None:
            # Recompute the union: evaluations already done come back from the result cache.
            for suite in self._profile.suites:
                needs.setdefault(suite, frozenset())
        self._profile = build_profile(
            self.model(),
            self.settings,
            cache=self.cache,
            progress=self.progress,
            needs=needs,
            shard=self.shard,
            log=self.worker_notes.append,
        )
        self._profile_seconds += time.perf_counter() - started

    @property
    def current(self) -> DepthProfile | None:
        """Whatever profile this run has computed so far (partial or complete), or None."""
        return self._profile

    @property
    def baseline_name(self) -> str:
        if self.options.baseline_name:
            return self.options.baseline_name
        if self._profile is not None:
            return str(self._profile.model["name"])
        return self.model().name

    @property
    def baseline(self) -> DepthProfile:
        """The stored baseline; under ``--layercheck-update`` the profile of this run."""
        if self.options.update:
            self.confirm_update()
            return self.profile
        if self._baseline is None:
            name = self.baseline_name
            if not self.store.exists(name):
                raise BaselineError(
                    f"no baseline {name!r}: {self.store.path_for(name)} does not exist", self._how_to_record(name)
                )
            self._baseline = self.store.load(name)
        return self._baseline

    def _how_to_record(self, name: str) -> str:
        """Advice that records the baseline from the trusted model, never silently from a candidate."""
        path = self.store.path_for(name)
        suites = ",".join(self.settings.suites)
        if self.options.reference:
            return (
                f"record it from the reference model: `layercheck baseline {self.options.reference} "
                f"--name {name} --suites {suites}`, review it, and commit {path}"
            )
        if self._candidate_reason(name):
            return (
                f"this run tests {self.model().name!r}, not the model {name!r} names; record the baseline "
                f"from the model you trust: `layercheck baseline MODEL --name {name} --suites {suites}`, "
                f"and commit {path}"
            )
        return f"record it with `pytest {UPDATE_FLAG}` (or `layercheck baseline`), review it, and commit {path}"

    def _candidate_reason(self, name: str) -> str | None:
        """Why the session model looks like a candidate rather than the baseline's model, if it does."""
        if self.options.reference:
            return f"a reference model is configured ({self.options.reference}), so the session model is a candidate"
        model_name = self.model().name
        if slugify(model_name) != slugify(name):
            return f"the session model {model_name!r} is not the model the baseline {name!r} is named after"
        if self.store.exists(name):
            try:
                stored = self.store.load(name).model.get("fingerprint")
            except BaselineError:
                return None
            if stored != self.model().fingerprint:
                return (
                    f"the stored baseline {name!r} was recorded from other weights "
                    f"(fingerprint {str(stored)[:16]}, this model {self.model().fingerprint[:16]})"
                )
        return None

    def confirm_update(self) -> None:
        """Refuse to record a candidate as its own baseline unless the user confirmed it by flag."""
        if self._update_confirmed:
            return
        reason = self._candidate_reason(self.baseline_name)
        if reason and not self.options.allow_model_change:
            raise ConfigError(
                f"refusing to record the baseline {self.baseline_name!r} from this run: {reason}; "
                "a guard whose baseline is the candidate itself always passes",
                "record the baseline from the trusted model (`layercheck baseline MODEL`), or confirm with "
                "--layercheck-allow-model-change that this model is to become the baseline",
            )
        self._update_confirmed = True

    def baseline_or_none_for(self, check: CellCheck) -> DepthProfile | None:
        """Pure floor checks (``min`` only) need no baseline; all others do."""
        if check.min is not None and check.max_drop is None and check.relative is None:
            try:
                return self.baseline
            except BaselineError:
                return None
        return self.baseline

    def comparison(self) -> ProfileComparison | None:
        if self._comparison is None and self._profile is not None and not self.options.update and not self._refused:
            try:
                self._comparison = self.verdict.compare(self.baseline, self._profile)
            except LayercheckError as exc:
                self._refused = str(exc)
                self.messages.append(str(exc))
        return self._comparison

    @property
    def refused(self) -> str | None:
        """Why the comparison with the baseline was refused (after :meth:`comparison`), or None."""
        return self._refused

    def record_check(self, check: CellCheck, outcome: CheckOutcome) -> None:
        self.check_outcomes.append((check, outcome))

    # ------------------------------------------------------------------- xdist
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
            self.worker_notes.append(
                f"{name}: the profile's evaluations were not shared out among the xdist workers ({where}); "
                "each worker computed the whole profile. Run the workers on one machine (-n N) to share them"
            )
            return None
        index = worker_index(options.worker) or 0
        return Shard(
            index=index, count=options.workers, folder=options.exchange, worker=name, timeout=options.shard_timeout
        )

    def exchange_folder(self) -> Path:
        """The controller's folder for its workers' claims and exchanged results, made on first use
        (private to the user) and deleted by :meth:`cleanup`."""
        if self._exchange is None:
            self._exchange = Path(tempfile.mkdtemp(prefix="layercheck-xdist-"))
        return self._exchange

    def cleanup(self) -> None:
        if self._exchange is not None:
            shutil.rmtree(self._exchange, ignore_errors=True)
            self._exchange = None

    def worker_payload(self) -> str | None:
        """What a worker sends the controller: its profile, its counts of evaluations, its notes."""
        if self._profile is None and not self.worker_notes:
            return None
        return json.dumps(
            {
                "worker": self.options.worker,
                "profile": self._profile.to_json() if self._profile is not None else None,
                "seconds": self._profile_seconds,
                "from_cache": self.cache.hits,
                "computed": self.cache.misses if self._profile is not None else 0,
                "notes": self.worker_notes,
                "threads": self.threads,
            }
        )

    def absorb_worker_payload(self, payload: str) -> None:
        """Take a worker's profile (the most complete one: workers may have computed partial profiles
        of different checks) and its counts, for the summary."""
        data = json.loads(payload)
        if data.get("profile") is not None:
            profile = DepthProfile.from_json(data["profile"])
            if self._profile is None or len(profile.evaluations) > len(self._profile.evaluations):
                self._profile = profile
            self.worker_stats[str(data.get("worker"))] = {
                key: float(data.get(key) or 0) for key in ("seconds", "from_cache", "computed")
            }
        if data.get("threads"):
            self.worker_threads[str(data.get("worker"))] = str(data["threads"])
        for note in data.get("notes") or ():
            if note not in self.messages:
                self.messages.append(note)

    def _workers_line(self) -> str | None:
        """``profile computed in 3.1 s by 2 xdist workers (evaluations: 0 from cache, 9 computed: gw0 4, gw1 5)``."""
        stats = self.worker_stats
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

    # ------------------------------------------------------------- end of run
    def finish(self) -> bool:
        """Write baselines and reports; returns True when the run must fail for a reason of its own."""
        if self._profile is None:
            return False
        failed = False
        if self.options.update:
            self.confirm_update()
            result = self.store.save(self.profile, self.baseline_name, update=True)
            self.messages.append(f"baseline {result.status}: {result.path}")
            self.messages.extend(f"  {line}" for line in result.changes)
            if _running_in_ci() and result.status != "unchanged":
                self.messages.append(
                    f"baselines were written during a CI run; commit them and run again without {UPDATE_FLAG}"
                )
                failed = True
        comparison = self.comparison()
        self._write_reports(comparison)
        return failed

    def _write_reports(self, comparison: ProfileComparison | None) -> None:
        from pytest_layercheck.report.json_report import write_json_report
        from pytest_layercheck.report.markdown import append_step_summary, render_markdown

        assert self._profile is not None
        if self.options.report:
            # The report's verdict is the run's: a refused comparison or a failed check is no pass.
            write_json_report(
                Path(self.options.report),
                self._profile,
                comparison,
                refused=self._refused,
                failed_checks=self.failed_checks,
            )
            self.messages.append(f"JSON report written: {self.options.report}")
        if self.options.html:
            from pytest_layercheck.report.html_items import run_item_texts
            from pytest_layercheck.report.html_page import write_html_report

            baseline = self._baseline if comparison is not None else None
            write_html_report(
                Path(self.options.html),
                self._profile,
                comparison,
                baseline=baseline,
                refused=self._refused,
                failed_checks=self.failed_checks,
                item_texts=run_item_texts(self.settings.suites),
            )
            self.messages.append(f"HTML report written: {self.options.html}")
        if self.options.heatmap:
            from pytest_layercheck.report.heatmap import plot_layer_heatmap

            plot_layer_heatmap(self._profile, Path(self.options.heatmap))
            self.messages.append(f"heatmap written: {self.options.heatmap}")
        if os.environ.get("GITHUB_STEP_SUMMARY"):
            append_step_summary(render_markdown(self._profile, comparison))

    def summary_lines(self, width: int = 100, color: bool = False) -> list[str]:
        if self._profile is None:
            return list(self.messages)
        from pytest_layercheck.report.terminal import render_terminal

        comparison = self.comparison()
        baseline = self._baseline if comparison is not None else None
        metrics = [self.verdict.metric] if self.verdict.metric else None
        lines = render_terminal(
            self._profile, comparison, metrics=metrics, width=width, color=color, baseline=baseline
        ).splitlines()
        if comparison is not None:
            from pytest_layercheck.evaluation.comparison import sensitivity_warning

            warning = sensitivity_warning(comparison)
            if warning:
                lines += ["", *warning.splitlines()]
        if self._profile_seconds:
            lines.append(f"profile computed in {self._profile_seconds:.1f} s (evaluations: {self.cache.summary()})")
        workers = self._workers_line()
        if workers:
            lines.append(workers)
        return lines + self._threads_lines() + self.messages

    def _threads_lines(self) -> list[str]:
        """``torch threads: 2 torch threads (measured, ...)``, or per xdist worker (the same choice said once)."""
        if not self.worker_threads:
            return [f"torch threads: {self.threads}"] if self.threads and self._profile_seconds else []
        by_choice: dict[str, list[str]] = {}
        for worker, choice in sorted(self.worker_threads.items()):
            by_choice.setdefault(choice, []).append(worker)
        return [f"torch threads of {', '.join(workers)}: {choice}" for choice, workers in by_choice.items()]


def _running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def worker_index(worker: str | None) -> int | None:
    """The number of an xdist worker id: ``gw3`` -> 3; None for anything else."""
    digits = (worker or "").removeprefix("gw")
    return int(digits) if digits.isdigit() else None
