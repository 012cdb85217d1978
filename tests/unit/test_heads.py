"""Head importance: summary statistics against hand computations, every entry against independent
scoring (direct ``ablate`` and weight surgery on a copy), caching, errors, reports and the CLI."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_model, tiny_tokenizer
from trained_tiny import save, write_fact_suite

from pytest_layercheck.analysis.heads.importance import (
    HeadImportance,
    head_importance,
    parse_layers,
)
from pytest_layercheck.cli import main
from pytest_layercheck.core.errors import AblationError, ConfigError
from pytest_layercheck.data.bands import format_layers
from pytest_layercheck.evaluation.result_cache import ResultCache
from pytest_layercheck.model.ablation import Ablation, ablate
from pytest_layercheck.model.loading import LoadedModel
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring.protocols import prepare, score
from pytest_layercheck.suites.builtin import resolve_suite
from pytest_layercheck.suites.loader import load_suite

HEAD_DIM = 16  # tiny models: hidden 64 / 4 heads


def hand_made(
    drops: dict[tuple[int, int], float], intact: float = 0.75, layers: int = 2, heads: int = 10, gqa: str = "query"
) -> HeadImportance:
    """A result over ``layers`` x ``heads`` where the listed heads have the given drops, the rest 0."""
    accuracy = {(layer, h): intact - drops.get((layer, h), 0.0) for layer in range(layers) for h in range(heads)}
    return HeadImportance(
        model="hand",
        suite="s",
        protocol="mc_text",
        metric="acc",
        mode="zero",
        gqa=gqa,
        layers=tuple(range(layers)),
        heads_per_layer=heads,
        item_ids=("a", "b"),
        intact=intact,
        accuracy=accuracy,
    )


# --------------------------------------------------------------------------------------------------
# Summary statistics on hand-made numbers
# --------------------------------------------------------------------------------------------------

DROPS = {(0, 3): 0.25, (1, 7): 0.125, (0, 0): 0.0625, (1, 1): -0.125, (1, 2): 0.0625}


def test_concentration_by_hand() -> None:
    result = hand_made(DROPS)  # 20 heads: the top 5% is ceil(1.0) = 1 head
    positive = 0.25 + 0.125 + 0.0625 + 0.0625  # the negative drop of (1, 1) is left out
    assert result.concentration() == pytest.approx(0.25 / positive)
    assert result.concentration(0.10) == pytest.approx((0.25 + 0.125) / positive)  # 2 heads
    assert result.concentration(0.15) == pytest.approx((0.25 + 0.125 + 0.0625) / positive)  # 3 heads
    assert result.concentration(0.16) == pytest.approx(1.0)  # ceil(3.2) = 4 heads: every positive drop
    assert result.concentration(1.0) == pytest.approx(1.0)


def test_concentration_counts_top_share_of_heads_evaluated() -> None:
    """With 270 heads, the top 5% is ceil(13.5) = 14 heads."""
    drops = {(layer, h): 0.01 for layer in range(30) for h in range(9)}  # an evenly spread effect
    result = hand_made(drops, layers=30, heads=9)
    assert result.concentration() == pytest.approx(14 / 270)


def test_concentration_is_nan_without_any_loss() -> None:
    assert math.isnan(hand_made({(0, 1): -0.25}).concentration())
    with pytest.raises(ConfigError, match="top_fraction"):
        hand_made(DROPS).concentration(0.0)


def test_critical_heads_by_hand() -> None:
    result = hand_made(DROPS)
    assert result.critical_heads() == [(0, 3)]  # the top 5% = 1 head
    assert result.critical_heads(top_n=3) == [(0, 3), (1, 7), (0, 0)]  # ties: lower layer first
    assert result.critical_heads(top_n=10) == [(0, 3), (1, 7), (0, 0), (1, 2)]  # only positive drops
    assert result.critical_heads(threshold=0.1) == [(0, 3), (1, 7)]
    assert result.critical_heads(threshold=0.0625) == [(0, 3), (1, 7), (0, 0), (1, 2)]
    assert hand_made({}).critical_heads(top_n=5) == []
    with pytest.raises(ConfigError, match="not both"):
        result.critical_heads(threshold=0.1, top_n=2)


def test_overlap_by_hand() -> None:
    base = hand_made(DROPS)  # top 3: (0,3), (1,7), (0,0)
    tuned = hand_made({(0, 3): 0.5, (1, 1): 0.25, (1, 2): 0.125, (1, 7): 0.0})  # top 3: (0,3), (1,1), (1,2)
    assert base.overlap(tuned, top_n=3) == pytest.approx(1 / 5)  # |{(0,3)}| / |5 heads|
    assert base.overlap(tuned, top_n=3, measure="retained") == pytest.approx(1 / 3)
    assert tuned.overlap(base, top_n=3) == pytest.approx(1 / 5)
    assert base.overlap(base, top_n=3) == 1.0
    assert base.overlap(tuned, threshold=0.1) == pytest.approx(1 / 4)  # {(0,3),(1,7)} vs {(0,3),(1,1),(1,2)}
    assert math.isnan(hand_made({}).overlap(hand_made({}), top_n=3))
    with pytest.raises(ConfigError, match="different units"):
        base.overlap(hand_made(DROPS, layers=3), top_n=3)
    with pytest.raises(ConfigError, match="measure"):
        base.overlap(tuned, top_n=3, measure="dice")  # type: ignore[arg-type]


def test_to_dict_round_trip_and_json() -> None:
    result = hand_made(DROPS)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["critical_heads"] == [[0, 3]]
    assert data["heads"][0] == {"layer": 0, "head": 3, "accuracy": 0.5, "drop": 0.25}
    assert data["concentration_top5pct"] == pytest.approx(result.concentration())
    again = HeadImportance.from_dict(data)
    assert again.accuracy == result.accuracy and again.layers == result.layers
    assert again.concentration() == result.concentration()


def test_layer_totals() -> None:
    assert hand_made(DROPS).layer_totals() == pytest.approx({0: 0.3125, 1: 0.1875})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0-3,29", (0, 1, 2, 3, 29)),
        ("5", (5,)),
        (" 2 , 0-1 ", (0, 1, 2)),
        ("all", None),
        ("", None),
        (None, None),
        (3, (3,)),
        ([4, 1, 4], (1, 4)),
    ],
)
def test_parse_layers(spec: object, expected: tuple[int, ...] | None) -> None:
    assert parse_layers(spec) == expected  # type: ignore[arg-type]


def test_parse_layers_errors_and_format() -> None:
    for bad in ("3-1", "a", "1-", "-2"):
        with pytest.raises(ConfigError, match="layer"):
            parse_layers(bad)
    with pytest.raises(AblationError, match="out of range: the model has 6 layers"):
        parse_layers("0,6", num_layers=6)
    assert format_layers((0, 1, 2, 3, 29)) == "0-3,29"
    assert format_layers((4,)) == "4"


# --------------------------------------------------------------------------------------------------
# Against independent scoring on a tiny model
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fact_suite(tmp_path_factory: pytest.TempPathFactory):
    return load_suite(write_fact_suite(tmp_path_factory.mktemp("suite") / "facts.yaml", n=12))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model("llama", layers=4)


def surgery_loglikelihood(model: torch.nn.Module, prepared, layer: int, heads: list[int]) -> float:
    """Mean log-likelihood with the heads removed by weight surgery on a copy (no hooks involved)."""
    damaged = copy.deepcopy(model)
    with torch.no_grad():
        for head in heads:
            damaged.model.layers[layer].self_attn.o_proj.weight[:, head * HEAD_DIM : (head + 1) * HEAD_DIM] = 0
    return score(ModelRuntime.of(damaged), prepared).mean("loglikelihood")


def test_every_entry_equals_weight_surgery(model: torch.nn.Module, fact_suite) -> None:
    """A continuous metric (mean log-likelihood of the continuation) makes every head distinct, so a
    wrong head index or layer would show."""
    tok = tiny_tokenizer()
    result = head_importance(model, tok, fact_suite, "continuation", layers=[1, 3], limit=None, metric="loglikelihood")
    prepared = prepare(fact_suite, "continuation", tok)
    assert result.intact == pytest.approx(score(ModelRuntime.of(model), prepared).mean("loglikelihood"), abs=1e-9)
    assert sorted(result.accuracy) == [(layer, h) for layer in (1, 3) for h in range(4)]
    for (layer, head), value in result.accuracy.items():
        assert value == pytest.approx(surgery_loglikelihood(model, prepared, layer, [head]), abs=1e-4)
    values = sorted(result.accuracy.values())
    assert all(b - a > 1e-6 for a, b in zip(values, values[1:]))  # all 8 heads differ: the check is sharp


def test_one_head_equals_direct_ablate_scoring(model: torch.nn.Module, fact_suite) -> None:
    tok = tiny_tokenizer()
    result = head_importance(model, tok, fact_suite, layers="2", limit=8, mode="uniform")
    assert result.metric == "acc" and result.protocol == "mc_text" and len(result.item_ids) == 8
    prepared = prepare(fact_suite.limited(8), "mc_text", tok)
    for head in range(4):
        with ablate(model, Ablation.masking({2: [head]}, mode="uniform")):
            expected = score(ModelRuntime.of(model), prepared).mean("acc")
        assert result.accuracy[(2, head)] == expected


def test_gqa_group_units_mask_whole_kv_groups(model: torch.nn.Module, fact_suite) -> None:
    tok = tiny_tokenizer()
    result = head_importance(
        model, tok, fact_suite, "continuation", layers=[0], limit=6, gqa="group", metric="loglikelihood"
    )
    assert result.unit == "group" and result.heads_per_layer == 2 and sorted(result.accuracy) == [(0, 0), (0, 1)]
    prepared = prepare(fact_suite.limited(6), "continuation", tok)
    for group, heads in ((0, [0, 1]), (1, [2, 3])):  # 4 query heads share 2 KV heads
        assert result.accuracy[(0, group)] == pytest.approx(surgery_loglikelihood(model, prepared, 0, heads), abs=1e-4)


def test_cache_reuses_evaluations(model: torch.nn.Module, fact_suite, tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    loaded = LoadedModel(
        model=model,
        tokenizer=tok,
        spec="tiny",
        name="tiny",
        kind="test",
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    cache = ResultCache(tmp_path)
    first = head_importance(loaded, suite=fact_suite, layers=[0], limit=6, cache=cache)
    assert (cache.hits, cache.misses) == (0, 5)
    second = head_importance(loaded, suite=fact_suite, layers=[0, 1], limit=6, cache=cache)
    assert (cache.hits, cache.misses) == (5, 9)  # intact + layer 0 from the cache, layer 1 computed
    assert {k: v for k, v in second.accuracy.items() if k[0] == 0} == first.accuracy
    assert second.intact == first.intact


def test_bad_input_names_the_fix(model: torch.nn.Module, fact_suite) -> None:
    tok = tiny_tokenizer()
    with pytest.raises(AblationError, match="layer 4 out of range"):
        head_importance(model, tok, fact_suite, layers=[4])
    with pytest.raises(ConfigError, match="tokenizer"):
        head_importance(model, None, fact_suite)
    with pytest.raises(ConfigError, match="looks like a suite"):
        head_importance(model, "knowledge")
    with pytest.raises(ConfigError, match="head mask mode"):
        head_importance(model, tok, fact_suite, layers=[0], mode="mean")
    with pytest.raises(ConfigError, match="no layers"):
        head_importance(model, tok, fact_suite, layers=[])
    with pytest.raises(ConfigError, match="metric 'exact_match'"):
        head_importance(model, tok, fact_suite, layers=[0], limit=2, metric="exact_match")


# --------------------------------------------------------------------------------------------------
# Reports and CLI
# --------------------------------------------------------------------------------------------------


def test_reports_show_the_numbers() -> None:
    from pytest_layercheck.analysis.heads.render import importance_markdown, importance_renderable
    from pytest_layercheck.report.format import render_text

    result = hand_made(DROPS)
    text = render_text(importance_renderable(result, top=3), width=120)
    assert "0.500" in text and "+0.250" in text  # head (0, 3): masked accuracy and drop
    assert "critical: L0.H3" in text and "carry 0.500 of the total drop" in text
    markdown = importance_markdown(result, top=3)
    assert "| rank | layer | head | acc | drop | share of drop |" in markdown.replace("   ", " ").replace("  ", " ")
    assert "| 1 " in markdown and "+0.25" in markdown


def test_cli_heads_writes_the_library_result(model: torch.nn.Module, tmp_path: Path) -> None:
    folder = save(model, tmp_path / "tiny")
    suite = write_fact_suite(tmp_path / "facts.yaml", n=12)
    out = tmp_path / "heads.json"
    assert (
        main(
            [
                "heads",
                str(folder),
                "--suite",
                str(suite),
                "--layers",
                "1",
                "--limit",
                "6",
                "--no-cache",
                "--json",
                str(out),
                "--markdown",
                str(tmp_path / "heads.md"),
            ]
        )
        == 0
    )
    written = json.loads(out.read_text())
    expected = head_importance(model, tiny_tokenizer(), load_suite(suite), layers=[1], limit=6)
    assert {(h["layer"], h["head"]): h["accuracy"] for h in written["heads"]} == expected.accuracy
    assert (tmp_path / "heads.md").read_text().startswith("### Head importance")


# --------------------------------------------------------------------------------------------------
# The real default model
# --------------------------------------------------------------------------------------------------


@pytest.mark.real_model
def test_real_model_layer_0_has_a_critical_knowledge_head(smollm: LoadedModel) -> None:
    """Measured: zeroing one head of SmolLM2's first layer costs knowledge items (8 items here); the
    head's entry equals scoring it directly under ``ablate``."""
    result = head_importance(smollm, suite="knowledge", layers=[0], limit=8)
    critical = result.critical_heads()
    assert critical, "no head of layer 0 lowers knowledge accuracy"
    prepared = prepare(resolve_suite("knowledge").limited(8), "mc_text", smollm.tokenizer)
    assert result.intact == score(smollm.runtime, prepared).mean("acc")
    layer, head = critical[0]
    with ablate(smollm.model, Ablation.masking({layer: [head]})):
        assert result.accuracy[(layer, head)] == score(smollm.runtime, prepared).mean("acc") < result.intact
