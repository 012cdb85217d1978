"""Continuous per-item scores: the tests that judge them, checked against independent references and by
simulation of whole comparisons (every cell of a run, shift cells included).

* ``score_sign_flip_test`` and ``signed_rank_test`` against brute-force enumeration of every sign pattern;
* family-wise false alarms of complete comparisons of harmless candidates, with run-to-run score noise
  *and* a small systematic drift (what float noise and a benign fine-tune do), at most alpha;
* the power model: a drop of the reported detectable size is caught about 80% of the time;
* a candidate whose intact score holds while its dependence moves from shallow to deep layers: the
  shift cell catches it, the intact cell passes.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest

from pytest_layercheck.data.profile_data import INTACT, DepthProfile, Evaluation, SuiteInfo
from pytest_layercheck.data.statistics import (
    SCORE_GRID,
    score_detectable_drop,
    score_sign_flip_test,
    score_spread,
    signed_rank_test,
)
from pytest_layercheck.evaluation.comparison import compare_profiles
from pytest_layercheck.evaluation.comparison_result import SHIFT

ALPHA = 0.05
LAYERS = 30
BANDS = {"shallow": tuple(range(9)), "middle": tuple(range(9, 21)), "deep": tuple(range(21, 30))}


def _brute_force(values: list[float]) -> tuple[float, float]:
    """(P(sum <= observed), P(sum >= observed)) over all 2^n sign patterns of |values|."""
    observed = sum(values)
    sums = [
        sum(s * abs(v) for s, v in zip(signs, values, strict=True))
        for signs in itertools.product((-1, 1), repeat=len(values))
    ]
    return (sum(x <= observed + 1e-12 for x in sums) / len(sums), sum(x >= observed - 1e-12 for x in sums) / len(sums))


def test_score_sign_flip_test_is_the_exact_permutation_test_of_the_gridded_differences() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        d = rng.normal(-0.05, 0.1, size=11).clip(-1, 1)
        gridded = [round(x * SCORE_GRID) / SCORE_GRID for x in d]
        low, high = _brute_force(gridded)
        result = score_sign_flip_test(d)
        assert result.p_less == pytest.approx(low, abs=1e-9)
        assert result.p_greater == pytest.approx(high, abs=1e-9)


def test_differences_below_half_a_grid_step_are_no_change() -> None:
    result = score_sign_flip_test([0.4 / SCORE_GRID] * 50 + [-0.4 / SCORE_GRID] * 3)
    assert result.p_less == 1.0 and result.p_greater == 1.0


def test_signed_rank_test_matches_enumeration_of_signed_ranks() -> None:
    rng = np.random.default_rng(2)
    for _ in range(5):
        d = rng.standard_t(2, size=10)  # heavy tails
        ranks = np.argsort(np.argsort(np.abs(d))) + 1
        low, high = _brute_force(list(np.sign(d) * ranks))
        result = signed_rank_test(d)
        assert result.p_less == pytest.approx(low, abs=1e-9)
        assert result.p_greater == pytest.approx(high, abs=1e-9)


def test_a_single_huge_margin_cannot_outvote_many_small_losses() -> None:
    """The caution of heavy-tailed margins: the mean rises while most items lose; ranks see the losses."""
    d = [-0.3] * 30 + [40.0]
    assert np.mean(d) > 0
    assert signed_rank_test(d).p_less < 0.001


# ------------------------------------------------------------------------------ whole comparisons
@dataclass(frozen=True)
class ScoreSuite:
    items: int
    swept: int
    ability: float  # mean logit of the gold choice


SUITES = {
    "knowledge": ScoreSuite(264, 80, 1.5),
    "reasoning": ScoreSuite(214, 80, 0.0),
    "retrieval": ScoreSuite(100, 30, 1.5),
}


def _depth_profile(where: str) -> np.ndarray:
    """How much each layer's removal costs, by depth: ``shallow`` peaks early, ``deep`` late."""
    position = np.arange(LAYERS) / (LAYERS - 1)
    centre = {"shallow": 0.15, "deep": 0.8}[where]
    return 0.3 + 2.5 * np.exp(-((position - centre) ** 2) / 0.02)


class ScoreWorld:
    """Items with a latent gold logit; each run adds its own noise; removing a layer lowers every logit by
    that layer's cost times the item's sensitivity. p_correct = sigmoid(logit)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.logit = {s: rng.normal(c.ability, 1.5, size=c.items) for s, c in SUITES.items()}
        self.sensitivity = {s: rng.gamma(2.0, 0.5, size=c.swept) for s, c in SUITES.items()}

    def run(
        self, noise: float, drift: float = 0.0, where: str = "shallow", lose: float = 0.0, suite_lost: str = "knowledge"
    ) -> DepthProfile:
        suites, evaluations = {}, {}
        for s, c in SUITES.items():
            suites[s] = SuiteInfo(s, s, f"hash-{s}", "mc_text", tuple(f"{s}-{i:03d}" for i in range(c.items)), c.swept)
            logit = self.logit[s] + drift + self.rng.normal(0, noise, size=c.items)
            if lose and s == suite_lost:
                logit = logit - lose
            intact = 1 / (1 + np.exp(-logit))
            evaluations[(s, "mc_text", INTACT)] = _evaluation(s, INTACT, (), intact)
            cost = self.sensitivity[s][:, None] * _depth_profile(where)[None, :]
            swept = 1 / (1 + np.exp(-(logit[: c.swept, None] - cost)))
            for layer in range(LAYERS):
                key = f"skip={layer}"
                evaluations[(s, "mc_text", key)] = _evaluation(s, key, (layer,), swept[:, layer])
        return DepthProfile(
            model={"name": "sim", "num_layers": LAYERS, "dtype": "float32", "device": "cpu"},
            environment={},
            settings={"mode": "layers"},
            suites=suites,
            bands=dict(BANDS),
            evaluations=evaluations,
        )


def _evaluation(suite: str, key: str, removed: tuple[int, ...], p: np.ndarray) -> Evaluation:
    return Evaluation(suite, "mc_text", key, removed, {"acc": tuple((p > 0.5).astype(float)), "p_correct": tuple(p)})


def test_a_full_comparison_has_twelve_score_cells_and_three_shift_cells() -> None:
    world = ScoreWorld(np.random.default_rng(0))
    comparison = compare_profiles(world.run(0.1), world.run(0.1))
    assert comparison.family_size == 15
    assert {c.band for c in comparison.cells} == {INTACT, *BANDS, SHIFT}
    assert all(c.metric == "p_correct" for c in comparison.cells)
    assert {c.test for c in comparison.cells} == {"score sign-flip", "permutation"}


#: Harmless candidates: run noise (logit sd) and a systematic drift of every logit. Weight noise of 1e-3 and
#: a benign fine-tune of the default model moved per-item p_correct by a standard deviation of at most
#: 0.007 and cell means by at most 0.0015 (docs/statistics.md); logit noise 0.05 and drift -0.02 are several
#: times that, and logit noise 0.3 (exchangeable runs, no drift) is forty times it.
HARMLESS = [(0.01, 0.0), (0.05, 0.0), (0.3, 0.0), (0.05, -0.01), (0.05, -0.02)]


@pytest.mark.slow
@pytest.mark.parametrize("noise, drift", HARMLESS)
def test_harmless_candidates_fail_a_full_comparison_at_most_alpha_of_the_time(noise: float, drift: float) -> None:
    """Run noise (logit sd ``noise``) plus a systematic harmless drift of every logit (``drift``): the
    drift is real, so the paired tests may call it significant, but it is far below half the tolerance."""
    rng = np.random.default_rng(round(100 * noise - 1000 * drift))
    trials, failed = 120, 0
    for _ in range(trials):
        world = ScoreWorld(rng)
        comparison = compare_profiles(world.run(noise), world.run(noise, drift=drift))
        failed += not comparison.passed
    rate = failed / trials
    assert rate <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / trials), rate


@pytest.mark.slow
def test_a_drop_of_the_detectable_size_is_caught_about_as_often_as_promised() -> None:
    """Every item of one suite loses the same logit amount; its intact cell's reported detectable drop
    (at the observed spread) is the drop at which the test, at the run's level, should fire ~80% of the time."""
    rng = np.random.default_rng(7)
    world = ScoreWorld(rng)
    baseline = world.run(0.3)
    probe = compare_profiles(baseline, world.run(0.3))
    cell = probe.cell("reasoning", INTACT)
    target = cell.detectable_drop
    # the logit loss whose mean p_correct drop is the detectable drop (slope of the sigmoid near 0.5: 1/4)
    lose = target / 0.22
    hits, trials, drops = 0, 60, []
    for _ in range(trials):
        comparison = compare_profiles(baseline, world.run(0.3, lose=lose, suite_lost="reasoning"), tolerance=0.0)
        c = comparison.cell("reasoning", INTACT)
        drops.append(c.drop)
        hits += c.p_adjusted <= ALPHA
    assert np.mean(drops) == pytest.approx(target, rel=0.35)
    assert 0.6 <= hits / trials <= 1.0, (hits, trials, target)


def test_score_spread_never_falls_below_the_correlation_floor() -> None:
    before = np.linspace(0, 1, 101)
    floor = math.sqrt(2 * (1 - 0.9)) * float(before.std())
    assert score_spread(before, np.zeros(101), 0.9) == pytest.approx(floor)
    assert score_spread(before, np.linspace(-1, 1, 101), 0.9) == pytest.approx(float(np.linspace(-1, 1, 101).std()))
    assert score_detectable_drop(0.1, 100, 0.05) < score_detectable_drop(0.1, 25, 0.05) < math.inf


def test_a_capability_that_moves_deeper_fails_its_shift_cell_while_its_intact_cell_holds() -> None:
    """The same items, the same intact scores on average; only the layers they need moved deeper."""
    rng = np.random.default_rng(11)
    world = ScoreWorld(rng)
    baseline = world.run(0.1, where="shallow")
    candidate = world.run(0.1, where="deep")
    comparison = compare_profiles(baseline, candidate)
    intact = comparison.cell("knowledge", INTACT)
    shift = comparison.cell("knowledge", SHIFT)
    assert intact.status == "ok" and not intact.failed
    assert shift.status == "moved" and shift.failed and shift.delta > 0.3
    assert shift.p_adjusted <= ALPHA and shift.detectable_drop < comparison.max_shift
    assert not comparison.passed and comparison.moved
