"""An analysis is one entry in the registry: a toy analysis, defined and registered in a user's conftest,
runs on the session model through ``layercheck_analyses``, is memoised and reported, with no other change;
one with a ``Command`` is also a ``layercheck`` subcommand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugin_project import run
from tiny_models import tiny_model
from trained_tiny import save

import pytest_layercheck.analysis
from pytest_layercheck.analysis import Analysis, register_analysis
from pytest_layercheck.analysis.registry import (
    BUILTIN_ROOMS,
    analysis_names,
    commands,
    get_analysis,
    room_analyses,
    unregister_analysis,
)
from pytest_layercheck.cli import build_parser, main
from pytest_layercheck.core.errors import ConfigError

TOY_CONFTEST = '''
from pytest_layercheck.analysis import Analysis, register_analysis
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
    assert {"localise", "weight_delta", "compare"} <= set(analysis_names())
    assert [a.command.name for a in commands() if a.command] == [
        "heads",
        "retrieval-heads",
        "redundancy",
        "thinking",
        "transfer",
        "compare",
    ]
    from pytest_layercheck.analysis.heads.importance import head_importance

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


def test_the_analyses_namespace_exports_the_public_functions_under_their_own_names() -> None:
    public = [a for room in BUILTIN_ROOMS for a in room_analyses(room) if a.public]
    assert len(public) >= 8
    for analysis in public:
        function = analysis.function()
        assert getattr(pytest_layercheck.analysis, function.__name__) is function


# ------------------------------------------------------------------------- a command of one's own
TOY_ROOM = """
from rich.text import Text

from pytest_layercheck.analysis.arguments import argument, count
from pytest_layercheck.analysis.registry import Analysis, Command, Outputs


def count_layers(loaded, scale=1):
    return loaded.num_layers * scale


def run(loaded, stage, *, scale):
    with stage("toy", "counting") as hook:
        assert hook is not None
        return count_layers(loaded, scale)


def terminal(result, view):
    return Text(f"{view['label']}: {result}")


def to_json(result):
    return {"layers": result}


def markdown(result, view):
    return f"**{view['label']}**: {result}\\n"


def html(result, view):
    return f"<p>{result}</p>"


ANALYSES = (
    Analysis(
        "toy_layers",
        count_layers,
        "decoder layers, scaled",
        command=Command(
            "toy-layers",
            "decoder layers of the model, times --scale",
            "toy_room",
            arguments=(
                argument("--scale", type=count, default=1, help="what to multiply by"),
                argument("--label", default="layers", help="what to call them", view=True),
            ),
            outputs=Outputs(html="the count"),
        ),
    ),
)
"""


def test_a_room_with_a_command_becomes_a_layercheck_subcommand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A room of one's own: registered, it is a subcommand with its arguments and the four outputs."""
    (tmp_path / "toy_room.py").write_text(TOY_ROOM)
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = save(tiny_model("llama", layers=2, seed=4), tmp_path / "tiny")
    (toy,) = room_analyses("toy_room")
    register_analysis(toy)
    try:
        paths = [tmp_path / name for name in ("toy.json", "toy.md", "toy.html")]
        argv = ["toy-layers", str(folder), "--device", "cpu", "--scale", "3", "--label", "blocks"]
        argv += ["--json", str(paths[0]), "--markdown", str(paths[1]), "--html", str(paths[2])]
        assert main(argv) == 0
    finally:
        unregister_analysis("toy_layers")
    out, err = capsys.readouterr()
    assert "blocks: 6" in out and "toy: " in err and "JSON: " in err
    assert json.loads(paths[0].read_text()) == {"layers": 6}
    assert paths[1].read_text() == "**blocks**: 6\n" and paths[2].read_text() == "<p>6</p>"
    assert "toy-layers" not in build_parser().format_help()
