"""The analyses' HTML pages (``heads``, ``retrieval-heads``, ``redundancy``, ``thinking``, ``transfer``):
checked as markup on hand-made results, written by the CLI as a user runs it, and rendered in Chromium.

The markup helpers and the browser are the depth report's (``html_checks``): strict html5lib
parsing, the scan for anything that would fetch, headless Chromium (skipped, saying so, without it).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from xml.etree.ElementTree import Element

import pytest
from fault_world import assert_exit, layercheck
from html_checks import (
    NEEDS_CHROMIUM,
    chromium,
    classes,
    external_references,
    hex_rgb,
    local,
    parse,
    png_pixels,
)
from tiny_models import tiny_model
from trained_tiny import save

from pytest_layercheck.analysis.heads.html import render_heads_html
from pytest_layercheck.analysis.heads.importance import HeadImportance
from pytest_layercheck.analysis.redundancy.capabilities import CapabilityView, RedundancyComparison, judge_view
from pytest_layercheck.analysis.redundancy.html import render_redundancy_html
from pytest_layercheck.analysis.redundancy.metrics import RedundancyResult
from pytest_layercheck.analysis.retrieval_heads.detection import NeedleOutcome, RetrievalHeads
from pytest_layercheck.analysis.retrieval_heads.html import render_retrieval_html
from pytest_layercheck.analysis.retrieval_heads.masking import MaskingComparison
from pytest_layercheck.analysis.thinking.fast_slow import Judgement, PairedItem, ThinkingResult
from pytest_layercheck.analysis.thinking.html import render_thinking_html
from pytest_layercheck.analysis.transfer.html import render_transfer_html
from pytest_layercheck.analysis.transfer.stability import PairOutcome, TransferStability, stability_from_outcomes
from pytest_layercheck.cli import main
from pytest_layercheck.report.analysis_html import RAMP, luminance, ramp

HOSTILE = "<script>alert('x')</script>"
ESCAPED = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"


# ------------------------------------------------------------------------------------ results
def head_result(model: str = "hand", suite: str = "s") -> HeadImportance:
    """Layers 1, 3 and 4 of a model with 5 heads per layer: two heads hurt when masked, one helps."""
    drops = {(1, 2): 0.5, (3, 0): 0.25, (4, 4): -0.125}
    layers = (1, 3, 4)
    accuracy = {(layer, h): 0.75 - drops.get((layer, h), 0.0) for layer in layers for h in range(5)}
    return HeadImportance(
        model=model,
        suite=suite,
        protocol="mc_text",
        metric="acc",
        mode="zero",
        gqa="query",
        layers=layers,
        heads_per_layer=5,
        item_ids=("a", "b", "c", "d"),
        intact=0.75,
        accuracy=accuracy,
        settings={"seed": 0},
    )


def retrieval_result(answer: str = "1234") -> tuple[RetrievalHeads, MaskingComparison]:
    scores = {(layer, h): 0.0 for layer in range(4) for h in range(3)}
    scores.update({(2, 1): 0.6, (3, 0): 0.4, (0, 2): 0.05})
    tests = (
        NeedleOutcome("t0", f"the code is 1234 {HOSTILE}", answer, 1.0, True, 0.5, "short", 300, 5),
        NeedleOutcome("t1", "the code is 99", "nothing", 0.0, False, 0.25, "short", 300, 3),
    )
    heads = RetrievalHeads("tiny", 4, 3, 0.1, 0.5, scores, tests)
    masking = MaskingComparison(
        "tiny",
        "retrieval",
        "generate_until",
        "exact_match",
        2,
        0,
        True,
        ("a", "b"),
        ((2, 1), (3, 0)),
        (0.6, 0.4),
        ((0, 0), (1, 1)),
        0.1,
        (1, 1),
        (0, 0),
        (1, 1),
    )
    return heads, masking


def redundancy_result(model: str = "tiny") -> tuple[RedundancyResult, RedundancyComparison]:
    result = RedundancyResult(
        model=model,
        num_layers=6,
        block=2,
        prompts=10,
        tokens=300,
        sources=("facts",),
        distances=(0.30, 0.12, 0.25, 0.20, 0.05),
        distance_stderr=(0.01,) * 5,
        influence=(0.40, 0.10, 0.20, 0.15, 0.30, 0.35),
    )
    view = CapabilityView(
        "facts",
        "mc_text",
        "acc",
        intact=(1.0, 1.0, 1.0, 0.0),
        after={1: (1.0, 0.0, 0.0, 0.0), 2: (1.0, 1.0, 1.0, 0.0), 3: (1.0, 1.0, 0.0, 0.0)},
    )
    verdict = judge_view(view, result.distances, suggested=result.best_start)
    return result, RedundancyComparison(result, (verdict,), tolerance=0.05, limit=4, notes=(HOSTILE,))


def thinking_result(target: str = "4") -> ThinkingResult:
    def pair(item: str, group: str, fast: bool, slow: bool) -> PairedItem:
        return PairedItem(
            item,
            "sums",
            "arithmetic",
            group,
            target,
            "4",
            f"2 + 2 = {HOSTILE} 4",
            Judgement("4" if fast else "5", fast),
            Judgement(HOSTILE if slow else "3", slow),
        )

    items = (
        pair("i0", "maths", False, True),
        pair("i1", "maths", True, False),
        pair("i2", "maths", True, True),
        pair("k0", "other knowledge", False, False),
    )
    return ThinkingResult("tiny", items, {"cot_trigger": "Let's think step by step.", "cot_tokens": 8})


def transfer_results(item: str = "r0") -> list[TransferStability]:
    original = {item: True, "r1": True, "r2": False}
    variants = {item: [True, False], "r1": [True, True], "r2": [False, True]}
    score = stability_from_outcomes(original, variants, seed=0, resamples=50)
    pairs = tuple(
        PairOutcome(i, "arithmetic", "sum", original[i], (f"{i}-v0", f"{i}-v1"), tuple(variants[i])) for i in original
    )
    return [
        TransferStability(
            "reasoning", "reasoning", "numbers", "mc_text", "acc", 2, 0, score, pairs, {"arithmetic": score}
        )
    ]


# ------------------------------------------------------------------------------------ helpers
def rects(tree: Element, kind: str) -> list[Element]:
    return [e for e in tree.iter() if local(e) == "rect" and kind in classes(e)]


def cells(tree: Element) -> dict[tuple[int, int], Element]:
    return {(int(e.get("data-layer", "-1")), int(e.get("data-head", "-1"))): e for e in rects(tree, "head")}


def tip(element: Element) -> str:
    return "".join(next(c for c in element if local(c) == "title").itertext())


def chart(tree: Element, chart_id: str) -> Element:
    return next(e for e in tree.iter() if local(e) == "svg" and e.get("id") == chart_id)


def checked(page: str) -> Element:
    """The page parsed strictly, after asserting it fetches nothing and runs nothing."""
    tree = parse(page)
    assert external_references(tree, page) == []
    assert not [e for e in tree.iter() if local(e) == "script"]
    assert "default-src 'none'" in page
    return tree


def every_page() -> dict[str, str]:
    heads, masking = retrieval_result()
    result, comparison = redundancy_result()
    return {
        "heads": render_heads_html(head_result()),
        "retrieval": render_retrieval_html(heads, masking),
        "redundancy": render_redundancy_html(result, comparison),
        "thinking": render_thinking_html(thinking_result()),
        "transfer": render_transfer_html(transfer_results()),
    }


# --------------------------------------------------------------------------------- unit tests
@pytest.mark.parametrize("name", ["heads", "retrieval", "redundancy", "thinking", "transfer"])
def test_every_page_parses_and_loads_nothing(name: str) -> None:
    page = every_page()[name]
    tree = checked(page)
    title = next(e for e in tree.iter() if local(e) == "title").text or ""
    assert title and "".join(next(e for e in tree.iter() if local(e) == "h1").itertext()) == title
    assert [e for e in tree.iter() if local(e) == "svg"], "every analysis page has a picture"


def test_the_head_grid_has_one_cell_per_layer_and_head() -> None:
    result = head_result()
    tree = checked(render_heads_html(result))
    grid = cells(tree)
    assert sorted(grid) == sorted(itertools.product(result.layers, range(5)))  # exactly one rect per head
    assert len(rects(tree, "head")) == 15
    for key, element in grid.items():
        assert float(element.get("data-value", "nan")) == pytest.approx(result.drop(*key))
    assert tip(grid[(1, 2)]) == "L1.H2: drop +0.50 (acc 0.250 masked, 0.750 intact)"  # the number as a tooltip
    assert {k for k, e in grid.items() if "outlined" in classes(e)} == set(result.critical_heads())
    assert {k for k, e in grid.items() if "negative" in classes(e)} == {(4, 4)}
    printed = [e.text for e in tree.iter() if local(e) == "text" and "v" in classes(e)]
    assert "+0.50" in printed and "-0.12" in printed and printed.count("·") == 12  # the value in each cell
    darkest, blank = grid[(1, 2)].get("fill", ""), grid[(1, 0)].get("fill", "")
    assert luminance(darkest) < luminance(grid[(3, 0)].get("fill", "")) < luminance(blank)
    totals = [e for e in rects(chart(tree, "layer-totals"), "bar")]
    assert [int(e.get("data-layer", "-1")) for e in totals] == [1, 3, 4]  # one bar per layer scanned


def test_the_ramp_is_colour_blind_safe_and_prints_in_greyscale() -> None:
    """One hue whose lightness falls strictly with the value: order survives a black-and-white print."""
    shades = [luminance(ramp(step / 40)) for step in range(41)]
    assert all(a > b for a, b in zip(shades, shades[1:]))
    assert ramp(0.0) == RAMP[0] and ramp(1.0) == RAMP[-1] and ramp(7.0) == RAMP[-1] and ramp(-1.0) == RAMP[0]
    assert luminance(RAMP[0]) - luminance(RAMP[-1]) > 0.8  # from near white to dark


def test_the_retrieval_grid_outlines_the_retrieval_heads() -> None:
    heads, masking = retrieval_result()
    tree = checked(render_retrieval_html(heads, masking))
    grid = cells(tree)
    assert sorted(grid) == sorted(itertools.product(range(4), range(3)))
    assert {k for k, e in grid.items() if "outlined" in classes(e)} == {(2, 1), (3, 0)}
    assert tip(grid[(2, 1)]) == "L2.H1: score 0.60"
    text = "".join(tree.itertext())
    assert "top-2 retrieval heads" in text and "top-2 minus random: -1.000" in text  # the masking comparison
    assert "1 of 2 valid (recall > 0.5)" in text


def test_redundancy_has_one_bar_per_layer_and_marks_the_picks() -> None:
    result, comparison = redundancy_result()
    tree = checked(render_redundancy_html(result, comparison))
    influence = rects(chart(tree, "influence"), "bi")
    assert [int(e.get("data-layer", "-1")) for e in influence] == list(range(6))
    assert [float(e.get("data-value", "nan")) for e in influence] == pytest.approx(result.influence)
    assert {int(e.get("data-layer", "-1")) for e in influence if "picked" in classes(e)} == {1, 3}  # lowest BI
    distance = rects(chart(tree, "distance"), "distance")
    assert [int(e.get("data-layer", "-1")) for e in distance] == list(range(5))  # a block starts at L0..L4
    assert [int(e.get("data-layer", "-1")) for e in distance if "picked" in classes(e)] == [result.best_start] == [1]
    assert [int(e.get("data-layer", "-1")) for e in distance if "ineligible" in classes(e)] == [4]
    assert len([e for e in chart(tree, "distance").iter() if "interval" in classes(e)]) == 5  # ± se whiskers
    view = rects(chart(tree, "view-0"), "drop")
    assert [int(e.get("data-layer", "-1")) for e in view] == [1, 2, 3]
    assert [float(e.get("data-value", "nan")) for e in view] == pytest.approx([0.5, 0.0, 0.25])
    assert {int(e.get("data-layer", "-1")): sorted(classes(e) - {"bar", "drop"}) for e in view} == {
        1: ["picked"],
        2: ["least"],
        3: [],
    }
    assert "UNCLEAR" in "".join(tree.itertext()) or "DISAGREES" in "".join(tree.itertext())  # the summary


def test_thinking_and_transfer_draw_their_groups_and_list_changed_items() -> None:
    result = thinking_result()
    tree = checked(render_thinking_html(result))
    groups = [s.group for s in result.shifts()]
    for kind, values in (
        ("fast", [s.fast_accuracy for s in result.shifts()]),
        ("slow", [s.slow_accuracy for s in result.shifts()]),
        ("corrections", [s.corrections for s in result.shifts()]),
        ("overthinking", [s.overthinking for s in result.shifts()]),
    ):
        bars = rects(tree, kind)
        assert [e.get("data-group") for e in bars] == groups and [
            float(e.get("data-value", "nan")) for e in bars
        ] == pytest.approx(values, abs=1e-4), kind
    rows = [
        ["".join(td.itertext()) for td in tr]
        for tr in next(e for e in tree.iter() if local(e) == "table" and "items" in classes(e)).iter("tr")
    ][1:]
    assert [(r[0], r[2]) for r in rows] == [("i0", "correction"), ("i1", "overthinking")]

    results = transfer_results()
    tree = checked(render_transfer_html(results))
    stability = rects(tree, "stability")
    assert len(stability) == 2 and [float(e.get("data-value", "nan")) for e in stability] == pytest.approx(
        [results[0].stability] * 2
    )  # the suite, then its one domain
    assert len([e for e in chart(tree, "transfer").iter() if "interval" in classes(e)]) == 4  # CI whiskers
    rows = [
        ["".join(td.itertext()) for td in tr]
        for tr in next(e for e in tree.iter() if local(e) == "table" and "items" in classes(e)).iter("tr")
    ][1:]
    assert [r[0] for r in rows] == ["r0", "r2"]  # r1 transferred cleanly


def test_user_strings_are_escaped() -> None:
    heads, masking = retrieval_result(answer=f"{HOSTILE} & <b>bold</b>")
    result, comparison = redundancy_result(model=HOSTILE)
    pages = [
        render_heads_html(head_result(model=HOSTILE, suite="<i>s</i>")),
        render_retrieval_html(heads, masking),
        render_redundancy_html(result, comparison),
        render_thinking_html(thinking_result(target="<b>4</b>")),
        render_transfer_html(transfer_results(item=f"r0{HOSTILE}")),
    ]
    for page in pages:
        tree = checked(page)
        assert HOSTILE not in page and "<b>" not in page and "<i>" not in page
        assert ESCAPED in page
        assert not [e for e in tree.iter() if local(e) in ("b", "i")]
    retrieval = parse(pages[1])
    answers = [e.text for e in retrieval.iter() if local(e) == "td" and "text" in classes(e)]
    assert f"{HOSTILE} & <b>bold</b>" in answers  # shown as the text it is


# ------------------------------------------------------------------------------ as a user would
@pytest.mark.slow
def test_layercheck_heads_writes_the_grid_page(ws: Path) -> None:
    result = layercheck(
        ws,
        "heads",
        "good",
        "--suite",
        "facts.yaml",
        "--limit",
        "8",
        "--layers",
        "0-2",
        "--html",
        "out/heads.html",
        "--json",
        "out/heads.json",
    )
    assert_exit(result, 0, "HTML: out/heads.html")
    page = (ws / "out" / "heads.html").read_text(encoding="utf-8")
    tree = checked(page)
    written = json.loads((ws / "out" / "heads.json").read_text())
    grid = cells(tree)
    assert sorted(grid) == sorted(itertools.product(range(3), range(written["heads_per_layer"])))
    for head in written["heads"]:
        assert float(grid[(head["layer"], head["head"])].get("data-value", "nan")) == pytest.approx(
            head["drop"], abs=1e-4
        )
    assert sorted(p.name for p in (ws / "out").iterdir()) == ["heads.html", "heads.json"]  # no temporary left


@pytest.mark.slow
def test_layercheck_redundancy_writes_bars_per_layer(ws: Path) -> None:
    result = layercheck(
        ws, "redundancy", "good", "--suites", "facts.yaml", "--prompts", "6", "--no-compare", "--html", "r.html"
    )
    assert_exit(result, 0, "HTML: r.html")
    tree = checked((ws / "r.html").read_text(encoding="utf-8"))
    assert [int(e.get("data-layer", "-1")) for e in rects(chart(tree, "influence"), "bi")] == list(range(6))


@pytest.mark.parametrize(
    "command",
    [
        ["thinking", "--limit", "2", "--cot-tokens", "6", "--fast-tokens", "4"],
        ["transfer", "--limit", "2", "--variants", "2"],
    ],
)
def test_thinking_and_transfer_write_their_pages(command: list[str], tmp_path: Path) -> None:
    folder = save(tiny_model("llama", layers=2, seed=4), tmp_path / "tiny")
    out = tmp_path / "page.html"
    assert main([command[0], str(folder), "--device", "cpu", *command[1:], "--html", str(out)]) == 0
    tree = checked(out.read_text(encoding="utf-8"))
    assert rects(tree, "bar")


# ------------------------------------------------------------------------------ in a browser
@pytest.mark.slow
@NEEDS_CHROMIUM
def test_chromium_renders_the_head_grid(tmp_path: Path) -> None:
    page = tmp_path / "heads.html"
    page.write_text(render_heads_html(head_result()), encoding="utf-8")
    shot = tmp_path / "heads.png"
    result = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,900", page.as_uri())
    assert shot.exists(), result.stderr[-3000:]
    counts: dict[tuple[int, int, int], int] = {}
    for pixel in png_pixels(shot.read_bytes()):
        counts[pixel] = counts.get(pixel, 0) + 1
    total = sum(counts.values())
    assert total == 1000 * 900 and len(counts) > 50
    assert counts.get((255, 255, 255), 0) < 0.97 * total, "the screenshot is blank"
    # L1.H2 (drop 0.5, the full scale) is filled with the ramp's darkest colour; the legend holds 18 × 14 px of it
    darkest = hex_rgb(RAMP[-1])
    assert counts.get(darkest, 0) > 18 * 14 + 200, f"the darkest cell ({RAMP[-1]}) was not drawn"
    assert counts.get((0, 0, 0), 0) > 100  # the critical heads' outlines
