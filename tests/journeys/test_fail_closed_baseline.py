"""Fault-injection rows: a baseline that is found but cannot be used is an error, never a silent pass.

``layercheck profile`` looks for a baseline by the model's name. Once one is there, the run promises a
comparison: a baseline recorded on other items or in another precision, a dangling symlink or a folder
in its place, is exit 2 with the reason and the fix; ``--no-compare`` asks for the profile alone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fault_world import SUITE, assert_exit, layercheck, snapshot
from repo_files import EXAMPLES, REPO


def found_by_name(ws: Path) -> Path:
    """The recorded baseline under the candidate model's own name, as `layercheck profile good` looks it up."""
    path = ws / "baselines" / "good.json"
    shutil.copy(ws / "baselines" / "facts.json", path)
    return path


@pytest.mark.slow
@pytest.mark.early(0)  # makes the fault-injection world that many tests share: started first, so no worker waits for it
def test_the_same_settings_compare_and_pass(ws: Path) -> None:
    found_by_name(ws)
    assert_exit(layercheck(ws, "profile", "good", *SUITE), 0, "baseline")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--suites", "facts.yaml", "--limit", "20"), "cannot be compared"),  # other items than the baseline's
        ((*SUITE, "--dtype", "bfloat16"), "another precision"),
    ],
)
def test_a_baseline_found_by_name_that_cannot_compare_is_exit_2(ws: Path, args: tuple[str, ...], reason: str) -> None:
    path = found_by_name(ws)
    before = snapshot(ws / "baselines")
    result = layercheck(ws, "profile", "good", *args)
    output = assert_exit(result, 2, f"found the baseline {Path('baselines') / path.name}", reason, "--no-compare")
    assert "--layercheck-" not in output  # the fix in the command's own words (--dtype, not --layercheck-dtype)
    assert snapshot(ws / "baselines") == before
    # Asked for a profile alone, the same run prints it and compares nothing.
    alone = assert_exit(layercheck(ws, "profile", "good", *args, "--no-compare"), 0)
    assert "cannot compare" not in alone


@pytest.mark.slow
def test_no_compare_ignores_a_regressed_model_only_when_asked(ws: Path) -> None:
    shutil.copy(ws / "baselines" / "facts.json", ws / "baselines" / "damaged.json")
    assert_exit(layercheck(ws, "profile", "damaged", *SUITE), 1, "regressed")
    assert_exit(layercheck(ws, "profile", "damaged", *SUITE, "--no-compare"), 0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dangling symlink", "directory"])
def test_a_baseline_path_that_is_no_file_is_exit_2(ws: Path, kind: str) -> None:
    path = ws / "baselines" / "good.json"
    if kind == "directory":
        path.mkdir()
        message = "is not a file"
    else:
        path.symlink_to(ws / "baselines" / "gone.json")
        message = "which does not exist"
    assert_exit(layercheck(ws, "profile", "good", *SUITE), 2, message, "--no-compare")
    assert path.is_symlink() or path.is_dir()  # left as it was


@pytest.mark.slow
def test_no_compare_and_a_named_baseline_contradict(ws: Path) -> None:
    assert_exit(
        layercheck(ws, "profile", "good", *SUITE, "--no-compare", "--baseline", "facts"),
        2,
        "--no-compare and --baseline contradict each other",
    )


@pytest.mark.slow
def test_pytest_refuses_a_dangling_baseline_symlink(world: Path, pytester: pytest.Pytester) -> None:
    (pytester.path / "baselines").mkdir()
    (pytester.path / "baselines" / "facts.json").symlink_to(pytester.path / "baselines" / "gone.json")
    shutil.copy(world / "facts.yaml", pytester.path / "facts.yaml")
    pytester.makepyfile(
        test_guard="""
        import pytest

        @pytest.mark.layercheck("knowledge", "intact", max_drop=0.05)
        def test_knowledge():
            pass
    """
    )
    result = pytester.runpytest_subprocess(
        f"--layercheck-model={world / 'good'}",
        "--layercheck-baseline=facts",
        "--layercheck-suites=facts.yaml",
        "--layercheck-limit=0",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*is a symlink to*which does not exist*"])


GUARD = """
    import pytest

    @pytest.mark.layercheck("knowledge", "intact", max_drop=0.05)
    def test_knowledge():
        pass
"""


def guard_run(world: Path, pytester: pytest.Pytester, model: str, *args: str) -> tuple[int, dict]:
    """The guard in pytest, as CI runs it, with the JSON report; returns pytest's status and the report."""
    if not (pytester.path / "baselines").exists():
        shutil.copytree(world / "baselines", pytester.path / "baselines")
        shutil.copy(world / "facts.yaml", pytester.path / "facts.yaml")
        pytester.makepyfile(test_guard=GUARD)
    report = pytester.path / "report.json"
    report.unlink(missing_ok=True)
    result = pytester.runpytest_subprocess(
        f"--layercheck-model={world / model}",
        "--layercheck-baseline=facts",
        "--layercheck-suites=facts.yaml",
        "--layercheck-limit=0",
        f"--layercheck-report={report}",
        "-p",
        "no:cacheprovider",
        *args,
    )
    return result.ret, json.loads(report.read_text())


@pytest.mark.slow
def test_the_json_report_agrees_with_pytests_exit_status(world: Path, pytester: pytest.Pytester) -> None:
    status, report = guard_run(world, pytester, "good")
    assert (status, report["passed"], report["refused"], report["failed_checks"]) == (0, True, None, [])

    status, report = guard_run(world, pytester, "damaged")
    assert status == 1 and report["passed"] is False
    assert report["failed_checks"] == ["test_guard.py::test_knowledge"] and report["comparison"]["passed"] is False

    # Other items than the baseline's: the comparison is refused, the run fails, and the report says why.
    status, report = guard_run(world, pytester, "good", "--layercheck-limit=20")
    assert status == 1 and report["passed"] is False and report["comparison"] is None
    assert "cannot be compared" in report["refused"]


PLUGIN_OFF = [(("-p", "no:layercheck"), {}), ((), {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "env"), PLUGIN_OFF, ids=["-p no:layercheck", "autoload disabled"])
def test_the_examples_config_fails_a_run_without_the_plugin(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], env: dict[str, str]
) -> None:
    """The shipped pytest.ini: guards with the plugin switched off fail at start-up instead of passing."""
    shutil.copy(EXAMPLES / "pytest.ini", pytester.path / "pytest.ini")
    pytester.makepyfile(test_guard=GUARD)
    with_plugin = pytester.runpytest_subprocess("--collect-only", "-p", "no:cacheprovider")
    assert with_plugin.ret == 0, with_plugin.stdout.str()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    without = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    assert without.ret not in (0, 5), without.stdout.str()
    assert "Missing required plugins: pytest-layercheck" in without.stdout.str() + without.stderr.str()


@pytest.mark.parametrize(("args", "env"), PLUGIN_OFF, ids=["-p no:layercheck", "autoload disabled"])
def test_the_guard_workflows_flags_fail_a_run_without_the_plugin(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], env: dict[str, str]
) -> None:
    """The workflow's own pytest flags, in a repository with no pytest configuration of its own."""
    workflow = (REPO / ".github" / "workflows" / "guard-finetune.yml").read_text()
    assert "-o required_plugins=pytest-layercheck --strict-markers" in workflow
    pytester.makepyfile(test_guard=GUARD)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = pytester.runpytest_subprocess(
        "-o", "required_plugins=pytest-layercheck", "--strict-markers", "-p", "no:cacheprovider", *args
    )
    assert (
        result.ret not in (0, 5)
        and "Missing required plugins: pytest-layercheck" in result.stdout.str() + result.stderr.str()
    )
