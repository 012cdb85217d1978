"""The HTML report: one self-contained page, checked as markup, as a user makes it, and in a real browser.

The unit tests build pages from synthetic profiles (``profile_factory``); the user tests run
``layercheck profile --html`` and ``pytest --layercheck-html`` on the fault world's damaged tiny model;
the browser tests render pages in headless Chromium (Debian's ``chromium``; skipped, saying so, where
it is not installed) and read the screenshot's pixels.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
from fault_world import RECORDED, SUITE, assert_exit, environment, layercheck
from html_checks import (
    NEEDS_CHROMIUM,
    charts,
    chromium,
    classes,
    external_references,
    hex_rgb,
    local,
    marks,
    parse,
    png_pixels,
)
from profile_factory import make_profile

from pytest_layercheck.data.profile_data import DepthProfile
from pytest_layercheck.evaluation.comparison import compare_profiles
from pytest_layercheck.evaluation.comparison_result import ProfileComparison
from pytest_layercheck.report.html import MAX_ITEMS, RUN_COLOUR
from pytest_layercheck.report.html_page import render_html, write_html_report


@pytest.fixture(scope="module")
def regressed() -> tuple[DepthProfile, DepthProfile, ProfileComparison]:
    baseline = make_profile()
    current = make_profile(flip={("knowledge", "shallow"): 30}, fingerprint="abcdef0123456789" * 4)
    return baseline, current, compare_profiles(baseline, current)


# ---------------------------------------------------------------------------------- unit tests
def test_page_parses_and_loads_nothing(regressed: tuple[DepthProfile, DepthProfile, ProfileComparison]) -> None:
    baseline, current, comparison = regressed
    for page in (render_html(current, comparison, baseline=baseline), render_html(current)):
        tree = parse(page)
        assert external_references(tree, page) == []
        scripts = [e for e in tree.iter() if local(e) == "script"]
        assert len(scripts) == 1 and "src" not in scripts[0].attrib and len(scripts[0].text or "") < 1000
        assert "default-src 'none'" in page  # the browser itself refuses any fetch


def test_each_chart_has_one_mark_per_layer(regressed: tuple[DepthProfile, DepthProfile, ProfileComparison]) -> None:
    baseline, current, comparison = regressed
    found = charts(parse(render_html(current, comparison, baseline=baseline)))
    assert set(found) == set(current.suites)
    for chart in found.values():
        assert marks(chart) == list(range(6)) and marks(chart, "mark-baseline") == list(range(6))
        assert sorted(marks(chart, "diff")) == list(range(6))  # the difference, layer by layer
        assert len([e for e in chart.iter() if "band-edge" in classes(e)]) == 2  # 3 bands, 2 inner edges
    knowledge = [float(e.get("data-drop", "nan")) for e in found["knowledge"].iter() if "mark" in classes(e)]
    assert knowledge[0] == pytest.approx(0.715 - 0.280, abs=0.01)  # L0 removed: the regressed band's drop
    # A layer that was not evaluated keeps its mark (a "·"), so a chart still has one per layer.
    evaluations = {key: ev for key, ev in current.evaluations.items() if key[2] != "layer:03"}
    gap = charts(parse(render_html(replace(current, evaluations=evaluations))))["knowledge"]
    missing = [int(e.get("data-layer", "-1")) for e in gap.iter() if "missing" in classes(e)]
    assert marks(gap) == list(range(6)) and missing == [3]


def test_a_regressed_cell_is_shown_failing(regressed: tuple[DepthProfile, DepthProfile, ProfileComparison]) -> None:
    baseline, current, comparison = regressed
    tree = parse(render_html(current, comparison, baseline=baseline))
    failing = [e for e in tree.iter() if e.get("data-failed") == "true"]
    assert [(local(e), (e.text or "").strip()) for e in failing if local(e) == "td"] == [("td", "0.280 (-0.150 ✗)")]
    row = next(e for e in failing if local(e) == "tr")
    texts = ["".join(td.itertext()) for td in row]
    assert texts[0] == "knowledge/shallow p_correct" and texts[-1] == "✗ fails: regressed"
    verdict = next(e for e in tree.iter() if "verdict" in classes(e))
    assert "failed" in classes(verdict) and verdict.get("data-passed") == "false"
    assert "FAILED: 1 regressed, 14 ok" in "".join(verdict.itertext())  # 12 band cells and 3 shift cells
    # the shift cell's row: centres of depth, the permutation test, the allowed move; ok, not failing
    shift = comparison.cell("knowledge", "shift")
    row = next(
        e
        for e in tree.iter()
        if local(e) == "tr" and "cell" in classes(e) and "".join(e[0].itertext()) == "knowledge/shift p_correct"
    )
    texts = ["".join(td.itertext()) for td in row]
    assert row.get("data-failed") == "false" and row.get("data-status") == "ok" == texts[-1]
    assert texts[1:4] == [f"{shift.baseline:.3f}", f"{shift.current:.3f}", f"{shift.delta:+.3f}"]
    assert texts[5] == "permutation" and texts[-2] == "0.1"
    chart = charts(tree)["knowledge"]
    assert any((e.text or "") == "shallow (L0-1) ✗ fails" for e in chart.iter())
    # The same run against itself passes: nothing is marked failing.
    same = parse(render_html(current, compare_profiles(current, current), baseline=current))
    assert not [e for e in same.iter() if e.get("data-failed") == "true"]
    assert "passed" in classes(next(e for e in same.iter() if "verdict" in classes(e)))


def test_user_strings_are_escaped(regressed: tuple[DepthProfile, DepthProfile, ProfileComparison]) -> None:
    baseline, current, comparison = regressed
    hostile = "<script>alert('x')</script>"

    def texts(suite: str, content_hash: str) -> dict[str, dict[str, str]]:
        return {f"{suite}-item-{i:04d}": {"prompt": f"{hostile} & {i}", "answer": "<b>blue</b>"} for i in range(200)}

    named = replace(current, model={**current.model, "name": '<img src=x onerror="alert(1)">'})
    page = render_html(named, comparison, baseline=baseline, refused=None, notes=[hostile], item_texts=texts)
    tree = parse(page)
    assert hostile not in page and "<b>blue" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; 1" in page
    assert len([e for e in tree.iter() if local(e) == "script"]) == 1
    assert not [e for e in tree.iter() if local(e) == "img" or "blue" in (e.text or "") and local(e) == "b"]
    prompts = [e.text for e in tree.iter() if "prompt" in classes(e) and local(e) == "td"]
    assert prompts[0] == f"{hostile} & 1"  # shown as the text it is


def test_a_refused_comparison_says_why() -> None:
    page = render_html(make_profile(), refused="the baseline's bands differ from this run's <deep>")
    verdict = next(e for e in parse(page).iter() if "verdict" in classes(e))
    assert "refused" in classes(verdict) and verdict.get("data-passed") == "false"
    assert "comparison with the baseline refused: the baseline's bands differ from this run's <deep>" in "".join(
        verdict.itertext()
    )
    alone = next(e for e in parse(render_html(make_profile())).iter() if "verdict" in classes(e))
    assert "profile only" in "".join(alone.itertext()) and alone.get("data-passed") == "true"


def test_run_details_name_both_models_precision_settings_and_versions(
    regressed: tuple[DepthProfile, DepthProfile, ProfileComparison],
) -> None:
    baseline, current, comparison = regressed
    text = "".join(
        parse(render_html(current, comparison, baseline=baseline, failed_checks=["t.py::test_x"])).itertext()
    )
    for part in (
        "abcdef0123456789" * 4,
        "f" * 64,
        "float32 on cpu vs float32 on cpu",
        "tolerance0.05",
        "correctionholm",
        "versions.torch2.5.0",
        "modelayers",
        "1 layercheck check(s) failed: t.py::test_x",
    ):
        assert part in text, part


def test_a_5000_item_suite_stays_small_and_quick(tmp_path: Path) -> None:
    suites = {"big": ("mc_letters", 5000)}
    baseline = make_profile(suites=suites, num_layers=12)
    current = make_profile(suites=suites, num_layers=12, flip={("big", "intact"): 2000, ("big", "shallow"): 1500})
    comparison = compare_profiles(baseline, current)
    started = time.perf_counter()
    path = write_html_report(tmp_path / "big.html", current, comparison, baseline=baseline)
    seconds = time.perf_counter() - started
    page = path.read_text(encoding="utf-8")
    assert seconds < 10 and len(page) < 300_000, (seconds, len(page))
    tree = parse(page)
    lists = [e for e in tree.iter() if "items" in classes(e) and local(e) == "table"]
    assert lists and all(len([r for r in t.iter() if "item" in classes(r)]) <= MAX_ITEMS for t in lists)
    assert "and 1900 more (the JSON report" in page
    assert marks(charts(tree)["big"]) == list(range(12))


# ------------------------------------------------------------------------------ as a user would
@pytest.mark.slow
def test_layercheck_profile_writes_the_page_of_a_failing_model(ws: Path) -> None:
    result = layercheck(ws, "profile", "damaged", *SUITE, *RECORDED, "--html", "out/r.html")
    assert_exit(result, 1, "regressed", "HTML: out/r.html")
    page = (ws / "out" / "r.html").read_text(encoding="utf-8")
    tree = parse(page)
    assert external_references(tree, page) == []
    assert marks(charts(tree)["facts"]) == list(range(6)) and marks(charts(tree)["facts"], "mark-baseline")
    assert [e for e in tree.iter() if e.get("data-failed") == "true" and local(e) == "td"]
    assert "Item 0 is" in page  # the prompts of the YAML suite the run named
    assert [p.name for p in (ws / "out").iterdir()] == ["r.html"]  # written atomically: no temporary left


@pytest.mark.slow
def test_a_refused_comparison_still_writes_the_page_saying_why(ws: Path) -> None:
    result = layercheck(
        ws, "profile", "damaged", "--suites", "facts.yaml", "--limit", "8", *RECORDED, "--html", "r.html"
    )
    assert_exit(result, 2, "cannot be compared", "HTML: r.html")
    verdict = next(e for e in parse((ws / "r.html").read_text(encoding="utf-8")).iter() if "verdict" in classes(e))
    assert "refused" in classes(verdict) and verdict.get("data-passed") == "false"
    assert "has different items: baseline 48 items, this run 8" in "".join(verdict.itertext())


@pytest.mark.slow
def test_layercheck_compare_writes_the_page_with_where_the_loss_lives(ws: Path) -> None:
    result = layercheck(ws, "compare", "good", "damaged", *SUITE, "--html", "c.html")
    assert_exit(result, 1, "HTML: c.html")
    tree = parse((ws / "c.html").read_text(encoding="utf-8"))
    assert marks(charts(tree)["facts"]) == list(range(6)) and marks(charts(tree)["facts"], "mark-baseline")
    assert [e for e in tree.iter() if e.get("data-failed") == "true" and local(e) == "td"]
    assert "is restored by reverting layers" in "".join(tree.itertext())  # the localisation's finding


@pytest.mark.slow
def test_pytest_writes_the_page_of_a_failing_check(ws: Path) -> None:
    (ws / "test_guard.py").write_text(
        textwrap.dedent("""
        import pytest

        @pytest.mark.layercheck("facts")
        def test_facts_kept():
            pass
    """)
    )
    (ws / "pytest.ini").write_text("[pytest]\nlayercheck_html = p.html\n")  # the ini name
    args = [
        "--layercheck-model=damaged",
        "--layercheck-suites=facts.yaml",
        "--layercheck-limit=0",
        "--layercheck-baseline=facts",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=ws,
        env=environment(ws),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "HTML report written: p.html" in result.stdout
    tree = parse((ws / "p.html").read_text(encoding="utf-8"))
    verdict = "".join(next(e for e in tree.iter() if "verdict" in classes(e)).itertext())
    assert "FAILED" in verdict and "test_guard.py::test_facts_kept" in verdict
    assert marks(charts(tree)["facts"]) == list(range(6))
    assert [e for e in tree.iter() if e.get("data-failed") == "true" and local(e) == "td"]


# ------------------------------------------------------------------------------ in a browser
@pytest.mark.slow
@NEEDS_CHROMIUM
def test_chromium_renders_the_page_with_its_marks_and_failing_cell(
    tmp_path: Path, regressed: tuple[DepthProfile, DepthProfile, ProfileComparison]
) -> None:
    baseline, current, comparison = regressed
    page = write_html_report(tmp_path / "r.html", current, comparison, baseline=baseline)
    shot = tmp_path / "r.png"
    result = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri())
    assert shot.exists(), result.stderr[-3000:]
    pixels = list(png_pixels(shot.read_bytes()))
    assert len(pixels) == 1200 * 1600
    counts: dict[tuple[int, int, int], int] = {}
    for pixel in pixels:
        counts[pixel] = counts.get(pixel, 0) + 1
    white = counts.get((255, 255, 255), 0)
    assert len(counts) > 50 and white < 0.97 * len(pixels), "the screenshot is blank"
    assert counts.get(hex_rgb(RUN_COLOUR), 0) > 100  # this run's marks and line were drawn
    assert counts.get(hex_rgb("#fbe3d6"), 0) > 200  # the failing cell's background


@pytest.mark.slow
@NEEDS_CHROMIUM
def test_chromium_runs_the_item_search(
    tmp_path: Path, regressed: tuple[DepthProfile, DepthProfile, ProfileComparison]
) -> None:
    baseline, current, comparison = regressed
    page = render_html(current, comparison, baseline=baseline)
    typing = (
        '<script>var box = document.querySelector("input.item-search"); box.value = "item-0004";'
        'box.dispatchEvent(new Event("input"));</script></body>'
    )
    (tmp_path / "search.html").write_text(page.replace("</body>", typing), encoding="utf-8")
    result = chromium(tmp_path, "--dump-dom", (tmp_path / "search.html").as_uri())
    rows = re.findall(r'<tr class="item worse"( hidden="")?><td class="l">([^<]*)</td>', result.stdout)
    assert len(rows) > 10, result.stdout[-2000:] + result.stderr[-2000:]
    assert [item for hidden, item in rows if not hidden] == ["knowledge-item-0004"]
