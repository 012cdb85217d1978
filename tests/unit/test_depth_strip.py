"""The per-layer heat strips and every terminal table at 80 columns (no model: synthetic profiles)."""

from __future__ import annotations

import dataclasses
import re
import types

import pytest
from profile_factory import make_profile

from pytest_layercheck.analysis.heads.importance import HeadImportance
from pytest_layercheck.analysis.heads.render import importance_renderable
from pytest_layercheck.analysis.thinking import render as thinking_render
from pytest_layercheck.analysis.thinking.fast_slow import Shift
from pytest_layercheck.analysis.transfer import render as transfer_render
from pytest_layercheck.analysis.transfer.stability import StabilityScore
from pytest_layercheck.analysis.weight_delta.deltas import ModuleDelta, WeightDelta
from pytest_layercheck.analysis.weight_delta.render import weight_table
from pytest_layercheck.data.profile_data import INTACT, DepthProfile
from pytest_layercheck.evaluation.comparison import compare_profiles
from pytest_layercheck.evaluation.comparison_result import ProfileComparison
from pytest_layercheck.report.depth_strip import FALL, MISSING, RAMP, RISE, delta_strip, profile_strip, segments
from pytest_layercheck.report.format import render_text
from pytest_layercheck.report.terminal import evidence_table, fitted_rows, render_terminal

ANSI = re.compile(r"\x1b\[[0-9;]*m")
DAMAGE = {"shallow": 0.45, "middle": 0.12, "deep": 0.03}


def strip_rows(text: str, label: str) -> list[str]:
    """The lines of a rendered strip that start with ``label`` (and the line after each, for deltas)."""
    lines = text.splitlines()
    return [line for i, line in enumerate(lines) if line.startswith(label)]


def cells_of(line: str) -> str:
    """The glyph cells of a strip line: after the label and lead (or the ▲/▼ marker), before the note."""
    marker = next((m for m in ("▲ ", "▼ ") if m in line), None)
    body = line.split(marker, 1)[1] if marker else re.sub(r"^\S+\s+(?:\d\.\d{3}\s)?", "", line)
    return re.split(r"\s{2}(?=worst|lowest|most|no drop|no layer)", body.rstrip("\n"))[0]


def assert_fits(text: str, width: int = 80) -> None:
    too_wide = [line for line in text.splitlines() if len(line.rstrip()) > width]
    assert not too_wide, f"lines wider than {width}: {too_wide}"
    assert "…" not in text, "a header or cell was cut"


def drop_layers(profile: DepthProfile, keep: set[str], suites: set[str] | None = None) -> DepthProfile:
    """A partial profile: the ablations not in ``keep`` removed (from ``suites``; default: every suite)."""
    evaluations = {
        key: ev
        for key, ev in profile.evaluations.items()
        if key[2] == INTACT or key[2] in keep or (suites is not None and key[0] not in suites)
    }
    return dataclasses.replace(profile, evaluations=evaluations)


# ------------------------------------------------------------------------------------------ profile strip
def test_one_cell_per_layer_with_band_edges_and_a_legend() -> None:
    profile = make_profile(num_layers=30, band_damage=DAMAGE)
    text = render_text(profile_strip(profile), width=80)
    assert_fits(text)
    assert "where each capability lives" in text and "drop 0 to 0.5+" in text and "band edge" in " ".join(text.split())
    knowledge = cells_of(strip_rows(text, "knowledge")[0])
    assert knowledge.count("│") == 2 and len(knowledge.replace("│", "")) == 30
    shallow, middle, deep = knowledge.split("│")
    assert RAMP.index(shallow[0]) > RAMP.index(middle[0]) >= RAMP.index(deep[0])  # shallow layers matter most
    assert "worst L0 -0.3" in strip_rows(text, "knowledge")[0]
    assert re.search(r"layer 0 +10 +20 +29", text)  # the layer axis under the strip


def test_plain_text_has_no_colour_codes_and_colour_marks_the_heat() -> None:
    profile = make_profile(num_layers=12, band_damage=DAMAGE)
    plain = render_terminal(profile, width=80)
    coloured = render_terminal(profile, width=80, color=True)
    assert "\x1b[" not in plain and "▁" in plain
    assert "\x1b[" in coloured
    assert ANSI.sub("", coloured).splitlines() == plain.splitlines()  # same characters, colour only added


@pytest.mark.parametrize("layers", [60, 64, 80, 128])
def test_deep_models_fit_80_columns(layers: int) -> None:
    profile = make_profile(num_layers=layers, band_damage=DAMAGE)
    text = render_text(profile_strip(profile), width=80)
    assert_fits(text)
    cells = cells_of(strip_rows(text, "knowledge")[0]).replace("│", "")
    if layers <= 64:  # the lead column gives way so that every layer keeps its own cell
        assert len(cells) == layers and "one cell =" not in text
    else:
        per = -(-layers // len(cells))
        assert 1 < per <= 3 and f"one cell = {per} layers, the worst shown" in text


def test_few_layers_get_wider_cells() -> None:
    text = render_text(profile_strip(make_profile(num_layers=6, band_damage=DAMAGE)), width=80)
    assert cells_of(strip_rows(text, "knowledge")[0]).count("│") == 2
    assert len(cells_of(strip_rows(text, "knowledge")[0]).replace("│", "")) == 6 * 3


def test_missing_layers_and_suites_show_what_exists() -> None:
    profile = make_profile(num_layers=12, band_damage=DAMAGE)
    evaluated = {f"layer:{i:02d}" for i in range(12) if i not in (3, 4, 7)}
    partial = drop_layers(drop_layers(profile, keep=evaluated), keep=set(), suites={"retrieval"})
    text = render_text(profile_strip(partial), width=80)
    cells = cells_of(strip_rows(text, "knowledge")[0]).replace("│", "")
    per_layer = cells[:: len(cells) // 12]  # cells may be several characters wide on a roomy console
    assert [i for i, c in enumerate(per_layer) if c == MISSING] == [3, 4, 7]
    assert not strip_rows(text, "retrieval") and "no layer ablations for retrieval (intact only)" in text

    intact_only = drop_layers(profile, keep=set())
    assert profile_strip(intact_only) is None
    table = render_terminal(intact_only, width=80)
    assert "0.715" in table and "where each capability lives" not in table


def test_band_mode_spreads_each_band_ablation_over_its_layers() -> None:
    text = render_text(profile_strip(make_profile(num_layers=12, mode="bands", band_damage=DAMAGE)), width=80)
    shallow, middle, deep = cells_of(strip_rows(text, "knowledge")[0]).split("│")
    assert len(set(shallow)) == len(set(middle)) == len(set(deep)) == 1
    assert "worst shallow" in text and "no single-layer ablations (mode bands)" in text


def test_accuracy_strip() -> None:
    text = render_text(profile_strip(make_profile(num_layers=12, band_damage=DAMAGE), value="accuracy"), width=80)
    shallow, _, deep = cells_of(strip_rows(text, "knowledge")[0]).split("│")
    assert RAMP.index(shallow[0]) < RAMP.index(deep[0]) and "metric 0 to 1" in text and "lowest L0" in text
    with pytest.raises(ValueError, match="'drop' or 'accuracy'"):
        profile_strip(make_profile(), value="heat")


def test_segments_follow_the_bands() -> None:
    bands = {"shallow": (0, 1), "deep": (3, 4)}
    assert [(s.band, s.layers) for s in segments(bands, 5)] == [("shallow", (0, 1)), (None, (2,)), ("deep", (3, 4))]


# ------------------------------------------------------------------------------------------ delta strip
@pytest.fixture(scope="module")
def moved() -> tuple[DepthProfile, DepthProfile, ProfileComparison]:
    baseline = make_profile(num_layers=30, band_damage=DAMAGE)
    current = make_profile(
        num_layers=30, band_damage=DAMAGE, flip={("knowledge", "shallow"): 30, ("reasoning", "deep"): -10}
    )
    return baseline, current, compare_profiles(baseline, current)


def _centre_line(cell: object) -> str:
    """The strip's centre-of-depth line for a comparison's shift cell (the same centres, per item or per layer)."""
    return f"centre of depth {cell.baseline:.2f} → {cell.current:.2f} ({cell.delta:+.2f} of depth)"


def test_delta_strip_shows_where_it_moved(moved: tuple[DepthProfile, DepthProfile, ProfileComparison]) -> None:
    baseline, current, comparison = moved
    text = render_text(delta_strip(baseline, current), width=80)
    assert_fits(text)
    lines = text.splitlines()
    knowledge = lines.index(strip_rows(text, "knowledge")[0])
    up, down, centre = lines[knowledge], lines[knowledge + 1], lines[knowledge + 2]
    assert "▲" in up and "▼" in down
    shallow, middle, deep = cells_of(down).split("│")
    assert set(shallow) <= set(FALL) and set(middle + deep) == {" "}  # the loss sits in the shallow band
    assert not set(cells_of(up)) & set(RISE) and "most down L0 -0.150" in down
    # under the cells, no cells of its own: where along depth the loss sits, as the shift cell has it
    shift = comparison.cell("knowledge", "shift")
    assert shift.delta < 0  # more lost in the shallow band: the centre moved shallower
    assert centre.strip() == _centre_line(shift) and not set(centre) & {MISSING, "│", *RISE, *FALL}
    reasoning_at = lines.index(strip_rows(text, "reasoning")[0])
    reasoning = lines[reasoning_at]
    assert set(cells_of(reasoning).split("│")[2]) <= set(RISE) and "most up L20 +0.050" in reasoning
    assert lines[reasoning_at + 2].strip() == _centre_line(comparison.cell("reasoning", "shift"))
    assert comparison.cell("reasoning", "shift").delta < 0  # less lost in the deep band: shallower too
    assert delta_strip(baseline, drop_layers(current, keep=set())) is None
    same = render_text(delta_strip(baseline, baseline), width=80)
    assert "no layer moved" in same and "(+0.00 of depth)" in same and "(-" not in same
    # fewer than 3 shared single-layer removals: no centre (as no shift cell)
    few = {f"layer:{i:02d}" for i in (0, 15)}
    assert "centre of depth" not in render_text(
        delta_strip(drop_layers(baseline, few), drop_layers(current, few)), width=80
    )


def test_the_report_shows_both_strips_and_the_evidence(
    moved: tuple[DepthProfile, DepthProfile, ProfileComparison],
) -> None:
    baseline, current, comparison = moved
    for width in (80, 120):
        text = render_terminal(current, comparison, width=width, baseline=baseline)
        assert_fits(text, width)
        assert "where each capability lives" in text and "where it moved" in text
        assert "evidence per cell" in text and "knowledge/shallow" in text and "FAILED" in text
        # one shift row per suite in the evidence table, tested by permutation, and its centre in the strip
        shift_rows = [line for line in text.splitlines() if re.match(r"\w+/shift ", line)]
        assert [row.split()[0] for row in shift_rows] == ["knowledge/shift", "reasoning/shift", "retrieval/shift"]
        assert shift_rows[0].split()[1] == f"{comparison.cell('knowledge', 'shift').delta:+.3f}"
        assert "permutation for knowledge/shift, reasoning/shift, retrieval/shift" in " ".join(text.split())
        assert _centre_line(comparison.cell("knowledge", "shift")) in text
    assert "where it moved" not in render_terminal(current, comparison, width=80)  # needs the baseline profile


def _with_statistics(comparison: ProfileComparison) -> ProfileComparison:
    """The comparison with the statistics a newer comparison.py carries, whatever this one carries."""
    cells = []
    for cell in comparison.cells:
        fields = {
            **dataclasses.asdict(cell),
            "label": cell.label,
            "p_adjusted": min(1.0, cell.p_value * 12),
            "ci_low": cell.delta - 0.04,
            "ci_high": cell.delta + 0.04,
            "detectable_drop": 0.08 if cell.band == INTACT else float("inf"),
            "test": "McNemar" if cell.band == INTACT else "sign-flip",
        }
        cells.append(types.SimpleNamespace(**fields))
    return dataclasses.replace(comparison, cells=cells)


def test_evidence_table_shows_every_statistic_at_80_columns(
    moved: tuple[DepthProfile, DepthProfile, ProfileComparison],
) -> None:
    _, current, comparison = moved
    text = render_text(evidence_table(_with_statistics(comparison)), width=80)
    assert_fits(text)
    header = next(line for line in text.splitlines() if line.startswith("cell"))
    assert header.split() == ["cell", "Δ", "95%", "CI", "p", "p", "adj", "detectable"]
    row = next(line for line in text.splitlines() if line.startswith("knowledge/shallow"))
    assert "-0.150" in row and "[-0.19, -0.11]" in row and row.rstrip().endswith("✗") and "none*" in row
    assert "test: sign-flip (McNemar for knowledge/intact, reasoning/intact, retrieval/intact)" in " ".join(
        text.split()
    )
    assert "* above the tolerance" in text


# ------------------------------------------------------------------------------------------ 80 columns
def test_profile_table_fits_80_columns(moved: tuple[DepthProfile, DepthProfile, ProfileComparison]) -> None:
    _, current, comparison = moved
    text = render_terminal(current, comparison, width=80)
    assert_fits(text)
    assert "shallow" in text and "(L0-9)" in text and "(-0.150 ✗)" in text and "items: knowledge 200" in text
    wide = render_terminal(current, comparison, width=160)
    assert (
        re.search(r"\d\.\d{3} \(-0\.150 ✗\)", wide) and "shallow (L0-9)" in wide
    )  # the boxed one-line layout where it fits


def _weights(layers: int = 30) -> WeightDelta:
    modules = ["self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm"]
    deltas = [
        ModuleDelta(layer, module, 0.0 if layer < 20 else 0.1 + 0.01 * (layer + i), 10.0, 100)
        for layer in range(layers)
        for i, module in enumerate(modules)
    ]
    return WeightDelta(layers, deltas, [ModuleDelta(None, "model.embed_tokens", 0.0, 5.0, 10)])


def test_weight_table_headers_are_not_cut() -> None:
    bands = {"shallow": tuple(range(9)), "middle": tuple(range(9, 21)), "deep": tuple(range(21, 30))}
    narrow = render_text(weight_table(_weights(), bands), width=80)
    assert_fits(narrow)
    assert "top module" in narrow and "post_attn_ln 0.0" in narrow and "(unchanged)" in narrow
    wide = render_text(weight_table(_weights(), bands), width=160)
    assert "self_attn" in wide and "post_attn_ln" in wide and "┃" in wide  # every column, boxed


def test_head_grid_splits_into_blocks_of_heads() -> None:
    accuracy = {(layer, head): 0.7 - 0.01 * ((layer + head) % 5) for layer in range(4) for head in range(32)}
    result = HeadImportance(
        "m",
        "knowledge",
        "mc_text",
        "acc",
        "zero",
        "head",
        (0, 1, 2, 3),
        32,
        tuple(f"i{i}" for i in range(40)),
        0.7,
        accuracy,
    )
    text = render_text(importance_renderable(result, top=3), width=80)
    assert_fits(text)
    assert all(f"H{h}" in text for h in range(32)) and text.count("layer ") >= 3  # several blocks
    assert text.count(" H0 ") == 1


def test_analysis_tables_fit_80_columns() -> None:
    thinking = [thinking_render.shift_row(Shift(group, 40, 20, 25, 8, 3)) for group in ("medicine", "other knowledge")]
    text = render_text(
        fitted_rows(thinking_render.THINKING_HEADERS, thinking, "thinking", caption=thinking_render.THINKING_CAPTION),
        width=80,
    )
    assert_fits(text)
    assert "corrections" in text and "overthinking" in text and "other knowledge" in text

    score = StabilityScore(40, 120, 30, 80, 10, 10, 20, (0.7, 0.9), (0.3, 0.7))
    rows = [transfer_render.score_row("knowledge · acc (mc_text)", "same-kind items", score)]
    narrow = render_text(fitted_rows(transfer_render.TRANSFER_HEADERS, rows, "transfer"), width=80)
    assert_fits(narrow)  # one paragraph per row: every header and value, nothing cut
    for header, value in zip(transfer_render.TRANSFER_HEADERS[1:], rows[0][1:], strict=True):
        assert f"{header} {value}" in " ".join(narrow.split())
    assert "┃" in render_text(fitted_rows(transfer_render.TRANSFER_HEADERS, rows, "transfer"), width=200)

    notes = [
        [
            "L20",
            "0.051",
            "0.212",
            "0.010",
            "most prunable block L20-22; block holds the last layer: never suggested; lowest BI",
        ]
    ]
    text = render_text(
        fitted_rows(["layer", "BI (ShortGPT)", "d(l, l+3) (Gromov)", "± se", "note"], notes, "redundancy", wrap=[4]),
        width=80,
    )
    assert_fits(text)
    assert "┃" in text and "BI (ShortGPT)" in text  # a table still: only the note wraps
