"""Renderers: terminal table, GitHub markdown and annotations, JSON report, heatmap."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from profile_factory import make_profile

from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.bands import format_layers
from pytest_layercheck.data.profile_data import DepthProfile
from pytest_layercheck.evaluation.comparison import ProfileComparison, compare_profiles
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
    assert "acc (knowledge, reasoning)" in text and "exact_match (retrieval)" in text
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
    assert "FAILED: 1 regressed, 11 ok" in text
    assert "knowledge/shallow acc dropped 0.430 -> 0.280" in text and "43 of 200 items" in text
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
    regression = next(line for line in text.splitlines() if line.startswith("- ✗ `knowledge/shallow acc`"))
    assert "p=" in regression and "0.430 -> 0.280" in regression
    for part in ("43 of 200 items worse", "sign-flip p=", "adjusted p=", "95% CI [", "detectable drop 0.0"):
        assert part in regression
    ids = text.splitlines()[text.splitlines().index(regression) + 1]
    assert ids.startswith("  - worse: `knowledge-item-0001`") and "and 33 more (see the JSON report)" in ids
    row = next(line for line in text.splitlines() if line.startswith("| `knowledge/shallow acc`"))  # evidence table
    assert [part.strip() for part in row.split("|")[2:5]] == ["-0.150", "sign-flip", "200"]
    assert "Holm over 12 hypotheses" in text
    assert "✅ passed" in render_markdown(current, compare_profiles(current, current))


def test_annotations_are_workflow_commands(regressed: tuple[ProfileComparison, object]) -> None:
    comparison, _ = regressed
    lines = github_annotations(comparison)
    assert len(lines) == 1
    assert lines[0].startswith("::error title=layercheck::knowledge/shallow acc dropped 0.430 -> 0.280 (p=")


def test_annotations_are_capped_at_ten() -> None:
    flips = {(suite, band): 25 for suite in ("knowledge", "reasoning", "retrieval")
             for band in ("intact", "shallow", "middle", "deep")}
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
    assert (cell["suite"], cell["band"], cell["metric"]) == ("knowledge", "shallow", "acc")
    assert cell["baseline"] == pytest.approx(0.43) and cell["current"] == pytest.approx(0.28)
    assert cell["delta"] == pytest.approx(-0.15) and cell["p_value"] < 1e-10 and cell["failed"] is True
    assert data["profile"]["model"]["name"] == "tiny-model"
    assert [p.name for p in path.parent.iterdir()] == ["layercheck.json"]
    # the evidence: test, raw and adjusted p, interval, detectable drop, the items that got worse
    assert cell["test"] == "sign-flip" and cell["items"] == 200
    assert cell["p_value"] <= cell["p_adjusted"] <= 12 * cell["p_value"]
    assert cell["ci_low"] < cell["delta"] < cell["ci_high"] and 0 < cell["detectable_drop"] < 0.1
    assert len(cell["worse_items"]) == 43 and cell["worse_items"][0] == {"id": "knowledge-item-0001"}  # no such suite
    assert cell["better_items"] == [] and (cell["worse"], cell["pairs"]) == (60, 400)
    summary = data["comparison"]
    assert summary["correction"] == "holm" and summary["family_size"] == 12 and summary["effect_floor"] == 0.5
    assert "Holm over 12 hypotheses" in summary["criteria"]
    assert summary["detection_alpha"] == pytest.approx(0.05 / 12)


def test_json_report_lists_prompts_of_flipped_items(tmp_path: Path) -> None:
    suite = resolve_suite("knowledge")
    ids = tuple(item.id for item in suite.items[:40])

    def profile(**flip: int) -> DepthProfile:
        made = make_profile(suites={"knowledge": ("mc_text", 40)}, content_hashes={"knowledge": suite.content_hash},
                            flip={("knowledge", "intact"): flip.get("intact", 0)})
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
