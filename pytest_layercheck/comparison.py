"""Comparing a depth-sensitivity profile with its baseline without crying wolf.

A cell fails only when its change is both *large* (beyond the tolerance) and *real* (a paired exact
McNemar test on the per-item outcomes says it is unlikely to be noise). Profiles that were not
measured the same way (different layer count, suite version, bands, mode or items) are refused
outright: comparing them would produce numbers that look meaningful and are not.

Pooling: a band cell aggregates several ablations (in per-layer mode, removing each of the band's
layers in turn). Its paired test pools the (item, ablation) pairs of all of them, so the unit of the
test is an (item, removed layer) pair, not an item. The pairs of one item are correlated across
layers, which makes the p-value of a band cell optimistic compared with a per-item test; the
tolerance (an effect size every failure must also exceed) is what keeps that from failing builds on
trivial shifts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_layercheck.errors import BaselineError, ConfigError
from pytest_layercheck.profile_data import INTACT, PRIMARY_METRIC, Cell, DepthProfile

Status = Literal["ok", "changed", "regressed", "improved"]

DEFAULT_ALPHA = 0.05
UPDATE_FLAG = "--layercheck-update"
#: Float slack so that a drop of exactly the tolerance (0.62 - 0.57) is not "beyond" it.
_EPS = 1e-9


def exact_mcnemar(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of ``b`` vs ``c`` discordant pairs at p=1/2.

    Exact integer arithmetic, so it is correct for small counts (where the chi-square version is not)
    and does not overflow for large ones.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    term, tail = 1, 1  # C(n, 0)
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n)


@dataclass(frozen=True)
class Tolerance:
    """How far a cell may move before the change counts as large.

    The allowed change is the larger of ``max_drop`` (absolute, in metric units) and ``relative`` ×
    the baseline value, as with ``pytest.approx``'s ``abs``/``rel``.
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
class CellComparison:
    """One cell of the baseline paired with the same cell of the current run."""

    suite: str
    capability: str
    protocol: str
    metric: str
    band: str
    layers: tuple[int, ...]
    ablations: tuple[str, ...]
    baseline: float
    current: float
    delta: float  # current - baseline
    allowed: float  # tolerance for this cell, in metric units
    worse: int  # b: pairs that went 1 -> 0
    better: int  # c: pairs that went 0 -> 1
    pairs: int  # (item, ablation) pairs compared
    p_value: float
    status: Status
    failed: bool

    @property
    def drop(self) -> float:
        return -self.delta

    @property
    def label(self) -> str:
        """``knowledge/shallow acc``: how the cell is named in every report."""
        return f"{self.suite}/{self.band} {self.metric}"


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
    def passed(self) -> bool:
        return not self.failures

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
    if old.protocol == new.protocol and old_ablations != new_ablations:
        only_old = sorted(old_ablations.keys() - new_ablations.keys())
        only_new = sorted(new_ablations.keys() - old_ablations.keys())
        moved = sorted(k for k in old_ablations.keys() & new_ablations.keys() if old_ablations[k] != new_ablations[k])
        detail = "; ".join(part for part in (
            f"only in baseline: {_preview(only_old)}" if only_old else "",
            f"only in this run: {_preview(only_new)}" if only_new else "",
            f"different layers removed: {_preview(moved)}" if moved else "",
        ) if part)
        problems.append(f"suite {name!r} was evaluated under different ablations ({detail})")
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


def _context_differences(baseline: DepthProfile, current: DepthProfile) -> tuple[list[str], list[str]]:
    """Differences that do not prevent a comparison: (warnings, notes)."""
    warnings: list[str] = []
    notes: list[str] = []
    b_fp, c_fp = baseline.model.get("fingerprint"), current.model.get("fingerprint")
    if b_fp != c_fp:
        notes.append(f"weights differ from the baseline (fingerprint {str(b_fp)[:12]} -> {str(c_fp)[:12]}), "
                     "as expected when checking a fine-tune or a new checkpoint against its base")
    for key in ("dtype", "device"):
        old, new = baseline.model.get(key), current.model.get(key)
        if old != new:
            warnings.append(f"{key} differs from the baseline ({old} -> {new}); numbers can shift slightly")
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
    metrics: Iterable[str] | None = None,
) -> ProfileComparison:
    """Compare every cell the two profiles share; refuse (BaselineError) if they were measured differently.

    ``metrics`` defaults to each suite's primary metric (the one it is judged by); every compared cell
    can fail. Non-binary metrics have no paired exact test and are skipped with a warning.
    """
    tol = Tolerance() if tolerance is None else Tolerance.parse(tolerance)
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be between 0 and 1, got {alpha!r}", "use a significance level like 0.05")
    problems = compatibility_problems(baseline, current)
    if problems:
        name = current.model.get("name") or baseline.model.get("name") or "this model"
        raise BaselineError(
            f"the baseline of {name} was measured differently from this run, so the two cannot be compared:\n"
            + "\n".join(f"  - {p}" for p in problems),
            f"if the change was intended, re-record the baseline with {UPDATE_FLAG}; "
            "otherwise run with the settings the baseline was recorded with",
        )
    warnings, notes = _context_differences(baseline, current)
    missing = [s for s in baseline.suites if s not in current.suites]
    new = [s for s in current.suites if s not in baseline.suites]
    if missing:
        warnings.append(f"suites in the baseline but not in this run (not compared): {', '.join(missing)}")
    if new:
        warnings.append(f"suites in this run but not in the baseline (not compared; record them with "
                        f"{UPDATE_FLAG}): {', '.join(new)}")

    wanted = list(metrics) if metrics is not None else None
    cells: list[CellComparison] = []
    for suite in (s for s in current.suites if s in baseline.suites):
        for metric in wanted or [current.suites[suite].primary_metric]:
            skip = _metric_problem(baseline, current, suite, metric)
            if skip is not None:
                warnings.extend([skip] if skip else [])
                continue
            old_cells = _cells_of(baseline, suite, metric)
            for band, new_cell in _cells_of(current, suite, metric).items():
                if band in old_cells:
                    cells.append(_compare_cell(baseline, current, old_cells[band], new_cell, tol, alpha,
                                               fail_on_improvement))
    return ProfileComparison(
        cells=cells, tolerance=tol, alpha=alpha, fail_on_improvement=fail_on_improvement, warnings=warnings,
        notes=notes, missing_suites=missing, new_suites=new, baseline_model=dict(baseline.model),
    )


def _metric_problem(baseline: DepthProfile, current: DepthProfile, suite: str, metric: str) -> str | None:
    """Why ``metric`` of ``suite`` cannot be compared with a paired exact test ("" if it needs no
    mention), or None when it can."""
    present = [metric in profile.evaluation(suite).outcomes for profile in (baseline, current)]
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


def _cells_of(profile: DepthProfile, suite: str, metric: str) -> dict[str, Cell]:
    return {c.band: c for c in profile.cells([metric]) if c.suite == suite}


def _compare_cell(
    baseline: DepthProfile, current: DepthProfile, old: Cell, new: Cell, tol: Tolerance, alpha: float,
    fail_on_improvement: bool,
) -> CellComparison:
    worse = better = pairs = 0
    for key in old.ablations:  # same keys on both sides: compatibility_problems checked the ablations
        before = baseline.evaluation(old.suite, key).outcomes[old.metric]
        after = current.evaluation(new.suite, key).outcomes[new.metric]
        for x, y in zip(before, after, strict=True):
            pairs += 1
            if x > y:
                worse += 1
            elif y > x:
                better += 1
    p_value = exact_mcnemar(worse, better)
    delta = new.value - old.value
    allowed = tol.allowed(old.value)
    status = classify(delta, allowed, p_value, alpha)
    return CellComparison(
        suite=new.suite, capability=new.capability, protocol=new.protocol, metric=new.metric, band=new.band,
        layers=new.layers, ablations=new.ablations, baseline=old.value, current=new.value, delta=delta,
        allowed=allowed, worse=worse, better=better, pairs=pairs, p_value=p_value, status=status,
        failed=status == "regressed" or (fail_on_improvement and status == "improved"),
    )


def classify(delta: float, allowed: float, p_value: float, alpha: float) -> Status:
    """Large and significant -> regressed/improved; large but not significant -> changed; else ok.

    A significant change within the tolerance is "ok": with many items, tiny real shifts are common
    and not worth failing a build over.
    """
    if not math.isfinite(delta) or abs(delta) <= allowed + _EPS:
        return "ok"
    if p_value >= alpha:
        return "changed"
    return "regressed" if delta < 0 else "improved"


__all__ = [
    "DEFAULT_ALPHA", "INTACT", "CellComparison", "ProfileComparison", "Status", "Tolerance", "classify",
    "compare_profiles", "compatibility_problems", "exact_mcnemar",
]
