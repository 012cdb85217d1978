"""Layer redundancy: angular distance and Block Influence against hand computations, the block rule,
and the comparison with capability drops measured by really removing blocks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import tiny_model, tiny_tokenizer
from torch import nn
from trained_tiny import save

from pytest_layercheck.analysis.redundancy.capabilities import (
    CapabilityView,
    compare_with_capabilities,
    generation_candidates,
    judge_view,
    spearman,
)
from pytest_layercheck.analysis.redundancy.metrics import (
    angular_distances,
    best_start,
    block_influence,
    check_block_size,
    eligible_starts,
    lowest_influence,
    measure_redundancy,
)
from pytest_layercheck.analysis.redundancy.render import redundancy_markdown, redundancy_renderable
from pytest_layercheck.analysis.redundancy.states import collect_layer_states, merge_states
from pytest_layercheck.cli import main
from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.evaluation.service import score_suite
from pytest_layercheck.model.ablation import Ablation
from pytest_layercheck.model.loading import LoadedModel
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.report.format import render_text
from pytest_layercheck.suites.schema import ProtocolSettings, Suite, SuiteItem

PROMPTS = [
    "The capital of France is",
    "Water is made of hydrogen and",
    "x",
    "A much longer prompt about the history of the Roman empire and its many provinces",
    "What is 2 + 2?",
]
LAYERS = 6


def loaded(model: nn.Module, tokenizer: object | None = None) -> LoadedModel:
    return LoadedModel(
        model=model,
        tokenizer=tokenizer or tiny_tokenizer(),
        spec="tiny",
        name="tiny",
        kind="test",
        device=torch.device("cpu"),
        dtype=torch.float32,
    )


def by_hand(model: nn.Module, prompt: str) -> list[torch.Tensor]:
    """x^0 .. x^N of one unpadded prompt, from output_hidden_states with the final norm made the identity
    (so the last entry is the last layer's raw output, not the normed one transformers returns)."""
    ids = tiny_tokenizer()(prompt, return_tensors="pt")["input_ids"]
    norm = model.model.norm
    model.model.norm = nn.Identity()
    try:
        with torch.inference_mode():
            out = model(ids, output_hidden_states=True)
    finally:
        model.model.norm = norm
    return [h[0].double() for h in out.hidden_states]


def np_angle(a: np.ndarray, b: np.ndarray) -> float:
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return math.acos(max(-1.0, min(1.0, cos))) / math.pi


@pytest.fixture(scope="module")
def llama() -> nn.Module:
    return tiny_model("llama", layers=LAYERS, seed=1)


def test_states_are_the_layer_inputs_of_output_hidden_states(llama: nn.Module) -> None:
    """hidden_states[i] is layer i's input for i < N, but hidden_states[N] is the FINAL-NORMED output
    (transformers 5.x), so x^N comes from a hook: x^N differs from it and norm(x^N) equals it."""
    states = collect_layer_states(ModelRuntime.of(llama), tiny_tokenizer(), PROMPTS)
    assert states.last.shape == (len(PROMPTS), LAYERS + 1, 64)
    for p, prompt in enumerate(PROMPTS):
        ids = tiny_tokenizer()(prompt, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            hidden = llama(ids, output_hidden_states=True).hidden_states
        for i in range(LAYERS):
            torch.testing.assert_close(states.last[p, i], hidden[i][0, -1].double(), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(states.last[p, LAYERS], hidden[LAYERS][0, -1].double(), atol=1e-3)
        with torch.inference_mode():
            normed = llama.model.norm(states.last[p, LAYERS].float())
        torch.testing.assert_close(normed, hidden[LAYERS][0, -1], atol=1e-5, rtol=1e-5)


def test_angular_distance_and_block_influence_match_a_hand_computation(llama: nn.Module) -> None:
    states = collect_layer_states(ModelRuntime.of(llama), tiny_tokenizer(), PROMPTS)
    hand = [[h.numpy() for h in by_hand(llama, prompt)] for prompt in PROMPTS]  # [prompt][layer][token, hidden]
    for n in (1, 2, 5):
        mean, stderr = angular_distances(states, n)
        assert len(mean) == LAYERS - n + 1
        for start in range(LAYERS - n + 1):
            per_prompt = [np_angle(h[start][-1], h[start + n][-1]) for h in hand]
            assert mean[start].item() == pytest.approx(np.mean(per_prompt), abs=1e-6)
            assert stderr[start].item() == pytest.approx(np.std(per_prompt, ddof=1) / math.sqrt(len(PROMPTS)), abs=1e-6)
    influence = block_influence(states)
    for i in range(LAYERS):
        cosines = [1 - np_angle_cos(h[i][t], h[i + 1][t]) for h in hand for t in range(len(h[i]))]
        assert influence[i].item() == pytest.approx(np.mean(cosines), abs=1e-6)
    assert states.tokens == sum(len(h[0]) for h in hand)


def np_angle_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_padding_and_batching_do_not_change_the_statistics(llama: nn.Module) -> None:
    runtime = ModelRuntime.of(llama)
    together = collect_layer_states(runtime, tiny_tokenizer(), PROMPTS)
    one_by_one = merge_states([collect_layer_states(runtime, tiny_tokenizer(), [p]) for p in PROMPTS])
    torch.testing.assert_close(together.last, one_by_one.last, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together.cos_sum, one_by_one.cos_sum, atol=1e-6, rtol=1e-6)
    assert together.tokens == one_by_one.tokens
    tiny_budget = collect_layer_states(runtime, tiny_tokenizer(), PROMPTS, token_budget=30)
    torch.testing.assert_close(together.last, tiny_budget.last, atol=1e-5, rtol=1e-5)


def test_a_shared_prefix_is_run_once_and_counted_once(llama: nn.Module) -> None:
    runtime = ModelRuntime.of(llama)
    prefix = "Q: The capital of Belgium is Brussels.\nQ: The capital of Spain is Madrid.\nQ: "
    prompts = [prefix + p for p in PROMPTS]
    shared = collect_layer_states(runtime, tiny_tokenizer(), prompts, share_prefix=True)
    plain = collect_layer_states(runtime, tiny_tokenizer(), prompts, share_prefix=False)
    torch.testing.assert_close(shared.last, plain.last, atol=1e-5, rtol=1e-5)
    hand = [[h.numpy() for h in by_hand(llama, p)] for p in prompts]
    ids = [tiny_tokenizer()(p)["input_ids"] for p in prompts]
    common = 0  # the longest common token prefix, leaving every prompt one token of its own
    while common < min(map(len, ids)) - 1 and len({seq[common] for seq in ids}) == 1:
        common += 1
    assert common >= 16  # long enough for the engine to share it
    assert shared.tokens == common + sum(len(h[0]) - common for h in hand)
    assert plain.tokens == sum(len(h[0]) for h in hand)
    for i in range(LAYERS):
        cos = [np_angle_cos(hand[0][i][t], hand[0][i + 1][t]) for t in range(common)]
        cos += [np_angle_cos(h[i][t], h[i + 1][t]) for h in hand for t in range(common, len(h[i]))]
        assert 1 - shared.cos_sum[i].item() / shared.tokens == pytest.approx(1 - np.mean(cos), abs=1e-6)


@pytest.mark.parametrize("family", ["gpt2", "gemma2", "qwen3"])
def test_other_families_give_the_layer_inputs(family: str) -> None:
    model = tiny_model(family, layers=4, seed=2)
    states = collect_layer_states(ModelRuntime.of(model), tiny_tokenizer(), PROMPTS[:3])
    for p, prompt in enumerate(PROMPTS[:3]):
        ids = tiny_tokenizer()(prompt, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            hidden = model(ids, output_hidden_states=True).hidden_states
        for i in range(4):
            torch.testing.assert_close(states.last[p, i], hidden[i][0, -1].double(), atol=1e-4, rtol=1e-4)
    assert torch.all(block_influence(states) >= -1e-9)


def test_the_block_rule_never_drops_the_final_layer() -> None:
    # N = 6, n = 2: starts 0..4 are computed, 0..3 eligible; start 4 (layers 4-5) holds the last layer.
    distances = [0.5, 0.3, 0.4, 0.35, 0.01]
    assert list(eligible_starts(6, 2)) == [0, 1, 2, 3]
    assert best_start(distances, 6, 2) == 1
    assert best_start([0.2, 0.1, 0.1, 0.3, 0.0], 6, 2) == 1  # ties: the shallowest
    assert list(eligible_starts(6, 5)) == [0]  # n = N-1: only layers 0-4, never 1-5
    assert best_start([0.9, 0.0], 6, 5) == 0
    assert lowest_influence([0.3, 0.1, 0.2, 0.1, 0.5], 2) == (1, 3)
    for bad in (0, -1, 6, 7, True, 1.5):
        with pytest.raises(ConfigError) as excinfo:
            check_block_size(6, bad)  # type: ignore[arg-type]
        assert "How to fix" in str(excinfo.value)


def fact_suite(n: int = 8) -> Suite:
    colours = ["red", "blue", "gold", "pink"]
    items = tuple(
        SuiteItem(
            id=f"f{i}",
            context=f"Item {i} is",
            domain="colours",
            kind="fact",
            choices=tuple(colours),
            gold=i % 4,
            target=colours[i % 4],
        )
        for i in range(n)
    )
    settings = ProtocolSettings(template="{context}")
    return Suite(
        name="facts",
        capability="knowledge",
        description="",
        items=items,
        default_protocol="mc_text",
        protocols={
            "mc_text": settings,
            "generate_until": ProtocolSettings(template="{context}", until=("\n",), max_gen_toks=3),
        },
        content_hash="h",
    )


def test_measure_redundancy_on_a_suite_and_refuses_a_block_as_deep_as_the_model(llama: nn.Module) -> None:
    model = loaded(llama)
    result = measure_redundancy(model, 2, suites=[fact_suite()], limit=5)
    assert result.prompts == 5 and result.num_layers == LAYERS and len(result.distances) == LAYERS - 1
    assert result.best_start in result.eligible and result.suggested == (result.best_start, result.best_start + 1)
    assert result.best_distance == min(result.distances[: LAYERS - 2])
    same = measure_redundancy(model, 2, prompts=[f"Item {i} is" for i in range(5)])
    assert same.distances == pytest.approx(result.distances, abs=1e-9)
    json.dumps(result.to_json())
    with pytest.raises(ConfigError, match="final layer"):
        measure_redundancy(model, LAYERS, suites=[fact_suite()])


def test_spearman_against_hand_ranks() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # x ranks 1,2,3,4; y = [1, 1, 2, 3] has ranks 1.5,1.5,3,4 -> Pearson of ranks by hand:
    rx, ry = np.array([1, 2, 3, 4.0]), np.array([1.5, 1.5, 3, 4])
    expected = ((rx - rx.mean()) @ (ry - ry.mean())) / math.sqrt(
        ((rx - rx.mean()) ** 2).sum() * ((ry - ry.mean()) ** 2).sum()
    )
    assert spearman([0.1, 0.2, 0.3, 0.4], [1, 1, 2, 3]) == pytest.approx(expected)
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))


def test_judging_a_view_by_hand() -> None:
    view = CapabilityView(
        suite="facts",
        protocol="generate_until",
        metric="exact_match",
        intact=(1, 1, 1, 1),
        after={0: (1, 1, 0, 0), 1: (1, 1, 1, 0), 2: (0, 0, 0, 0)},
    )
    distances = [0.1, 0.2, 0.05]  # start 2 would win but is not the suggestion passed in
    verdict = judge_view(view, distances, suggested=0, tolerance=0.05)
    assert verdict.least_harmful == 1 and verdict.rank == 2 and verdict.evaluated == 3
    assert verdict.suggested_drop == pytest.approx(0.5) and verdict.gap == pytest.approx(0.25)
    assert verdict.p_value == pytest.approx(1.0)  # one item worse, none better: exact McNemar p = 1
    assert not verdict.agrees and verdict.status == "unclear"
    # distances 0.1, 0.2, 0.05 rank (2, 3, 1); drops 0.5, 0.25, 1.0 rank (2, 1, 3): exactly reversed
    assert verdict.spearman == pytest.approx(-1.0)
    assert judge_view(view, distances, suggested=0, tolerance=0.3).status == "agrees"
    many = CapabilityView("facts", "mc_text", "acc", intact=(1,) * 10, after={0: (0,) * 10, 1: (1,) * 10})
    assert judge_view(many, [0.1, 0.2], suggested=0).status == "disagrees"  # 10 vs 0 pairs: p = 0.002
    with pytest.raises(ConfigError):
        judge_view(view, distances, suggested=5)


def test_generation_candidates_keep_the_suggestion_and_requested_blocks(llama: nn.Module) -> None:
    result = measure_redundancy(loaded(llama), 1, prompts=PROMPTS)
    chosen = generation_candidates(result, 3, must=[4])
    assert len(chosen) == 3 and result.best_start in chosen and 4 in chosen
    assert chosen == sorted(chosen) and all(s in result.eligible for s in chosen)
    assert generation_candidates(result, 50) == list(result.eligible)


def test_comparison_removes_the_blocks_for_real(llama: nn.Module) -> None:
    model, suite = loaded(llama), fact_suite()
    result = measure_redundancy(model, 2, suites=[suite])
    comparison = compare_with_capabilities(
        model, result, views=[(suite, "mc_text"), (suite, "generate_until")], limit=8, generation_blocks=2
    )
    likelihood, generation = comparison.verdicts
    assert sorted(likelihood.view.after) == list(result.eligible)
    assert len(generation.view.after) == 2 and result.best_start in generation.view.after
    assert likelihood.least_harmful in generation.view.after  # the likelihood winner is re-checked by generation
    for verdict, metric in ((likelihood, "acc"), (generation, "exact_match")):
        protocol = verdict.view.protocol
        intact = score_suite(model, suite, protocol)
        assert verdict.view.intact == tuple(intact.values(metric))
        for start, outcomes in verdict.view.after.items():
            removed = score_suite(model, suite, protocol, Ablation.skipping(result.block_layers(start)))
            assert outcomes == tuple(removed.values(metric)), (protocol, start)
        bi = score_suite(model, suite, protocol, Ablation.skipping(result.bi_suggested))
        assert verdict.view.bi_drop == pytest.approx(intact.mean(metric) - bi.mean(metric))
    text = render_text(redundancy_renderable(result, comparison), width=200)
    assert "most prunable block" in text and "facts/mc_text (likelihood)" in text
    markdown = redundancy_markdown(result, comparison)
    assert markdown.count("\n| L") == LAYERS and "facts/generate_until (generation)" in markdown
    assert len(comparison.summary()) == 3  # two views and the likelihood-vs-generation line
    json.dumps(comparison.to_json())


def test_cli_prints_the_metrics_and_writes_json(
    llama: nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = save(llama, tmp_path / "tiny")
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "redundancy",
                str(folder),
                "--device",
                "cpu",
                "--block",
                "2",
                "--prompts",
                "3",
                "--views",
                "knowledge=mc_text",
                "--limit",
                "3",
                "--candidates",
                "2",
                "--json",
                str(out),
                "--markdown",
                str(tmp_path / "r.md"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "layercheck redundancy" in printed and "knowledge/mc_text" in printed
    payload = json.loads(out.read_text())
    assert payload["result"]["block"] == 2 and len(payload["views"]) == 1
    assert len(payload["views"][0]["after"]) == 2
    assert main(["redundancy", str(folder), "--device", "cpu", "--block", str(LAYERS), "--no-compare"]) == 2
    assert "block" in capsys.readouterr().err  # a clear error, not a traceback


@pytest.mark.real_model
def test_real_model_first_layer_has_the_highest_block_influence(smollm: LoadedModel) -> None:
    """SmolLM2-135M: layer 0 turns the residual stream most (BI about 0.99 vs at most 0.33 elsewhere), and
    the most prunable 3-layer block is neither the first nor the last one."""
    result = measure_redundancy(smollm, 3, limit=8)
    assert result.num_layers == 30 and result.prompts == 16
    assert max(range(30), key=result.influence.__getitem__) == 0
    assert result.influence[0] > 0.9 > 0.5 > max(result.influence[1:])
    assert 0 < result.best_start < 26 and 29 not in result.suggested
    assert result.best_distance < result.distances[0]
