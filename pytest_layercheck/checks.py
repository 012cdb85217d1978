"""One capability assertion, shared by the ``@pytest.mark.layercheck`` marker and YAML check files.

A check names a cell (capability or suite, band, optionally protocol and metric) and passes when the
cell has not regressed against the baseline: a drop beyond the tolerance that is also significant
under the paired exact McNemar test. It can also demand an absolute floor (``min``) that needs no
baseline at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from .comparison import ProfileComparison, Tolerance, compare_profiles
from .errors import ConfigError
from .profile_data import INTACT, DepthProfile

CHECK_FIELDS = ("capability", "band", "protocol", "metric", "max_drop", "relative", "alpha", "min")
UPDATE_HINT = "If this change was intended, re-record the baseline with --layercheck-update."


@dataclass(frozen=True)
class CellCheck:
    """An assertion on one cell of the depth profile."""

    capability: str
    band: str = INTACT
    protocol: str | None = None
    metric: str | None = None
    max_drop: float | None = None
    relative: float | None = None
    alpha: float | None = None
    min: float | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> CellCheck:
        unknown = sorted(set(data) - set(CHECK_FIELDS))
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown}", f"allowed fields: {', '.join(CHECK_FIELDS)}")
        if not isinstance(data.get("capability"), str):
            raise ConfigError(f"{where}: 'capability' is required (a capability or suite name)",
                              "e.g. capability: knowledge")
        values: dict[str, Any] = {"capability": data["capability"]}
        for name in ("band", "protocol", "metric"):
            if data.get(name) is not None:
                values[name] = str(data[name])
        for name in ("max_drop", "relative", "alpha", "min"):
            if data.get(name) is not None:
                value = data[name]
                if isinstance(value, str) and value.strip().endswith("%"):
                    value = float(value.strip()[:-1]) / 100
                try:
                    values[name] = float(value)
                except (TypeError, ValueError):
                    raise ConfigError(f"{where}: field {name!r} must be a number, got {value!r}",
                                      f"e.g. {name}: 0.05") from None
        return cls(**values)

    @property
    def label(self) -> str:
        parts = [self.capability, self.band]
        if self.protocol:
            parts.append(self.protocol)
        if self.metric:
            parts.append(self.metric)
        return "/".join(parts)


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    message: str


def run_check(
    check: CellCheck,
    profile: DepthProfile,
    baseline: DepthProfile | None,
    default_tolerance: Tolerance,
    default_alpha: float,
) -> CheckOutcome:
    """Evaluate ``check``; a ``None`` baseline is only acceptable for pure ``min`` checks."""
    suite = _suite_for(check, profile)
    info = profile.suites[suite]
    if check.protocol and check.protocol != info.protocol:
        raise ConfigError(
            f"check {check.label}: the session profiles suite {suite!r} under {info.protocol!r}, not {check.protocol!r}",
            f"profile it under that protocol: --layercheck-protocols {suite}={check.protocol} (or the "
            "layercheck_protocols ini option)",
        )
    if check.band != INTACT and check.band not in profile.bands:
        raise ConfigError(f"check {check.label}: unknown band {check.band!r}",
                          f"use 'intact' or one of {sorted(profile.bands)}")
    metric = check.metric or info.primary_metric
    try:
        current = profile.cell(suite, check.band, metric)
    except KeyError:
        raise ConfigError(f"check {check.label}: the profile has no cell for band {check.band!r} and metric {metric!r}",
                          "the band may be empty for this model depth, or the metric is not produced by the protocol") from None
    failures: list[str] = []
    if check.min is not None and current.value < check.min:
        failures.append(f"{check.label}: {metric} = {current.value:.3f} is below the required minimum {check.min:.3f}")
    only_floor = check.min is not None and check.max_drop is None and check.relative is None
    comparison: ProfileComparison | None = None
    if not only_floor:
        if baseline is None:
            return CheckOutcome(False, "no baseline to compare against")
        tolerance = Tolerance(
            max_drop=check.max_drop if check.max_drop is not None else default_tolerance.max_drop,
            relative=check.relative if check.relative is not None else default_tolerance.relative,
        )
        alpha = check.alpha if check.alpha is not None else default_alpha
        comparison = compare_profiles(baseline, profile, tolerance=tolerance, alpha=alpha)
        verdict = comparison.cell(suite, check.band, metric)
        if verdict.status == "regressed":
            failures.append(
                f"{check.label}: {metric} fell from {verdict.baseline:.3f} to {verdict.current:.3f} "
                f"(drop {-verdict.delta:.3f} > tolerance, exact McNemar p = {verdict.p_value:.3g} < alpha {alpha})"
            )
    if not failures:
        return CheckOutcome(True, f"{check.label}: ok ({metric} = {current.value:.3f})")
    table = band_table(comparison, suite, metric) if comparison is not None else ""
    message = "\n".join(failures) + (f"\n\n{table}" if table else "") + f"\n\n{UPDATE_HINT}"
    return CheckOutcome(False, message)


def band_table(comparison: ProfileComparison, suite: str, metric: str) -> str:
    """obtained | expected | diff per band for one suite, with p-values (pytest-regressions style)."""
    rows = []
    for cell in comparison.cells:
        if cell.suite == suite and cell.metric == metric:
            rows.append([cell.band, f"{cell.current:.3f}", f"{cell.baseline:.3f}", f"{cell.delta:+.3f}",
                         f"{cell.p_value:.3g}", cell.status])
    return tabulate(rows, headers=["band", "obtained", "expected", "diff", "p (McNemar)", "status"], tablefmt="simple")


def _suite_for(check: CellCheck, profile: DepthProfile) -> str:
    if check.capability in profile.suites:
        return check.capability
    matches = [name for name, info in profile.suites.items() if info.capability == check.capability]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ConfigError(
            f"check {check.label}: no profiled suite has capability or name {check.capability!r}",
            f"profiled suites: {sorted(profile.suites)}; add the suite with --layercheck-suites",
        )
    raise ConfigError(f"check {check.label}: capability {check.capability!r} matches several suites {matches}",
                      "name the suite instead of the capability")
