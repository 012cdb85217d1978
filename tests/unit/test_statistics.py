"""The statistics behind a verdict: exact tests against brute force, Holm, intervals, power, and
seeded simulations of whole comparisons (false failures of benign candidates, power against a real
0.05 drop, and the over-confidence of the old pooled band test)."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
from run_shared import once_per_run

from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.profile_data import INTACT, DepthProfile, Evaluation, SuiteInfo
from pytest_layercheck.data.statistics import (
    _background_rates,
    adjust_p_values,
    detectable_drop,
    detection_power,
    exact_mcnemar,
    mean_difference_ci,
    per_test_alpha,
    sign_flip_null,
    sign_flip_test,
)
from pytest_layercheck.evaluation.comparison import compare_profiles
from pytest_layercheck.evaluation.comparison_result import EFFECT_FLOOR, SHIFT
from pytest_layercheck.evaluation.drop_cells import classify

ALPHA = 0.05

# ------------------------------------------------------------------------------ exact tests


def _brute_force(steps: list[int]) -> tuple[float, float]:
    """P(T <= t) and P(T >= t) over all 2^n sign vectors, by enumeration."""
    observed = sum(steps)
    sums = [
        sum(s * abs(t) for s, t in zip(signs, steps, strict=True))
        for signs in itertools.product((-1, 1), repeat=len(steps))
    ]
    return (sum(s <= observed for s in sums) / len(sums), sum(s >= observed for s in sums) / len(sums))


@pytest.mark.parametrize("seed", range(12))
def test_sign_flip_p_values_equal_enumeration(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 6))
    steps = rng.integers(-m, m + 1, size=int(rng.integers(1, 13))).tolist()
    result = sign_flip_test(steps)
    less, greater = _brute_force(steps)
    assert result.p_less == pytest.approx(less, rel=1e-12)
    assert result.p_greater == pytest.approx(greater, rel=1e-12)
    assert result.total == sum(steps) and result.items == len(steps)


def test_sign_flip_with_unit_steps_is_the_exact_mcnemar_test() -> None:
    for worse, better in [(0, 0), (6, 1), (1, 9), (13, 0), (40, 55)]:
        result = sign_flip_test([-1] * worse + [1] * better + [0] * 30)
        assert result.test == "McNemar"
        assert result.p_two_sided == pytest.approx(exact_mcnemar(worse, better), rel=1e-12)
        # one-sided "dropped": P(X >= worse), X ~ Bin(worse + better, 1/2)
        n = worse + better
        expected = sum(math.comb(n, k) for k in range(worse, n + 1)) / 2**n
        assert result.p_less == pytest.approx(expected, rel=1e-12)
    assert sign_flip_test([-1] * 6).p_less == pytest.approx(2**-6)  # the "6 flips" arithmetic


def test_sign_flip_null_is_a_symmetric_distribution() -> None:
    pmf, offset = sign_flip_null(Counter({1: 7, 3: 4, 12: 2}))
    assert offset == 7 + 12 + 24 and len(pmf) == 2 * offset + 1
    assert pmf.sum() == pytest.approx(1.0) and np.allclose(pmf, pmf[::-1])
    assert pmf[0] == pytest.approx(2.0**-13)  # every sign negative


def test_sign_flip_is_exact_and_fast_for_hundreds_of_items() -> None:
    rng = np.random.default_rng(0)
    steps = rng.integers(-12, 13, size=264).tolist()
    steps[:40] = [-12] * 40  # a drop
    result = sign_flip_test(steps)
    # many items: the exact tail agrees with the normal one (continuity-corrected; sums move in steps of 2)
    normal = NormalDist().cdf((sum(steps) + 1) / math.sqrt(sum(t * t for t in steps)))
    assert result.test == "sign-flip" and result.p_less == pytest.approx(normal, rel=0.03)
    assert result.p_less + result.p_greater > 1  # both tails include the observed sum


def test_sign_flip_rejects_non_integer_steps() -> None:
    with pytest.raises(ValueError):
        sign_flip_test([0.5, -1])  # type: ignore[list-item]


# ------------------------------------------------------------------------------ multiplicity


def test_holm_bonferroni_and_none_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> running max
    assert adjust_p_values(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust_p_values(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert adjust_p_values(p, "none") == p
    assert adjust_p_values([0.9, 0.5], "holm") == [1.0, 1.0]
    assert adjust_p_values([], "holm") == []
    with pytest.raises(ConfigError) as info:
        adjust_p_values(p, "fdr")
    assert "holm" in str(info.value.fix)


def test_holm_adjusted_p_matches_the_step_down_definition() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = rng.uniform(0, 0.2, size=8).tolist()
        adjusted = adjust_p_values(p, "holm")
        for level in (0.01, 0.05, 0.1):
            rejected, order = set(), sorted(range(8), key=p.__getitem__)
            for rank, i in enumerate(order):  # step down until the first acceptance
                if p[i] > level / (8 - rank):
                    break
                rejected.add(i)
            assert {i for i in range(8) if adjusted[i] <= level} == rejected


def test_per_test_alpha_is_the_first_holm_step() -> None:
    assert per_test_alpha(0.05, 12, "holm") == pytest.approx(0.05 / 12)
    assert per_test_alpha(0.05, 12, "bonferroni") == pytest.approx(0.05 / 12)
    assert per_test_alpha(0.05, 12, "none") == 0.05


# ------------------------------------------------------------------------------ interval


def test_interval_is_agresti_min_for_paired_proportions() -> None:
    n, worse, better = 40, 6, 1
    d = [-1.0] * worse + [1.0] * better + [0.0] * (n - worse - better)
    b, c, m = worse + 0.5, better + 0.5, n + 2  # 1/2 added to each cell of the 2x2 table
    centre = (c - b) / m
    half = 1.959963984540054 * math.sqrt(((b + c) - (c - b) ** 2 / m) / m**2)
    assert mean_difference_ci(d) == pytest.approx((centre - half, centre + half))
    low, high = mean_difference_ci([0.0] * 264)
    assert low < 0 < high and high - low < 0.03  # no change still has an honest width


def test_interval_covers_the_true_change_of_averaged_outcomes() -> None:
    rng = np.random.default_rng(5)
    covered, trials = 0, 1000
    for _ in range(trials):  # band cells: d_i in multiples of 1/9, the true mean change -0.12
        k_before = rng.binomial(9, 0.6, size=40)
        k_after = np.where(rng.random(40) < 0.2, 0, k_before)  # an item forgets in all 9 ablations
        d = (k_after - k_before) / 9
        truth = -0.2 * 0.6
        low, high = mean_difference_ci(d.tolist())
        covered += low <= truth <= high
    assert covered / trials >= 0.93


# ------------------------------------------------------------------------------ power


def _intact_means(n: int, accuracy: float) -> np.ndarray:
    right = round(n * accuracy)
    return np.array([1.0] * right + [0.0] * (n - right))


def _simulated_power(
    means: np.ndarray, m: int, drop: float, alpha: float, flip_rate: float, rng: np.random.Generator, trials: int
) -> float:
    """The ALTERNATIVE drawn item by item, judged by the exact test."""
    k = np.rint(means * m).astype(int)
    q = drop / means.mean()
    down, up = _background_rates(float(means.mean()), flip_rate)
    hits = 0
    for _ in range(trials):
        r = rng.random(len(k))
        steps = np.where(r < q + (1 - q) * down, -k, np.where(r > 1 - (1 - q) * up, m - k, 0))
        hits += sign_flip_test(steps.tolist()).p_less <= alpha
    return hits / trials


@pytest.mark.parametrize(("n", "accuracy", "flip_rate"), [(264, 0.78, 0.0), (214, 0.58, 0.03), (40, 0.78, 0.0)])
def test_intact_power_is_exact(n: int, accuracy: float, flip_rate: float) -> None:
    means, alpha = _intact_means(n, accuracy), ALPHA / 12
    drop = detectable_drop(means, 1, alpha, flip_rate=flip_rate)
    simulated = _simulated_power(means, 1, drop, alpha, flip_rate, np.random.default_rng(n), 1500)
    assert simulated == pytest.approx(0.8, abs=0.035)  # 3 standard errors of 1500 draws


@pytest.mark.parametrize(
    ("accuracy", "m", "flip_rate", "alpha"),
    [(0.5, 9, 0.0, ALPHA / 12), (0.3, 12, 0.05, ALPHA / 12), (0.75, 9, 0.05, ALPHA)],
)
def test_band_power_is_never_overstated(accuracy: float, m: int, flip_rate: float, alpha: float) -> None:
    rng = np.random.default_rng(int(accuracy * 100) + m)
    means = rng.binomial(m, rng.beta(accuracy * 1.5, (1 - accuracy) * 1.5, size=40)) / m
    drop = detectable_drop(means, m, alpha, flip_rate=flip_rate)
    assert math.isfinite(drop)
    simulated = _simulated_power(means, m, drop, alpha, flip_rate, rng, 600)
    assert 0.8 - 0.05 <= simulated <= 0.97  # at least the promised power, not absurdly conservative


def test_detectable_drop_moves_the_right_way() -> None:
    knowledge = _intact_means(264, 0.78)
    base = detectable_drop(knowledge, 1, ALPHA / 12)
    assert detectable_drop(_intact_means(40, 0.78), 1, ALPHA / 12) > base  # fewer items
    assert detectable_drop(knowledge, 1, ALPHA) < base  # no correction
    assert detectable_drop(knowledge, 1, ALPHA / 12, flip_rate=0.05) > base  # noisier candidate
    assert detectable_drop(_intact_means(10, 0.8), 1, ALPHA / 12) == pytest.approx(0.78, abs=0.01)  # 2^-8 < alpha/12
    assert detectable_drop(_intact_means(10, 0.7), 1, ALPHA / 12) == math.inf  # 7 right items: p >= 2^-7
    assert detection_power(knowledge, 1, 0.9, ALPHA) == 0.0  # more than the whole accuracy


# ------------------------------------------------------------------------------ whole comparisons

LAYERS = 30
BANDS = {"shallow": tuple(range(9)), "middle": tuple(range(9, 21)), "deep": tuple(range(21, 30))}
DAMAGE = {"shallow": 0.5, "middle": 0.85, "deep": 0.95}


@dataclass(frozen=True)
class SimSuite:
    protocol: str
    metric: str
    items: int  # intact
    swept: int  # under ablations
    accuracy: float


#: The default profile: knowledge and reasoning intact on every item, sweeps on the first 40 / 40 / 10.
SUITES = {
    "knowledge": SimSuite("mc_text", "acc", 264, 40, 0.78),
    "reasoning": SimSuite("continuation", "exact_match", 214, 40, 0.58),
    "retrieval": SimSuite("generate_until", "exact_match", 10, 10, 0.8),
}


class Simulator:
    """Items with a latent ability; a run draws uniforms; outcome = uniform < ability (x layer damage).

    Under a band's ablations 80% of an item's outcomes share one uniform, so they are strongly
    correlated across the band. A *benign* candidate redraws the uniforms of a share ``unstable`` of
    the items: the two runs are exchangeable per item, which is exactly "no change".
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.ability = {s: rng.beta(c.accuracy * 1.5, (1 - c.accuracy) * 1.5, size=c.items) for s, c in SUITES.items()}
        self.damage = {
            s: {b: DAMAGE[b] * rng.uniform(0.8, 1.0, size=len(layers)) for b, layers in BANDS.items()} for s in SUITES
        }

    def draw(self) -> dict[str, dict[str, np.ndarray]]:
        rng = self.rng
        out = {}
        for s, c in SUITES.items():
            shared = rng.random((c.swept, 1)) * np.ones((1, LAYERS))
            own = rng.random((c.swept, LAYERS))
            out[s] = {
                "intact": rng.random(c.items),
                "sweep": np.where(rng.random((c.swept, LAYERS)) < 0.8, shared, own),
            }
        return out

    def benign(self, run: dict[str, dict[str, np.ndarray]], unstable: float) -> dict[str, dict[str, np.ndarray]]:
        fresh = self.draw()
        out = {}
        for s, c in SUITES.items():
            redraw = self.rng.random(c.items) < unstable
            out[s] = {
                "intact": np.where(redraw, fresh[s]["intact"], run[s]["intact"]),
                "sweep": np.where(redraw[: c.swept, None], fresh[s]["sweep"], run[s]["sweep"]),
            }
        return out

    def profile(self, run: dict[str, dict[str, np.ndarray]], lose: dict[str, np.ndarray] | None = None) -> DepthProfile:
        """``lose[suite]``: items forced wrong in the intact evaluation (a harmful change)."""
        suites, evaluations = {}, {}
        for s, c in SUITES.items():
            suites[s] = SuiteInfo(s, s, f"hash-{s}", c.protocol, tuple(f"{s}-{i:03d}" for i in range(c.items)))
            intact = (run[s]["intact"] < self.ability[s]).astype(float)
            if lose and s in lose:
                intact[lose[s]] = 0.0
            evaluations[(s, c.protocol, INTACT)] = Evaluation(s, c.protocol, INTACT, (), _metrics(c, intact))
            for band, layers in BANDS.items():
                strength = self.ability[s][: c.swept, None] * self.damage[s][band][None, :]
                outcome = (run[s]["sweep"][:, list(layers)] < strength).astype(float)
                for j, layer in enumerate(layers):
                    key = f"layer:{layer:02d}"
                    evaluations[(s, c.protocol, key)] = Evaluation(
                        s, c.protocol, key, (layer,), _metrics(c, outcome[:, j])
                    )
        return DepthProfile(
            model={"name": "sim", "num_layers": LAYERS, "dtype": "float32", "device": "cpu"},
            environment={},
            settings={"mode": "layers"},
            suites=suites,
            bands=dict(BANDS),
            evaluations=evaluations,
        )


def _metrics(suite: SimSuite, values: np.ndarray) -> dict[str, tuple[float, ...]]:
    """The suite's 0/1 metric; multiple choice also as the p_correct its cells are judged by (a sure model)."""
    return {suite.metric: tuple(values), **({"p_correct": tuple(values)} if suite.protocol.startswith("mc_") else {})}


@pytest.fixture(scope="module")
def benign_runs(run_folder: Path) -> dict[str, float]:
    """The false-alarm rates of :func:`_benign_runs`, simulated once per run: the first xdist worker to ask
    writes them to the run's shared folder, the other reads them."""

    def make(folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / "rates.json").write_text(json.dumps(_benign_runs()))

    rates: dict[str, float] = json.loads((once_per_run(run_folder, "benign_runs", make) / "rates.json").read_text())
    return rates


def _benign_runs() -> dict[str, float]:
    """250 benign candidates (a fifth of the items unstable), each compared in full: 12 band cells and a shift
    cell per suite (every suite is swept layer by layer), 15 hypotheses."""
    rng = np.random.default_rng(2026)
    trials = 250
    failed = Counter()
    band_cells = 0
    for _ in range(trials):
        sim = Simulator(rng)
        run = sim.draw()
        comparison = compare_profiles(sim.profile(run), sim.profile(sim.benign(run, 0.2)))
        assert len(comparison.cells) == 15 and comparison.family_size == 15
        assert [c.suite for c in comparison.cells if c.band == SHIFT] == list(SUITES)
        failed["holm"] += not comparison.passed
        # the same cells judged without correction (a shift cell by its own rule: significant, two-sided, and at
        # least half the allowed move), and the band cells by the old pooled test
        failed["none"] += any(
            c.p_value <= ALPHA and abs(c.delta) >= EFFECT_FLOOR * c.allowed
            if c.band == SHIFT
            else classify(c.delta, c.allowed, c.p_value, ALPHA) == "regressed"
            for c in comparison.cells
        )
        for c in comparison.cells:
            if c.band in (INTACT, SHIFT):
                continue
            band_cells += 1
            failed["band item-level"] += c.p_value <= ALPHA and c.delta < 0
            pooled = sum(math.comb(c.worse + c.better, k) for k in range(c.worse, c.worse + c.better + 1))
            failed["band pooled"] += pooled / 2 ** (c.worse + c.better) <= ALPHA and c.delta < 0
    return {
        "holm": failed["holm"] / trials,
        "none": failed["none"] / trials,
        "band item-level": failed["band item-level"] / band_cells,
        "band pooled": failed["band pooled"] / band_cells,
        "trials": trials,
    }


@pytest.mark.slow
def test_benign_candidates_fail_a_full_comparison_at_most_alpha_of_the_time(benign_runs: dict[str, float]) -> None:
    standard_error = math.sqrt(ALPHA * (1 - ALPHA) / benign_runs["trials"])
    assert benign_runs["holm"] <= ALPHA + 2 * standard_error
    # the simulation can see a violation: the same cells without a correction fail too often
    assert benign_runs["none"] > ALPHA + 2 * standard_error


@pytest.mark.slow
def test_the_old_pooled_band_test_is_over_confident(benign_runs: dict[str, float]) -> None:
    # one-sided at alpha, per band cell, no correction: the item-level test keeps its level, the
    # pooled (item, ablation) pairs test rejects benign cells many times more often
    assert benign_runs["band item-level"] <= ALPHA
    assert benign_runs["band pooled"] > 3 * ALPHA


@pytest.mark.slow
def test_benign_candidates_with_improvements_failing_too() -> None:
    rng = np.random.default_rng(7)
    trials, failed = 80, 0
    for _ in range(trials):
        sim = Simulator(rng)
        run = sim.draw()
        comparison = compare_profiles(sim.profile(run), sim.profile(sim.benign(run, 0.2)), fail_on_improvement=True)
        assert comparison.family_size == 27  # 12 cells x (drop, rise) + 3 shift cells
        failed += not comparison.passed
    assert failed / trials <= ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / trials)


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["knowledge", "reasoning"])
def test_a_real_005_drop_fails_at_the_default_item_counts(suite: str) -> None:
    """Every right item of the intact cell turns wrong with probability 0.05 / accuracy, nothing else
    changes (the family is still the full comparison: 12 cells and 3 shift cells, 15 hypotheses): the intact
    cell must fail >= 80% of the time."""
    rng = np.random.default_rng(12 if suite == "knowledge" else 13)
    config, trials, fails = SUITES[suite], 120, 0
    right = round(config.items * config.accuracy)
    for _ in range(trials):
        sim = Simulator(rng)
        sim.ability[suite] = np.r_[np.ones(right), np.zeros(config.items - right)]  # the stated accuracy
        run = sim.draw()
        lose = np.flatnonzero(rng.random(config.items) < 0.05 / config.accuracy)
        comparison = compare_profiles(sim.profile(run), sim.profile(run, lose={suite: lose}))
        assert comparison.family_size == 15
        fails += comparison.cell(suite, INTACT).failed
    exact = detection_power(_intact_means(config.items, config.accuracy), 1, 0.05, ALPHA / 15, flip_rate=0.0)
    assert abs(fails / trials - exact) <= 3 * math.sqrt(exact * (1 - exact) / trials) + 0.02  # the model is right
    if suite == "knowledge":  # 264 items at 0.78: 0/1 accuracy alone still catches 0.05 with 80% power
        assert exact >= 0.8 and fails / trials >= 0.8 - 2 * math.sqrt(0.8 * 0.2 / trials)
    else:  # 214 items at 0.58: it does not at alpha/15, which is why cells are judged by p_correct
        assert exact < 0.8  # (its power at the reported detectable drop: test_score_statistics)
