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

**Where.** This module runs a comparison (:func:`compare_profiles`, the family correction, :class:`Verdict`)
and checks its power; the pieces live beside it: the result types and the fail rule's constants in
:mod:`~pytest_layercheck.evaluation.comparison_result`, the refusals in
:mod:`~pytest_layercheck.evaluation.compatibility`, the pairing of cells in
:mod:`~pytest_layercheck.evaluation.pairing`, the drop cells' tests in
:mod:`~pytest_layercheck.evaluation.drop_cells` and the shift cells in
:mod:`~pytest_layercheck.evaluation.shift_cells`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.profile_data import INTACT, DepthProfile
from pytest_layercheck.data.statistics import (
    DEFAULT_CORRECTION,
    DEFAULT_POWER,
    adjust_p_values,
    check_correction,
    per_test_alpha,
)
from pytest_layercheck.evaluation.comparison_result import (
    DEFAULT_ALPHA,
    DEFAULT_MAX_SHIFT,
    CellComparison,
    ProfileComparison,
    Tolerance,
)
from pytest_layercheck.evaluation.compatibility import comparison_context
from pytest_layercheck.evaluation.drop_cells import cell_comparison, item_test
from pytest_layercheck.evaluation.pairing import Paired, metric_problem, paired_cells, wanted_metrics
from pytest_layercheck.evaluation.shift_cells import shift_comparison, shift_pair, shift_test


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
    tol = _checked_options(tolerance, alpha, correction, flip_rate, max_shift)
    context = comparison_context(baseline, current, allow_precision_mismatch=allow_precision_mismatch)
    paired, shifts = _cells_to_compare(baseline, current, metrics, default_metric, context.warnings)
    cells = _judge(paired, shifts, tol, alpha, fail_on_improvement, correction, flip_rate, power, max_shift)
    return ProfileComparison(
        cells=cells,
        tolerance=tol,
        alpha=alpha,
        fail_on_improvement=fail_on_improvement,
        warnings=context.warnings,
        notes=context.notes,
        missing_suites=context.missing_suites,
        new_suites=context.new_suites,
        baseline_model=dict(baseline.model),
        correction=correction,
        power=power,
        flip_rate=flip_rate,
        precision_mismatch=context.precision_mismatch,
        suite_hashes={c.identity["suite"]: current.suites[c.identity["suite"]].content_hash for c in paired},
        max_shift=max_shift,
    )


def _checked_options(
    tolerance: Tolerance | str | float | None, alpha: float, correction: str, flip_rate: float | None, max_shift: float
) -> Tolerance:
    """The tolerance, once every option of :func:`compare_profiles` is checked (ConfigError if not)."""
    if not 0 <= max_shift <= 1:
        raise ConfigError(f"max_shift must be a share of depth in [0, 1], got {max_shift!r}", "e.g. 0.1")
    tol = Tolerance() if tolerance is None else Tolerance.parse(tolerance)
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be between 0 and 1, got {alpha!r}", "use a significance level like 0.05")
    check_correction(correction)
    if flip_rate is not None and not 0 <= flip_rate <= 1:
        raise ConfigError(f"flip_rate must be between 0 and 1, got {flip_rate!r}", "e.g. 0.02, or leave it unset")
    return tol


def _cells_to_compare(
    baseline: DepthProfile,
    current: DepthProfile,
    metrics: Iterable[str] | Mapping[str, Iterable[str]] | None,
    default_metric: str | None,
    warnings: list[str],
) -> tuple[list[Paired], list[Paired]]:
    """(drop cells, shift cells) of every wanted metric of every suite both profiles hold; why a metric is
    skipped, or a cell's items differ, goes to ``warnings``."""
    paired: list[Paired] = []
    shifts: list[Paired] = []
    for suite in (s for s in current.suites if s in baseline.suites):
        for metric in wanted_metrics(metrics, suite, current, default_metric):
            skip = metric_problem(baseline, current, suite, metric)
            if skip is not None:
                warnings.extend([skip] if skip else [])
                continue
            paired.extend(paired_cells(baseline, current, suite, metric, warnings))
            shifts.extend(shift_pair(baseline, current, suite, metric))
    return paired, shifts


def _judge(
    paired: list[Paired],
    shifts: list[Paired],
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
    tested = [item_test(cell) for cell in paired]
    k = len(tested)
    detection_alpha = per_test_alpha(alpha, k * (2 if fail_on_improvement else 1) + len(shifts), correction)
    shift_tests = [shift_test(cell, detection_alpha, power) for cell in shifts]
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
        cell_comparison(t, down, up, tol, alpha, fail_on_improvement, detection_alpha, flip_rate, power)
        for t, down, up in zip(tested, drop_adjusted, rise_adjusted, strict=True)
    ]
    cells += [
        shift_comparison(cell, test, adjusted, alpha, max_shift)
        for cell, test, adjusted in zip(shifts, shift_tests, move_adjusted, strict=True)
    ]
    return cells


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
    "Verdict",
    "baseline_sensitivity",
    "compare_profiles",
    "sensitivity_warning",
]
