"""``compare_models``, its reports and ``layercheck compare`` on a tiny Llama that memorised 24 facts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_tokenizer
from trained_tiny import perturbed, save, train_fact_model, write_fact_suite

from pytest_layercheck.analysis.compare.models import CompareSettings, compare_models
from pytest_layercheck.analysis.compare.render import render_compare_markdown, render_compare_terminal
from pytest_layercheck.cli import build_parser
from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.evaluation.comparison_result import Tolerance
from pytest_layercheck.evaluation.result_cache import ResultCache
from pytest_layercheck.evaluation.settings import ProfileSettings
from pytest_layercheck.model.loading import LoadedModel

FACTS = 24


def loaded(model: torch.nn.Module, name: str) -> LoadedModel:
    return LoadedModel(model, tiny_tokenizer(), name, name, "test", torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.nn.Module]:
    trained = train_fact_model(n=FACTS, steps=150)
    return {
        "base": trained,
        # Layer 0 ruined: most memorised facts are lost.
        "harmful": perturbed(trained, [0], scale=3.0),
        # Noise far below the weights' scale on every layer: a real but harmless change.
        "benign": perturbed(trained, list(range(6)), scale=0.005),
    }


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fact_suite(tmp_path_factory.mktemp("suite") / "facts.yaml", n=FACTS)


@pytest.fixture(scope="module")
def settings(suite: Path) -> CompareSettings:
    return CompareSettings(
        profile=ProfileSettings(suites=(str(suite),), limit=None, mode="bands"), localise="bands,layers,changed"
    )


def test_harmful_candidate_fails_and_its_loss_is_localised(models: dict, settings: CompareSettings) -> None:
    result = compare_models(
        loaded(models["base"], "base"), loaded(models["harmful"], "harmful"), settings, cache=ResultCache(enabled=False)
    )
    assert not result.passed
    intact = result.comparison.cell("knowledge", "intact")  # judged by p_correct
    assert intact.metric == "p_correct" and intact.status == "regressed" and intact.current < intact.baseline - 0.3
    assert result.weights is not None and [d.layer for d in result.weights.most_changed()] == [0]
    assert result.localisation is not None
    entry = result.localisation.suite("knowledge")
    # localisation works in the primary metric (acc), on the profiles' own intact outcomes: reused, not re-measured
    assert entry.metric == "acc"
    assert entry.base == result.base.evaluation("facts").mean("acc") == 1.0
    assert entry.candidate == result.candidate.evaluation("facts").mean("acc") < 1.0 - 0.3
    assert entry.restored_by is not None and entry.restored_by.group.layers == (0,)
    assert result.verdicts == [entry.verdict] and "restored by reverting layer 0" in entry.verdict
    assert entry.verdict in result.failure_message()
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["passed"] is False and data["localisation"]["suites"][0]["restored_by"]["layers"] == [0]
    assert data["weights"]["most_changed"] == [0]


def test_benign_candidate_passes_and_nothing_is_localised(models: dict, settings: CompareSettings) -> None:
    result = compare_models(
        loaded(models["base"], "base"), loaded(models["benign"], "benign"), settings, cache=ResultCache(enabled=False)
    )
    assert result.passed and result.comparison.failures == []
    assert result.localisation is None and result.verdicts == []
    assert result.weights is not None and all(d.relative > 0 for d in result.weights.layers)  # it did change


def test_reports_show_cells_weights_and_the_verdict(models: dict, settings: CompareSettings) -> None:
    result = compare_models(
        loaded(models["base"], "base"), loaded(models["harmful"], "harmful"), settings, cache=ResultCache(enabled=False)
    )
    text = render_compare_terminal(result, width=160)
    assert text.startswith("layercheck compare: harmful") and "FAILED" in text
    intact = result.comparison.cell("knowledge", "intact")
    assert f"facts/intact p_correct dropped {intact.baseline:.3f} -> {intact.current:.3f} (p=" in text  # with its p
    assert "weight change per layer" in text and "L1-5" in text and "(unchanged)" in text
    assert "delta replacement: facts (24 items)" in text and "⇒ knowledge (facts) loss (acc 1.000 -> " in text
    assert "is restored by reverting layer 0: acc 1.000, 100% of the loss recovered" in text
    markdown = render_compare_markdown(result)
    assert markdown.startswith("## ❌ layercheck compare") and "| L0 " in markdown
    assert "- **knowledge (facts) loss (acc 1.000" in markdown and "restored by reverting layer 0" in markdown


def test_mismatched_models_are_refused_before_anything_is_profiled(models: dict, settings: CompareSettings) -> None:
    from tiny_models import tiny_model

    from pytest_layercheck.analysis.weight_delta.deltas import ArchitectureMismatchError

    cache = ResultCache(enabled=False)
    with pytest.raises(ArchitectureMismatchError, match="layer count: base has 6, candidate has 4"):
        compare_models(
            loaded(models["base"], "base"), loaded(tiny_model("llama", layers=4), "short"), settings, cache=cache
        )
    assert cache.misses == 0


def test_settings_are_checked_before_any_model_is_profiled() -> None:
    with pytest.raises(ConfigError, match="unknown localisation strategy"):
        CompareSettings(localise="bands,everything")
    with pytest.raises(ConfigError, match="needs weight deltas"):
        CompareSettings(localise="changed", weights=False)
    assert CompareSettings(tolerance=Tolerance.parse("5%")).describe()["tolerance"] == "5%"


# --------------------------------------------------------------------------------------------- CLI
def cli(*argv: str) -> int:
    """Run ``layercheck compare`` through the parser cli.main uses (errors raise instead of exiting 2)."""
    args = build_parser().parse_args(["compare", *argv])
    return int(args.handler(args))


@pytest.fixture(scope="module")
def folders(models: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: save(model, root / name) for name, model in models.items()}


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAYERCHECK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    return tmp_path


def test_cli_exit_code_is_1_for_the_harmful_candidate_and_0_for_the_benign_one(
    folders: dict, suite: Path, isolated: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    common = ["--suites", str(suite), "--limit", "0", "--mode", "bands", "--device", "cpu"]
    report, markdown = isolated / "compare.json", isolated / "compare.md"
    code = cli(
        str(folders["base"]), str(folders["harmful"]), *common, "--json", str(report), "--markdown", str(markdown)
    )
    raw = capsys.readouterr().out
    out = " ".join(raw.split())  # rich wraps at the terminal width
    assert code == 1 and "FAILED" in out and "restored by reverting" in out
    assert any(line.startswith("::error title=layercheck::") for line in raw.splitlines())  # a workflow annotation
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["comparison"]["counts"]["regressed"] >= 1
    assert data["localisation"]["suites"][0]["restored_by"]["layers"][0] == 0
    assert markdown.read_text().startswith("## ❌")

    assert cli(str(folders["base"]), str(folders["benign"]), *common, "--localise", "none") == 0
    assert "passed" in capsys.readouterr().out


def test_cli_compares_a_peft_adapter_on_its_base(
    folders: dict, suite: Path, isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(folders["base"])
    config = peft.LoraConfig(
        r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], layers_to_transform=[1], init_lora_weights=False
    )
    adapter = isolated / "adapter"
    peft.get_peft_model(base, config).save_pretrained(adapter)
    config_path = adapter / "adapter_config.json"
    config_data = json.loads(config_path.read_text())
    config_data["base_model_name_or_path"] = "someone/not-local"  # so the base must come from --adapter-base
    config_path.write_text(json.dumps(config_data))

    report = isolated / "adapter.json"
    code = cli(
        str(folders["base"]),
        str(adapter),
        "--adapter-base",
        str(folders["base"]),
        "--suites",
        str(suite),
        "--limit",
        "0",
        "--mode",
        "bands",
        "--device",
        "cpu",
        "--json",
        str(report),
    )
    data = json.loads(report.read_text())
    moved = {(m["layer"], m["module"]) for m in data["weights"]["modules"] if m["relative"]}
    assert moved == {(1, "self_attn.q_proj"), (1, "self_attn.v_proj")}  # exactly what the adapter targets
    assert code == (0 if data["passed"] else 1)
    assert "adapter on base" in data["candidate"]["name"]
    capsys.readouterr()


def test_cli_refuses_a_bad_strategy_before_loading(isolated: Path) -> None:
    with pytest.raises(ConfigError, match="unknown localisation strategy"):
        cli("does-not-exist", "neither", "--localise", "heads")


# ------------------------------------------------------------------------------------------- pytest
REFERENCE_GUARD = """
from pytest_layercheck.pytest_plugin.session_analyses import compare_with_reference

def test_candidate_keeps_what_the_reference_knows(layercheck_session, layercheck_reference_model):
    result = compare_with_reference(layercheck_session, localise="layers")
    assert result.passed, result.failure_message()
"""


def test_pytest_guard_against_a_reference_model(
    folders: dict, suite: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LAYERCHECK_CACHE_DIR", str(tmp_path / "cache"))
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    pytester.makepyfile(test_reference_guard=REFERENCE_GUARD)
    options = [
        f"--layercheck-reference={folders['base']}",
        f"--layercheck-suites={suite}",
        "--layercheck-limit=0",
        "--layercheck-mode=bands",
        "--layercheck-device=cpu",
        "-p",
        "no:cacheprovider",
    ]

    harmful = pytester.runpytest(f"--layercheck-model={folders['harmful']}", *options)
    harmful.assert_outcomes(failed=1)
    harmful.stdout.fnmatch_lines(["*harmful regressed against base:*", "*restored by reverting layer 0*"])
    assert "## ❌ layercheck compare: harmful" in summary.read_text()

    pytester.runpytest(f"--layercheck-model={folders['benign']}", *options).assert_outcomes(passed=1)
    pytester.runpytest(f"--layercheck-model={folders['benign']}", *options[1:]).assert_outcomes(skipped=1)
