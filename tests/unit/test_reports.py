"""Renderers: terminal table, GitHub markdown and annotations, JSON report, heatmap."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from profile_factory import make_profile

from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.bands import format_layers
from pytest_layercheck.data.profile_data import DepthProfile
from pytest_layercheck.evaluation.comparison import compare_profiles
from pytest_layercheck.evaluation.comparison_result import DEFAULT_MAX_SHIFT, ProfileComparison
from pytest_layercheck.report import (
    append_step_summary,
    github_annotations,
    markdown_table,
    plot_layer_heatmap,
    render_markdown,
    render_terminal,
    write_json_report,
)
from pytest_layercheck.report.format import cell_text, fmt_p
from pytest_layercheck.report.json_report import comparison_to_json
from pytest_layercheck.report.markdown import TRUNCATED
from pytest_layercheck.suites.builtin import resolve_suite


@pytest.fixture(scope="module")
def regressed() -> tuple[ProfileComparison, object]:
    current = make_profile(flip={("knowledge", "shallow"): 30}, fingerprint="abcdef0123456789" * 4)
    return compare_profiles(make_profile(), current), current


def test_formatting_helpers() -> None:
    assert format_layers((0, 1, 2, 3), "L") == "L0-3" and format_layers((0, 2, 5), "L") == "L0,2,5"
    assert format_layers((4,), "L") == "L4" and format_layers((0, 1, 2, 5), "L") == "L0-2,5" and format_layers(()) == ""
    assert fmt_p(0.0031) == "0.003" and fmt_p(2.1e-05) == "2.1e-05"
    assert cell_text(float("nan")) == "n/a"


def test_terminal_shows_values_metrics_and_model() -> None:
    profile = make_profile()
    text = render_terminal(profile, width=160)
    assert "tiny-model" in text and "fingerprint ffffffffffff" in text
    # multiple choice is judged by p_correct (the title may wrap, so compare the words)
    assert "metric: p_correct (knowledge, reasoning), exact_match (retrieval)" in " ".join(text.split())
    for header in ("intact", "shallow (L0-1)", "middle (L2-3)", "deep (L4-5)"):
        assert header in text
    assert text.index("intact") < text.index("shallow") < text.index("middle") < text.index("deep (")
    for cell in profile.cells():
        assert f"{cell.value:.3f}" in text
    assert "\x1b[" not in text  # no colour codes unless asked


def test_terminal_with_comparison_marks_the_failing_cell(regressed: tuple[ProfileComparison, object]) -> None:
    comparison, current = regressed
    text = render_terminal(current, comparison, width=200)
    assert "0.280 (-0.150 ✗)" in text
    assert "vs baseline ffffffffffff" in text and "fingerprint abcdef012345" in text
    assert "FAILED: 1 regressed, 14 ok" in text  # 12 band cells and a shift cell per suite
    assert "knowledge/shallow p_correct dropped 0.430 -> 0.280" in text and "43 of 200 items" in text
    # the evidence table has a row per shift cell: the knowledge centre moved shallower, significantly but
    # by less than half of max_shift, so it is ok (no mark)
    shift = comparison.cell("knowledge", "shift")
    assert shift.status == "ok" and shift.p_adjusted <= 0.05 and -0.05 < shift.delta < 0
    rows = {line.split()[0]: line for line in text.splitlines() if re.match(r"\w+/shift ", line)}
    assert list(rows) == ["knowledge/shift", "reasoning/shift", "retrieval/shift"]
    assert rows["knowledge/shift"].split()[1] == f"{shift.delta:+.3f}" and not rows[
        "knowledge/shift"
    ].rstrip().endswith("✗")
    flat = " ".join(text.split())
    assert "permutation for knowledge/shift, reasoning/shift, retrieval/shift" in flat
    assert "corrected for 15 cells (holm)" in flat and "Holm over 15 hypotheses" in flat
    coloured = render_terminal(current, comparison, width=200, color=True)
    assert "\x1b[1;31m" in coloured  # bold red for the regression


def test_markdown_table_and_regressions(regressed: tuple[ProfileComparison, object]) -> None:
    comparison, current = regressed
    table = markdown_table(current)
    lines = table.splitlines()
    assert lines[0].startswith("| suite") and set(lines[1]) <= {"|", "-", ":", " "}
    assert len(lines) == 2 + 3
    text = render_markdown(current, comparison)
    assert "❌ 1 failing cell(s)" in text and "| 0.280 (-0.150 ✗)" in text
    assert "**Regressions**" in text
    regression = next(line for line in text.splitlines() if line.startswith("- ✗ `knowledge/shallow p_correct`"))
    assert "p=" in regression and "0.430 -> 0.280" in regression
    for part in ("43 of 200 items worse", "; score sign-flip p=", "adjusted p=", "95% CI [", "detectable drop 0.0"):
        assert part in regression
    ids = text.splitlines()[text.splitlines().index(regression) + 1]
    assert ids.startswith("  - worse: `knowledge-item-0001`") and "and 33 more (see the JSON report)" in ids
    row = next(line for line in text.splitlines() if line.startswith("| `knowledge/shallow p_correct`"))  # evidence
    assert [part.strip() for part in row.split("|")[2:5]] == ["-0.150", "score sign-flip", "200"]
    shift = comparison.cell("knowledge", "shift")
    row = next(line for line in text.splitlines() if line.startswith("| `knowledge/shift p_correct`"))
    parts = [part.strip() for part in row.split("|")]
    assert parts[2:5] == [f"{shift.delta:+.3f}", "permutation", "200"] and parts[-2] == "ok"
    assert len([line for line in text.splitlines() if re.match(r"\| `\w+/shift ", line)]) == 3
    assert "Holm over 15 hypotheses" in text and "**Moved along depth**" not in text
    assert "✅ passed" in render_markdown(current, compare_profiles(current, current))


def test_markdown_and_terminal_list_cells_that_moved_along_depth() -> None:
    """Damage moved from the shallow to the deep band: the centre of depth moves deeper in every suite, and
    each moved shift cell fails the run and is listed with its evidence, like a regression."""
    baseline = make_profile(num_layers=12, band_damage={"shallow": 0.45, "middle": 0.12, "deep": 0.03})
    current = make_profile(num_layers=12, band_damage={"shallow": 0.03, "middle": 0.12, "deep": 0.45})
    comparison = compare_profiles(baseline, current)
    moved = comparison.moved
    assert [c.suite for c in moved] == ["knowledge", "reasoning", "retrieval"] and all(c.failed for c in moved)
    assert all(c.delta > DEFAULT_MAX_SHIFT for c in moved)  # well past the allowed move, deeper
    text = render_markdown(current, comparison)
    assert f"❌ {len(comparison.failures)} failing cell(s)" in text and len(comparison.failures) == 6
    assert "3 moved along depth" in text
    lines = text.splitlines()
    section = lines[lines.index("**Moved along depth**") + 1 :]
    bullets = section[: section.index("")]
    assert len(bullets) == 3
    cell = moved[0]
    assert bullets[0].startswith(
        f"- ✗ `knowledge/shift p_correct` moved deeper: centre of depth {cell.baseline:.3f} -> {cell.current:.3f} (p="
    )
    for part in (
        f"Δ {cell.delta:+.3f} of depth vs allowed 0.1",
        "200 items x 12 single-layer removals",
        "; permutation p=",
        "adjusted p=",
        "95% CI [",
        "detectable shift 0.0",
    ):
        assert part in bullets[0]
    assert "items worse" not in bullets[0] and "worse:" not in "".join(section[:4])  # no item flips to list
    row = next(line for line in lines if line.startswith("| `knowledge/shift p_correct`"))
    assert row.split("|")[-2].strip() == "✗ moved"
    terminal = render_terminal(current, comparison, width=200)
    assert "FAILED: 3 regressed, 3 moved along depth, 3 improved, 6 ok" in terminal
    assert (
        f"✗ knowledge/shift p_correct moved deeper: centre of depth {cell.baseline:.3f} -> {cell.current:.3f}"
        in terminal
    )
    assert github_annotations(comparison)[3].startswith(
        "::error title=layercheck::knowledge/shift p_correct moved deeper"
    )


def test_annotations_are_workflow_commands(regressed: tuple[ProfileComparison, object]) -> None:
    comparison, _ = regressed
    lines = github_annotations(comparison)
    assert len(lines) == 1
    assert lines[0].startswith("::error title=layercheck::knowledge/shallow p_correct dropped 0.430 -> 0.280 (p=")


def test_annotations_are_capped_at_ten() -> None:
    flips = {
        (suite, band): 25
        for suite in ("knowledge", "reasoning", "retrieval")
        for band in ("intact", "shallow", "middle", "deep")
    }
    comparison = compare_profiles(make_profile(), make_profile(flip=flips))
    assert len(comparison.regressions) == 12
    lines = github_annotations(comparison)
    assert len(lines) == 10 and all(line.startswith("::error") for line in lines)
    assert "3 more layercheck findings" in lines[-1]


def test_annotation_messages_are_escaped() -> None:
    comparison = compare_profiles(make_profile(), make_profile())
    comparison.warnings.append("50% of it\nbroke")
    assert github_annotations(comparison) == ["::warning title=layercheck::50%25 of it%0Abroke"]


def test_step_summary_appends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert append_step_summary("first\n") == summary
    append_step_summary("second\n")
    assert summary.read_text() == "# earlier step\n\nfirst\n\nsecond\n"
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    assert append_step_summary("ignored") is None


def test_step_summary_stays_under_the_limit(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    huge = "".join(f"| row {i} | ✓ |\n" for i in range(5000))
    append_step_summary(huge, summary, max_bytes=4096)
    data = summary.read_bytes()
    assert len(data) <= 4096 and data.decode("utf-8").endswith(TRUNCATED)
    append_step_summary(huge, summary, max_bytes=4096)  # little room left: still within the limit
    assert len(summary.read_bytes()) <= 4096
    summary.write_bytes(b"x" * 4090)
    append_step_summary(huge, summary, max_bytes=4096)  # no room even for the note: nothing added
    assert summary.read_bytes() == b"x" * 4090


def test_json_report(tmp_path: Path, regressed: tuple[ProfileComparison, object]) -> None:
    comparison, current = regressed
    path = write_json_report(tmp_path / "out" / "layercheck.json", current, comparison)
    data = json.loads(path.read_text())
    assert data["passed"] is False and data["comparison"]["counts"]["regressed"] == 1
    cell = next(c for c in data["comparison"]["cells"] if c["status"] == "regressed")
    assert (cell["suite"], cell["band"], cell["metric"]) == ("knowledge", "shallow", "p_correct")
    assert cell["baseline"] == pytest.approx(0.43) and cell["current"] == pytest.approx(0.28)
    assert cell["delta"] == pytest.approx(-0.15) and cell["p_value"] < 1e-10 and cell["failed"] is True
    assert data["profile"]["model"]["name"] == "tiny-model"
    assert [p.name for p in path.parent.iterdir()] == ["layercheck.json"]
    # the evidence: test, raw and adjusted p, interval, detectable drop, the items that got worse
    assert cell["test"] == "score sign-flip" and cell["items"] == 200
    assert cell["metric_test"] == "exact sign-flip test of the per-item change in mean p_correct"
    assert cell["flip_rate"] is None and 0 < cell["score_sd"] < 1  # a continuous score: its sd, no flip rate
    assert cell["p_value"] <= cell["p_adjusted"] <= 15 * cell["p_value"]
    assert cell["ci_low"] < cell["delta"] < cell["ci_high"] and 0 < cell["detectable_drop"] < 0.1
    assert len(cell["worse_items"]) == 43 and cell["worse_items"][0] == {"id": "knowledge-item-0001"}  # no such suite
    assert cell["better_items"] == [] and (cell["worse"], cell["pairs"]) == (60, 400)
    summary = data["comparison"]
    assert summary["correction"] == "holm" and summary["family_size"] == 15 and summary["effect_floor"] == 0.5
    assert "Holm over 15 hypotheses" in summary["criteria"]
    assert summary["detection_alpha"] == pytest.approx(0.05 / 15)
    assert summary["max_shift"] == DEFAULT_MAX_SHIFT and summary["counts"] == {
        "regressed": 1,
        "moved": 0,
        "improved": 0,
        "changed": 0,
        "ok": 14,
    }
    # a 0/1 cell: its own test in words, a flip rate and no score sd
    em = next(c for c in summary["cells"] if (c["suite"], c["band"]) == ("retrieval", "intact"))
    assert em["metric_test"] == "exact McNemar test of per-item exact_match" and em["score_sd"] is None
    assert em["flip_rate"] is not None
    # one shift cell per suite, in shares of depth, as the comparison has it
    shifts = [c for c in summary["cells"] if c["band"] == "shift"]
    assert [(c["suite"], c["metric"]) for c in shifts] == [
        ("knowledge", "p_correct"),
        ("reasoning", "p_correct"),
        ("retrieval", "exact_match"),
    ]
    shift, expected = shifts[0], comparison.cell("knowledge", "shift")
    assert (shift["test"], shift["status"], shift["failed"], shift["layers"]) == (
        "permutation",
        "ok",
        False,
        list(range(6)),
    )
    assert shift["metric_test"].startswith("centre of depth of the p_correct lost per removed layer")
    assert shift["baseline"] == pytest.approx(expected.baseline) and shift["current"] == pytest.approx(expected.current)
    assert shift["delta"] == pytest.approx(shift["current"] - shift["baseline"]) and shift["delta"] < 0
    assert shift["allowed"] == DEFAULT_MAX_SHIFT and shift["worse_items"] == [] and shift["score_sd"] is None
    assert shift["baseline"] == pytest.approx(_centre(make_profile(), "knowledge"))
    assert shift["current"] == pytest.approx(_centre(current, "knowledge"))


def _centre(profile: DepthProfile, suite: str) -> float:
    """Centre of depth by hand: layer positions l / (layers - 1) weighed by the mean p_correct lost without them."""
    intact = profile.evaluation(suite).mean("p_correct")
    layers = profile.model["num_layers"]
    drops = {
        layer: max(0.0, intact - profile.evaluation(suite, f"layer:{layer:02d}").mean("p_correct"))
        for layer in range(layers)
    }
    return sum(layer / (layers - 1) * drop for layer, drop in drops.items()) / sum(drops.values())


def test_json_report_lists_prompts_of_flipped_items(tmp_path: Path) -> None:
    suite = resolve_suite("knowledge")
    ids = tuple(item.id for item in suite.items[:40])

    def profile(**flip: int) -> DepthProfile:
        made = make_profile(
            suites={"knowledge": ("mc_text", 40)},
            content_hashes={"knowledge": suite.content_hash},
            flip={("knowledge", "intact"): flip.get("intact", 0)},
        )
        return replace(made, suites={"knowledge": replace(made.suites["knowledge"], item_ids=ids)})

    current = profile(intact=3)
    cell = compare_profiles(profile(), current).cell("knowledge", "intact")
    data = json.loads(write_json_report(tmp_path / "r.json", current, compare_profiles(profile(), current)).read_text())
    listed = next(c for c in data["comparison"]["cells"] if c["band"] == "intact")["worse_items"]
    by_id = {item.id: item for item in suite.items}
    assert [entry["id"] for entry in listed] == list(cell.worse_items) and len(listed) == 3
    for entry in listed:
        assert entry["prompt"] == by_id[entry["id"]].context and entry["answer"] == by_id[entry["id"]].answer_text
    other = replace(current, suites={"knowledge": replace(current.suites["knowledge"], content_hash="sha256:other")})
    stale = comparison_to_json(compare_profiles(replace(profile(), suites=other.suites), other))
    assert all(set(entry) == {"id"} for c in stale["cells"] for entry in c["worse_items"])  # another version: ids only


def test_json_report_without_comparison_is_strict_json(tmp_path: Path) -> None:
    profile = make_profile(suites={"empty": ("mc_letters", 0)})  # means are NaN
    text = write_json_report(tmp_path / "r.json", profile).read_text()
    assert "NaN" not in text
    data = json.loads(text)
    assert data["passed"] is True and data["comparison"] is None
    assert data["profile"]["cells"][0]["value"] is None


def test_heatmap_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = plot_layer_heatmap(make_profile(), tmp_path / "heat.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_heatmap_needs_single_layer_ablations(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(ConfigError, match="no single-layer ablations"):
        plot_layer_heatmap(make_profile(mode="bands"), tmp_path / "heat.png")


def test_heatmap_without_matplotlib_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError) as info:
        plot_layer_heatmap(make_profile(), tmp_path / "heat.png")
    assert "pytest-layercheck[plot]" in str(info.value.fix)
    assert not (tmp_path / "heat.png").exists()
