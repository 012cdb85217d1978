"""Compare a candidate (a fine-tune, an adapter, a quantised file) with its base model, end to end.

Three views of one change, from cheap to telling:

1. the depth profiles of both models compared cell by cell (the base is the baseline), with the paired
   exact McNemar test: *what* was lost;
2. the relative weight change per layer and module: *where the fine-tune wrote*;
3. delta replacement for every capability that dropped: *which written layers carry the loss*.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pytest_layercheck.analysis.localise.replacement import (
    DEFAULT_THRESHOLD,
    Localisation,
    localise,
    parse_strategies,
)
from pytest_layercheck.analysis.weight_delta.deltas import WeightDelta, measure_weight_delta
from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.profile_data import INTACT, DepthProfile
from pytest_layercheck.data.statistics import DEFAULT_CORRECTION
from pytest_layercheck.evaluation.comparison import Verdict
from pytest_layercheck.evaluation.comparison_result import DEFAULT_ALPHA, ProfileComparison, Tolerance
from pytest_layercheck.evaluation.describe import comparison_to_json, describe_change, describe_detail, profile_answers
from pytest_layercheck.evaluation.profiler import ProgressHook, build_profile
from pytest_layercheck.evaluation.result_cache import ResultCache
from pytest_layercheck.evaluation.settings import ProfileSettings

if TYPE_CHECKING:
    from pytest_layercheck.model.loading import LoadedModel


@dataclass(frozen=True)
class CompareSettings:
    """What a model comparison measures and how strictly it judges."""

    profile: ProfileSettings = field(default_factory=ProfileSettings)
    tolerance: Tolerance = field(default_factory=Tolerance)
    alpha: float = DEFAULT_ALPHA
    #: Localisation strategies (``bands``, ``layers``, ``changed``, comma-combined) or ``none``.
    localise: str = "bands,changed"
    threshold: float = DEFAULT_THRESHOLD
    weights: bool = True
    correction: str = DEFAULT_CORRECTION
    allow_precision_mismatch: bool = False

    @property
    def verdict(self) -> Verdict:
        return Verdict(
            tolerance=self.tolerance,
            alpha=self.alpha,
            correction=self.correction,
            allow_precision_mismatch=self.allow_precision_mismatch,
        )

    def __post_init__(self) -> None:
        parse_strategies(self.localise)  # fail early on a typo, before two models are profiled
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be between 0 and 1, got {self.alpha!r}", "use e.g. 0.05")
        if "changed" in parse_strategies(self.localise) and not self.weights:
            raise ConfigError(
                "the 'changed' localisation strategy needs weight deltas",
                "keep weights=True or localise by bands/layers",
            )

    def describe(self) -> dict[str, Any]:
        return {
            **self.profile.describe(),
            "suites": list(self.profile.suites),
            "tolerance": str(self.tolerance),
            "alpha": self.alpha,
            "localise": self.localise,
            "threshold": self.threshold,
        }


@dataclass(repr=False)
class ModelComparison:
    """Base vs candidate: profile shift per cell, weight change per layer, and where the loss lives."""

    base: DepthProfile
    candidate: DepthProfile
    comparison: ProfileComparison
    weights: WeightDelta | None
    localisation: Localisation | None
    settings: CompareSettings
    seconds: dict[str, float] = field(default_factory=dict)

    def __repr__(self) -> str:
        """Short, so a failed ``assert result.passed`` does not print two whole profiles."""
        return (
            f"ModelComparison(candidate={self.candidate.model.get('name')!r}, "
            f"base={self.base.model.get('name')!r}, passed={self.passed}, "
            f"failing_cells={len(self.comparison.failures)})"
        )

    @property
    def passed(self) -> bool:
        """False when any cell regressed (beyond tolerance and significant): the guard's verdict."""
        return self.comparison.passed

    @property
    def verdicts(self) -> list[str]:
        """The localisation verdict of every suite whose loss was localised."""
        if self.localisation is None:
            return []
        return [s.verdict for s in self.localisation.suites if s.localised]

    def failure_message(self) -> str:
        """What a pytest assertion should print: the failing cells, then where the loss lives."""
        lines = [f"{self.candidate.model.get('name')} regressed against {self.base.model.get('name')}:"]
        lines += [f"  {describe_change(c)}: {describe_detail(c)}" for c in self.comparison.failures]
        lines += [f"  {v}" for v in self.verdicts]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "base": self.base.model,
            "candidate": self.candidate.model,
            "settings": self.settings.describe(),
            "comparison": comparison_to_json(
                self.comparison, answers=profile_answers(self.candidate, hashes=self.comparison.suite_hashes)
            ),
            "weights": self.weights.to_dict() if self.weights is not None else None,
            "localisation": self.localisation.to_dict() if self.localisation is not None else None,
            "verdicts": self.verdicts,
            "seconds": dict(self.seconds),
            "profiles": {"base": self.base.to_json(), "candidate": self.candidate.to_json()},
        }


def dropped_suites(comparison: ProfileComparison) -> list[str]:
    """Suites whose intact cell fell by more than the tolerance (significant or not)."""
    return [c.suite for c in comparison.cells if c.band == INTACT and c.delta < -c.allowed - 1e-9]


T = TypeVar("T")


def _timed(seconds: dict[str, float], name: str, work: Callable[[], T]) -> T:
    """``work()``, its wall time noted in ``seconds[name]``."""
    started = time.perf_counter()
    result = work()
    seconds[name] = round(time.perf_counter() - started, 2)
    return result


def _prefixed(progress: ProgressHook | None, prefix: str) -> ProgressHook | None:
    """``progress`` with each message under ``prefix`` (``base · knowledge``)."""
    if progress is None:
        return None
    return lambda message, done, total: progress(f"{prefix} · {message}", done, total)


def compare_models(
    base: LoadedModel,
    candidate: LoadedModel,
    settings: CompareSettings | ProfileSettings | None = None,
    *,
    cache: ResultCache | None = None,
    progress: ProgressHook | None = None,
) -> ModelComparison:
    """Profile both models, compare them cell by cell, measure weight deltas and localise any loss.

    ``settings`` may be a plain :class:`ProfileSettings` (default tolerance 0.05, alpha 0.05, localised
    by bands and by the most-changed layers). Both profiles share ``cache``, so a repeated comparison,
    or one whose base was profiled before (``layercheck baseline``), costs only what changed.
    """
    if settings is None:
        settings = CompareSettings()
    elif isinstance(settings, ProfileSettings):
        settings = CompareSettings(profile=settings)
    shared = cache if cache is not None else ResultCache()
    profile = settings.profile
    seconds: dict[str, float] = {}
    # Weight deltas first: cheap, and they refuse mismatched architectures before two profiles are paid for.
    weights = _timed(seconds, "weights", lambda: measure_weight_delta(base, candidate)) if settings.weights else None
    base_profile = _timed(
        seconds,
        "profile_base",
        lambda: build_profile(base, profile, cache=shared, progress=_prefixed(progress, "base")),
    )
    cand_profile = _timed(
        seconds,
        "profile_candidate",
        lambda: build_profile(candidate, profile, cache=shared, progress=_prefixed(progress, "candidate")),
    )
    comparison = settings.verdict.compare(base_profile, cand_profile)
    localisation = None
    strategies = parse_strategies(settings.localise)
    dropped = dropped_suites(comparison)
    if strategies and dropped:
        localisation = _timed(
            seconds,
            "localise",
            lambda: localise(
                base,
                candidate,
                profile,
                ",".join(strategies),
                weights=weights,
                suites=dropped,
                tolerance=settings.tolerance,
                threshold=settings.threshold,
                alpha=settings.alpha,
                cache=shared,
                profiles=(base_profile, cand_profile),
                progress=_prefixed(progress, "localise"),
            ),
        )
    return ModelComparison(base_profile, cand_profile, comparison, weights, localisation, settings, seconds)
