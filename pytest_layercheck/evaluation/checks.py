"""One capability assertion, shared by the ``@pytest.mark.layercheck`` marker and YAML check files.

A check names a cell (capability or suite, band, optionally protocol and metric) and passes when the
cell has not regressed against the baseline under ``comparison``'s fail rule: a drop that is
significant under the item-level test after the run's multiplicity correction, and at least half the
tolerance. The check is judged inside the same family as the session (every cell of the profile), so
a marker's verdict is the session's verdict for that cell. It can also demand an absolute floor
(``min``) that needs no baseline at all.

Tolerances: a plain number is an absolute drop (``max_drop: 0.05``); a percentage is relative to the
baseline value (``max_drop: 10%``, the same as ``relative: 10%``); ``"0.02,5%"`` gives both (the larger
applies). A check that sets either replaces the session's tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate

from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.metrics import METRICS
from pytest_layercheck.data.profile_data import INTACT, DepthProfile
from pytest_layercheck.data.statistics import CI_LEVEL, DEFAULT_CORRECTION
from pytest_layercheck.evaluation.comparison import compare_profiles
from pytest_layercheck.evaluation.comparison_result import (
    DEFAULT_MAX_SHIFT,
    SHIFT,
    CellComparison,
    ProfileComparison,
    Tolerance,
)

CHECK_FIELDS = ("capability", "band", "protocol", "metric", "max_drop", "relative", "alpha", "min", "max_shift")
UPDATE_HINT = (
    "If this change was intended, re-record the baseline from the model you trust: "
    "`layercheck baseline MODEL --update`, or --layercheck-update when this run's model is that model."
)


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
    #: For the ``shift`` band: the largest move of the centre of depth allowed (a share of depth); None: the session's.
    max_shift: float | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> CellCheck:
        unknown = sorted(set(data) - set(CHECK_FIELDS))
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown}", f"allowed fields: {', '.join(CHECK_FIELDS)}")
        if not isinstance(data.get("capability"), str):
            raise ConfigError(
                f"{where}: 'capability' is required (a capability or suite name)", "e.g. capability: knowledge"
            )
        values: dict[str, Any] = {"capability": data["capability"]}
        for name in ("band", "protocol", "metric"):
            if data.get(name) is not None:
                if not isinstance(data[name], str):  # str() of a nested list would be a test id of any size
                    raise ConfigError(
                        f"{where}: field {name!r} must be a string, got {_shown(data[name])}",
                        f"e.g. {name}: {'shallow' if name == 'band' else 'mc_text' if name == 'protocol' else 'acc'}",
                    )
                values[name] = data[name]
        values.update(_tolerance_fields(data, where, values.get("metric")))
        for name in ("alpha", "min"):  # a share, not a drop: "5%" is 0.05
            if data.get(name) is not None:
                values[name] = _bounded(data[name], name, where, values.get("metric"))
        if data.get("max_shift") is not None:
            if values.get("band") != SHIFT:
                raise ConfigError(
                    f"{where}: 'max_shift' applies to the shift band only",
                    f'e.g. @pytest.mark.layercheck("knowledge", "{SHIFT}", max_shift=0.1)',
                )
            values["max_shift"] = _bounded(data["max_shift"], "max_shift", where, None)
        if values.get("band") == SHIFT and (values.get("min") is not None or _has_drop(values)):
            raise ConfigError(
                f"{where}: a shift check takes max_shift, not max_drop, relative or min",
                f'e.g. @pytest.mark.layercheck("knowledge", "{SHIFT}", max_shift=0.1)',
            )
        return cls(**values)

    @property
    def has_tolerance(self) -> bool:
        return self.max_drop is not None or self.relative is not None

    def tolerance(self, default: Tolerance) -> Tolerance:
        """The check's own tolerance when it sets one (absolute, relative or both), else ``default``."""
        if not self.has_tolerance:
            return default
        return Tolerance(max_drop=self.max_drop or 0.0, relative=self.relative)

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
    #: The cell's numbers for the JUnit XML (``record_property``): value, baseline, delta, p, status.
    properties: Mapping[str, Any] = field(default_factory=dict)
    #: The compared cell the verdict rests on (None for a pure ``min`` check), for reports that show its evidence.
    cell: CellComparison | None = None


@dataclass(frozen=True)
class _CheckRun:
    """One check against the session's profile and baseline, under the session's verdict settings."""

    check: CellCheck
    suite: str
    metric: str
    profile: DepthProfile
    baseline: DepthProfile | None
    default_tolerance: Tolerance
    default_alpha: float
    #: ``run_check``'s keyword arguments of :func:`compare_profiles`, and ``default_metric``.
    options: Mapping[str, Any]

    def compare(self, baseline: DepthProfile, tolerance: Tolerance) -> ProfileComparison:
        """The session's comparison (its family, its settings) under the check's alpha and ``tolerance``,
        covering the check's metric of its suite too."""
        alpha = self.check.alpha if self.check.alpha is not None else self.default_alpha
        return compare_profiles(
            baseline,
            self.profile,
            tolerance=tolerance,
            alpha=alpha,
            metrics=session_metrics(self.profile, self.suite, self.metric, self.options.get("default_metric")),
            **{k: v for k, v in self.options.items() if k != "default_metric"},
        )


def run_check(
    check: CellCheck,
    profile: DepthProfile,
    baseline: DepthProfile | None,
    default_tolerance: Tolerance,
    default_alpha: float,
    *,
    correction: str = DEFAULT_CORRECTION,
    fail_on_improvement: bool = False,
    allow_precision_mismatch: bool = False,
    flip_rate: float | None = None,
    max_shift: float = DEFAULT_MAX_SHIFT,
    default_metric: str | None = None,
) -> CheckOutcome:
    """Evaluate ``check``; a ``None`` baseline is only acceptable for pure ``min`` checks.

    The whole profile is compared, with the session's settings (``correction``,
    ``fail_on_improvement``, ``allow_precision_mismatch``, ``flip_rate``): the family is every cell of
    the session's comparison (plus that metric's cells of the check's suite when it names a non-primary
    metric), so the verdict for a cell is the session's.
    """
    suite = _suite_for(check, profile)
    metric = _checked_metric(check, profile, suite, default_metric)
    options: dict[str, Any] = {
        "correction": correction,
        "fail_on_improvement": fail_on_improvement,
        "allow_precision_mismatch": allow_precision_mismatch,
        "flip_rate": flip_rate,
        "max_shift": max_shift,
        "default_metric": default_metric,
    }
    if check.band == SHIFT and check.max_shift is not None:
        options["max_shift"] = check.max_shift
    run = _CheckRun(check, suite, metric, profile, baseline, default_tolerance, default_alpha, options)
    return _run_shift_check(run) if check.band == SHIFT else _run_drop_check(run)


def _checked_metric(check: CellCheck, profile: DepthProfile, suite: str, default_metric: str | None) -> str:
    """The metric ``check`` is judged by, once its protocol and band are known to be the profile's."""
    info = profile.suites[suite]
    if check.protocol and check.protocol != info.protocol:
        raise ConfigError(
            f"check {check.label}: the session profiles suite {suite!r} under {info.protocol!r}, not {check.protocol!r}",
            f"profile it under that protocol: --layercheck-protocols {suite}={check.protocol} (or the "
            "layercheck_protocols ini option)",
        )
    if check.band not in (INTACT, SHIFT) and check.band not in profile.bands:
        raise ConfigError(
            f"check {check.label}: unknown band {check.band!r}",
            f"use 'intact', '{SHIFT}' or one of {sorted(profile.bands)}",
        )
    return check.metric or _session_metric(profile, suite, default_metric)


def _run_drop_check(run: _CheckRun) -> CheckOutcome:
    """An intact or band check: the cell has not regressed (judged in the session's family), and is not below
    ``min``."""
    check, suite, metric, profile = run.check, run.suite, run.metric, run.profile
    try:
        current = profile.cell(suite, check.band, metric)
    except KeyError:
        raise ConfigError(
            f"check {check.label}: the profile has no cell for band {check.band!r} and metric {metric!r}",
            "the band may be empty for this model depth, or the metric is not produced by the protocol",
        ) from None
    failures: list[str] = []
    if check.min is not None and current.value < check.min:
        failures.append(f"{check.label}: {metric} = {current.value:.3f} is below the required minimum {check.min:.3f}")
    comparison: ProfileComparison | None = None
    cell: CellComparison | None = None
    if check.min is None or check.has_tolerance:  # not only a floor: judged against the baseline
        if run.baseline is None:
            return CheckOutcome(False, "no baseline to compare against")
        comparison = run.compare(run.baseline, check.tolerance(run.default_tolerance))
        try:
            cell = comparison.cell(suite, check.band, metric)
        except KeyError:
            raise ConfigError(
                f"check {check.label}: the baseline has no {check.band!r} cell of {suite!r} "
                f"for {metric!r} to compare with",
                "re-record the baseline with --layercheck-update",
            ) from None
        if cell.status == "regressed":
            failures.append(failure_text(check.label, cell, comparison))
    properties = _properties(metric, current.value, cell)
    if not failures:
        return CheckOutcome(True, f"{check.label}: ok ({metric} = {current.value:.3f})", properties, cell)
    table = band_table(comparison, suite, metric) if comparison is not None else ""
    message = "\n".join(failures) + (f"\n\n{table}" if table else "") + f"\n\n{UPDATE_HINT}"
    return CheckOutcome(False, message, properties, cell)


def _properties(metric: str, value: float, cell: CellComparison | None) -> dict[str, Any]:
    """The check's numbers for the JUnit XML: the value, and the compared cell's evidence when there is one."""
    properties: dict[str, Any] = {"metric": metric, "value": round(value, 6)}
    if cell is not None:
        properties.update(
            baseline=round(cell.baseline, 6),
            delta=round(cell.delta, 6),
            p=f"{cell.p_value:.3g}",
            p_adjusted=f"{cell.p_adjusted:.3g}",
            detectable_drop=round(cell.detectable_drop, 4),
            status=cell.status,
        )
    return properties


def _session_metric(profile: DepthProfile, suite: str, default_metric: str | None) -> str:
    """The metric the session judges ``suite`` by: ``default_metric`` where the suite records it, else its cell metric."""
    if default_metric is not None and default_metric in profile.evaluation(suite).outcomes:
        return default_metric
    return profile.suites[suite].cell_metric


def session_metrics(
    profile: DepthProfile, suite: str, metric: str, default_metric: str | None = None
) -> dict[str, list[str]]:
    """The metrics a check's comparison covers: every suite's session metric (the session's family), plus
    ``metric`` for the check's own suite when it names another."""
    metrics = {name: [_session_metric(profile, name, default_metric)] for name in profile.suites}
    if metric not in metrics[suite]:
        metrics[suite].append(metric)
    return metrics


def _has_drop(values: Mapping[str, Any]) -> bool:
    return values.get("max_drop") is not None or values.get("relative") is not None


def _run_shift_check(run: _CheckRun) -> CheckOutcome:
    """A shift check: the suite's centre of depth has not moved significantly by ``max_shift`` or more
    (at least half of it, as drops), judged in the session's family."""
    check, suite, metric = run.check, run.suite, run.metric
    if run.baseline is None:
        return CheckOutcome(False, "no baseline to compare against")
    comparison = run.compare(run.baseline, run.default_tolerance)
    try:
        cell = comparison.cell(suite, SHIFT, metric)
    except KeyError:
        raise ConfigError(
            f"check {check.label}: no shift cell for {suite!r}: the baseline and this run share fewer "
            "than 3 single-layer removals of it",
            "profile layer by layer (--layercheck-mode layers) with a sweep (--layercheck-sweep-limit)",
        ) from None
    properties = _properties(metric, cell.current, cell)
    if cell.status != "moved":
        return CheckOutcome(
            True, f"{check.label}: ok (centre of depth {cell.baseline:.3f} -> {cell.current:.3f})", properties, cell
        )
    return CheckOutcome(
        False, f"{shift_failure_text(check.label, cell, comparison)}\n\n{UPDATE_HINT}", properties, cell
    )


def shift_failure_text(label: str, cell: CellComparison, comparison: ProfileComparison) -> str:
    """Why a shift cell failed: where the capability's dependence sat and where it sits now, with the evidence."""
    direction = "deeper" if cell.delta > 0 else "shallower"
    return (
        f"{label}: {cell.capability} moved {direction} along depth: its centre of depth ({cell.metric} lost per "
        f"removed layer) went from {cell.baseline:.3f} to {cell.current:.3f} of the depth ({cell.delta:+.3f}, "
        f"allowed {cell.allowed:g}; two-sided paired permutation p = {cell.p_value:.3g}, "
        f"{comparison.correction.capitalize()}-adjusted over {comparison.family_size} hypotheses p = {cell.p_adjusted:.3g} <= "
        f"alpha {comparison.alpha:g}; {CI_LEVEL:.0%} CI [{cell.ci_low:+.3f}, {cell.ci_high:+.3f}]; detectable shift "
        f"{_fmt_drop(cell.detectable_drop)}; {cell.items} items x {len(cell.layers)} layers)"
    )


def failure_text(label: str, cell: CellComparison, comparison: ProfileComparison, shown_items: int = 10) -> str:
    """Why ``cell`` failed: the drop against the tolerance, the test's raw and adjusted p, the interval,
    the detectable drop, and the items that got worse."""
    correction = comparison.correction
    adjusted = (
        f"{correction.capitalize()}-adjusted over {comparison.family_size} hypotheses p = {cell.p_adjusted:.3g}"
        if correction != "none"
        else "no multiplicity correction"
    )
    worse = ", ".join(cell.worse_items[:shown_items])
    more = f" and {len(cell.worse_items) - shown_items} more" if len(cell.worse_items) > shown_items else ""
    return (
        f"{label}: {cell.metric} fell from {cell.baseline:.3f} to {cell.current:.3f} (drop {cell.drop:.3f}, "
        f"tolerance {cell.allowed:.3g}; one-sided {cell.test} p = {cell.p_value:.3g}, {adjusted} <= alpha "
        f"{comparison.alpha:g}; {CI_LEVEL:.0%} CI of the change [{cell.ci_low:+.3f}, {cell.ci_high:+.3f}]; "
        f"detectable drop {_fmt_drop(cell.detectable_drop)})\n"
        f"{len(cell.worse_items)} of {cell.items} items got worse, {len(cell.better_items)} better"
        + (f"; worse: {worse}{more}" if worse else "")
    )


def band_table(comparison: ProfileComparison, suite: str, metric: str) -> str:
    """obtained | expected | diff per band for one suite, with the evidence (pytest-regressions style)."""
    rows = []
    for cell in comparison.cells:
        if cell.suite == suite and cell.metric == metric:
            rows.append(
                [
                    cell.band,
                    f"{cell.current:.3f}",
                    f"{cell.baseline:.3f}",
                    f"{cell.delta:+.3f}",
                    f"[{cell.ci_low:+.3f}, {cell.ci_high:+.3f}]",
                    f"{cell.test} ({cell.items} items)",
                    f"{cell.p_value:.3g}",
                    f"{cell.p_adjusted:.3g}",
                    _fmt_drop(cell.detectable_drop),
                    cell.status,
                ]
            )
    headers = [
        "band",
        "obtained",
        "expected",
        "diff",
        f"{CI_LEVEL:.0%} CI",
        "test",
        "p",
        f"p ({comparison.correction})",
        "detectable",
        "status",
    ]
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def _fmt_drop(value: float) -> str:
    return f"{value:.3f}" if value != float("inf") else "none"


#: Metrics that are a share of the items (0 to 1), as every protocol's primary metric is; ``loglikelihood``
#: (continuation) is a sum of log-probabilities, at most 0.
#: Metrics whose values are shares in [0, 1] (a ``min`` or a drop above 1 is meaningless for them).
SHARE_METRICS = frozenset(name for name, kind in METRICS.items() if (kind.low, kind.high) == (0.0, 1.0))


def _shown(value: Any, width: int = 60) -> str:
    """``repr(value)`` cut to ``width`` characters: a message must stay short whatever a file holds."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _bounded(raw: Any, name: str, where: str, metric: str | None) -> float:
    """``alpha`` or ``min`` as a finite number in the range it can take; anything else would make the check
    pass whatever the model does (NaN compares false, ``min: -inf`` or ``alpha: 2`` always pass)."""
    value: Any = raw
    try:
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise TypeError
        if isinstance(raw, str) and raw.strip().endswith("%"):
            value = float(raw.strip()[:-1]) / 100
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}: field {name!r} must be a number, got {_shown(raw)}", f"e.g. {name}: 0.05"
        ) from None
    if name == "alpha":
        if not 0 < value < 1:
            raise ConfigError(
                f"{where}: field 'alpha' is {_shown(raw)}: a significance level lies strictly between 0 and 1",
                "e.g. alpha: 0.05",
            )
    elif metric is None or metric in SHARE_METRICS:
        if not 0 <= value <= 1:
            raise ConfigError(
                f"{where}: field {name!r} is {_shown(raw)}, outside the {metric or 'metric'}'s range "
                "0 to 1: the check could never fail (or never pass)",
                f"e.g. {name}: 0.4 (or 40%)",
            )
    elif not math.isfinite(value) or (metric == "loglikelihood" and value > 0):
        raise ConfigError(
            f"{where}: field 'min' is {_shown(raw)}, outside the {metric}'s range",
            "give a finite number" + (" <= 0 (a log-likelihood)" if metric == "loglikelihood" else ""),
        )
    return value


def _tolerance_fields(data: Mapping[str, Any], where: str, metric: str | None = None) -> dict[str, float]:
    """``max_drop``/``relative`` of a check, read with ``Tolerance.parse``: ``%`` is relative everywhere.

    ``max_drop: 0.05`` is absolute, ``max_drop: 10%`` relative, ``max_drop: "0.02,5%"`` both;
    ``relative`` is relative either way (``relative: 0.1`` or ``relative: 10%``).
    """
    fields: dict[str, float] = {}

    def put(key: str, value: float) -> None:
        if key in fields and fields[key] != value:
            raise ConfigError(
                f"{where}: two different {'absolute' if key == 'max_drop' else 'relative'} tolerances "
                f"({fields[key]:g} and {value:g})",
                "give each once: max_drop: 0.05 (absolute), relative: 10% (or max_drop: 10%)",
            )
        fields[key] = value

    for name in ("max_drop", "relative"):
        raw = data.get(name)
        if raw is None:
            continue
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ConfigError(
                f"{where}: field {name!r} must be a number or a percentage, got {_shown(raw)}",
                f"e.g. {name}: 0.05 or {name}: 5%",
            )
        text = str(raw).strip()
        try:
            if name == "relative" and not text.endswith("%"):
                tolerance = Tolerance(max_drop=0.0, relative=_number(text))
            else:
                tolerance = Tolerance.parse(text)
        except ConfigError as exc:
            raise ConfigError(f"{where}: field {name!r}: {exc.problem}", exc.fix) from None
        if tolerance.relative is not None:
            put("relative", tolerance.relative)
        if tolerance.relative is None or "," in text:  # an absolute part was given
            if tolerance.max_drop > 1 and (metric is None or metric in SHARE_METRICS):
                raise ConfigError(
                    f"{where}: field {name!r} allows a drop of {tolerance.max_drop:g}, more than the "
                    f"{metric or 'metric'} can fall (it lies between 0 and 1): the check could never fail",
                    f"e.g. {name}: 0.05, or a relative drop such as {name}: 10%",
                )
            put("max_drop", tolerance.max_drop)
    return fields


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"cannot read {text!r} as a number", "e.g. relative: 10% or relative: 0.1") from None


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
    raise ConfigError(
        f"check {check.label}: capability {check.capability!r} matches several suites {matches}",
        "name the suite instead of the capability",
    )
