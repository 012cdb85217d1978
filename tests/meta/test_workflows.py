"""The GitHub workflows: structure, current action majors, the baseline file they check, and actionlint."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from repo_files import REPO, quick_start_commands

from pytest_layercheck.evaluation.baseline import BaselineStore, slugify
from pytest_layercheck.model.default_model import DEFAULT_MODEL_NAME

WORKFLOWS = REPO / ".github" / "workflows"


def _lint() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lint_workflows", REPO / ".ci" / "lint_workflows.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


lint = _lint()


def load(name: str) -> dict[Any, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))


def step(workflow: dict[Any, Any], name: str) -> dict[str, Any]:
    return next(s for _, _, s in lint.steps_of(workflow) if s.get("name") == name)


def test_both_workflows_exist_and_have_a_sound_structure() -> None:
    files = {path.name for path in lint.workflow_files()}
    assert {"ci.yml", "guard-finetune.yml"} <= files
    for path in lint.workflow_files():
        assert lint.structure_problems(path) == []
        workflow = lint.load(path)
        assert lint.triggers(workflow) and workflow["jobs"]
        for job in workflow["jobs"].values():
            assert job["runs-on"] == "ubuntu-latest" and job["timeout-minutes"] and job["steps"]


def test_every_action_is_on_its_current_node24_major() -> None:
    seen = set()
    for path in lint.workflow_files():
        for _, _, s in lint.steps_of(lint.load(path)):
            if "uses" not in s:
                continue
            action, _, ref = s["uses"].partition("@")
            assert action in lint.CURRENT_MAJORS, f"{path.name}: {s['uses']} is not one of the checked actions"
            assert ref == f"v{lint.CURRENT_MAJORS[action]}", f"{path.name}: {s['uses']}"
            assert lint.CURRENT_MAJORS[action] >= lint.NODE24_SINCE[action]
            seen.add(action)
    assert seen == set(lint.CURRENT_MAJORS)


def test_guard_workflow_checks_the_file_the_store_writes(tmp_path: Path) -> None:
    workflow = load("guard-finetune.yml")
    env = workflow["env"]
    baseline = env["BASELINE"]
    assert baseline == slugify(DEFAULT_MODEL_NAME) == "smollm2-135m-instruct"
    assert slugify(baseline) == baseline  # the pytest flag with the slug finds the same file
    assert BaselineStore(tmp_path / "baselines").path_for(baseline).name == f"{baseline}.json"
    assert BaselineStore(tmp_path / "baselines").path_for(DEFAULT_MODEL_NAME).name == f"{baseline}.json"

    record = step(workflow, "Record the baseline if none is committed")["run"]
    assert '[ ! -f "baselines/$BASELINE.json" ]' in record
    command = " ".join(record.replace("\\\n", " ").split())
    assert re.search(r'layercheck baseline "\$BASE_MODEL" --name "\$BASELINE" --baseline-dir baselines', command)
    assert "--update" not in command  # a missing baseline is written without it
    guard = " ".join(step(workflow, "Guard the candidate")["run"].replace("\\\n", " ").split())
    assert '--layercheck-baseline="$BASELINE"' in guard
    # The record step and the guard measure the same way.
    for variable in ("LAYERCHECK_SUITES", "LAYERCHECK_LIMIT", "LAYERCHECK_SWEEP_LIMIT"):
        assert variable in env and f'"${variable}"' in command and f'="${variable}"' in guard


def test_ci_workflow_runs_the_ci_script_with_cpu_torch() -> None:
    workflow = load("ci.yml")
    run = step(workflow, "Install, lint the workflows, fetch the default model, run the tests (.ci/run)")
    assert run["run"] == "bash .ci/run"
    assert run["env"]["PIP_EXTRA_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    cache = step(workflow, "Cache the default model")["with"]["path"]
    assert cache == ".cache/layercheck/models" and 'LAYERCHECK_CACHE_DIR="$PWD/.cache/layercheck"' in script


def readme_command_lines() -> list[str]:
    """Every command line of the README's ```bash blocks, comments dropped."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    return [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_ci_installs_and_runs_exactly_what_the_readme_says() -> None:
    """CI proves the setup a user gets: every line of .ci/run that installs or runs the project is a README
    line, run as written; the quick start's lines are all there; the last is the README's test command."""
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    steps = re.findall(r'^step "(.*?)"(?: \|\| echo "[^"]*")?$', script, re.M)
    readme = readme_command_lines()
    quick_start = quick_start_commands((REPO / "README.md").read_text(encoding="utf-8"))
    assert steps and all(line in readme for line in steps), set(steps) - set(readme)
    assert all(line in steps for line in quick_start)
    assert steps[-1] == quick_start[-1] and steps[-1].endswith("&& python -m pytest")
    outside = [line for line in script.splitlines() if "pip install" in line and not line.startswith("step ")]
    assert not outside, f"installs in .ci/run that the README does not show: {outside}"
    # The pins the README's installs name are the file the main job and the README share.
    assert all("-c constraints.txt" in line for line in steps if "pip install" in line)
    pins = (REPO / "constraints.txt").read_text(encoding="utf-8")
    assert re.search(r"^torch==2\.13\.0$", pins, re.M) and "torch==2.13.0" in quick_start[0]
    assert "bash .ci/newest" in script and "bash .ci/newest" in readme


def test_the_declared_ranges_start_at_the_pinned_versions() -> None:
    """What constraints.txt pins (the main job) lies inside pyproject.toml's ranges, at their lower end for
    the libraries whose APIs move (transformers, tokenizers)."""
    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    pins = dict(
        line.split("==")
        for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    for name in ("torch", "transformers", "tokenizers", "hypothesis"):
        assert declared[name].specifier.contains(pins[name]), (name, pins[name], declared[name])
    for name in ("transformers", "tokenizers"):
        assert f">={'.'.join(pins[name].split('.')[:2])}" in str(declared[name].specifier), name


@pytest.mark.parametrize(
    ("uses", "problem"),
    [
        ("actions/checkout@v4", "Node 20"),
        ("actions/upload-artifact@v5", "Node 20"),
        ("actions/setup-python@main", "not pinned"),
        ("checkout", "not owner/repo@ref"),
    ],
)
def test_structure_check_catches_stale_or_unpinned_actions(tmp_path: Path, uses: str, problem: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(
        yaml.safe_dump(
            {"on": "push", "jobs": {"t": {"runs-on": "ubuntu-latest", "steps": [{"uses": uses}, {"run": "true"}]}}}
        )
    )
    assert any(problem in p for p in lint.structure_problems(path))
    assert lint.uses_problem("actions/checkout@" + "a" * 40) is None  # a full commit SHA is pinned too


def test_structure_check_catches_missing_parts(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(
        "name: x\njobs:\n  a:\n    steps: []\n  b:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - name: both\n        uses: actions/cache@v5\n        run: echo\n"
    )
    problems = " | ".join(lint.structure_problems(path))
    for expected in ("no triggers", "job 'a' has no runs-on", "job 'a' has no steps", "exactly one of uses/run"):
        assert expected in problems
    path.write_text("jobs: [")
    assert "does not parse as YAML" in lint.structure_problems(path)[0]


def test_without_actionlint_the_structure_check_stands_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(lint, "tool", lambda name: None)
    assert lint.main([]) == 0
    assert "actionlint is not installed; checked the structure" in capsys.readouterr().out


@pytest.mark.skipif(lint.tool("actionlint") is None, reason="actionlint is not installed (.ci/run installs it)")
def test_actionlint_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert lint.main([]) == 0, capsys.readouterr().out
    assert "clean" in capsys.readouterr().out


def test_the_option_help_states_the_default_item_counts() -> None:
    """``--limit`` / ``--sweep-limit`` help name the defaults the settings use (they went stale once)."""
    from pytest_layercheck.evaluation.options import PROFILE
    from pytest_layercheck.evaluation.settings import DEFAULT_LIMITS, DEFAULT_SWEEP_LIMIT, DEFAULT_SWEEP_LIMITS

    helps = {option.name: option.help for option in PROFILE}
    assert f"{DEFAULT_LIMITS['retrieval']} retrieval" in helps["limit"]
    for suite, items in DEFAULT_SWEEP_LIMITS.items():
        assert f"{suite} {items}" in helps["sweep-limit"]
    assert f"other suites {DEFAULT_SWEEP_LIMIT}" in helps["sweep-limit"]
