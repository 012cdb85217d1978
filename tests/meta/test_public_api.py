"""The declared public API: every exported name resolves to its defining object, lazily, and the README
imports only from it."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from repo_files import README

import pytest_layercheck
import pytest_layercheck.analysis


def test_every_export_is_the_defining_object_under_its_own_name() -> None:
    for namespace in (pytest_layercheck, pytest_layercheck.analysis):
        for name, (module, attribute) in namespace._EXPORTS.items():
            assert name == attribute, f"{namespace.__name__}.{name} renames {module}.{attribute}"
            assert getattr(namespace, name) is getattr(importlib.import_module(module), attribute), name
    assert set(pytest_layercheck.__all__) == {"__version__", *pytest_layercheck._EXPORTS}
    assert set(pytest_layercheck.analysis.__all__) == set(pytest_layercheck.analysis._EXPORTS)


def test_the_root_holds_a_handful_of_entry_points_and_the_analyses_their_namespace() -> None:
    analyses = {
        "head_importance",
        "find_retrieval_heads",
        "measure_redundancy",
        "compare_thinking",
        "register_analysis",
    }
    assert not analyses & set(pytest_layercheck.__all__)
    assert analyses <= set(pytest_layercheck.analysis.__all__)
    assert len(pytest_layercheck.__all__) <= 20


def test_importing_the_package_loads_no_model_code() -> None:
    """pytest imports the package at start-up for the plugin's entry point: torch must wait for first use."""
    code = "import sys, pytest_layercheck; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


@pytest.mark.slow
def test_layercheck_help_loads_no_model_code(tmp_path: Path) -> None:
    """``layercheck --help`` (every subcommand's parser) must answer at once: no torch, no transformers,
    no report renderers."""
    code = (
        "import sys; from pytest_layercheck.cli import build_parser; build_parser(); "
        "print('torch' in sys.modules, 'transformers' in sys.modules, 'pytest_layercheck.report' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False False False"
    script = Path(sys.executable).parent / "layercheck"  # the installed command, as a user runs it
    for command in (
        [str(script), "--help"],
        [str(script), "-h"],
        [str(script), "help"],
        [sys.executable, "-m", "pytest_layercheck.cli", "--help"],
        [sys.executable, "-m", "pytest_layercheck", "--help"],
    ):
        shown = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert shown.returncode == 0 and "usage: layercheck" in shown.stdout, (command, shown.stderr)
    shown = subprocess.run([str(script), "help", "profile"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert shown.returncode == 0 and "usage: layercheck profile" in shown.stdout, shown.stderr
    # Help needs no other package: with numpy, torch, transformers and rich unimportable it still answers.
    broken = tmp_path / "broken"
    for name in ("numpy", "torch", "transformers", "rich"):
        (broken / name).mkdir(parents=True)
        (broken / name / "__init__.py").write_text(f"raise ImportError('{name} is broken here')\n")
    env = {**os.environ, "PYTHONPATH": str(broken)}
    for args in (["--help"], ["profile", "--help"], ["--version"]):
        shown = subprocess.run([str(script), *args], capture_output=True, text=True, cwd=tmp_path, timeout=60, env=env)
        assert shown.returncode == 0 and "layercheck" in shown.stdout, shown.stderr
    shown = subprocess.run([str(script), "info"], capture_output=True, text=True, cwd=tmp_path, timeout=60, env=env)
    assert shown.returncode != 0 and "is broken here" in shown.stdout + shown.stderr  # the stand-ins were used


def test_the_readme_imports_only_the_public_api() -> None:
    imports = re.findall(r"^\s*from (pytest_layercheck[\w.]*) import", README.read_text(encoding="utf-8"), re.M)
    assert imports and set(imports) <= {"pytest_layercheck", "pytest_layercheck.analysis"}, imports
