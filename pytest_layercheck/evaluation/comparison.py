"""Comparing a depth-sensitivity profile with its baseline without crying wolf, and without missing harm.

**Unit: the item.** Every cell is tested over items, with the paired test its metric calls for
(:mod:`pytest_layercheck.data.metrics`):

* ``p_correct`` (what multiple-choice cells are judged by): the exact sign-flip permutation test of each
  item's change in gold-choice probability, averaged over the cell's ablations (``statistics.SCORE_GRID``);
* 0/1 metrics (``acc``, ``exact_match``): the exact McNemar test for an intact cell, the exact sign-flip
  test of each item's change in its share of right answers over a band's ablations;
* ``margin`` and log-likelihoods: the Wilcoxon signed-rank test, whose effect is the median change.

The ``m`` ablations of one item are correlated, so an item contributes one difference, never ``m``.
Drop tests are one-sided, in the direction of the change, and report a 95% interval for the mean change.

**Shift cells.** Where a capability lives, not only how much is left: per suite swept layer by layer, the
centre of depth of the per-layer drops (:mod:`pytest_layercheck.data.depth_shift`), compared by a paired
permutation test over items (two-sided). Its cell has band ``"shift"``, values in shares of depth, and
fails (status ``moved``) when the move is significant and at least half of ``max_shift``.

**Family.** Every compared cell is one hypothesis ("this cell dropped", "this capability moved"); the
family-wise error over all of them (plus "this cell rose" under ``fail_on_improvement``) is controlled at
``alpha`` by Holm's step-down procedure (``correction="holm"``; ``"bonferroni"`` and ``"none"`` on
request). ``p_value`` is a cell's raw p, ``p_adjusted`` its adjusted p. Improvements that cannot fail the
run are adjusted within a family of their own.

**Fail rule.** A cell *regresses* when its drop is significant (``p_adjusted <= alpha``) and the
observed drop is at least ``EFFECT_FLOOR`` (half) of the tolerance. The tolerance is thus the
smallest drop the guard is meant to catch: a true drop equal to it fails with the cell's power at
that size (>= 80% wherever ``detectable_drop <= tolerance``), while a real but trivial shift (under
half the tolerance: float noise, a benign fine-tune) never fails. A change beyond the tolerance that is
not significant is *changed*.

**Power.** Each cell reports ``detectable_drop``: the smallest true drop its test detects with 80%
power at the level a lone regression must reach after the correction (Holm's first step and
Bonferroni: ``alpha/K`` for ``K`` hypotheses; none: ``alpha``). For 0/1 metrics under
``statistics.ALTERNATIVE`` with the background flip rate estimated from the comparison (twice the mean
per-item rise) unless ``flip_rate`` is given; for continuous scores under ``statistics.SCORE_ALTERNATIVE``
(the observed spread of the per-item changes, never below what a candidate correlated
``DEFAULT_SCORE_CORRELATION`` with the baseline would show); for shift cells, the smallest move.
``sensitivity_warning`` says when a tolerance is below it.

**Refusals.** Profiles measured differently (layer count, suite version, bands, mode, items, ablated
layers) are refused outright, and so are profiles computed in another dtype or device type unless
``allow_precision_mismatch`` (then a warning says the verdicts carry precision noise).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from pytest_layercheck.core.errors import BaselineError, ConfigError
from pytest_layercheck.data.depth_shift import ShiftTest, depth_shift_test
from pytest_layercheck.data.metrics import metric_kind
from pytest_layercheck.data.profile_data import CELL_METRIC, INTACT, DepthProfile
from pytest_layercheck.data.records import CellId
from pytest_layercheck.data.statistics import (
    CI_LEVEL,
    DEFAULT_CORRECTION,
    DEFAULT_POWER,
    SCORE_GRID,
    adjust_p_values,
    check_correction,
    detectable_drop,
    exact_mcnemar,
    item_steps,
    mean_difference_ci,
    per_test_alpha,
    score_detectable_drop,
    score_mean_ci,
    score_sign_flip_test,
    score_spread,
    sign_flip_test,
    signed_rank_test,
)
from pytest_layercheck.evaluation.baseline import UPDATE_FLAG

Status = Literal["ok", "changed", "regressed", "improved", "moved"]
#: The band name of a depth-shift cell: where a capability lives along depth, not how much of it is left.
SHIFT = "shift"
#: The default largest move of a capability's centre of depth (a share of the model's depth) a run allows.
DEFAULT_MAX_SHIFT = 0.1
#: A suite gets a shift cell when the two profiles share at least this many single-layer removals.
MIN_SHIFT_LAYERS = 3

DEFAULT_ALPHA = 0.05
#: A significant drop fails only when it is at least this share of the tolerance (see the module doc).
EFFECT_FLOOR = 0.5
ALLOW_PRECISION_FLAG = "--layercheck-allow-precision-mismatch"
#: Float slack so that a drop of exactly the tolerance (0.62 - 0.57) is not "beyond" it.
_EPS = 1e-9


@dataclass(frozen=True)
class Tolerance:
    """The smallest drop the guard is meant to catch, per cell.

    The allowed change is the larger of ``max_drop`` (absolute, in metric units) and ``relative`` ×
    the baseline value, as with ``pytest.approx``'s ``abs``/``rel``. A significant drop of at least
    ``EFFECT_FLOOR`` × this fails (see the module doc); ``%`` always means relative (``"5%"``).
    """

    max_drop: float = 0.05
    relative: float | None = None

    def __post_init__(self) -> None:
        if not (self.max_drop >= 0 and math.isfinite(self.max_drop)):
            raise ConfigError(
                f"tolerance max_drop must be a finite number >= 0, got {self.max_drop!r}",
                "use an absolute drop like 0.05",
            )
        if self.relative is not None and not 0 <= self.relative <= 1:
            raise ConfigError(
                f"relative tolerance must be between 0% and 100%, got {self.relative!r}", "use a relative drop like 5%"
            )

    @classmethod
    def parse(cls, spec: str | float | Tolerance) -> Tolerance:
        """Parse ``"0.05"`` (absolute), ``"5%"`` (relative) or both, comma-separated (``"0.02,5%"``)."""
        if isinstance(spec, Tolerance):
            return spec
        if isinstance(spec, (int, float)):
            return cls(max_drop=float(spec))
        absolute: float | None = None
        relative: float | None = None
        parts = [p.strip() for p in str(spec).split(",") if p.strip()]
        try:
            for part in parts:
                if part.endswith("%"):
                    if relative is not None:
                        raise ValueError("two relative tolerances")
                    relative = float(part[:-1]) / 100
                else:
                    if absolute is not None:
                        raise ValueError("two absolute tolerances")
                    absolute = float(part)
            if not parts:
                raise ValueError("empty")
        except ValueError as exc:
            raise ConfigError(
                f"cannot read tolerance {spec!r} ({exc})",
                "give an absolute drop like 0.05, a relative one like 5%, or both: 0.02,5%",
            ) from None
        return cls(max_drop=absolute if absolute is not None else 0.0, relative=relative)

    def allowed(self, baseline_value: float) -> float:
        """The largest change of a cell with this baseline value that is still within tolerance."""
        if self.relative is None or not math.isfinite(baseline_value):
            return self.max_drop
        return max(self.max_drop, self.relative * abs(baseline_value))

    def __str__(self) -> str:
        if self.relative is None:
            return f"{self.max_drop:g}"
        if self.max_drop == 0:
            return f"{self.relative * 100:g}%"
        return f"{self.max_drop:g} or {self.relative * 100:g}%"


@dataclass(frozen=True)
class CellComparison(CellId):
    """One cell of the baseline paired with the same cell of the current run.

    ``baseline``/``current`` are the cell's means over the paired items (the items both runs scored
    under every ablation of the cell); ``delta`` is the change the fail rule judges: ``current - baseline``,
    or for rank-tested metrics (``margin``) the median per-item change. ``worse``/``better``/``pairs``
    count (item, ablation) pairs and are descriptive only; the test counts items: ``worse_items`` /
    ``better_items`` are the ids of the items whose value (share of right answers, or mean score) fell /
    rose by as much as the test counts.
    """

    baseline: float
    current: float
    delta: float  # the change the fail rule judges (see above)
    allowed: float  # tolerance for this cell, in metric units
    worse: int  # (item, ablation) pairs that went 1 -> 0
    better: int  # (item, ablation) pairs that went 0 -> 1
    pairs: int  # (item, ablation) pairs compared
    p_value: float  # raw one-sided p in the direction of the change
    status: Status
    failed: bool
    test: str = "McNemar"  # "McNemar" (intact, or one ablation per band) or "sign-flip"
    items: int = 0  # items paired
    p_adjusted: float = 1.0  # after the run's multiplicity correction
    ci_low: float = math.nan  # CI_LEVEL interval of the mean change (Agresti-Min)
    ci_high: float = math.nan
    detectable_drop: float = math.inf  # smallest drop detected with 80% power (inf: none)
    flip_rate: float = 0.0  # background flip rate detectable_drop assumes (0/1 metrics; NaN otherwise)
    score_sd: float = math.nan  # per-item sd of differences detectable_drop assumes (continuous metrics)
    worse_items: tuple[str, ...] = ()
    better_items: tuple[str, ...] = ()

    @property
    def drop(self) -> float:
        return -self.delta

    @property
    def underpowered(self) -> bool:
        """The tolerance is below the smallest drop this cell can detect with 80% power."""
        return self.detectable_drop > self.allowed + _EPS


@dataclass
class ProfileComparison:
    """The outcome of comparing a profile with its baseline."""

    cells: list[CellComparison]
    tolerance: Tolerance
    alpha: float
    fail_on_improvement: bool = False
    warnings: list[str] = field(default_factory=list)  # may shift numbers; worth a look
    notes: list[str] = field(default_factory=list)  # expected differences, reported for the record
    missing_suites: list[str] = field(default_factory=list)  # in the baseline, not in this run
    new_suites: list[str] = field(default_factory=list)  # in this run, not in the baseline
    baseline_model: dict[str, Any] = field(default_factory=dict)
    correction: str = DEFAULT_CORRECTION
    power: float = DEFAULT_POWER  # at which detectable drops are quoted
    flip_rate: float | None = None  # assumed background flip rate; None: estimated per cell
    precision_mismatch: bool = False  # compared across dtype/device type (allowed explicitly)
    suite_hashes: dict[str, str] = field(default_factory=dict)  # content hash of each compared suite
    max_shift: float = DEFAULT_MAX_SHIFT  # the largest allowed move of a centre of depth (shift cells)

    @property
    def family_size(self) -> int:
        """Hypotheses whose rejection fails the run: one per drop cell (two under ``fail_on_improvement``) and
        one per shift cell."""
        shifts = sum(1 for c in self.cells if c.band == SHIFT)
        return (len(self.cells) - shifts) * (2 if self.fail_on_improvement else 1) + shifts

    @property
    def detection_alpha(self) -> float:
        """The raw p a lone regression must reach, at which ``detectable_drop`` is quoted."""
        return per_test_alpha(self.alpha, self.family_size, self.correction)

    @property
    def regressions(self) -> list[CellComparison]:
        return [c for c in self.cells if c.status == "regressed"]

    @property
    def improvements(self) -> list[CellComparison]:
        return [c for c in self.cells if c.status == "improved"]

    @property
    def changed(self) -> list[CellComparison]:
        """Cells that moved beyond the tolerance without the change being significant."""
        return [c for c in self.cells if c.status == "changed"]

    @property
    def failures(self) -> list[CellComparison]:
        return [c for c in self.cells if c.failed]

    @property
    def underpowered(self) -> list[CellComparison]:
        """Cells whose tolerance is below their smallest detectable drop."""
        return [c for c in self.cells if c.underpowered]

    @property
    def passed(self) -> bool:
        """True when cells were compared and none failed: a comparison of nothing is never a pass."""
        return bool(self.cells) and not self.failures

    @property
    def moved(self) -> list[CellComparison]:
        """Shift cells whose capability moved along depth significantly and by at least half the allowed shift."""
        return [c for c in self.cells if c.status == "moved"]

    def counts(self) -> dict[str, int]:
        out = {status: 0 for status in ("regressed", "moved", "improved", "changed", "ok")}
        for c in self.cells:
            out[c.status] += 1
        return out

    def cell(self, suite_or_capability: str, band: str, metric: str | None = None) -> CellComparison:
        """Look a cell up by suite name or capability, band and (default: primary) metric."""
        for c in self.cells:
            wanted = metric or CELL_METRIC.get(c.protocol)
            if suite_or_capability in (c.suite, c.capability) and c.band == band and c.metric == wanted:
                return c
        raise KeyError(f"no compared cell for {suite_or_capability!r} / {band!r} / {metric or 'primary metric'}")

    def __getitem__(self, key: tuple[str, str] | tuple[str, str, str | None]) -> CellComparison:
        return self.cell(*key)

    def criteria(self) -> str:
        """How a cell fails, in one sentence (reports and failure messages)."""
        family = (
            f"{self.correction.capitalize()} over {self.family_size} hypotheses"
            if self.correction != "none"
            else f"no multiplicity correction ({self.family_size} hypotheses)"
        )
        improvement = "; improvements fail too" if self.fail_on_improvement else ""
        shift = (
            f"; a shift cell fails when its centre of depth moved significantly (two-sided) by at least "
            f"{EFFECT_FLOOR:g} x {self.max_shift:g} of depth"
            if any(c.band == SHIFT for c in self.cells)
            else ""
        )
        return (
            f"a cell fails when its drop is significant (one-sided item-level test, {family}, adjusted "
            f"p <= {self.alpha:g}) and at least {EFFECT_FLOOR:g} x the tolerance {self.tolerance}{improvement}"
            f"{shift}"
        )


# --------------------------------------------------------------------------- compatibility
def compatibility_problems(baseline: DepthProfile, current: DepthProfile) -> list[str]:
    """Every reason the two profiles cannot be compared cell by cell (empty when they can)."""
    problems: list[str] = []
    b_layers, c_layers = baseline.model.get("num_layers"), current.model.get("num_layers")
    if b_layers != c_layers:
        problems.append(f"layer count: baseline has {b_layers} layers, this model has {c_layers}")
    b_mode, c_mode = baseline.settings.get("mode"), current.settings.get("mode")
    if b_mode != c_mode:
        problems.append(f"ablation mode: baseline used {b_mode!r}, this run uses {c_mode!r}")
    if dict(baseline.bands) != dict(current.bands):
        problems.append(
            f"bands map to different layers: baseline {_bands_text(baseline)}, this run {_bands_text(current)}"
        )
    for name in baseline.suites.keys() & current.suites.keys():
        problems.extend(_suite_problems(name, baseline, current))
    return problems


def _bands_text(profile: DepthProfile) -> str:
    return ", ".join(f"{band}={list(layers)}" for band, layers in profile.bands.items()) or "(none)"


def _suite_problems(name: str, baseline: DepthProfile, current: DepthProfile) -> list[str]:
    old, new = baseline.suites[name], current.suites[name]
    problems = []
    if old.content_hash != new.content_hash:
        problems.append(
            f"suite {name!r} changed since the baseline was recorded "
            f"(content hash {old.content_hash[:12]} -> {new.content_hash[:12]})"
        )
    if old.protocol != new.protocol:
        problems.append(f"suite {name!r} is scored with protocol {new.protocol!r}, the baseline used {old.protocol!r}")
    if old.item_ids != new.item_ids:
        limits = f"limit: baseline {baseline.settings.get('limit')}, this run {current.settings.get('limit')}"
        problems.append(
            f"suite {name!r} has different items: {_item_difference(old.item_ids, new.item_ids)} ({limits})"
        )
    old_ablations, new_ablations = _ablation_layers(baseline, name), _ablation_layers(current, name)
    moved = sorted(k for k in old_ablations.keys() & new_ablations.keys() if old_ablations[k] != new_ablations[k])
    if old.protocol == new.protocol and moved:
        # Evaluations only one side has are fine (a partial profile): only cells both have are compared.
        problems.append(
            f"suite {name!r} was evaluated under different ablations (different layers removed: {_preview(moved)})"
        )
    return problems


def _ablation_layers(profile: DepthProfile, suite: str) -> dict[str, tuple[int, ...]]:
    protocol = profile.suites[suite].protocol
    return {
        key: ev.removed_layers
        for (name, proto, key), ev in profile.evaluations.items()
        if name == suite and proto == protocol
    }


def _item_difference(old: Sequence[str], new: Sequence[str]) -> str:
    sizes = f"baseline {len(old)} items, this run {len(new)}"
    for index, (a, b) in enumerate(zip(old, new)):  # noqa: B905 - lengths may differ on purpose
        if a != b:
            return f"{sizes}; first difference at position {index}: {a!r} vs {b!r}"
    return sizes


def _preview(keys: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def precision_problems(baseline: DepthProfile, current: DepthProfile) -> tuple[list[str], list[str]]:
    """(differences in dtype or device type, fields one side does not record)."""
    problems, unknown = [], []
    for key, what in (("dtype", "dtype"), ("device", "device type")):
        old, new = _precision_field(baseline, key), _precision_field(current, key)
        if old is None or new is None:
            unknown.append(what)
        elif old != new:
            problems.append(f"{what}: baseline {old}, this run {new}")
    return problems, unknown


def _precision_field(profile: DepthProfile, key: str) -> str | None:
    value = profile.model.get(key) or profile.settings.get(key)
    if value is None:
        return None
    return str(value).split(":")[0] if key == "device" else str(value)


def _context_differences(baseline: DepthProfile, current: DepthProfile) -> tuple[list[str], list[str]]:
    """Differences that do not prevent a comparison: (warnings, notes)."""
    warnings: list[str] = []
    notes: list[str] = []
    b_fp, c_fp = baseline.model.get("fingerprint"), current.model.get("fingerprint")
    if b_fp != c_fp:
        notes.append(
            f"weights differ from the baseline (fingerprint {str(b_fp)[:12]} -> {str(c_fp)[:12]}), "
            "as expected when checking a fine-tune or a new checkpoint against its base"
        )
    old_versions = baseline.environment.get("versions", baseline.environment)
    new_versions = current.environment.get("versions", current.environment)
    for key in ("torch", "transformers"):
        old, new = old_versions.get(key), new_versions.get(key)
        if old is not None and new is not None and old != new:
            warnings.append(f"{key} version differs from the baseline ({old} -> {new}); numbers can shift slightly")
    return warnings, notes


# --------------------------------------------------------------------------- comparison
def compare_profiles(
    baseline: DepthProfile,
    current: DepthProfile,
    tolerance: Tolerance | str | float | None = None,
    alpha: float = DEFAULT_ALPHA,
    fail_on_improvement: bool = False,
    metrics: Iterable[str] | Mapping[str, Iterable[str]] | None = None,
    *,
    correction: str = DEFAULT_CORRECTION,
    allow_precision_mismatch: bool = False,
    flip_rate: float | None = None,
    power: float = DEFAULT_POWER,
    max_shift: float = DEFAULT_MAX_SHIFT,
    default_metric: str | None = None,
) -> ProfileComparison:
    """Compare every cell the two profiles share; refuse (BaselineError) if they were measured differently.

    ``metrics`` defaults to the metric each suite's cells are judged by (``p_correct`` for multiple
    choice); a mapping gives the metrics per suite. Every compared cell is one hypothesis of the family
    ``correction`` controls (``holm``, ``bonferroni`` or ``none``); each metric gets the paired test its
    kind calls for (module doc). A dtype or device-type difference is refused unless
    ``allow_precision_mismatch``. ``flip_rate`` fixes the background flip rate the detectable drops
    assume (default: estimated per cell from this comparison). Each suite the two profiles swept layer by
    layer also gets a shift cell (band ``"shift"``): the move of its centre of depth, which fails beyond
    ``max_shift`` (a share of depth) under the same rule, in the same family. ``default_metric`` (with
    ``metrics`` None) judges every suite that records it by that metric instead of its cell metric.
    """
    if not 0 <= max_shift <= 1:
        raise ConfigError(f"max_shift must be a share of depth in [0, 1], got {max_shift!r}", "e.g. 0.1")
    tol = Tolerance() if tolerance is None else Tolerance.parse(tolerance)
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be between 0 and 1, got {alpha!r}", "use a significance level like 0.05")
    check_correction(correction)
    if flip_rate is not None and not 0 <= flip_rate <= 1:
        raise ConfigError(f"flip_rate must be between 0 and 1, got {flip_rate!r}", "e.g. 0.02, or leave it unset")
    name = current.model.get("name") or baseline.model.get("name") or "this model"
    problems = compatibility_problems(baseline, current)
    if problems:
        raise BaselineError(
            f"the baseline of {name} was measured differently from this run, so the two cannot be compared:\n"
            + "\n".join(f"  - {p}" for p in problems),
            f"if the change was intended, re-record the baseline with {UPDATE_FLAG}; "
            "otherwise run with the settings the baseline was recorded with",
        )
    warnings, notes = _context_differences(baseline, current)
    precision, unknown = precision_problems(baseline, current)
    if precision and not allow_precision_mismatch:
        raise BaselineError(
            f"the baseline of {name} was computed in another precision ({'; '.join(precision)}). Precision alone "
            "flips items (the default model scored knowledge 0.845 in float32 and 0.837 in bfloat16), so the "
            "verdicts would mix that noise with real change",
            "run with the baseline's --layercheck-dtype / --layercheck-device, record a baseline for this "
            f"precision with {UPDATE_FLAG}, or accept the noise with {ALLOW_PRECISION_FLAG}",
        )
    if precision:
        warnings.append(
            f"compared across precision ({'; '.join(precision)}), as allowed: precision noise is part of these verdicts"
        )
    if unknown:
        warnings.append(f"{' and '.join(unknown)} not recorded by both profiles; precision could not be checked")
    missing = [s for s in baseline.suites if s not in current.suites]
    new = [s for s in current.suites if s not in baseline.suites]
    if missing:
        warnings.append(f"suites in the baseline but not in this run (not compared): {', '.join(missing)}")
    if new:
        warnings.append(
            f"suites in this run but not in the baseline (not compared; record them with "
            f"{UPDATE_FLAG}): {', '.join(new)}"
        )

    paired: list[_Paired] = []
    shifts: list[_Paired] = []
    for suite in (s for s in current.suites if s in baseline.suites):
        for metric in _wanted_metrics(metrics, suite, current, default_metric):
            skip = _metric_problem(baseline, current, suite, metric)
            if skip is not None:
                warnings.extend([skip] if skip else [])
                continue
            paired.extend(_paired_cells(baseline, current, suite, metric, warnings))
            shifts.extend(_shift_pair(baseline, current, suite, metric))
    cells = _judge(paired, shifts, tol, alpha, fail_on_improvement, correction, flip_rate, power, max_shift)
    return ProfileComparison(
        cells=cells,
        tolerance=tol,
        alpha=alpha,
        fail_on_improvement=fail_on_improvement,
        warnings=warnings,
        notes=notes,
        missing_suites=missing,
        new_suites=new,
        baseline_model=dict(baseline.model),
        correction=correction,
        power=power,
        flip_rate=flip_rate,
        precision_mismatch=bool(precision),
        suite_hashes={c.identity["suite"]: current.suites[c.identity["suite"]].content_hash for c in paired},
        max_shift=max_shift,
    )


def _wanted_metrics(
    metrics: Iterable[str] | Mapping[str, Iterable[str]] | None,
    suite: str,
    profile: DepthProfile,
    metric: str | None = None,
) -> list[str]:
    if metrics is None:
        own = profile.evaluation(suite).outcomes
        return [metric if metric is not None and metric in own else profile.suites[suite].cell_metric]
    if isinstance(metrics, Mapping):
        return list(metrics.get(suite, ()))
    return list(metrics)


def _metric_problem(baseline: DepthProfile, current: DepthProfile, suite: str, metric: str) -> str | None:
    """Why ``metric`` of ``suite`` cannot be compared with a paired exact test ("" if it needs no
    mention), or None when it can."""
    present = [
        any(metric in ev.outcomes for (name, _, _), ev in profile.evaluations.items() if name == suite)
        for profile in (baseline, current)
    ]
    if not any(present):
        return ""  # the suite's protocol has no such metric: nothing to compare, nothing to report
    if not all(present):
        side = "the baseline" if not present[0] else "this run"
        return f"suite {suite!r}: metric {metric!r} is missing from {side}; not compared"
    kind = metric_kind(metric)
    for profile in (baseline, current):
        for (name, _, _), ev in profile.evaluations.items():
            values = ev.outcomes.get(metric, ()) if name == suite else ()
            if kind.binary and any(v not in (0.0, 1.0) for v in values):
                return f"suite {suite!r}: metric {metric!r} is not 0/1 per item in every evaluation; not compared"
            if any(not math.isfinite(v) for v in values):  # e.g. a metric logged as a list, read as NaN
                return f"suite {suite!r}: metric {metric!r} is not a finite number per item; not compared"
    return None


@dataclass(frozen=True)
class _Paired:
    """One cell's outcomes on both sides: items × ablations 0/1 matrices over the paired items.

    ``identity``: the CellComparison fields that name the cell (suite ... ablations)."""

    identity: dict[str, Any]
    item_ids: tuple[str, ...]
    before: np.ndarray
    after: np.ndarray
    num_layers: int = 0  # the model's depth (shift cells place layers by it)


def _paired_cells(
    baseline: DepthProfile, current: DepthProfile, suite: str, metric: str, warnings: list[str]
) -> list[_Paired]:
    """The intact cell and every band cell both profiles hold, items paired by position."""
    info = current.suites[suite]
    groups: list[tuple[str, tuple[int, ...], list[str]]] = [(INTACT, (), [INTACT])]
    groups += [(band, tuple(layers), []) for band, layers in current.bands.items()]
    for band, _, keys in groups[1:]:
        old_keys = [ev.ablation for ev in baseline.band_ablations(suite, band)]
        new_keys = [ev.ablation for ev in current.band_ablations(suite, band)]
        if old_keys and new_keys and old_keys != new_keys:
            warnings.append(
                f"{suite}/{band} {metric}: the two profiles hold different ablations of the band "
                f"({len(old_keys)} vs {len(new_keys)}), so the cell is not compared"
            )
        elif old_keys and new_keys:
            keys.extend(new_keys)
    out = []
    for band, layers, keys in groups:
        found = [[_outcomes(profile, suite, key, metric) for key in keys] for profile in (baseline, current)]
        sides = [[v for v in side if v is not None] for side in found]
        if not keys or any(len(side) < len(keys) for side in sides):  # a key without outcomes on either side
            continue
        lengths = {len(v) for side in sides for v in side}
        n = min(lengths)
        if len(lengths) > 1 and band != INTACT:
            warnings.append(
                f"{suite}/{band} {metric}: the runs scored different numbers of items under the "
                f"band's ablations ({sorted(lengths)}); the first {n} items are compared"
            )
        before, after = (np.array([v[:n] for v in side], dtype=float).T.reshape(n, len(keys)) for side in sides)
        identity = {
            "suite": suite,
            "capability": info.capability,
            "protocol": info.protocol,
            "metric": metric,
            "band": band,
            "layers": layers,
            "ablations": tuple(keys),
        }
        out.append(_Paired(identity, tuple(info.item_ids[:n]), before, after))
    return out


def _outcomes(profile: DepthProfile, suite: str, key: str, metric: str) -> tuple[float, ...] | None:
    ev = profile.evaluations.get((suite, profile.suites[suite].protocol, key))
    return None if ev is None else ev.outcomes.get(metric)


@dataclass(frozen=True)
class _Tested:
    paired: _Paired
    differences: np.ndarray  # per item: the change of its mean over the cell's ablations
    p_less: float
    p_greater: float
    test: str
    effect: float  # the change the fail rule judges: the mean difference, or the median for rank tests


def _test_cell(cell: _Paired) -> _Tested:
    """The paired item-level test that suits the cell's metric (:mod:`pytest_layercheck.data.metrics`)."""
    kind = metric_kind(str(cell.identity["metric"]))
    m = cell.before.shape[1]
    differences = (cell.after - cell.before).mean(axis=1)
    if kind.test == "exact":
        steps = item_steps(cell.before, cell.after)
        result = sign_flip_test(steps.tolist())
        differences = steps / m
        name = "McNemar" if m == 1 else "sign-flip"  # the same test when m == 1
    elif kind.test == "sign-flip":
        result, name = score_sign_flip_test(differences), "score sign-flip"
    else:
        result, name = signed_rank_test(differences), "signed-rank"
    if kind.effect == "median":
        effect = float(np.median(differences)) if len(differences) else math.nan
    else:
        effect = float(cell.after.mean() - cell.before.mean()) if len(differences) else math.nan
    return _Tested(cell, differences, result.p_less, result.p_greater, name, effect)


def _judge(
    paired: list[_Paired],
    shifts: list[_Paired],
    tol: Tolerance,
    alpha: float,
    fail_on_improvement: bool,
    correction: str,
    flip_rate: float | None,
    power: float,
    max_shift: float,
) -> list[CellComparison]:
    """Test every cell, correct over the family (drops, rises under ``fail_on_improvement``, and shifts), and
    apply the fail rule."""
    tested = [_test_cell(cell) for cell in paired]
    k = len(tested)
    detection_alpha = per_test_alpha(alpha, k * (2 if fail_on_improvement else 1) + len(shifts), correction)
    shift_tests = [
        depth_shift_test(
            cell.before, cell.after, cell.identity["layers"], cell.num_layers, alpha=detection_alpha, power=power
        )
        for cell in shifts
    ]
    drops = [t.p_less for t in tested]
    rises = [t.p_greater for t in tested]
    moves = [t.p_value for t in shift_tests]
    if fail_on_improvement:  # one family: both directions can fail the run
        every = adjust_p_values(drops + rises + moves, correction)
        drop_adjusted, rise_adjusted, move_adjusted = every[:k], every[k : 2 * k], every[2 * k :]
    else:  # rises cannot fail the run: their own (reported) family
        both = adjust_p_values(drops + moves, correction)
        drop_adjusted, move_adjusted = both[:k], both[k:]
        rise_adjusted = adjust_p_values(rises, correction)
    cells = [
        _cell_comparison(t, down, up, tol, alpha, fail_on_improvement, detection_alpha, flip_rate, power)
        for t, down, up in zip(tested, drop_adjusted, rise_adjusted, strict=True)
    ]
    cells += [
        _shift_comparison(cell, test, adjusted, alpha, max_shift)
        for cell, test, adjusted in zip(shifts, shift_tests, move_adjusted, strict=True)
    ]
    return cells


def _cell_comparison(
    t: _Tested,
    drop_adjusted: float,
    rise_adjusted: float,
    tol: Tolerance,
    alpha: float,
    fail_on_improvement: bool,
    detection_alpha: float,
    flip_rate: float | None,
    power: float,
) -> CellComparison:
    cell = t.paired
    n, m = cell.before.shape
    before_mean = float(cell.before.mean()) if n else math.nan
    after_mean = float(cell.after.mean()) if n else math.nan
    delta = t.effect
    rose = delta > 0
    p_value, p_adjusted = (t.p_greater, rise_adjusted) if rose else (t.p_less, drop_adjusted)
    allowed = tol.allowed(before_mean)
    status = classify(delta, allowed, p_adjusted, alpha)
    item_means = cell.before.mean(axis=1) if n else np.zeros(0)
    if metric_kind(str(cell.identity["metric"])).binary:
        low, high = mean_difference_ci(t.differences, CI_LEVEL)
        background = (
            flip_rate if flip_rate is not None else (float(2 * np.clip(t.differences, 0, None).sum() / n) if n else 0.0)
        )
        detectable, spread = detectable_drop(item_means, m, detection_alpha, power, min(1.0, background)), math.nan
        moved = t.differences
    else:
        low, high = score_mean_ci(t.differences, CI_LEVEL)
        spread = score_spread(item_means, t.differences)
        background, detectable = math.nan, score_detectable_drop(spread, n, detection_alpha, power)
        moved = np.rint(t.differences * SCORE_GRID) / SCORE_GRID  # what the test counts as a change
    return CellComparison(
        **cell.identity,
        baseline=before_mean,
        current=after_mean,
        delta=delta,
        allowed=allowed,
        worse=int((cell.before > cell.after).sum()),
        better=int((cell.after > cell.before).sum()),
        pairs=n * m,
        p_value=p_value,
        status=status,
        failed=status == "regressed" or (fail_on_improvement and status == "improved"),
        test=t.test,
        items=n,
        p_adjusted=p_adjusted,
        ci_low=low,
        ci_high=high,
        detectable_drop=detectable,
        flip_rate=background,
        score_sd=spread,
        worse_items=tuple(i for i, s in zip(cell.item_ids, moved, strict=True) if s < 0),
        better_items=tuple(i for i, s in zip(cell.item_ids, moved, strict=True) if s > 0),
    )


# --------------------------------------------------------------------------- depth shift
def _shift_pair(baseline: DepthProfile, current: DepthProfile, suite: str, metric: str) -> list[_Paired]:
    """The suite's per-item drops under each single-layer removal both profiles hold, as a shift cell:
    ``before``/``after`` are items x layers matrices of ``intact - without layer``, layers in depth order."""
    if metric_kind(metric).test == "signed-rank":  # unbounded scores: no stable centre
        return []
    old, new = _single_layers(baseline, suite), _single_layers(current, suite)
    keys = sorted((key for key, layer in new.items() if old.get(key) == layer), key=new.__getitem__)
    if len(keys) < MIN_SHIFT_LAYERS:
        return []
    sides = []
    for profile in (baseline, current):
        intact = _outcomes(profile, suite, INTACT, metric)
        removed = [_outcomes(profile, suite, key, metric) for key in keys]
        if intact is None or any(v is None for v in removed):
            return []
        sides.append((intact, [v for v in removed if v is not None]))
    n = min(len(v) for _, removed in sides for v in removed)
    before, after = (
        np.asarray(intact[:n])[:, None] - np.array([v[:n] for v in removed]).T for intact, removed in sides
    )
    info = current.suites[suite]
    layers = tuple(new[key] for key in keys)
    identity = {
        "suite": suite,
        "capability": info.capability,
        "protocol": info.protocol,
        "metric": metric,
        "band": SHIFT,
        "layers": layers,
        "ablations": tuple(keys),
    }
    return [
        _Paired(
            identity, tuple(info.item_ids[:n]), before, after, int(current.model.get("num_layers") or max(layers) + 1)
        )
    ]


def _single_layers(profile: DepthProfile, suite: str) -> dict[str, int]:
    """Ablation key -> the one layer it removes, for the suite's single-layer removals."""
    return {
        key: layers[0] for key, layers in _ablation_layers(profile, suite).items() if key != INTACT and len(layers) == 1
    }


def _shift_comparison(
    cell: _Paired, test: ShiftTest, p_adjusted: float, alpha: float, max_shift: float
) -> CellComparison:
    """A shift cell: ``baseline``/``current`` are the centres of depth, ``delta`` the shift, ``allowed`` the
    largest move allowed; ``detectable_drop`` is the smallest shift detected with the run's power."""
    status: Status = "ok"
    if math.isfinite(test.shift) and test.shift != 0:
        if p_adjusted <= alpha and abs(test.shift) >= EFFECT_FLOOR * max_shift - _EPS:
            status = "moved"
        elif abs(test.shift) > max_shift + _EPS:
            status = "changed"
    return CellComparison(
        **cell.identity,
        baseline=test.baseline_centre,
        current=test.current_centre,
        delta=test.shift,
        allowed=max_shift,
        worse=0,
        better=0,
        pairs=cell.before.size,
        p_value=test.p_value,
        status=status,
        failed=status == "moved",
        test="permutation",
        items=test.items,
        p_adjusted=p_adjusted,
        ci_low=test.ci_low,
        ci_high=test.ci_high,
        detectable_drop=test.detectable_shift,
        flip_rate=math.nan,
    )


def classify(delta: float, allowed: float, p_value: float, alpha: float) -> Status:
    """The fail rule, given the cell's adjusted one-sided p for the direction of ``delta``.

    Significant and at least ``EFFECT_FLOOR`` × the tolerance -> regressed/improved; beyond the
    tolerance but not significant -> changed; else ok. A significant shift under half the tolerance is
    "ok": with many items, tiny real shifts are common and not worth failing a build over.
    """
    if not math.isfinite(delta) or delta == 0:
        return "ok"
    if p_value <= alpha and abs(delta) >= EFFECT_FLOOR * allowed - _EPS:
        return "regressed" if delta < 0 else "improved"
    if abs(delta) > allowed + _EPS:
        return "changed"
    return "ok"


# --------------------------------------------------------------------------- sensitivity
def baseline_sensitivity(baseline: DepthProfile, *, flip_rate: float = 0.0, **options: Any) -> ProfileComparison:
    """The detectable drop of every cell of ``baseline`` before a candidate exists (the baseline
    compared with itself), at an assumed background ``flip_rate`` (default 0: the best case, so a cell
    this calls underpowered is underpowered for every candidate). ``options`` are compare_profiles's
    (tolerance, alpha, fail_on_improvement, metrics, correction, power). Feed it to ``sensitivity_warning``."""
    return compare_profiles(baseline, baseline, flip_rate=flip_rate, **options)


def sensitivity_warning(comparison: ProfileComparison, *, strict: bool = False) -> str | None:
    """ "tolerance X is below the smallest detectable drop Y of cell Z", for every such cell, or None.

    ``strict`` raises ConfigError instead of returning the text.
    """
    weak = comparison.underpowered
    if not weak:
        return None
    shown = "; ".join(
        f"{c.label} {_fmt_drop(c.detectable_drop)} (tolerance {c.allowed:.3g}, {c.items} items"
        f"{f' x {len(c.ablations)} ablations' if c.band != INTACT else ''})"
        for c in weak
    )
    text = (
        f"the tolerance is below the smallest detectable drop ({comparison.power:.0%} power at p <= "
        f"{comparison.detection_alpha:.2g}, {_correction_text(comparison)}) of {len(weak)} of "
        f"{len(comparison.cells)} cells, so a real drop of the tolerance there will usually pass: {shown}"
    )
    if strict:
        raise ConfigError(
            text,
            "score more items (--layercheck-limit, e.g. 0 for every item), raise the "
            "tolerance of those cells, or drop the strict power check",
        )
    return text


def _fmt_drop(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "none detectable"


def _correction_text(comparison: ProfileComparison) -> str:
    if comparison.correction == "none":
        return "no multiplicity correction"
    return f"{comparison.correction.capitalize()} over {comparison.family_size} hypotheses"


__all__ = [
    "DEFAULT_ALPHA",
    "EFFECT_FLOOR",
    "INTACT",
    "CellComparison",
    "ProfileComparison",
    "Status",
    "Tolerance",
    "baseline_sensitivity",
    "classify",
    "compare_profiles",
    "compatibility_problems",
    "exact_mcnemar",
    "precision_problems",
    "sensitivity_warning",
]


@dataclass(frozen=True)
class Verdict:
    """How a run judges its comparison: one object that the plugin, its checks and the CLI share, so a
    marker's verdict on a cell is the session's verdict on it."""

    tolerance: Tolerance = field(default_factory=Tolerance)
    alpha: float = DEFAULT_ALPHA
    max_shift: float = DEFAULT_MAX_SHIFT
    #: The metric cells are judged by where a suite records it; None: each suite's cell metric.
    metric: str | None = None
    correction: str = DEFAULT_CORRECTION
    fail_on_improvement: bool = False
    allow_precision_mismatch: bool = False
    strict_power: bool = False

    def __post_init__(self) -> None:
        check_correction(self.correction)
        if not 0 < self.alpha < 1:
            raise ConfigError(
                f"bad alpha {self.alpha!r}: a significance level lies strictly between 0 and 1",
                "use a probability such as 0.05",
            )

    def options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`compare_profiles` (and ``run_check``) beyond tolerance and alpha."""
        return {
            "correction": self.correction,
            "fail_on_improvement": self.fail_on_improvement,
            "allow_precision_mismatch": self.allow_precision_mismatch,
            "max_shift": self.max_shift,
            "default_metric": self.metric,
        }

    def compare(self, baseline: DepthProfile, current: DepthProfile) -> ProfileComparison:
        comparison = compare_profiles(baseline, current, tolerance=self.tolerance, alpha=self.alpha, **self.options())
        sensitivity_warning(comparison, strict=self.strict_power)  # strict: an underpowered check is an error
        return comparison
