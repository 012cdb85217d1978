"""A user's pytest project for the plugin's tests through pytester: the fact suite, an ini file, guard
modules, its own result cache and no CI settings; and the models it is run on, which memorised the facts.

Use the fixtures by importing them into a test module (``from plugin_project import fact_models``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from trained_tiny import perturbed, save, shared_fact_model, write_fact_suite

#: Three marker checks of the fact suite's knowledge: intact, shallow, and deep with a loose tolerance.
GUARDS = """
import pytest

@pytest.mark.layercheck("knowledge", "intact")
def test_knowledge_intact():
    pass

@pytest.mark.layercheck(capability="knowledge", band="shallow")
def test_knowledge_shallow():
    pass

@pytest.mark.layercheck(capability="knowledge", band="deep", max_drop=0.2)
def test_knowledge_deep_loose():
    pass
"""


def fact_suite_project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, cache: Path, ini: str, **modules: str
) -> pytest.Pytester:
    """``pytester``'s folder as a project that checks ``facts.yaml`` on every item: ``ini`` adds to its
    ``[pytest]`` section, ``modules`` are its test modules; results are cached in ``cache``, and the
    CI and job-summary variables of this run are gone."""
    monkeypatch.setenv("LAYERCHECK_CACHE_DIR", str(cache))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    write_fact_suite(pytester.path / "facts.yaml")
    pytester.makeini("[pytest]\nlayercheck_suites = facts.yaml\nlayercheck_limit = 0\n" + ini)
    pytester.makepyfile(**modules)
    return pytester


@pytest.fixture(scope="session")
def fact_models(tmp_path_factory: pytest.TempPathFactory, run_folder: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fact-models")
    model = shared_fact_model(run_folder)
    return {
        "good": save(model, root / "good"),
        # Strong noise on the two shallowest blocks: the memorised facts are lost.
        "damaged": save(perturbed(model, [0, 1], scale=2.0), root / "damaged"),
        # Noise far below the weights' scale on every block: nothing measurable changes.
        "noisy": save(perturbed(model, list(range(6)), scale=0.005), root / "noisy"),
    }


@pytest.fixture
def guarded_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.Pytester:
    """The fact-suite project with the :data:`GUARDS` module and the baseline name ``facts-model``; the
    model is given on the command line (:func:`run`)."""
    return fact_suite_project(
        pytester, monkeypatch, tmp_path / "cache", "layercheck_baseline = facts-model\n", test_guards=GUARDS
    )


def run(project: pytest.Pytester, model: Path, *args: str) -> pytest.RunResult:
    """pytest in ``project`` (in this process) on ``model``."""
    return project.runpytest(f"--layercheck-model={model}", "-p", "no:cacheprovider", *args)
