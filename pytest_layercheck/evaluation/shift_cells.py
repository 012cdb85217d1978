"""Shift cells: where a capability lives along depth, not only how much of it is left.

Per suite swept layer by layer, the centre of depth of the per-layer drops
(:mod:`pytest_layercheck.data.depth_shift`) is compared by a paired permutation test over items
(two-sided). Its cell has band ``SHIFT``, values in shares of depth, and fails (status ``moved``) when
the move is significant and at least ``EFFECT_FLOOR`` of ``max_shift``.
"""

from __future__ import annotations

import math

import numpy as np

from pytest_layercheck.data.depth_shift import ShiftTest, depth_shift_test
from pytest_layercheck.data.metrics import metric_kind
from pytest_layercheck.data.profile_data import INTACT, DepthProfile
from pytest_layercheck.evaluation.comparison_result import EFFECT_FLOOR, EPS, SHIFT, CellComparison, Status
from pytest_layercheck.evaluation.compatibility import ablation_layers
from pytest_layercheck.evaluation.pairing import Paired, cell_identity, outcomes

#: A suite gets a shift cell when the two profiles share at least this many single-layer removals.
MIN_SHIFT_LAYERS = 3


def shift_pair(baseline: DepthProfile, current: DepthProfile, suite: str, metric: str) -> list[Paired]:
    """The suite's per-item drops under each single-layer removal both profiles hold, as a shift cell:
    ``before``/``after`` are items x layers matrices of ``intact - without layer``, layers in depth order."""
    if metric_kind(metric).test == "signed-rank":  # unbounded scores: no stable centre
        return []
    old, new = single_layers(baseline, suite), single_layers(current, suite)
    keys = sorted((key for key, layer in new.items() if old.get(key) == layer), key=new.__getitem__)
    if len(keys) < MIN_SHIFT_LAYERS:
        return []
    sides = []
    for profile in (baseline, current):
        intact = outcomes(profile, suite, INTACT, metric)
        removed = [outcomes(profile, suite, key, metric) for key in keys]
        if intact is None or any(v is None for v in removed):
            return []
        sides.append((intact, [v for v in removed if v is not None]))
    n = min(len(v) for _, removed in sides for v in removed)
    before, after = (
        np.asarray(intact[:n])[:, None] - np.array([v[:n] for v in removed]).T for intact, removed in sides
    )
    layers = tuple(new[key] for key in keys)
    identity = cell_identity(current, suite, metric, SHIFT, layers, keys)
    depth = int(current.model.get("num_layers") or max(layers) + 1)
    return [Paired(identity, tuple(current.suites[suite].item_ids[:n]), before, after, depth)]


def single_layers(profile: DepthProfile, suite: str) -> dict[str, int]:
    """Ablation key -> the one layer it removes, for the suite's single-layer removals."""
    return {
        key: layers[0] for key, layers in ablation_layers(profile, suite).items() if key != INTACT and len(layers) == 1
    }


def shift_test(cell: Paired, detection_alpha: float, power: float) -> ShiftTest:
    """The shift cell's paired permutation test, its power quoted at ``detection_alpha``."""
    return depth_shift_test(
        cell.before, cell.after, cell.identity["layers"], cell.num_layers, alpha=detection_alpha, power=power
    )


def shift_comparison(
    cell: Paired, test: ShiftTest, p_adjusted: float, alpha: float, max_shift: float
) -> CellComparison:
    """A shift cell: ``baseline``/``current`` are the centres of depth, ``delta`` the shift, ``allowed`` the
    largest move allowed; ``detectable_drop`` is the smallest shift detected with the run's power."""
    status: Status = "ok"
    if math.isfinite(test.shift) and test.shift != 0:
        if p_adjusted <= alpha and abs(test.shift) >= EFFECT_FLOOR * max_shift - EPS:
            status = "moved"
        elif abs(test.shift) > max_shift + EPS:
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
