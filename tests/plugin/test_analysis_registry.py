"""An analysis is one entry in the registry: a toy analysis, defined and registered in a user's conftest,
runs on the session model through ``layercheck_analyses``, is memoised and reported, with no other change."""

from __future__ import annotations

from pathlib import Path

import pytest
from plugin_project import run

from pytest_layercheck import Analysis, register_analysis
from pytest_layercheck.analysis.registry import analysis_names, get_analysis, unregister_analysis
from pytest_layercheck.core.errors import ConfigError

TOY_CONFTEST = '''
from pytest_layercheck import Analysis, register_analysis
from pytest_layercheck.model.architecture import get_adapter

CALLS = []


class LayerCount:
    def __init__(self, layers):
        self.layers = layers

    def to_dict(self):
        return {"toy_layer_count": self.layers}


def count_layers(loaded, scale=1):
    """The toy: how many decoder layers the session model has, times ``scale``."""
    CALLS.append(scale)
    return LayerCount(get_adapter(loaded.model).num_layers * scale)


register_analysis(Analysis("layer_count", count_layers, "decoder layers of the model"))
'''

TOY_TESTS = """
from conftest import CALLS


def test_toy_analysis_runs_once_per_argument_set(layercheck_analyses):
    first = layercheck_analyses.run("layer_count", scale=2)
    assert first.layers == 12
    assert layercheck_analyses.run("layer_count", scale=2) is first
    assert layercheck_analyses.run("layer_count").layers == 6
    assert CALLS == [2, 1]
"""


@pytest.mark.slow
def test_a_registered_toy_analysis_runs_on_the_session_model(
    guarded_project: pytest.Pytester,
    fact_models: dict[str, Path],
) -> None:
    guarded_project.makeconftest(TOY_CONFTEST)
    guarded_project.makepyfile(test_toy=TOY_TESTS)
    try:
        result = run(guarded_project, fact_models["good"], "test_toy.py")
    finally:
        unregister_analysis("layer_count")  # runpytest runs in this process
    result.assert_outcomes(passed=1)
    # Reported in the terminal summary without a renderer of its own, from its to_dict().
    result.stdout.fnmatch_lines(["*layercheck analyses*", "*analysis layer_count*", "*toy_layer_count*12*"])


def test_builtin_analyses_are_registered_without_importing_model_code() -> None:
    assert {"heads", "retrieval_heads", "masking", "redundancy", "thinking", "transfer"} <= set(analysis_names())
    from pytest_layercheck.analysis.heads import head_importance

    assert get_analysis("heads").function() is head_importance and get_analysis("heads").uses_cache


def test_unknown_and_conflicting_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="(?s)unknown analysis 'nope'.*use one of heads"):
        get_analysis("nope")
    toy = Analysis("toy_once", lambda loaded: None, "nothing")
    register_analysis(toy)
    try:
        assert register_analysis(toy) is toy  # the same entry again is harmless
        with pytest.raises(ConfigError, match="already registered"):
            register_analysis(Analysis("toy_once", lambda loaded: 1, "something else"))
    finally:
        unregister_analysis("toy_once")
    assert "toy_once" not in analysis_names()
