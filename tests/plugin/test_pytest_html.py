"""pytest-html's report carries the layercheck cells and per-layer charts (the optional ``html`` extra).

Each test runs ``pytest`` in a copy of the fault world (a tiny fact model, a damaged copy, a recorded
baseline ``facts``), as a user would, with a check on the damaged model that fails: with pytest-html
writing its report, the summary holds the band-cell table and the per-layer chart and the failed
check's row its cell's evidence; without pytest-html, the run and its verdict are as before.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fault_world import environment
from html_checks import NEEDS_CHROMIUM, chromium, classes, parse

from pytest_layercheck.report.html import CSS, scoped_css

CHECKS = textwrap.dedent("""
    import pytest

    @pytest.mark.layercheck("facts")
    def test_facts_kept():
        pass

    def test_plain():
        pass
""")
OPTIONS = (
    "--layercheck-model=damaged",
    "--layercheck-suites=facts.yaml",
    "--layercheck-limit=0",
    "--layercheck-baseline=facts",
    "-p",
    "no:cacheprovider",
    "-p",
    "no:xdist",
)


def workspace(world: Path, folder: Path) -> Path:
    """A private copy of the world's baseline, cache and key (as the ``ws`` fixture), with the checks."""
    for name in ("baselines", "cache", "config"):
        shutil.copytree(world / name, folder / name)
    shutil.copy(world / "facts.yaml", folder / "facts.yaml")
    for name in ("good", "damaged"):
        (folder / name).symlink_to(world / name)
    (folder / "test_guard.py").write_text(CHECKS)
    return folder


def run_pytest(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", *OPTIONS, *args],
        cwd=folder,
        env=environment(folder, **env),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def report(world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """pytest-html's self-contained report of a run whose layercheck check fails, and pytest's output."""
    pytest.importorskip(
        "pytest_html", reason="pytest-html is the optional html extra (and in the test extra): pip install -e '.[html]'"
    )
    folder = workspace(world, tmp_path_factory.mktemp("pytest-html"))
    result = run_pytest(folder, "--html=report.html", "--self-contained-html")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 1 passed" in result.stdout and "INTERNALERROR" not in result.stdout + result.stderr
    return folder / "report.html", result.stdout


@pytest.mark.slow
def test_the_summary_holds_the_band_cells_and_the_per_layer_chart(report: tuple[Path, str]) -> None:
    tree = parse(report[0].read_text(encoding="utf-8"), strict=False)
    section = next((e for e in tree.iter() if e.get("id") == "layercheck-summary"), None)
    assert section is not None, "no layercheck section in pytest-html's summary"
    assert "layercheck" in classes(section)
    assert any("additional-summary" in classes(e) and section in list(e) for e in tree.iter())  # pytest-html's slot
    table = next(e for e in section.iter() if "bands" in classes(e))
    assert [e for e in table.iter() if e.tag == "td" and e.get("data-failed") == "true"], "no failing cell"
    charts = [e for e in section.iter() if "layer-chart" in classes(e)]
    assert [c.get("data-suite") for c in charts] == ["facts"]
    marks = [int(e.get("data-layer", "-1")) for e in charts[0].iter() if "mark" in classes(e)]
    assert marks == list(range(6))  # one mark per layer of the tiny model
    assert [e for e in charts[0].iter() if "mark-baseline" in classes(e)]
    verdict = next(e for e in section.iter() if "verdict" in classes(e))
    assert "failed" in classes(verdict) and "test_guard.py::test_facts_kept" in "".join(verdict.itertext())
    style = "".join(e.text or "" for e in tree.iter() if e.tag == "style")
    assert ".layercheck .failed-cell{" in style


@pytest.mark.slow
def test_the_failed_checks_row_carries_its_cells_evidence(report: tuple[Path, str]) -> None:
    page = report[0].read_text(encoding="utf-8")
    blob = re.search(r'id="data-container" data-jsonblob="([^"]*)"', page)
    assert blob, "pytest-html's test data not found"
    tests = json.loads(html.unescape(blob.group(1)))["tests"]
    extras = {
        node: [x for run in runs for x in run["extras"] if x["format_type"] == "html"] for node, runs in tests.items()
    }
    assert extras["test_guard.py::test_plain"] == []  # only a check's row gets evidence
    evidence = [x["content"] for x in extras["test_guard.py::test_facts_kept"]]
    assert len(evidence) == 1, evidence
    fragment = parse(evidence[0], strict=False)
    box = next(e for e in fragment.iter() if "layercheck-evidence" in classes(e))
    assert box.get("data-cell") == "facts/intact" and box.get("data-failed") == "true"
    text = " ".join("".join(box.itertext()).split())
    assert "facts/intact" in text and "fails: regressed" in text and "fell from" in text
    assert [e for e in box.iter() if "evidence" in classes(e) and e.tag == "table"]


@pytest.mark.slow
@NEEDS_CHROMIUM
def test_chromium_shows_the_evidence_in_the_failed_checks_row(report: tuple[Path, str]) -> None:
    """pytest-html's script builds the rows from its data: the evidence reaches the rendered page."""
    result = chromium(report[0].parent, "--dump-dom", report[0].as_uri())
    dom = result.stdout
    assert 'id="layercheck-summary"' in dom, result.stderr[-3000:]
    # The rendered element, not its escaped copy in the data attribute.
    assert re.search(r'<div class="layercheck layercheck-evidence" data-cell="facts/intact"', dom), dom[-3000:]


@pytest.mark.slow
def test_without_pytest_html_the_run_and_its_verdict_are_unchanged(world: Path, tmp_path: Path) -> None:
    """pytest-html absent: its two plugins blocked, and any import of it fails; layercheck never reaches
    for it."""
    folder = workspace(world, tmp_path)
    shadow = tmp_path / "shadow" / "pytest_html"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('pytest-html is not installed here')\n")
    result = run_pytest(folder, "-p", "no:html", "-p", "no:html_fixtures", PYTHONPATH=str(shadow.parent))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "1 failed, 1 passed" in result.stdout
    assert "INTERNALERROR" not in output and "pytest-html is not installed here" not in output
    assert "layercheck depth-sensitivity profile" in result.stdout and "regressed" in result.stdout
    assert not (folder / "report.html").exists()


def test_the_scoped_css_keeps_every_rule_and_styles_only_its_scope() -> None:
    scoped = scoped_css(".lc")
    assert scoped.count("{") == CSS.count("{") and scoped.count("}") == CSS.count("}")
    selectors = [head for head in re.findall(r"([^{}]+)\{", scoped) if not head.strip().startswith("@")]
    assert selectors and all(
        s.strip() == ".lc" or s.strip().startswith(".lc ") for head in selectors for s in head.split(",")
    )
    assert ".lc{--fail:" in scoped and ".lc .failed-cell{" in scoped and "@media print{.lc{" in scoped
