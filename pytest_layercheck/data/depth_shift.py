"""Where a capability lives along depth, and whether a candidate moved it (numpy + stdlib).

A mean drop over all layers can stay the same while the layers a capability needs move (a fine-tune
that shifts a skill from shallow to deep layers). This module summarises *where* the dependence sits
and tests, item by item, whether a candidate moved it relative to a baseline.

*Inputs.* For one suite, per item ``i`` and per single-layer removal ``ℓ`` (integer layer indices of a
``num_layers``-layer model): the drop ``D[i, ℓ] = score_intact[i] - score_without_layer_ℓ[i]``, with
per-item gold-choice probabilities as scores (drops in ``[-1, 1]``). Baseline and candidate each give
such a matrix over the same items (rows paired) and layers (columns).

*Centre of depth.* The position of layer ``ℓ`` is ``ℓ / (num_layers - 1)`` (0 = first, 1 = last); the
weight of a layer is its mean drop clipped at zero, ``w_ℓ = max(0, mean_i D[i, ℓ])`` (a layer whose
removal helps on average is not where the capability lives); the centre is ``Σ pos_ℓ·w_ℓ / Σ w_ℓ``, NaN
when no layer carries weight. The *shift* is centre(candidate) − centre(baseline), in shares of depth.

*Test.* Under "no change", each item's baseline and candidate rows are exchangeable, so swapping them
leaves the data's distribution unchanged: a paired permutation test draws a fair coin per item, swaps
that item's rows on heads and recomputes the shift. The Monte Carlo p-value ``(1 + hits)/(1 + P)`` is
valid at any number ``P`` of permutations.

*Interval.* A paired bootstrap over items (the same resampled items on both sides) gives a percentile
interval and a standard error of the shift.

*Detectable shift.* ``(z_{1-α/2} + z_power)·se``, the smallest shift the test finds with the given
power under a normal approximation. ``se`` is floored by what a candidate correlated
``DEFAULT_CORRELATION`` with the baseline would give, so a baseline compared with itself (before any
candidate exists) still says what it could detect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads in the functions that compute: `layercheck --help` must not need it
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

#: Assumption of the power model only (``detectable_shift``), never of the test: a candidate's per-item
#: drop profile shares half its variance with the baseline's, so the shift's standard error is
#: ``sqrt(2·(1 - 0.5)) = 1`` times the baseline centre's own.
DEFAULT_CORRELATION = 0.5
#: A permuted shift counts as at least as extreme as the observed one within this rounding tolerance
#: (the permutation that swaps nothing recomputes the observed shift by another float route).
TIE_TOLERANCE = 1e-12
#: Cap on the elements of one (draws × items) block, so memory stays flat for any draw count.
_BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class ShiftTest:
    """Outcome of :func:`depth_shift_test`: the two centres, the shift, its test, interval and power."""

    baseline_centre: float
    current_centre: float
    #: current - baseline, in shares of depth (NaN when either centre is).
    shift: float
    #: Two-sided paired permutation p-value (1 when the shift is NaN).
    p_value: float
    #: Paired bootstrap percentile interval of the shift at ``level`` (NaN when the shift is).
    ci_low: float
    ci_high: float
    #: Standard deviation of the finite bootstrap shifts.
    standard_error: float
    #: Smallest |shift| found with ``power`` at two-sided level ``alpha`` (inf when unknown).
    detectable_shift: float
    items: int
    permutations: int


def _positions(layers: Sequence[int], num_layers: int) -> FloatArray:
    """Relative depth of each layer: depth findings must compare across models of any layer count."""
    import numpy as np

    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 2:
        raise ValueError(
            f"num_layers must be an int >= 2 (a position needs a first and a last layer), got {num_layers!r}"
        )
    indices = list(layers)
    for layer in indices:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise ValueError(f"layer indices must be ints, got {layer!r}")
        if not 0 <= int(layer) < num_layers:
            raise ValueError(f"layer {layer} is outside 0..{num_layers - 1}")
    if len(set(int(layer) for layer in indices)) != len(indices):
        raise ValueError(f"layer indices repeat: {indices}")
    if not indices:
        raise ValueError("no layers given")
    return np.asarray(indices, dtype=float) / (num_layers - 1)


def _drops(drops: npt.ArrayLike, name: str, columns: int) -> FloatArray:
    """A finite items × layers float matrix, or a ValueError that says what is wrong with it."""
    import numpy as np

    array = np.asarray(drops, dtype=float)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D items × layers array, got shape {array.shape}")
    if array.shape[0] < 1:
        raise ValueError(f"{name} has no items")
    if array.shape[1] != columns:
        raise ValueError(f"{name} has {array.shape[1]} layer columns but {columns} layers were given")
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(
            f"{name} holds a non-finite drop ({array[tuple(bad)]}) at item {bad[0]}, layer column {bad[1]}"
        )
    return array


def _centres(mean_drops: FloatArray, positions: FloatArray) -> FloatArray:
    """Centre per row of per-layer mean drops (rows = draws); NaN where no layer carries weight."""
    import numpy as np

    weights = np.maximum(mean_drops, 0.0)
    total = weights.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        centres = (weights @ positions) / total
    return np.where(total > 0, centres, np.nan)


def centre_of_depth(drops: npt.ArrayLike, layers: Sequence[int], num_layers: int) -> float:
    """Share of depth where the capability's dependence sits: the mean-drop-weighted layer position.

    ``drops`` is items × layers (``layers[j]`` is column ``j``'s layer index). Negative mean drops weigh
    nothing, since removing such a layer does not hurt the capability. NaN when no layer's removal hurts
    on average: the capability then depends on none of them and has no centre.
    """
    positions = _positions(layers, num_layers)
    return _centre(_drops(drops, "drops", len(positions)), positions)


def _centre(drops: FloatArray, positions: FloatArray) -> float:
    """The centre of one items × layers drop matrix: that of its per-layer mean drops."""
    import numpy as np

    return float(_centres(drops.mean(axis=0)[np.newaxis, :], positions)[0])


def _block(draws: int, items: int) -> int:
    """Draws per block: enough to vectorise, few enough to keep a (block × items) matrix small."""
    return max(1, min(draws, _BLOCK_ELEMENTS // max(1, items)))


def _permutation_hits(
    before: FloatArray,
    after: FloatArray,
    positions: FloatArray,
    observed: float,
    permutations: int,
    rng: np.random.Generator,
) -> int:
    """Permutations whose |shift| reaches the observed one (NaN shifts count, so p never gains from them).

    With ``m_i = (a_i + b_i)/2`` and ``h_i = (a_i - b_i)/2`` per item, swap signs ``s_i = ±1`` give the
    candidate ``m_i + s_i·h_i`` and the baseline ``m_i - s_i·h_i``, so the per-layer means of a whole
    block of permutations are one matrix product ``S @ H / n``.
    """
    import numpy as np

    items = before.shape[0]
    mean_of_both = (after + before).mean(axis=0) / 2
    half_difference = (after - before) / 2
    threshold = abs(observed) - TIE_TOLERANCE
    hits = 0
    block = _block(permutations, items)
    for start in range(0, permutations, block):
        size = min(block, permutations - start)
        signs = rng.integers(0, 2, size=(size, items)).astype(float) * 2 - 1
        moved = signs @ half_difference / items
        shifts = _centres(mean_of_both + moved, positions) - _centres(mean_of_both - moved, positions)
        hits += int(np.count_nonzero(np.isnan(shifts) | (np.abs(shifts) >= threshold)))
    return hits


def _bootstrap(
    before: FloatArray, after: FloatArray, positions: FloatArray, bootstraps: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """Paired bootstrap draws of (baseline centre, shift): the same resampled items on both sides."""
    import numpy as np

    items = before.shape[0]
    baseline_centres: list[FloatArray] = []
    shifts: list[FloatArray] = []
    block = _block(bootstraps, items)
    for start in range(0, bootstraps, block):
        size = min(block, bootstraps - start)
        picks = rng.integers(0, items, size=(size, items)) + (np.arange(size) * items)[:, np.newaxis]
        counts = np.bincount(picks.ravel(), minlength=size * items).reshape(size, items).astype(float)
        base = _centres(counts @ before / items, positions)
        baseline_centres.append(base)
        shifts.append(_centres(counts @ after / items, positions) - base)
    return np.concatenate(baseline_centres), np.concatenate(shifts)


def _std(draws: FloatArray) -> float:
    """Standard deviation of the finite draws (NaN with fewer than two: no spread to speak of)."""
    import numpy as np

    finite = draws[np.isfinite(draws)]
    return float(np.std(finite, ddof=1)) if len(finite) >= 2 else math.nan


def _check_settings(
    alpha: float, power: float, level: float, permutations: int, bootstraps: int, correlation: float
) -> None:
    for name, value in (("alpha", alpha), ("power", power), ("level", level)):
        if not 0 < value < 1:
            raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    for name, count, least in (("permutations", permutations, 1), ("bootstraps", bootstraps, 2)):
        if isinstance(count, bool) or not isinstance(count, int) or count < least:
            raise ValueError(f"{name} must be an int >= {least}, got {count!r}")
    if not -1 <= correlation <= 1:
        raise ValueError(f"correlation must lie in [-1, 1], got {correlation!r}")


def depth_shift_test(
    before: npt.ArrayLike,
    after: npt.ArrayLike,
    layers: Sequence[int],
    num_layers: int,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    level: float = 0.95,
    permutations: int = 4000,
    bootstraps: int = 2000,
    seed: int = 0,
    correlation: float = DEFAULT_CORRELATION,
) -> ShiftTest:
    """Did the candidate (``after``) move the capability along depth relative to the baseline (``before``)?

    Both are items × layers drop matrices, rows paired by item. The p-value is a two-sided paired
    permutation test (per-item swaps of baseline and candidate), the interval a paired bootstrap over
    items; ``correlation`` enters only the detectable shift (see :data:`DEFAULT_CORRELATION`). Seeded:
    the same inputs and seed give the same numbers.
    """
    _check_settings(alpha, power, level, permutations, bootstraps, correlation)
    positions, baseline, current = _paired_drops(before, after, layers, num_layers)
    items = baseline.shape[0]
    baseline_centre = _centre(baseline, positions)
    current_centre = _centre(current, positions)
    shift = current_centre - baseline_centre
    if math.isnan(shift):  # a centre is undefined (no layer's removal costs anything): no test
        p_value, ci_low, ci_high, standard_error, detectable = 1.0, math.nan, math.nan, math.nan, math.inf
    else:
        p_value, baseline_draws, shift_draws = _seeded_draws(
            baseline, current, positions, shift, permutations, bootstraps, seed
        )
        ci_low, ci_high = _percentile_interval(shift_draws, level)
        standard_error = _std(shift_draws)
        detectable = _detectable(standard_error, baseline_draws, alpha, power, correlation)
    return ShiftTest(
        baseline_centre=baseline_centre,
        current_centre=current_centre,
        shift=shift,
        p_value=p_value,
        ci_low=ci_low,
        ci_high=ci_high,
        standard_error=standard_error,
        detectable_shift=detectable,
        items=items,
        permutations=permutations,
    )


def _paired_drops(
    before: npt.ArrayLike, after: npt.ArrayLike, layers: Sequence[int], num_layers: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The layers' positions and the two drop matrices, checked to pair item by item."""
    positions = _positions(layers, num_layers)
    baseline = _drops(before, "before", len(positions))
    current = _drops(after, "after", len(positions))
    if baseline.shape != current.shape:
        raise ValueError(
            f"before and after differ in shape: {baseline.shape} vs {current.shape} (rows must be the same items)"
        )
    return positions, baseline, current


def _seeded_draws(
    baseline: FloatArray,
    current: FloatArray,
    positions: FloatArray,
    shift: float,
    permutations: int,
    bootstraps: int,
    seed: int,
) -> tuple[float, FloatArray, FloatArray]:
    """The permutation p-value of ``shift`` and the bootstrap draws of (baseline centre, shift), each
    from its own stream of ``seed``."""
    import numpy as np

    # Separate streams: changing the number of permutations leaves the bootstrap draws as they were.
    permutation_seed, bootstrap_seed = np.random.SeedSequence(seed).spawn(2)
    hits = _permutation_hits(baseline, current, positions, shift, permutations, np.random.default_rng(permutation_seed))
    p_value = (1 + hits) / (1 + permutations)

    baseline_draws, shift_draws = _bootstrap(
        baseline, current, positions, bootstraps, np.random.default_rng(bootstrap_seed)
    )
    return p_value, baseline_draws, shift_draws


def _percentile_interval(shift_draws: FloatArray, level: float) -> tuple[float, float]:
    """The percentile interval of the finite bootstrap shifts at ``level`` (NaN when none is finite)."""
    import numpy as np

    finite = shift_draws[np.isfinite(shift_draws)]
    if len(finite):
        ci_low, ci_high = (float(q) for q in np.quantile(finite, [(1 - level) / 2, (1 + level) / 2]))
    else:
        ci_low = ci_high = math.nan
    return ci_low, ci_high


def _detectable(
    standard_error: float, baseline_draws: FloatArray, alpha: float, power: float, correlation: float
) -> float:
    """The smallest shift found with ``power``: the standard error floored by what a candidate correlated
    ``correlation`` with the baseline would give, so a baseline compared with itself still has an answer."""
    floor = math.sqrt(2 * (1 - correlation)) * _std(baseline_draws)
    se = math.nan if math.isnan(standard_error) or math.isnan(floor) else max(standard_error, floor)
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return math.inf if math.isnan(se) else z * se


__all__ = ["DEFAULT_CORRELATION", "ShiftTest", "centre_of_depth", "depth_shift_test"]
