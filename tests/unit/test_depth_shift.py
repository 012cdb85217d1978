"""Centre of depth and the depth-shift test: a hand-computed centre, the permutation p-value against
brute-force enumeration of every swap, and seeded simulations of the false-alarm rate, the power against
a capability that moved from shallow to deep layers (which a mean over layers cannot see), the bootstrap
standard error and the detectable shift."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import numpy.typing as npt
import pytest

from pytest_layercheck.data.depth_shift import DEFAULT_CORRELATION, ShiftTest, centre_of_depth, depth_shift_test

Matrix = npt.NDArray[np.float64]
ALPHA = 0.05

# ------------------------------------------------------------------------------ generators


def _null_pair(rng: np.random.Generator, items: int, layers: int, noise: float = 0.1) -> tuple[Matrix, Matrix]:
    """Baseline and candidate drawn alike: a shared per-item profile (a bump at an item's own depth) plus
    independent noise per side, so each item's two rows are exchangeable."""
    depth = np.linspace(0.0, 1.0, layers)
    where = rng.uniform(0.1, 0.9, size=(items, 1))
    height = rng.uniform(0.1, 0.5, size=(items, 1))
    profile = height * np.exp(-0.5 * ((depth - where) / 0.2) ** 2)
    before = np.clip(profile + rng.normal(0.0, noise, size=profile.shape), -1, 1)
    after = np.clip(profile + rng.normal(0.0, noise, size=profile.shape), -1, 1)
    return before, after


def _moved_pair(rng: np.random.Generator, items: int, layers: int = 30) -> tuple[Matrix, Matrix]:
    """Items depend on the first and middle thirds before, on the middle and last thirds after: the
    dependence on the first third moved to the last third, with the same total."""
    third = layers // 3
    amplitude = rng.uniform(0.1, 0.3, size=(items, 1))
    shape = np.zeros(layers)
    shape[: 2 * third] = 1.0
    before = amplitude * shape + rng.normal(0.0, 0.1, size=(items, layers))
    after = amplitude * shape[::-1] + rng.normal(0.0, 0.1, size=(items, layers))
    return np.clip(before, -1, 1), np.clip(after, -1, 1)


# ------------------------------------------------------------------------------ centre of depth


def test_centre_of_depth_matches_hand_computation() -> None:
    drops = [[0.3, 0.0, 0.6, -0.3], [0.0, 0.3, 0.3, -0.3], [0.3, 0.0, 0.0, 0.0]]
    # Mean drops 0.2, 0.1, 0.3, -0.2 -> weights 0.2, 0.1, 0.3, 0 (the last clipped) at positions 0, 1/3, 2/3, 1:
    # (0.1/3 + 0.3·2/3) / 0.6 = (7/30) / (6/10) = 7/18.
    assert centre_of_depth(drops, [0, 1, 2, 3], 4) == pytest.approx(7 / 18, abs=1e-12)
    # Without clipping the last layer (weight -0.2 at position 1) the centre would be (7/30 - 0.2)/0.4 = 1/12.
    assert centre_of_depth(drops, [0, 1, 2, 3], 4) != pytest.approx(1 / 12)
    # A subset of a 6-layer model: columns are layers 0, 2, 5 at positions 0, 0.4, 1.
    subset = [[0.2, 0.2, 0.4], [0.0, 0.2, 0.2]]  # mean drops 0.1, 0.2, 0.3
    assert centre_of_depth(subset, [0, 2, 5], 6) == pytest.approx((0.2 * 0.4 + 0.3 * 1.0) / 0.6, abs=1e-12)
    # One layer carries all the weight: the centre is its position.
    assert centre_of_depth([[0.0, 0.5, -0.1]], [0, 1, 2], 3) == pytest.approx(0.5)


def test_centre_of_depth_is_nan_without_any_dependence() -> None:
    assert math.isnan(centre_of_depth([[0.0, -0.2, 0.1], [0.0, 0.1, -0.3]], [0, 1, 2], 3))
    assert math.isnan(centre_of_depth(np.zeros((4, 5)), range(5), 5))


# ------------------------------------------------------------------------------ the permutation test


def _exact_p(before: Matrix, after: Matrix, layers: list[int], num_layers: int) -> tuple[float, float]:
    """Observed shift and exact two-sided p over all 2^n per-item swaps, by enumeration."""
    observed = centre_of_depth(after, layers, num_layers) - centre_of_depth(before, layers, num_layers)
    hits = 0
    swaps = list(itertools.product((False, True), repeat=before.shape[0]))
    for swap in swaps:
        mask = np.array(swap)[:, np.newaxis]
        b, a = np.where(mask, after, before), np.where(mask, before, after)
        shift = centre_of_depth(a, layers, num_layers) - centre_of_depth(b, layers, num_layers)
        hits += math.isnan(shift) or abs(shift) >= abs(observed) - 1e-12
    return observed, hits / len(swaps)


@pytest.mark.parametrize("seed", [1, 3, 6])
def test_permutation_p_matches_brute_force_enumeration(seed: int) -> None:
    rng = np.random.default_rng(seed)
    layers = [0, 1, 2, 3, 4]
    before = rng.uniform(0.0, 0.4, size=(8, 5))
    after = before * np.linspace(0.8, 1.2, 5) + rng.normal(0.0, 0.15, size=(8, 5))
    observed, exact = _exact_p(before, after, layers, 5)
    assert exact < 0.99  # p-values from about 0.008 to 0.3: neither trivial nor saturated
    result = depth_shift_test(before, after, layers, 5, permutations=20000, bootstraps=50)
    assert result.shift == pytest.approx(observed, abs=1e-12)
    assert result.p_value == pytest.approx(exact, abs=0.02)


def test_false_alarm_rate_under_exchangeable_null() -> None:
    rng = np.random.default_rng(2024)
    datasets = 200
    rejections = 0
    for index in range(datasets):
        before, after = _null_pair(rng, items=30, layers=12)
        result = depth_shift_test(before, after, range(12), 12, permutations=500, bootstraps=2, seed=index)
        rejections += result.p_value <= ALPHA
    rate = rejections / datasets
    assert rate <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / datasets), rate


def test_power_against_a_capability_moved_from_shallow_to_deep_layers() -> None:
    rng = np.random.default_rng(7)
    for index in range(10):
        before, after = _moved_pair(rng, items=60)
        # A mean over all cells (what an intact-accuracy or mean-drop check compares) did not move ...
        assert abs(before.mean() - after.mean()) < 0.01
        result = depth_shift_test(before, after, range(30), 30, permutations=1000, bootstraps=200, seed=index)
        # ... while the centre moved by about a third of depth, and the test sees it.
        assert result.p_value < 0.01, result
        assert result.shift > 0.2
        assert result.ci_low > 0 and result.ci_low <= result.shift <= result.ci_high


def test_bootstrap_standard_error_matches_spread_across_datasets() -> None:
    rng = np.random.default_rng(5)
    shifts, errors = [], []
    for index in range(100):
        before, after = _null_pair(rng, items=40, layers=10)
        result = depth_shift_test(before, after, range(10), 10, permutations=1, bootstraps=300, seed=index)
        shifts.append(result.shift)
        errors.append(result.standard_error)
    spread = float(np.std(shifts, ddof=1))
    assert float(np.mean(errors)) == pytest.approx(spread, rel=0.3)


# ------------------------------------------------------------------------------ determinism and inputs


def test_same_seed_same_result() -> None:
    before, after = _moved_pair(np.random.default_rng(1), items=20, layers=9)
    first = depth_shift_test(before, after, range(9), 9, permutations=300, bootstraps=300, seed=4)
    assert depth_shift_test(before, after, range(9), 9, permutations=300, bootstraps=300, seed=4) == first
    other = depth_shift_test(before, after, range(9), 9, permutations=300, bootstraps=300, seed=5)
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)
    assert isinstance(first, ShiftTest) and first.items == 20 and first.permutations == 300
    assert all(isinstance(getattr(first, f.name), (int, float)) for f in dataclasses.fields(first))


@pytest.mark.parametrize(
    ("before", "after", "layers", "num_layers", "message"),
    [
        (np.zeros((3, 4)), np.zeros((4, 4)), range(4), 4, "differ in shape"),
        (np.zeros((3, 4)), np.full((3, 4), np.nan), range(4), 4, "non-finite drop"),
        (np.full((3, 4), np.inf), np.zeros((3, 4)), range(4), 4, "non-finite drop"),
        (np.zeros(4), np.zeros(4), range(4), 4, "2-D"),
        (np.zeros((3, 4)), np.zeros((3, 4)), range(3), 4, "3 layers were given"),
        (np.zeros((3, 4)), np.zeros((3, 4)), [0, 1, 2, 4], 4, "outside 0..3"),
        (np.zeros((3, 4)), np.zeros((3, 4)), [0, 1, 1, 2], 4, "repeat"),
        (np.zeros((3, 1)), np.zeros((3, 1)), [0], 1, "num_layers"),
        (np.zeros((0, 4)), np.zeros((0, 4)), range(4), 4, "no items"),
    ],
)
def test_invalid_inputs_raise_clear_errors(
    before: Matrix, after: Matrix, layers: range | list[int], num_layers: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        depth_shift_test(before, after, layers, num_layers)


def test_invalid_settings_raise() -> None:
    drops = np.full((3, 4), 0.1)
    for settings in (
        {"alpha": 0.0},
        {"power": 1.0},
        {"level": 1.5},
        {"permutations": 0},
        {"bootstraps": 1},
        {"correlation": 1.5},
    ):
        with pytest.raises(ValueError, match=next(iter(settings))):
            depth_shift_test(drops, drops, range(4), 4, **settings)


def test_no_dependence_gives_no_test() -> None:
    result = depth_shift_test(np.full((5, 4), 0.1), np.full((5, 4), -0.1), range(4), 4)
    assert math.isnan(result.current_centre) and math.isnan(result.shift)
    assert result.p_value == 1.0 and math.isnan(result.ci_low) and math.isnan(result.ci_high)
    assert result.detectable_shift == math.inf


# ------------------------------------------------------------------------------ detectable shift


def test_detectable_shift_of_a_self_comparison_is_the_floor_and_shrinks_with_items() -> None:
    detectable = {}
    for items in (60, 240):
        before, _ = _null_pair(np.random.default_rng(items), items=items, layers=16)
        result = depth_shift_test(before, before, range(16), 16, permutations=200, bootstraps=1000)
        assert result.shift == 0.0 and result.standard_error == 0.0 and result.p_value == 1.0
        assert 0 < result.detectable_shift < math.inf
        detectable[items] = result.detectable_shift
    # Four times the items: about half the standard error.
    assert detectable[240] < 0.7 * detectable[60]
    # The floor is sqrt(2(1 - correlation)) times the baseline centre's SE: with correlation 0.5 that SE
    # itself, and a candidate more alike (correlation 0.875) halves the floor.
    before, _ = _null_pair(np.random.default_rng(60), items=60, layers=16)
    alike = depth_shift_test(before, before, range(16), 16, permutations=200, bootstraps=1000, correlation=0.875)
    assert DEFAULT_CORRELATION == 0.5
    assert alike.detectable_shift == pytest.approx(detectable[60] / 2, rel=1e-9)
