"""What a comparison returns, and the constants of its fail rule.

:func:`pytest_layercheck.evaluation.comparison.compare_profiles` judges every cell the two profiles
share against a :class:`Tolerance` and returns a :class:`ProfileComparison` of :class:`CellComparison`
(the module doc of ``comparison`` gives the tests and the fail rule these numbers come from).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.profile_data import CELL_METRIC
from pytest_layercheck.data.records import CellId
from pytest_layercheck.data.statistics import DEFAULT_CORRECTION, DEFAULT_POWER, per_test_alpha

Status = Literal["ok", "changed", "regressed", "improved", "moved"]
#: The band name of a depth-shift cell: where a capability lives along depth, not how much of it is left.
SHIFT = "shift"
#: The default largest move of a capability's centre of depth (a share of the model's depth) a run allows.
DEFAULT_MAX_SHIFT = 0.1

DEFAULT_ALPHA = 0.05
#: A significant drop fails only when it is at least this share of the tolerance (the fail rule of
#: :mod:`pytest_layercheck.evaluation.comparison`).
EFFECT_FLOOR = 0.5
#: Float slack so that a drop of exactly the tolerance (0.62 - 0.57) is not "beyond" it.
EPS = 1e-9


@dataclass(frozen=True)
class Tolerance:
    """The smallest drop the guard is meant to catch, per cell.

    The allowed change is the larger of ``max_drop`` (absolute, in metric units) and ``relative`` ×
    the baseline value, as with ``pytest.approx``'s ``abs``/``rel``. A significant drop of at least
    ``EFFECT_FLOOR`` × this fails (the fail rule of
    :mod:`pytest_layercheck.evaluation.comparison`); ``%`` always means relative (``"5%"``).
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
        return self.detectable_drop > self.allowed + EPS


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
