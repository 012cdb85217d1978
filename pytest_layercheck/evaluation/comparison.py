"""Comparing a depth-sensitivity profile with its baseline without crying wolf, and without missing harm.

**Unit: the item.** Every cell is tested over items (``statistics``): an intact cell with the exact
McNemar test, a band cell with the exact paired sign-flip permutation test of each item's change in
its share of right answers over the band's ablations (the ``m`` ablations of one item are correlated,
so pooling (item, ablation) pairs as independent would overstate the evidence). Both tests are
one-sided, in the direction of the change, and report an Agresti–Min interval for the mean change.

**Family.** Every compared cell is one hypothesis "this cell dropped"; the family-wise error over all
of them (plus "this cell rose" for each cell under ``fail_on_improvement``) is controlled at ``alpha``
by Holm's step-down procedure (``correction="holm"``; ``"bonferroni"`` and ``"none"`` on request).
``p_value`` is a cell's raw one-sided p, ``p_adjusted`` its adjusted p. Improvements that cannot fail
the run are adjusted within a family of their own.

**Fail rule.** A cell *regresses* when its drop is significant (``p_adjusted <= alpha``) and the
observed drop is at least ``EFFECT_FLOOR`` (half) of the tolerance. The tolerance is thus the
smallest drop the guard is meant to catch: a true drop equal to it fails with the cell's power at
that size (>= 80% wherever ``detectable_drop <= tolerance``), while a real but trivial shift (under
half the tolerance) never fails. A change beyond the tolerance that is not significant is *changed*.

**Power.** Each cell reports ``detectable_drop``: the smallest true drop its test detects with 80%
power at the level a lone regression must reach after the correction (Holm's first step and
Bonferroni: ``alpha/K`` for ``K`` hypotheses; none: ``alpha``), under ``statistics.ALTERNATIVE`` with
the background flip rate estimated from the comparison (twice the mean per-item rise: under that
model only background flips raise an item) unless ``flip_rate`` is given. ``sensitivity_warning``
says when a tolerance is below it.

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
from pytest_layercheck.data.profile_data import INTACT, PRIMARY_METRIC, DepthProfile
from pytest_layercheck.data.records import CellId
from pytest_layercheck.data.statistics import (
    CI_LEVEL,
    DEFAULT_CORRECTION,
    DEFAULT_POWER,
    adjust_p_values,
    check_correction,
    detectable_drop,
    exact_mcnemar,
    item_steps,
    mean_difference_ci,
    per_test_alpha,
    sign_flip_test,
)
from pytest_layercheck.evaluation.baseline import UPDATE_FLAG

Status = Literal["ok", "changed", "regressed", "improved"]

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
            raise ConfigError(f"tolerance max_drop must be a finite number >= 0, got {self.max_drop!r}",
                              "use an absolute drop like 0.05")
        if self.relative is not None and not 0 <= self.relative <= 1:
            raise ConfigError(f"relative tolerance must be between 0% and 100%, got {self.relative!r}",
                              "use a relative drop like 5%")

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
    under every ablation of the cell). ``worse``/``better``/``pairs`` count (item, ablation) pairs and
    are descriptive only; the test counts items: ``worse_items``/``better_items`` are the ids of the
    items whose share of right answers fell / rose.
    """

    baseline: float
    current: float
    delta: float  # current - baseline
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
    flip_rate: float = 0.0  # background flip rate detectable_drop assumes
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

    @property
    def family_size(self) -> int:
        """Hypotheses whose rejection fails the run: one per cell, two under ``fail_on_improvement``."""
        return len(self.cells) * (2 if self.fail_on_improvement else 1)

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

    def counts(self) -> dict[str, int]:
        out = {status: 0 for status in ("regressed", "improved", "changed", "ok")}
        for c in self.cells:
            out[c.status] += 1
        return out

    def cell(self, suite_or_capability: str, band: str, metric: str | None = None) -> CellComparison:
        """Look a cell up by suite name or capability, band and (default: primary) metric."""
        for c in self.cells:
            wanted = metric or PRIMARY_METRIC.get(c.protocol)
            if suite_or_capability in (c.suite, c.capability) and c.band == band and c.metric == wanted:
                return c
        raise KeyError(f"no compared cell for {suite_or_capability!r} / {band!r} / {metric or 'primary metric'}")

    def __getitem__(self, key: tuple[str, str] | tuple[str, str, str | None]) -> CellComparison:
        return self.cell(*key)

    def criteria(self) -> str:
        """How a cell fails, in one sentence (reports and failure messages)."""
        family = f"{self.correction.capitalize()} over {self.family_size} hypotheses" if self.correction != "none" \
            else f"no multiplicity correction ({self.family_size} hypotheses)"
        improvement = "; improvements fail too" if self.fail_on_improvement else ""
        return (f"a cell fails when its drop is significant (one-sided item-level test, {family}, adjusted "
                f"p <= {self.alpha:g}) and at least {EFFECT_FLOOR:g} x the tolerance {self.tolerance}{improvement}")


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
        problems.append(f"bands map to different layers: baseline {_bands_text(baseline)}, "
                        f"this run {_bands_text(current)}")
    for name in baseline.suites.keys() & current.suites.keys():
        problems.extend(_suite_problems(name, baseline, current))
    return problems


def _bands_text(profile: DepthProfile) -> str:
    return ", ".join(f"{band}={list(layers)}" for band, layers in profile.bands.items()) or "(none)"


def _suite_problems(name: str, baseline: DepthProfile, current: DepthProfile) -> list[str]:
    old, new = baseline.suites[name], current.suites[name]
    problems = []
    if old.content_hash != new.content_hash:
        problems.append(f"suite {name!r} changed since the baseline was recorded "
                        f"(content hash {old.content_hash[:12]} -> {new.content_hash[:12]})")
    if old.protocol != new.protocol:
        problems.append(f"suite {name!r} is scored with protocol {new.protocol!r}, the baseline used {old.protocol!r}")
    if old.item_ids != new.item_ids:
        limits = f"limit: baseline {baseline.settings.get('limit')}, this run {current.settings.get('limit')}"
        problems.append(f"suite {name!r} has different items: "
                        f"{_item_difference(old.item_ids, new.item_ids)} ({limits})")
    old_ablations, new_ablations = _ablation_layers(baseline, name), _ablation_layers(current, name)
    moved = sorted(k for k in old_ablations.keys() & new_ablations.keys() if old_ablations[k] != new_ablations[k])
    if old.protocol == new.protocol and moved:
        # Evaluations only one side has are fine (a partial profile): only cells both have are compared.
        problems.append(f"suite {name!r} was evaluated under different ablations "
                        f"(different layers removed: {_preview(moved)})")
    return problems


def _ablation_layers(profile: DepthProfile, suite: str) -> dict[str, tuple[int, ...]]:
    protocol = profile.suites[suite].protocol
    return {key: ev.removed_layers for (name, proto, key), ev in profile.evaluations.items()
            if name == suite and proto == protocol}


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
        notes.append(f"weights differ from the baseline (fingerprint {str(b_fp)[:12]} -> {str(c_fp)[:12]}), "
                     "as expected when checking a fine-tune or a new checkpoint against its base")
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
) -> ProfileComparison:
    """Compare every cell the two profiles share; refuse (BaselineError) if they were measured differently.

    ``metrics`` defaults to each suite's primary metric (the one it is judged by); a mapping gives the
    metrics per suite. Every compared cell is one hypothesis of the family ``correction`` controls
    (``holm``, ``bonferroni`` or ``none``). Non-binary metrics have no paired exact test and are
    skipped with a warning. A dtype or device-type difference is refused unless
    ``allow_precision_mismatch``. ``flip_rate`` fixes the background flip rate the detectable drops
    assume (default: estimated per cell from this comparison).
    """
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
        warnings.append(f"compared across precision ({'; '.join(precision)}), as allowed: precision noise is "
                        "part of these verdicts")
    if unknown:
        warnings.append(f"{' and '.join(unknown)} not recorded by both profiles; precision could not be checked")
    missing = [s for s in baseline.suites if s not in current.suites]
    new = [s for s in current.suites if s not in baseline.suites]
    if missing:
        warnings.append(f"suites in the baseline but not in this run (not compared): {', '.join(missing)}")
    if new:
        warnings.append(f"suites in this run but not in the baseline (not compared; record them with "
                        f"{UPDATE_FLAG}): {', '.join(new)}")

    paired: list[_Paired] = []
    for suite in (s for s in current.suites if s in baseline.suites):
        for metric in _wanted_metrics(metrics, suite, current):
            skip = _metric_problem(baseline, current, suite, metric)
            if skip is not None:
                warnings.extend([skip] if skip else [])
                continue
            paired.extend(_paired_cells(baseline, current, suite, metric, warnings))
    cells = _judge(paired, tol, alpha, fail_on_improvement, correction, flip_rate, power)
    return ProfileComparison(
        cells=cells, tolerance=tol, alpha=alpha, fail_on_improvement=fail_on_improvement, warnings=warnings,
        notes=notes, missing_suites=missing, new_suites=new, baseline_model=dict(baseline.model),
        correction=correction, power=power, flip_rate=flip_rate, precision_mismatch=bool(precision),
        suite_hashes={c.identity["suite"]: current.suites[c.identity["suite"]].content_hash for c in paired},
    )


def _wanted_metrics(metrics: Iterable[str] | Mapping[str, Iterable[str]] | None, suite: str,
                    profile: DepthProfile) -> list[str]:
    if metrics is None:
        return [profile.suites[suite].primary_metric]
    if isinstance(metrics, Mapping):
        return list(metrics.get(suite, ()))
    return list(metrics)


def _metric_problem(baseline: DepthProfile, current: DepthProfile, suite: str, metric: str) -> str | None:
    """Why ``metric`` of ``suite`` cannot be compared with a paired exact test ("" if it needs no
    mention), or None when it can."""
    present = [any(metric in ev.outcomes for (name, _, _), ev in profile.evaluations.items() if name == suite)
               for profile in (baseline, current)]
    if not any(present):
        return ""  # the suite's protocol has no such metric: nothing to compare, nothing to report
    if not all(present):
        side = "the baseline" if not present[0] else "this run"
        return f"suite {suite!r}: metric {metric!r} is missing from {side}; not compared"
    for profile in (baseline, current):
        for (name, _, _), ev in profile.evaluations.items():
            if name == suite and any(v not in (0.0, 1.0) for v in ev.outcomes.get(metric, ())):
                return f"suite {suite!r}: metric {metric!r} is not 0/1 per item, so it has no paired test; not compared"
    return None


@dataclass(frozen=True)
class _Paired:
    """One cell's outcomes on both sides: items × ablations 0/1 matrices over the paired items.

    ``identity``: the CellComparison fields that name the cell (suite ... ablations)."""

    identity: dict[str, Any]
    item_ids: tuple[str, ...]
    before: np.ndarray
    after: np.ndarray


def _paired_cells(baseline: DepthProfile, current: DepthProfile, suite: str, metric: str,
                  warnings: list[str]) -> list[_Paired]:
    """The intact cell and every band cell both profiles hold, items paired by position."""
    info = current.suites[suite]
    groups: list[tuple[str, tuple[int, ...], list[str]]] = [(INTACT, (), [INTACT])]
    groups += [(band, tuple(layers), []) for band, layers in current.bands.items()]
    for band, _, keys in groups[1:]:
        old_keys = [ev.ablation for ev in baseline.band_ablations(suite, band)]
        new_keys = [ev.ablation for ev in current.band_ablations(suite, band)]
        if old_keys and new_keys and old_keys != new_keys:
            warnings.append(f"{suite}/{band} {metric}: the two profiles hold different ablations of the band "
                            f"({len(old_keys)} vs {len(new_keys)}), so the cell is not compared")
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
            warnings.append(f"{suite}/{band} {metric}: the runs scored different numbers of items under the "
                            f"band's ablations ({sorted(lengths)}); the first {n} items are compared")
        before, after = (np.array([v[:n] for v in side], dtype=float).T.reshape(n, len(keys)) for side in sides)
        identity = {"suite": suite, "capability": info.capability, "protocol": info.protocol, "metric": metric,
                    "band": band, "layers": layers, "ablations": tuple(keys)}
        out.append(_Paired(identity, tuple(info.item_ids[:n]), before, after))
    return out


def _outcomes(profile: DepthProfile, suite: str, key: str, metric: str) -> tuple[float, ...] | None:
    ev = profile.evaluations.get((suite, profile.suites[suite].protocol, key))
    return None if ev is None else ev.outcomes.get(metric)


@dataclass(frozen=True)
class _Tested:
    paired: _Paired
    steps: np.ndarray  # t_i
    p_less: float
    p_greater: float
    test: str


def _judge(paired: list[_Paired], tol: Tolerance, alpha: float, fail_on_improvement: bool, correction: str,
           flip_rate: float | None, power: float) -> list[CellComparison]:
    """Test every cell, correct over the family, and apply the fail rule."""
    tested = []
    for cell in paired:
        steps = item_steps(cell.before, cell.after)
        result = sign_flip_test(steps.tolist())
        name = "McNemar" if cell.before.shape[1] == 1 else "sign-flip"  # the same test when m == 1
        tested.append(_Tested(cell, steps, result.p_less, result.p_greater, name))
    k = len(tested)
    drops = [t.p_less for t in tested]
    rises = [t.p_greater for t in tested]
    if fail_on_improvement:  # one family: both directions can fail the run
        both = adjust_p_values(drops + rises, correction)
        drop_adjusted, rise_adjusted = both[:k], both[k:]
    else:  # rises cannot fail the run: their own (reported) family
        drop_adjusted, rise_adjusted = adjust_p_values(drops, correction), adjust_p_values(rises, correction)
    detection_alpha = per_test_alpha(alpha, k * (2 if fail_on_improvement else 1), correction)
    return [
        _cell_comparison(t, down, up, tol, alpha, fail_on_improvement, detection_alpha, flip_rate, power)
        for t, down, up in zip(tested, drop_adjusted, rise_adjusted, strict=True)
    ]


def _cell_comparison(t: _Tested, drop_adjusted: float, rise_adjusted: float, tol: Tolerance, alpha: float,
                     fail_on_improvement: bool, detection_alpha: float, flip_rate: float | None,
                     power: float) -> CellComparison:
    cell = t.paired
    n, m = cell.before.shape
    before_mean = float(cell.before.mean()) if n else math.nan
    after_mean = float(cell.after.mean()) if n else math.nan
    delta = after_mean - before_mean
    rose = delta > 0
    p_value, p_adjusted = (t.p_greater, rise_adjusted) if rose else (t.p_less, drop_adjusted)
    allowed = tol.allowed(before_mean)
    status = classify(delta, allowed, p_adjusted, alpha)
    differences = t.steps / m
    low, high = mean_difference_ci(differences, CI_LEVEL)
    background = flip_rate if flip_rate is not None else (
        float(2 * np.clip(differences, 0, None).sum() / n) if n else 0.0)
    item_means = cell.before.mean(axis=1) if n else np.zeros(0)
    return CellComparison(
        **cell.identity, baseline=before_mean, current=after_mean,
        delta=delta, allowed=allowed, worse=int((cell.before > cell.after).sum()),
        better=int((cell.after > cell.before).sum()), pairs=n * m, p_value=p_value, status=status,
        failed=status == "regressed" or (fail_on_improvement and status == "improved"), test=t.test, items=n,
        p_adjusted=p_adjusted, ci_low=low, ci_high=high,
        detectable_drop=detectable_drop(item_means, m, detection_alpha, power, min(1.0, background)),
        flip_rate=background,
        worse_items=tuple(i for i, s in zip(cell.item_ids, t.steps, strict=True) if s < 0),
        better_items=tuple(i for i, s in zip(cell.item_ids, t.steps, strict=True) if s > 0),
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
    """"tolerance X is below the smallest detectable drop Y of cell Z", for every such cell, or None.

    ``strict`` raises ConfigError instead of returning the text.
    """
    weak = comparison.underpowered
    if not weak:
        return None
    shown = "; ".join(
        f"{c.label} {_fmt_drop(c.detectable_drop)} (tolerance {c.allowed:.3g}, {c.items} items"
        f"{f' x {len(c.ablations)} ablations' if c.band != INTACT else ''})" for c in weak
    )
    text = (f"the tolerance is below the smallest detectable drop ({comparison.power:.0%} power at p <= "
            f"{comparison.detection_alpha:.2g}, {_correction_text(comparison)}) of {len(weak)} of "
            f"{len(comparison.cells)} cells, so a real drop of the tolerance there will usually pass: {shown}")
    if strict:
        raise ConfigError(text, "score more items (--layercheck-limit, e.g. 0 for every item), raise the "
                                "tolerance of those cells, or drop the strict power check")
    return text


def _fmt_drop(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "none detectable"


def _correction_text(comparison: ProfileComparison) -> str:
    if comparison.correction == "none":
        return "no multiplicity correction"
    return f"{comparison.correction.capitalize()} over {comparison.family_size} hypotheses"


__all__ = [
    "DEFAULT_ALPHA", "EFFECT_FLOOR", "INTACT", "CellComparison", "ProfileComparison", "Status", "Tolerance",
    "baseline_sensitivity", "classify", "compare_profiles", "compatibility_problems", "exact_mcnemar",
    "precision_problems", "sensitivity_warning",
]


@dataclass(frozen=True)
class Verdict:
    """How a run judges its comparison: one object that the plugin, its checks and the CLI share, so a
    marker's verdict on a cell is the session's verdict on it."""

    tolerance: Tolerance = field(default_factory=Tolerance)
    alpha: float = DEFAULT_ALPHA
    correction: str = DEFAULT_CORRECTION
    fail_on_improvement: bool = False
    allow_precision_mismatch: bool = False
    strict_power: bool = False

    def __post_init__(self) -> None:
        check_correction(self.correction)
        if not 0 < self.alpha < 1:
            raise ConfigError(f"bad alpha {self.alpha!r}: a significance level lies strictly between 0 and 1",
                              "use a probability such as 0.05")

    def options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`compare_profiles` (and ``run_check``) beyond tolerance and alpha."""
        return {"correction": self.correction, "fail_on_improvement": self.fail_on_improvement,
                "allow_precision_mismatch": self.allow_precision_mismatch}

    def compare(self, baseline: DepthProfile, current: DepthProfile) -> ProfileComparison:
        comparison = compare_profiles(baseline, current, tolerance=self.tolerance, alpha=self.alpha, **self.options())
        sensitivity_warning(comparison, strict=self.strict_power)  # strict: an underpowered check is an error
        return comparison
