"""Comparison of a profile with its baseline: the paired test, tolerances, statuses, refusals."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from profile_factory import DEFAULT_SUITES, make_profile

from pytest_layercheck.core.errors import BaselineError, ConfigError
from pytest_layercheck.data.profile_data import INTACT, DepthProfile
from pytest_layercheck.data.statistics import exact_mcnemar, sign_flip_test
from pytest_layercheck.evaluation.checks import CellCheck, run_check
from pytest_layercheck.evaluation.comparison import baseline_sensitivity, compare_profiles, sensitivity_warning
from pytest_layercheck.evaluation.comparison_result import EFFECT_FLOOR, SHIFT, Tolerance
from pytest_layercheck.evaluation.drop_cells import classify

# ------------------------------------------------------------------------------ exact McNemar


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (0, 0, 1.0),  # no discordant pairs: no evidence at all
        (3, 3, 1.0),  # balanced
        (0, 5, 2 / 32),  # 2 * P(X <= 0), X ~ Bin(5, 1/2)
        (1, 9, 2 * (1 + 10) / 1024),
        (10, 2, 2 * (1 + 12 + 66) / 4096),
        (0, 1, 1.0),  # 2 * 1/2
        (4, 5, 1.0),  # 2 * tail > 1 is capped
    ],
)
def test_exact_mcnemar_matches_hand_computed_values(b: int, c: int, expected: float) -> None:
    assert exact_mcnemar(b, c) == pytest.approx(expected, rel=1e-12)


def test_exact_mcnemar_is_symmetric_and_handles_large_counts() -> None:
    assert exact_mcnemar(7, 19) == exact_mcnemar(19, 7)
    tiny = exact_mcnemar(0, 5000)  # 2**-4999 underflows to 0.0 rather than raising OverflowError
    assert 0.0 <= tiny < 1e-300
    assert 0 < exact_mcnemar(7000, 8000) < 1e-10


def test_exact_mcnemar_rejects_negative_counts() -> None:
    with pytest.raises(ValueError):
        exact_mcnemar(-1, 3)


def test_exact_mcnemar_agrees_with_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for b, c in [(0, 1), (1, 9), (5, 5), (3, 17), (40, 60), (120, 80)]:
        expected = stats.binomtest(b, b + c, 0.5).pvalue
        assert exact_mcnemar(b, c) == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------------------ tolerance


@pytest.mark.parametrize(
    ("spec", "max_drop", "relative"),
    [("0.05", 0.05, None), ("5%", 0.0, 0.05), ("0.02, 5%", 0.02, 0.05), (0.1, 0.1, None)],
)
def test_tolerance_parse(spec: str | float, max_drop: float, relative: float | None) -> None:
    tol = Tolerance.parse(spec)
    assert tol.max_drop == pytest.approx(max_drop)
    assert tol.relative == (pytest.approx(relative) if relative is not None else None)


@pytest.mark.parametrize("spec", ["", "abc", "5%%", "-0.1", "0.1,0.2", "150%"])
def test_tolerance_parse_rejects_nonsense_with_a_fix(spec: str) -> None:
    with pytest.raises(ConfigError) as info:
        Tolerance.parse(spec)
    assert info.value.fix


def test_tolerance_allows_the_larger_of_absolute_and_relative() -> None:
    tol = Tolerance(max_drop=0.02, relative=0.10)
    assert tol.allowed(0.8) == pytest.approx(0.08)
    assert tol.allowed(0.1) == pytest.approx(0.02)
    assert str(tol) == "0.02 or 10%"
    assert str(Tolerance.parse("5%")) == "5%"


def test_classify_rules() -> None:
    assert classify(-0.2, 0.05, 0.001, 0.05) == "regressed"
    assert classify(-0.2, 0.05, 0.2, 0.05) == "changed"
    assert classify(+0.2, 0.05, 0.001, 0.05) == "improved"
    assert classify(-0.02, 0.05, 1e-9, 0.05) == "ok"  # significant but under half the tolerance
    assert classify(-0.03, 0.05, 1e-9, 0.05) == "regressed"  # significant and over half the tolerance
    assert classify(-0.03, 0.05, 0.2, 0.05) == "ok"  # within tolerance, not significant
    assert classify(0.62 - 0.645, 0.05, 1e-9, 0.05) == "regressed"  # exactly half, despite float error
    assert classify(-0.05, 0.05, 0.05, 0.05) == "regressed"  # p <= alpha rejects
    assert classify(-0.01, 0.0, 1e-3, 0.05) == "regressed"  # zero tolerance: any significant drop
    assert classify(math.nan, 0.05, 1.0, 0.05) == "ok"
    assert classify(0.0, 0.05, 0.0, 0.05) == "ok"


# ------------------------------------------------------------------------------ statuses


def test_identical_profiles_are_all_ok() -> None:
    result = compare_profiles(make_profile(), make_profile())
    assert result.passed
    assert result.cells and all(c.status == "ok" for c in result.cells)
    assert all(c.worse == c.better == 0 and c.p_value == 1.0 for c in result.cells)
    assert not result.warnings and not result.notes
    # one cell per suite x (intact + 3 bands) and one shift cell per suite, each suite's cell metric only
    assert len(result.cells) == 3 * 4 + 3 and result.family_size == 15
    assert {c.metric for c in result.cells} == {"p_correct", "exact_match"}
    assert {c.band for c in result.cells if c.test == "permutation"} == {SHIFT}


def test_large_drop_on_many_items_regresses_exactly_that_cell() -> None:
    result = compare_profiles(make_profile(), make_profile(flip={("knowledge", "shallow"): 30}))
    assert [c.label for c in result.regressions] == ["knowledge/shallow p_correct"]
    cell = result.cell("knowledge", "shallow")
    assert (cell.worse, cell.better, cell.pairs) == (60, 0, 400)  # 30 items x 2 shallow layers
    assert cell.delta == pytest.approx(-30 / 200)
    assert cell.p_value < 1e-10
    assert cell.failed and not result.passed
    assert all(c.status == "ok" for c in result.cells if c is not cell)
    # the shallow layers now cost more, so knowledge's centre of depth moved shallower, by less than allowed
    assert -EFFECT_FLOOR * result.max_shift < result.cell("knowledge", SHIFT).delta < 0


def test_small_significant_drop_within_tolerance_is_ok() -> None:
    result = compare_profiles(make_profile(), make_profile(flip={("knowledge", "shallow"): 4}))
    cell = result.cell("knowledge", "shallow")
    assert cell.delta == pytest.approx(-0.02)
    assert cell.p_value < 0.05  # 8 pairs worse, none better: real, but small
    assert cell.status == "ok" and result.passed


def test_large_drop_on_few_items_is_changed_not_regressed() -> None:
    suites = {"knowledge": ("mc_letters", 20)}
    current = make_profile(suites=suites, flip={("knowledge", "intact"): 2})
    result = compare_profiles(make_profile(suites=suites), current)
    cell = result.cell("knowledge", "intact")
    assert cell.delta == pytest.approx(-0.10)  # twice the tolerance...
    assert cell.p_value == pytest.approx(0.25)  # ...but two items could be noise (one-sided)
    before = make_profile(suites=suites).evaluation("knowledge").outcomes["p_correct"]
    first_right = [f"knowledge-item-{i:04d}" for i, v in enumerate(before) if v == 1.0][:2]
    assert cell.worse_items == tuple(first_right) and cell.better_items == ()  # the two flipped items
    assert cell.status == "changed" and not cell.failed
    assert result.passed and cell in result.changed


def test_improvements_pass_by_default_and_fail_on_request() -> None:
    baseline, current = make_profile(), make_profile(flip={("reasoning", "middle"): -25})
    result = compare_profiles(baseline, current)
    assert [c.label for c in result.improvements] == ["reasoning/middle p_correct"]
    assert not result.regressions and not any(c.failed for c in result.improvements)
    # the middle layers cost less now, so reasoning's centre of depth moved shallower: that fails on its own
    assert [c.label for c in result.moved] == ["reasoning/shift p_correct"] and result.moved[0].delta < 0
    assert compare_profiles(baseline, current, max_shift=0.5).passed
    strict = compare_profiles(baseline, current, fail_on_improvement=True, max_shift=0.5)
    assert not strict.passed and [c.label for c in strict.failures] == ["reasoning/middle p_correct"]


def test_relative_tolerance_can_absorb_a_drop() -> None:
    current = make_profile(flip={("knowledge", "shallow"): 30})  # 0.43 -> 0.28
    assert compare_profiles(make_profile(), current, tolerance="80%").passed  # half of 0.344 > 0.15
    assert not compare_profiles(make_profile(), current, tolerance="50%").passed  # half of 0.215 < 0.15
    assert not compare_profiles(make_profile(), current, tolerance="5%").passed


def test_bands_mode_pools_one_ablation_per_band() -> None:
    result = compare_profiles(make_profile(mode="bands"), make_profile(mode="bands", flip={("retrieval", "deep"): 20}))
    cell = result.cell("retrieval", "deep")
    assert cell.ablations == ("band:deep",) and cell.pairs == 200
    assert [c.label for c in result.regressions] == ["retrieval/deep exact_match"]


def test_lookup_by_capability_band_and_metric() -> None:
    result = compare_profiles(make_profile(), make_profile(), metrics=["acc", "acc_norm"])
    assert result.cell("knowledge", "intact", "acc").metric == "acc"
    with pytest.raises(KeyError):  # the default metric of multiple choice is p_correct, not compared here
        result.cell("knowledge", "intact")
    assert result["knowledge", "deep", "acc_norm"].metric == "acc_norm"
    with pytest.raises(KeyError):
        result.cell("knowledge", "nowhere")
    # retrieval has neither metric: skipped silently, it is not an error to ask for acc_norm
    assert not any(c.suite == "retrieval" for c in result.cells) and not result.warnings


def test_an_unknown_continuous_metric_is_compared_by_ranks() -> None:
    result = compare_profiles(make_profile(), make_profile(flip={("knowledge", "intact"): 40}), metrics=["logprob"])
    intact = result.cell("knowledge", "intact", "logprob")
    assert intact.test == "signed-rank" and intact.status == "ok"
    assert intact.delta == pytest.approx(0.0)  # the median item did not move (40 of 200 fell by 0.5)
    assert intact.p_value < 1e-6 and not result.warnings
    assert not any(c.band == SHIFT for c in result.cells)  # no centre of depth for unbounded scores


# ------------------------------------------------------------------------------ compatibility


def _refusal(baseline: DepthProfile, current: DepthProfile) -> str:
    with pytest.raises(BaselineError) as info:
        compare_profiles(baseline, current)
    assert "--layercheck-update" in str(info.value.fix)
    return info.value.problem


def test_refuses_different_layer_count() -> None:
    assert "baseline has 6 layers, this model has 9" in _refusal(make_profile(), make_profile(num_layers=9))


def test_refuses_changed_suite_content() -> None:
    message = _refusal(make_profile(), make_profile(content_hashes={"reasoning": "hash-v2"}))
    assert "suite 'reasoning' changed" in message and "hash-v2" in message


def test_refuses_bands_mapping_to_other_layers() -> None:
    bands = {"shallow": (0,), "middle": (1, 2, 3), "deep": (4, 5)}
    message = _refusal(make_profile(), make_profile(bands=bands))
    assert "bands map to different layers" in message and "shallow=[0, 1]" in message and "shallow=[0]" in message


def test_refuses_different_items_and_names_the_limit() -> None:
    small = {name: (protocol, 50) for name, (protocol, _) in DEFAULT_SUITES.items()}
    message = _refusal(make_profile(), make_profile(suites=small, limit=50))
    assert "suite 'knowledge' has different items: baseline 200 items, this run 50" in message
    assert "limit: baseline None, this run 50" in message
    renamed = _refusal(make_profile(), make_profile(item_prefix="q"))
    assert "first difference at position 0: 'knowledge-item-0000' vs 'knowledge-q-0000'" in renamed


def test_refuses_different_mode_and_lists_every_problem() -> None:
    message = _refusal(make_profile(), make_profile(mode="bands", num_layers=9))
    assert "ablation mode: baseline used 'layers', this run uses 'bands'" in message
    assert "layer count" in message and "bands map to different layers" in message


def test_other_weights_are_noted() -> None:
    result = compare_profiles(make_profile(), make_profile(fingerprint="0" * 64))
    assert result.passed and not result.warnings
    assert any("fingerprint ffffffffffff -> 000000000000" in n for n in result.notes)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"dtype": "bfloat16"}, "dtype: baseline float32, this run bfloat16"),
        ({"device": "cuda:0"}, "device type: baseline cpu, this run cuda"),
    ],
)
def test_other_precision_is_refused_unless_allowed(model: dict[str, str], expected: str) -> None:
    current = make_profile(model=model)
    with pytest.raises(BaselineError) as info:
        compare_profiles(make_profile(), current)
    assert expected in info.value.problem and "--layercheck-allow-precision-mismatch" in str(info.value.fix)
    result = compare_profiles(make_profile(), current, allow_precision_mismatch=True)
    assert result.passed and result.precision_mismatch
    assert any(expected in w and "precision noise" in w for w in result.warnings)


def test_same_device_type_on_another_index_is_not_a_mismatch() -> None:
    result = compare_profiles(make_profile(model={"device": "cuda:0"}), make_profile(model={"device": "cuda:1"}))
    assert not result.precision_mismatch and not result.warnings


def test_unrecorded_precision_is_a_warning() -> None:
    result = compare_profiles(make_profile(model={"dtype": None}), make_profile())
    assert any("dtype not recorded" in w for w in result.warnings)


def test_missing_and_new_suites_are_reported_not_crashed_on() -> None:
    baseline = make_profile(suites={"knowledge": ("mc_letters", 50), "reasoning": ("mc_text", 50)})
    current = make_profile(suites={"knowledge": ("mc_letters", 50), "retrieval": ("generate_until", 50)})
    result = compare_profiles(baseline, current)
    assert result.missing_suites == ["reasoning"] and result.new_suites == ["retrieval"]
    assert {c.suite for c in result.cells} == {"knowledge"}
    assert any("reasoning" in w for w in result.warnings) and any("retrieval" in w for w in result.warnings)


def test_invalid_alpha_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        compare_profiles(make_profile(), make_profile(), alpha=1.5)


# ------------------------------------------------------------------------------ item-level tests


def test_band_cells_are_tested_over_items_not_pooled_pairs() -> None:
    baseline, current = make_profile(), make_profile(flip={("knowledge", "shallow"): 30})
    cell = compare_profiles(baseline, current).cell("knowledge", "shallow")
    keys = ("layer:00", "layer:01")
    before = [sum(baseline.evaluation("knowledge", k).outcomes["acc"][i] for k in keys) for i in range(200)]
    after = [sum(current.evaluation("knowledge", k).outcomes["acc"][i] for k in keys) for i in range(200)]
    steps = [int(a - b) for a, b in zip(after, before, strict=True)]
    assert cell.test == "score sign-flip" and cell.items == 200 and cell.pairs == 400
    assert cell.p_value == pytest.approx(sign_flip_test(steps).p_less)  # 0/1 scores: the same test
    acc = compare_profiles(baseline, current, metrics=["acc"]).cell("knowledge", "shallow", "acc")
    assert acc.test == "sign-flip" and acc.p_value == sign_flip_test(steps).p_less
    assert len(cell.worse_items) == sum(s < 0 for s in steps) and not cell.better_items
    assert cell.ci_low < cell.delta < cell.ci_high < 0


def _with_sweep(profile: DepthProfile, sweep: int) -> DepthProfile:
    """The profile as the lead's sweep_items makes it: intact on every item, ablations on the first ``sweep``."""
    evaluations = {
        key: ev if key[2] == INTACT else replace(ev, outcomes={m: v[:sweep] for m, v in ev.outcomes.items()})
        for key, ev in profile.evaluations.items()
    }
    suites = {name: replace(info, sweep_items=sweep) for name, info in profile.suites.items()}
    return replace(profile, evaluations=evaluations, suites=suites)


def test_sweeps_shorter_than_the_intact_evaluation_pair_the_leading_items() -> None:
    baseline = _with_sweep(make_profile(), 50)
    current = _with_sweep(make_profile(flip={("reasoning", "deep"): 20, ("reasoning", "intact"): 3}), 50)
    result = compare_profiles(baseline, current)
    intact, deep = result.cell("reasoning", "intact"), result.cell("reasoning", "deep")
    assert intact.items == 200 and intact.test == "score sign-flip" and len(intact.worse_items) == 3
    assert deep.items == 50 and deep.pairs == 100
    assert all(int(i.rsplit("-", 1)[1]) < 50 for i in deep.worse_items)
    assert not result.warnings


def test_partial_profiles_compare_the_cells_both_hold() -> None:
    baseline = make_profile()
    partial = replace(
        baseline,
        evaluations={
            k: v
            for k, v in baseline.evaluations.items()
            if not (k[0] == "knowledge" and k[2] in ("layer:04", "layer:05"))
        },
    )
    result = compare_profiles(baseline, partial)
    assert ("knowledge", "deep") not in {(c.suite, c.band) for c in result.cells} and len(result.cells) == 11 + 3
    assert result.passed and not result.warnings
    half = replace(
        baseline,
        evaluations={k: v for k, v in baseline.evaluations.items() if not (k[0] == "knowledge" and k[2] == "layer:05")},
    )
    result = compare_profiles(baseline, half)
    assert len(result.cells) == 11 + 3
    assert any("knowledge/deep p_correct" in w and "not compared" in w for w in result.warnings)


def test_ablations_removing_other_layers_are_refused() -> None:
    baseline = make_profile()
    moved = dict(baseline.evaluations)
    key = ("knowledge", "mc_letters", "layer:05")
    moved[key] = replace(moved[key], removed_layers=(4,))
    assert "different layers removed: 'layer:05'" in _refusal(baseline, replace(baseline, evaluations=moved))


# ------------------------------------------------------------------------------ multiplicity and the fail rule


def test_correction_is_applied_over_every_compared_cell() -> None:
    baseline, current = make_profile(), make_profile(flip={("knowledge", "intact"): 7})
    raw = compare_profiles(baseline, current, correction="none").cell("knowledge", "intact")
    assert raw.p_value == raw.p_adjusted == pytest.approx(2**-7)
    bonferroni = compare_profiles(baseline, current, correction="bonferroni")
    assert bonferroni.cell("knowledge", "intact").p_adjusted == pytest.approx(15 * 2**-7)  # 12 cells, 3 shifts
    holm = compare_profiles(baseline, current)
    assert holm.correction == "holm" and holm.family_size == 15
    # the intact drop also moves knowledge's centre of depth a little: Holm's first or second step
    assert holm.cell("knowledge", "intact").p_adjusted in (pytest.approx(15 * 2**-7), pytest.approx(14 * 2**-7))
    assert raw.status == "regressed" and holm.cell("knowledge", "intact").status == "ok"  # 0.094 > 0.05
    with pytest.raises(ConfigError):
        compare_profiles(baseline, current, correction="fdr")


def test_a_real_drop_at_the_tolerance_fails_and_trivial_ones_do_not() -> None:
    suites = {"knowledge": ("mc_letters", 264)}
    baseline = make_profile(suites=suites, accuracy=0.78)
    at_tolerance = compare_profiles(
        baseline, make_profile(suites=suites, accuracy=0.78, flip={("knowledge", "intact"): 13})
    )
    cell = at_tolerance.cell("knowledge", "intact")
    assert cell.drop == pytest.approx(13 / 264) and cell.drop < cell.allowed  # under the tolerance...
    assert cell.status == "regressed" and not at_tolerance.passed  # ...and still caught
    trivial = compare_profiles(baseline, make_profile(suites=suites, accuracy=0.78, flip={("knowledge", "intact"): 6}))
    assert trivial.cell("knowledge", "intact").status == "ok"  # 0.023 < half the tolerance


def test_detectable_drop_names_its_level_and_flip_rate() -> None:
    result = compare_profiles(
        make_profile(), make_profile(flip={("knowledge", "intact"): 5, ("knowledge", "shallow"): -5}), metrics=["acc"]
    )
    assert result.detection_alpha == pytest.approx(0.05 / 10)  # 4 acc cells of 2 suites, 2 shift cells
    intact = result.cell("knowledge", "intact", "acc")
    assert intact.flip_rate == 0.0  # nothing rose: no background flips seen
    shallow = result.cell("knowledge", "shallow", "acc")
    assert shallow.flip_rate > 0 and shallow.detectable_drop > 0
    fixed = compare_profiles(make_profile(), make_profile(), flip_rate=0.05, metrics=["acc"])
    assert all(c.flip_rate == 0.05 for c in fixed.cells if c.band != SHIFT)
    assert (
        fixed.cell("knowledge", "intact", "acc").detectable_drop
        > compare_profiles(make_profile(), make_profile(), metrics=["acc"])
        .cell("knowledge", "intact", "acc")
        .detectable_drop
    )
    # continuous scores: no flip rate, a spread instead, floored by the assumed correlation
    scores = compare_profiles(make_profile(), make_profile()).cell("knowledge", "intact")
    assert math.isnan(scores.flip_rate) and scores.score_sd > 0 and scores.detectable_drop < math.inf


def test_sensitivity_warning_and_strict_mode() -> None:
    small = {"retrieval": ("generate_until", 10)}
    before = baseline_sensitivity(make_profile(suites=small), tolerance=0.05)
    text = sensitivity_warning(before)
    assert text and "retrieval/intact exact_match" in text and "10 items" in text and "Holm over 5" in text
    with pytest.raises(ConfigError) as info:
        sensitivity_warning(before, strict=True)
    assert "--layercheck-limit" in str(info.value.fix)
    assert sensitivity_warning(baseline_sensitivity(make_profile(), tolerance=0.5)) is None


# ------------------------------------------------------------------------------ checks


@pytest.mark.parametrize(
    ("fields", "max_drop", "relative"),
    [
        ({"max_drop": 0.05}, 0.05, None),
        ({"max_drop": "10%"}, None, 0.10),
        ({"max_drop": " 0.02, 5% "}, 0.02, 0.05),
        ({"relative": 0.1}, None, 0.1),
        ({"relative": "10%"}, None, 0.1),
        ({"max_drop": 0.03, "relative": "10%"}, 0.03, 0.1),
    ],
)
def test_check_percentages_are_relative(
    fields: dict[str, object], max_drop: float | None, relative: float | None
) -> None:
    check = CellCheck.from_mapping({"capability": "knowledge", **fields}, where="t")
    assert check.max_drop == (pytest.approx(max_drop) if max_drop is not None else None)
    assert check.relative == (pytest.approx(relative) if relative is not None else None)
    tolerance = check.tolerance(Tolerance(max_drop=0.2))
    assert tolerance.allowed(0.5) == pytest.approx(max(max_drop or 0, (relative or 0) * 0.5))


@pytest.mark.parametrize(
    "fields",
    [
        {"max_drop": "10%", "relative": "20%"},
        {"max_drop": "abc"},
        {"relative": "x"},
        {"max_drop": [1]},
        {"max_drop": "150%"},
    ],
)
def test_bad_check_tolerances_are_config_errors(fields: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        CellCheck.from_mapping({"capability": "knowledge", **fields}, where="guards.yaml:3")
    assert "guards.yaml:3" in info.value.problem and info.value.fix


def test_check_alpha_and_min_read_percentages_as_shares() -> None:
    check = CellCheck.from_mapping({"capability": "knowledge", "alpha": "5%", "min": "30%"}, where="t")
    assert check.alpha == pytest.approx(0.05) and check.min == pytest.approx(0.3)


@pytest.mark.parametrize("flips", [7, 9])
def test_a_check_gives_the_sessions_verdict(flips: int) -> None:
    baseline, current = make_profile(), make_profile(flip={("knowledge", "intact"): flips})
    session = compare_profiles(baseline, current).cell("knowledge", "intact")
    outcome = run_check(CellCheck("knowledge", INTACT), current, baseline, Tolerance(), 0.05)
    assert outcome.passed == (not session.failed)
    assert session.failed == (flips == 9)  # 7 flips: p = 2^-7 is significant alone, not over 15 cells
    if not outcome.passed:
        for part in (
            "one-sided score sign-flip p = ",
            "Holm-adjusted over 15 hypotheses p = ",
            "95% CI of the change",
            "detectable drop",
            f"{flips} of 200 items got worse",
            "worse: knowledge-item-",
            "p (holm)",
            "score sign-flip (200 items)",
        ):
            assert part in outcome.message


def test_a_check_on_another_metric_joins_the_family() -> None:
    baseline, current = make_profile(), make_profile(flip={("knowledge", "intact"): 9})
    outcome = run_check(CellCheck("knowledge", INTACT, metric="acc_norm"), current, baseline, Tolerance(), 0.05)
    # the session's 12 cells and 3 shift cells, plus the 4 acc_norm cells and the acc_norm shift cell of knowledge
    assert not outcome.passed and "over 20 hypotheses" in outcome.message


def test_a_shift_check_fails_when_the_capability_moved_along_depth() -> None:
    baseline, current = make_profile(), make_profile(flip={("reasoning", "middle"): -25})  # middle layers cost less
    moved = run_check(
        CellCheck.from_mapping({"capability": "reasoning", "band": "shift", "max_shift": 0.1}, where="t"),
        current,
        baseline,
        Tolerance(),
        0.05,
    )
    assert not moved.passed and moved.cell is not None and moved.cell.status == "moved"
    assert "reasoning/shift: reasoning moved shallower along depth" in moved.message
    assert "two-sided paired permutation p = " in moved.message and "Holm-adjusted over 15 hypotheses" in moved.message
    assert moved.properties["status"] == "moved" and moved.properties["delta"] < 0
    loose = run_check(CellCheck("reasoning", SHIFT, max_shift=0.5), current, baseline, Tolerance(), 0.05)
    assert loose.passed and "centre of depth" in loose.message
    still = run_check(CellCheck("knowledge", SHIFT), current, baseline, Tolerance(), 0.05)  # knowledge did not move
    assert still.passed and still.cell is not None and still.cell.delta == 0


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"band": "intact", "max_shift": 0.1}, "applies to the shift band only"),
        ({"band": "shift", "max_drop": 0.05}, "takes max_shift, not max_drop"),
        ({"band": "shift", "min": 0.3}, "takes max_shift, not max_drop"),
        ({"band": "shift", "max_shift": 1.5}, "field 'max_shift'"),
        ({"band": "shift", "max_shift": "far"}, "must be a number"),
    ],
)
def test_bad_shift_checks_are_config_errors(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        CellCheck.from_mapping({"capability": "knowledge", **fields}, where="guards.yaml:7")
    assert problem in info.value.problem and "guards.yaml:7" in info.value.problem


def test_a_metric_that_is_not_a_number_per_item_is_skipped_with_a_warning() -> None:
    """A metric read as NaN (lm-eval logs some as lists) must not enter the family as an untestable cell."""
    baseline = make_profile()
    broken = {
        key: replace(ev, outcomes={**ev.outcomes, "f1": tuple(math.nan for _ in ev.outcomes["p_correct"])})
        for key, ev in baseline.evaluations.items()
        if key[0] == "knowledge"
    }
    current = replace(baseline, evaluations={**baseline.evaluations, **broken})
    result = compare_profiles(
        replace(baseline, evaluations={**baseline.evaluations, **broken}),
        current,
        metrics={"knowledge": ["p_correct", "f1"]},
    )
    assert {c.metric for c in result.cells} == {"p_correct"} and result.family_size == 5
    assert any("'f1' is not a finite number per item" in w for w in result.warnings)
