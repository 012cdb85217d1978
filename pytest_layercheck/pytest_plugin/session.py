"""State of one pytest session: the lazily loaded models, the profile its checks need, and its verdict.

Everything expensive is computed on first use, once; tests that never ask for the model cost nothing.
The baseline (:mod:`.session_baseline`), the xdist workers' sharing (:mod:`.session_workers`) and the
reports (:mod:`.session_reports`) are the session's parts, each in its own module.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from pytest_layercheck.core.errors import BaselineError, ConfigError, LayercheckError
from pytest_layercheck.data.profile_data import INTACT, DepthProfile
from pytest_layercheck.evaluation.baseline import UPDATE_FLAG
from pytest_layercheck.evaluation.checks import CellCheck, CheckOutcome
from pytest_layercheck.evaluation.comparison_result import ProfileComparison
from pytest_layercheck.evaluation.options import model_arguments, profile_settings, verdict
from pytest_layercheck.evaluation.result_cache import ResultCache
from pytest_layercheck.pytest_plugin.session_baseline import SessionBaseline
from pytest_layercheck.pytest_plugin.session_options import SessionOptions
from pytest_layercheck.pytest_plugin.session_reports import verdict_lines, write_reports
from pytest_layercheck.pytest_plugin.session_workers import WorkerExchange, worker_index

if TYPE_CHECKING:
    from pytest_layercheck.evaluation.profiler import ProgressHook
    from pytest_layercheck.model.loading import LoadedModel
    from pytest_layercheck.pytest_plugin.session_analyses import SessionAnalyses


class LayercheckSession:
    """Lazily loads the model, builds the profile the checks need, reads and writes the baseline."""

    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self.settings = profile_settings(options.shared)
        self.verdict = verdict(options.shared)
        self.cache = ResultCache(enabled=not options.setting("no_cache"))
        self.baselines = SessionBaseline(options, self.settings.suites, self.model)
        self.workers = WorkerExchange(options)
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
        #: The torch thread count this process chose (:func:`configure_threads`), said in the summary.
        self.threads: str | None = None

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
            shard=self.workers.shard,
            log=self.workers.notes.append,
        )
        self._profile_seconds += time.perf_counter() - started

    @property
    def current(self) -> DepthProfile | None:
        """Whatever profile this run has computed so far (partial or complete), or None."""
        return self._profile

    @property
    def baseline_name(self) -> str:
        return self.baselines.name(self._profile)

    @property
    def baseline(self) -> DepthProfile:
        """The stored baseline; under ``--layercheck-update`` the profile of this run."""
        if self.options.update:
            self.baselines.confirm_update(self.baseline_name)
            return self.profile
        if self._baseline is None:
            self._baseline = self.baselines.load(self.baseline_name)
        return self._baseline

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
    def worker_payload(self) -> str | None:
        """What this worker sends the controller (:meth:`WorkerExchange.payload`)."""
        return self.workers.payload(self._profile, self._profile_seconds, self.cache, self.threads)

    def absorb_worker_payload(self, payload: str) -> None:
        """Take a worker's profile (the most complete one: workers may have computed partial profiles
        of different checks) and its counts, for the summary."""
        profile = self.workers.absorb(payload, self.messages)
        if profile is not None and (self._profile is None or len(profile.evaluations) > len(self._profile.evaluations)):
            self._profile = profile

    # ------------------------------------------------------------- end of run
    def finish(self) -> bool:
        """Write baselines and reports; returns True when the run must fail for a reason of its own."""
        if self._profile is None:
            return False
        failed = False
        if self.options.update:
            name = self.baseline_name
            self.baselines.confirm_update(name)
            result = self.baselines.store.save(self.profile, name, update=True)
            self.messages.append(f"baseline {result.status}: {result.path}")
            self.messages.extend(f"  {line}" for line in result.changes)
            if _running_in_ci() and result.status != "unchanged":
                self.messages.append(
                    f"baselines were written during a CI run; commit them and run again without {UPDATE_FLAG}"
                )
                failed = True
        comparison = self.comparison()
        self.messages += write_reports(
            self.options,
            self.settings.suites,
            self._profile,
            comparison,
            self._baseline,
            self._refused,
            self.failed_checks,
        )
        return failed

    def summary_lines(self, width: int = 100, color: bool = False) -> list[str]:
        if self._profile is None:
            return list(self.messages)
        lines = verdict_lines(self._profile, self.comparison(), self._baseline, self.verdict.metric, width, color)
        if self._profile_seconds:
            lines.append(f"profile computed in {self._profile_seconds:.1f} s (evaluations: {self.cache.summary()})")
        workers = self.workers.summary_line()
        if workers:
            lines.append(workers)
        return lines + self.workers.threads_lines(self.threads, bool(self._profile_seconds)) + self.messages


def _running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
