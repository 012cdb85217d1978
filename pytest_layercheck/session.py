"""State of one pytest session: options, the lazily loaded model, its profile and the baseline.

Everything expensive is computed on first use, once; tests that never ask for the model cost nothing.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .bands import DepthBands
from .baseline import BaselineStore
from .checks import CellCheck, CheckOutcome
from .comparison import ProfileComparison, Tolerance, compare_profiles
from .errors import BaselineError, ConfigError
from .loading import LoadedModel, load_model
from .profile_data import DepthProfile
from .profiler import DEFAULT_LIMITS, Limit, ProfileSettings, build_profile
from .result_cache import ResultCache

if TYPE_CHECKING:
    from .analysis.session_analyses import SessionAnalyses


@dataclass(frozen=True)
class SessionOptions:
    """Raw option values (command line over ini); parsed and validated by ``LayercheckSession``."""

    model: str = "default"
    reference: str | None = None
    adapter_base: str | None = None
    device: str | None = "auto"
    dtype: str | None = "auto"
    baseline_dir: Path = Path("baselines")
    baseline_name: str | None = None
    suites: str = "knowledge,reasoning,retrieval"
    protocols: str = ""
    mode: str = "layers"
    bands: str = ""
    max_drop: str = "0.05"
    alpha: str = "0.05"
    limit: str | None = None
    report: str | None = None
    heatmap: str | None = None
    update: bool = False
    use_cache: bool = True
    fail_on_improvement: bool = False
    is_xdist_worker: bool = False


def parse_protocols(text: str) -> dict[str, str]:
    """'knowledge=mc_text,reasoning=continuation' -> mapping; empty text -> suite defaults."""
    result: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        suite, sep, protocol = part.partition("=")
        if not sep or not suite.strip() or not protocol.strip():
            raise ConfigError(f"bad protocol override {part!r}", "use SUITE=PROTOCOL, e.g. knowledge=mc_text")
        result[suite.strip()] = protocol.strip()
    return result


def parse_limit(text: str | int | None) -> Limit:
    """``""``/None: the built-in per-suite defaults; ``N``: N items of every suite (0 = all);
    ``suite=N,...``: per suite, the others keep their defaults."""
    if text is None or text == "":
        return dict(DEFAULT_LIMITS)
    if isinstance(text, str) and "=" in text:
        limits: dict[str, int | None] = dict(DEFAULT_LIMITS)
        for part in filter(None, (p.strip() for p in text.split(","))):
            suite, _, value = part.partition("=")
            if not suite.strip():
                raise ConfigError(f"bad item limit {part!r}", "write suite=N, e.g. knowledge=40,retrieval=10")
            limits[suite.strip()] = _items(value.strip())
        return limits
    return _items(text)


def _items(text: str | int) -> int | None:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"bad item limit {text!r}",
                          "use a whole number of items per suite (0 means all), or suite=N,...") from None
    if value < 0:
        raise ConfigError(f"bad item limit {text!r}", "use a whole number >= 0; 0 means all items")
    return None if value == 0 else value


class LayercheckSession:
    """Lazily loads the model, builds the profile, reads and writes the baseline."""

    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self.settings = ProfileSettings(
            suites=tuple(s.strip() for s in options.suites.split(",") if s.strip()),
            protocols=parse_protocols(options.protocols),
            mode=options.mode or "layers",
            bands=DepthBands.parse(options.bands) if options.bands else DepthBands(),
            limit=parse_limit(options.limit),
        )
        self.tolerance = Tolerance.parse(str(options.max_drop))
        try:
            self.alpha = float(options.alpha)
        except ValueError:
            raise ConfigError(f"bad alpha {options.alpha!r}", "use a probability such as 0.05") from None
        self.store = BaselineStore(options.baseline_dir)
        self.cache = ResultCache(enabled=options.use_cache)
        self.messages: list[str] = []
        self.check_outcomes: list[tuple[CellCheck, CheckOutcome]] = []
        self._model: LoadedModel | None = None
        self._reference: LoadedModel | None = None
        self._analyses: SessionAnalyses | None = None
        self._profile: DepthProfile | None = None
        self._profile_seconds: float | None = None
        self._baseline: DepthProfile | None = None
        self._comparison: ProfileComparison | None = None
        self._refused = False

    # ------------------------------------------------------------------ models
    @property
    def analyses(self) -> SessionAnalyses:
        """Analyses of the session model (the ``layercheck_analyses`` fixture), created on first use."""
        if self._analyses is None:
            from .analysis.session_analyses import SessionAnalyses

            self._analyses = SessionAnalyses(self)
        return self._analyses

    @property
    def has_analyses(self) -> bool:
        return self._analyses is not None and len(self._analyses) > 0

    def model(self) -> LoadedModel:
        if self._model is None:
            self._model = load_model(self.options.model, device=self.options.device, dtype=self.options.dtype,
                                     adapter_base=self.options.adapter_base)
        return self._model

    def reference_model(self) -> LoadedModel:
        if self._reference is None:
            if not self.options.reference:
                raise ConfigError("no reference model configured", "pass --layercheck-reference=MODEL")
            self._reference = load_model(self.options.reference, device=self.options.device, dtype=self.options.dtype)
        return self._reference

    # ----------------------------------------------------------------- profile
    @property
    def profile(self) -> DepthProfile:
        if self._profile is None:
            started = time.perf_counter()
            self._profile = build_profile(self.model(), self.settings, cache=self.cache)
            self._profile_seconds = time.perf_counter() - started
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
            return self.profile
        if self._baseline is None:
            self._baseline = self.store.load(self.baseline_name)
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
                self._comparison = compare_profiles(
                    self.baseline, self._profile, tolerance=self.tolerance, alpha=self.alpha,
                    fail_on_improvement=self.options.fail_on_improvement,
                )
            except BaselineError as exc:
                self._refused = True
                self.messages.append(str(exc))
        return self._comparison

    def record_check(self, check: CellCheck, outcome: CheckOutcome) -> None:
        self.check_outcomes.append((check, outcome))

    # ------------------------------------------------------------------- xdist
    def worker_payload(self) -> str | None:
        return json.dumps(self._profile.to_json()) if self._profile is not None else None

    def absorb_worker_payload(self, payload: str) -> None:
        if self._profile is None:
            self._profile = DepthProfile.from_json(json.loads(payload))

    # ------------------------------------------------------------- end of run
    def finish(self) -> bool:
        """Write baselines and reports; returns True when the run must fail for a reason of its own."""
        if self._profile is None:
            return False
        failed = False
        if self.options.update:
            result = self.store.save(self._profile, self.baseline_name, update=True)
            self.messages.append(f"baseline {result.status}: {result.path}")
            if _running_in_ci() and result.status != "unchanged":
                self.messages.append(
                    "baselines were written during a CI run; commit them and run again without --layercheck-update"
                )
                failed = True
        comparison = self.comparison()
        self._write_reports(comparison)
        return failed

    def _write_reports(self, comparison: ProfileComparison | None) -> None:
        from .report.json_report import write_json_report
        from .report.markdown import append_step_summary, render_markdown

        assert self._profile is not None
        if self.options.report:
            write_json_report(Path(self.options.report), self._profile, comparison)
            self.messages.append(f"JSON report written: {self.options.report}")
        if self.options.heatmap:
            from .report.heatmap import plot_layer_heatmap

            plot_layer_heatmap(self._profile, Path(self.options.heatmap))
            self.messages.append(f"heatmap written: {self.options.heatmap}")
        if os.environ.get("GITHUB_STEP_SUMMARY"):
            append_step_summary(render_markdown(self._profile, comparison))

    def summary_lines(self, width: int = 100) -> list[str]:
        if self._profile is None:
            return list(self.messages)
        from .report.terminal import render_terminal

        lines = render_terminal(self._profile, self.comparison(), width=width).splitlines()
        if self._profile_seconds is not None:
            lines.append(f"profile computed in {self._profile_seconds:.1f} s "
                         f"({self.cache.hits} evaluations from cache, {self.cache.misses} computed)")
        return lines + self.messages


def _running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
