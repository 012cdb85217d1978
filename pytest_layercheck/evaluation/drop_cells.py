"""Drop cells (the intact cell and each band's): the paired item-level test a cell's metric calls for, and
the fail rule that turns its adjusted p and change into a status.

The tests (:mod:`pytest_layercheck.data.metrics` names each metric's): the exact sign-flip test of each
item's change in its share of right answers (McNemar's for one ablation) for 0/1 metrics, the sign-flip
test of each item's change in score for ``p_correct``, the Wilcoxon signed-rank test otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from pytest_layercheck.data.metrics import metric_kind
from pytest_layercheck.data.statistics import (
    CI_LEVEL,
    SCORE_GRID,
    detectable_drop,
    item_steps,
    mean_difference_ci,
    score_detectable_drop,
    score_mean_ci,
    score_sign_flip_test,
    score_spread,
    sign_flip_test,
    signed_rank_test,
)
from pytest_layercheck.evaluation.comparison_result import EFFECT_FLOOR, EPS, CellComparison, Status, Tolerance
from pytest_layercheck.evaluation.pairing import Paired


@dataclass(frozen=True)
class ItemTest:
    """A cell's item-level test: the per-item changes, the one-sided p of each direction and the effect."""

    paired: Paired
    differences: np.ndarray  # per item: the change of its mean over the cell's ablations
    p_less: float
    p_greater: float
    test: str
    effect: float  # the change the fail rule judges: the mean difference, or the median for rank tests


def item_test(cell: Paired) -> ItemTest:
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
    return ItemTest(cell, differences, result.p_less, result.p_greater, name, effect)


def classify(delta: float, allowed: float, p_value: float, alpha: float) -> Status:
    """The fail rule, given the cell's adjusted one-sided p for the direction of ``delta``.

    Significant and at least ``EFFECT_FLOOR`` × the tolerance -> regressed/improved; beyond the
    tolerance but not significant -> changed; else ok. A significant shift under half the tolerance is
    "ok": with many items, tiny real shifts are common and not worth failing a build over.
    """
    if not math.isfinite(delta) or delta == 0:
        return "ok"
    if p_value <= alpha and abs(delta) >= EFFECT_FLOOR * allowed - EPS:
        return "regressed" if delta < 0 else "improved"
    if abs(delta) > allowed + EPS:
        return "changed"
    return "ok"


def cell_comparison(
    t: ItemTest,
    drop_adjusted: float,
    rise_adjusted: float,
    tol: Tolerance,
    alpha: float,
    fail_on_improvement: bool,
    detection_alpha: float,
    flip_rate: float | None,
    power: float,
) -> CellComparison:
    """A drop cell's outcome: its change, p (raw and adjusted, in the direction of the change), status under
    the fail rule, and the evidence reports show."""
    cell = t.paired
    n, m = cell.before.shape
    before_mean = float(cell.before.mean()) if n else math.nan
    after_mean = float(cell.after.mean()) if n else math.nan
    delta = t.effect
    rose = delta > 0
    p_value, p_adjusted = (t.p_greater, rise_adjusted) if rose else (t.p_less, drop_adjusted)
    allowed = tol.allowed(before_mean)
    status = classify(delta, allowed, p_adjusted, alpha)
    evidence = _evidence(t, detection_alpha, flip_rate, power)
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
        ci_low=evidence.ci_low,
        ci_high=evidence.ci_high,
        detectable_drop=evidence.detectable_drop,
        flip_rate=evidence.flip_rate,
        score_sd=evidence.score_sd,
        worse_items=tuple(i for i, s in zip(cell.item_ids, evidence.moved, strict=True) if s < 0),
        better_items=tuple(i for i, s in zip(cell.item_ids, evidence.moved, strict=True) if s > 0),
    )


class _Evidence(NamedTuple):
    """A cell's interval of the change, its power, and the per-item changes its test counts."""

    ci_low: float
    ci_high: float
    detectable_drop: float
    flip_rate: float  # background flip rate detectable_drop assumes (0/1 metrics; NaN otherwise)
    score_sd: float  # per-item sd of differences detectable_drop assumes (continuous metrics; NaN otherwise)
    moved: np.ndarray  # per item: the change the test counts (its sign says worse or better)


def _evidence(t: ItemTest, detection_alpha: float, flip_rate: float | None, power: float) -> _Evidence:
    """The interval and detectable drop by the metric's kind: 0/1 outcomes assume a background flip rate
    (``flip_rate``, else twice the mean per-item rise), continuous scores the spread of the per-item changes."""
    cell = t.paired
    n, m = cell.before.shape
    item_means = cell.before.mean(axis=1) if n else np.zeros(0)
    if metric_kind(str(cell.identity["metric"])).binary:
        low, high = mean_difference_ci(t.differences, CI_LEVEL)
        background = (
            flip_rate if flip_rate is not None else (float(2 * np.clip(t.differences, 0, None).sum() / n) if n else 0.0)
        )
        detectable = detectable_drop(item_means, m, detection_alpha, power, min(1.0, background))
        return _Evidence(low, high, detectable, background, math.nan, t.differences)
    low, high = score_mean_ci(t.differences, CI_LEVEL)
    spread = score_spread(item_means, t.differences)
    detectable = score_detectable_drop(spread, n, detection_alpha, power)
    moved = np.rint(t.differences * SCORE_GRID) / SCORE_GRID  # what the test counts as a change
    return _Evidence(low, high, detectable, math.nan, spread, moved)
