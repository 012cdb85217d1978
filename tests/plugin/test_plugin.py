"""End-to-end plugin behaviour through pytester, on a tiny model that memorised a fact suite."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pytest
from plugin_project import run

pytest.importorskip("pytest_layercheck.pytest_plugin.plugin")

#: The fixture's models are named after their folders ("good"), not after the baseline "facts-model",
#: so recording needs the explicit confirmation.
UPDATE = ("--layercheck-update", "--layercheck-allow-model-change")


def record(project: pytest.Pytester, model: Path) -> Path:
    result = run(project, model, *UPDATE)
    result.assert_outcomes(passed=3)
    baseline = project.path / "baselines" / "facts-model.json"
    assert baseline.is_file()
    return baseline


def test_missing_baseline_fails_and_says_how_to_record_it(
    guarded_project: pytest.Pytester, fact_models: dict[str, Path]
) -> None:
    result = run(guarded_project, fact_models["good"])
    result.assert_outcomes(failed=3)
    # The session model is not the model the baseline is named after: the advice records the baseline
    # from the trusted model, never `--layercheck-update` on this (candidate) model.
    result.stdout.fnmatch_lines(["*no baseline 'facts-model'*", "*layercheck baseline MODEL --name facts-model*"])
    assert "--layercheck-update" not in result.stdout.str()
    assert not (guarded_project.path / "baselines").exists()


def test_recording_a_candidate_as_the_baseline_needs_confirmation(
    guarded_project: pytest.Pytester, fact_models: dict[str, Path]
) -> None:
    result = run(guarded_project, fact_models["good"], "--layercheck-update")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        ["*refusing to record the baseline 'facts-model'*", "*--layercheck-allow-model-change*"]
    )
    assert not (guarded_project.path / "baselines").exists()


def test_update_writes_a_baseline_and_says_so(guarded_project: pytest.Pytester, fact_models: dict[str, Path]) -> None:
    baseline = record(guarded_project, fact_models["good"])
    data = json.loads(baseline.read_text())
    assert data["schema_version"] == 2
    # multiple choice: the primary metric (acc) and the one cells are judged by (p_correct), per evaluation
    assert {"acc", "p_correct"} <= set(data["evaluations"]["facts"]["intact"]["outcomes"])
    assert {c["metric"] for c in data["cells"]} == {"p_correct"}
    assert data["model"]["num_layers"] == 6
    assert data["suites"]["facts"]["content_hash"].startswith("sha256:")
    assert {"torch", "transformers", "python"} <= set(data["environment"])
    assert data["settings"]["seed"] == 0
    result = run(guarded_project, fact_models["good"], *UPDATE)
    result.stdout.fnmatch_lines(["*baseline unchanged*facts-model.json*"])


def test_update_in_ci_does_not_pass_silently(
    guarded_project: pytest.Pytester, fact_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = run(guarded_project, fact_models["good"], *UPDATE)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*baseline written*", "*written during a CI run*"])


def test_run_against_its_own_baseline_passes_and_prints_the_profile(
    guarded_project: pytest.Pytester, fact_models: dict[str, Path]
) -> None:
    record(guarded_project, fact_models["good"])
    result = run(guarded_project, fact_models["good"])
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*layercheck depth-sensitivity profile*",
            "*p_correct (facts) · mode layers*",
            "facts *knowledge *p_correct *",
            "*evidence per cell*",
            "facts/intact *",
            "facts/shift *",
            "*(permutation for facts/shift)*",
            "*where it moved*",
            "*centre of depth *",
            "passed: * ok",
        ]
    )


def test_damaged_shallow_layers_fail_the_knowledge_cells_with_a_readable_report(
    guarded_project: pytest.Pytester, fact_models: dict[str, Path]
) -> None:
    record(guarded_project, fact_models["good"])
    result = run(guarded_project, fact_models["damaged"])
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 2
    result.stdout.fnmatch_lines(
        [
            "*test_knowledge_intact*",
            "*knowledge/intact: p_correct fell from*score sign-flip p =*",
            "*obtained*expected*diff*95% CI*test*p (holm)*detectable*status*",
            "shift *permutation (* items)*",
            "*--layercheck-update*",
        ]
    )


def test_a_little_noise_does_not_fail(guarded_project: pytest.Pytester, fact_models: dict[str, Path]) -> None:
    record(guarded_project, fact_models["good"])
    run(guarded_project, fact_models["noisy"]).assert_outcomes(passed=3)


def test_json_report_and_step_summary_are_written(
    guarded_project: pytest.Pytester, fact_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    record(guarded_project, fact_models["good"])
    summary = guarded_project.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = run(guarded_project, fact_models["damaged"], "--layercheck-report=report.json")
    assert result.ret != 0
    report = json.loads((guarded_project.path / "report.json").read_text())
    assert report["passed"] is False
    assert "|" in summary.read_text() and "facts" in summary.read_text()


@pytest.mark.slow
def test_yaml_check_file_is_collected_as_tests(guarded_project: pytest.Pytester, fact_models: dict[str, Path]) -> None:
    record(guarded_project, fact_models["good"])
    (guarded_project.path / "test_guards.py").unlink()
    guarded_project.path.joinpath("layercheck_guards.yaml").write_text(
        "checks:\n"
        "  - name: facts survive\n"
        "    capability: knowledge\n"
        "    band: intact\n"
        "  - name: facts well above chance\n"
        "    capability: knowledge\n"
        "    band: intact\n"
        "    min: 0.6\n"
    )
    run(guarded_project, fact_models["good"]).assert_outcomes(passed=2)
    result = run(guarded_project, fact_models["damaged"])
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*below the required minimum*"])


@pytest.mark.slow
def test_malformed_yaml_check_is_a_clear_collection_error(
    guarded_project: pytest.Pytester, fact_models: dict[str, Path]
) -> None:
    guarded_project.path.joinpath("layercheck_bad.yaml").write_text(
        "checks:\n  - capability: knowledge\n    bandd: shallow\n"
    )
    result = run(guarded_project, fact_models["good"], "layercheck_bad.yaml")
    result.stdout.fnmatch_lines(["*layercheck_bad.yaml:2*unknown field*bandd*"])


@pytest.mark.slow
def test_incompatible_baseline_is_refused_not_compared(
    guarded_project: pytest.Pytester, fact_models: dict[str, Path]
) -> None:
    record(guarded_project, fact_models["good"])
    result = run(guarded_project, fact_models["good"], "--layercheck-limit=20")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*measured differently*", "*different items*48 items*20*"])


def test_ablate_fixture_skips_layers_of_the_session_model(
    guarded_project: pytest.Pytester, fact_models: dict[str, Path]
) -> None:
    guarded_project.makepyfile(
        test_guards="""
import torch

def test_skip_first_layer_changes_logits(layercheck_model, layercheck_ablate):
    ids = torch.tensor([[5, 6, 7]])
    before = layercheck_model.model(ids).logits
    with layercheck_ablate(skip=[0]):
        changed = layercheck_model.model(ids).logits
    with layercheck_ablate(band="shallow"):
        pass
    assert not torch.allclose(before, changed)
    assert torch.equal(before, layercheck_model.model(ids).logits)
"""
    )
    run(guarded_project, fact_models["good"]).assert_outcomes(passed=1)


@pytest.mark.slow
def test_xdist_workers_share_results_and_only_the_controller_writes(
    guarded_project: pytest.Pytester, fact_models: dict[str, Path]
) -> None:
    pytest.importorskip("xdist")
    result = run(guarded_project, fact_models["good"], "-n", "2", *UPDATE)
    result.assert_outcomes(passed=3)
    assert (guarded_project.path / "baselines" / "facts-model.json").is_file()
    run(guarded_project, fact_models["good"], "-n", "2").assert_outcomes(passed=3)


ANALYSES = """
def test_head_importance_is_computed_once(layercheck_analyses):
    first = layercheck_analyses.heads("facts.yaml", layers=[0, 1], limit=12)
    assert first is layercheck_analyses.heads("facts.yaml", layers=[0, 1], limit=12)
    assert first.intact > 0.9 and len(first.accuracy) == 2 * 4

def test_redundancy_never_suggests_the_last_layer(layercheck_analyses):
    result = layercheck_analyses.redundancy(block=2, suites=("facts.yaml",), limit=12)
    assert len(result.suggested) == 2 and max(result.suggested) < 5
"""


def test_analyses_fixture_runs_on_the_session_model(
    guarded_project: pytest.Pytester, fact_models: dict[str, Path]
) -> None:
    guarded_project.makepyfile(test_analyses=ANALYSES)
    result = run(guarded_project, fact_models["good"], "test_analyses.py")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*layercheck analyses*", "*Head importance*", "*layercheck redundancy*"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "computed"),
    [
        # One intact check: the facts suite intact, in its two parts (the first 40 items, which a sweep
        # scores intact anyway, and the other 8), not the 7 evaluations of a full profile.
        ('@pytest.mark.layercheck("knowledge", "intact")\ndef test_one():\n    pass\n', 2),
        # A shallow-band check: the sweep over the first 40 items (its own intact pass, which the
        # activation reuse runs anyway, and the band's two single-layer removals), then the other 8 intact.
        ('@pytest.mark.layercheck("knowledge", "shallow")\ndef test_one():\n    pass\n', 4),
    ],
)
def test_a_run_computes_only_what_its_checks_need(
    guarded_project: pytest.Pytester, fact_models: dict[str, Path], module: str, computed: int
) -> None:
    record(guarded_project, fact_models["good"])
    (guarded_project.path / "test_guards.py").write_text("import pytest\n\n" + module)
    result = run(guarded_project, fact_models["good"], "--layercheck-no-cache")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [f"*profile computed in*(evaluations: 0 from cache, {computed} computed*", "torch threads: * torch thread* (*"]
    )


@pytest.mark.slow
def test_failed_checks_become_annotations_and_junit_properties(
    guarded_project: pytest.Pytester, fact_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    baseline = json.loads(record(guarded_project, fact_models["good"]).read_text())
    recorded = next(c["value"] for c in baseline["cells"] if c["capability"] == "knowledge" and c["band"] == "intact")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    result = run(guarded_project, fact_models["damaged"], "--junitxml=junit.xml")
    result.stdout.fnmatch_lines(["::error file=test_guards.py,line=*,title=layercheck::knowledge/intact*"])
    cases = ElementTree.parse(guarded_project.path / "junit.xml").getroot().iter("testcase")
    properties = [{p.get("name"): p.get("value") for p in case.iter("property")} for case in cases]
    cell = next(p for p in properties if p.get("layercheck_cell") == "knowledge/intact")
    assert cell["layercheck_passed"] == "False" and cell["layercheck_status"] == "regressed"
    # The numbers are the baseline's and the candidate's, whatever a CPU's training made of them.
    assert float(cell["layercheck_baseline"]) == pytest.approx(recorded, abs=1e-6)
    assert float(cell["layercheck_value"]) < float(cell["layercheck_baseline"])
    assert float(cell["layercheck_delta"]) == pytest.approx(float(cell["layercheck_value"]) - recorded, abs=2e-6)


@pytest.mark.slow
def test_a_run_that_checks_no_model_never_imports_torch(pytester: pytest.Pytester) -> None:
    """The plugin is installed in every pytest run of the environment; a run whose tests use none of it
    starts without importing torch or transformers (seconds on a CPU runner), and a model test still works."""
    pytester.makepyfile(
        test_plain="import sys\n\n\ndef test_plain():\n"
        "    assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_plain.py")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*plugins:*layercheck*"])
