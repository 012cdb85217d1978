"""FLOP counts from model shapes, checked against torch's own FLOP counter on real forwards."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from tiny_models import tiny_model
from torch.utils.flop_counter import FlopCounterMode

from pytest_layercheck.model.ablation import Ablation
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring.engine import MIN_SHARED_PREFIX, prepare_loglikelihood, run_loglikelihood
from pytest_layercheck.scoring.flops import ModelShape, TokenWork, evaluation_flops, sweep_flops
from pytest_layercheck.scoring.generation import PreparedGeneration
from pytest_layercheck.scoring.protocols import batch_settings
from pytest_layercheck.scoring.sweep import run_loglikelihood_sweep


def counted(model: torch.nn.Module, length: int) -> dict[str, int]:
    """torch's count for one unpadded sequence with logits at the last position only."""
    ids = torch.randint(4, 100, (1, length), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(input_ids=ids, logits_to_keep=1)
    ops = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    return {"matmul": ops.get("aten.mm", 0) + ops.get("aten.addmm", 0), "batched": ops.get("aten.bmm", 0)}


@pytest.mark.parametrize("family", ["llama", "qwen3", "gpt2", "phi3"])
def test_one_context_matches_torch_flop_counter(family: str) -> None:
    model, length = tiny_model(family, layers=3), 11
    shape = ModelShape.of(ModelRuntime.of(model))
    work = TokenWork.of(prepare_loglikelihood([(list(range(5, 5 + length)), [7])]))
    ours = work.flops(shape, range(3))
    torch_counts = counted(model, length)
    assert ours["linear"] + ours["lm_head"] == torch_counts["matmul"]
    # Eager attention multiplies the full L×L score matrix; we count the causal half plus the diagonal.
    dense = torch_counts["batched"]
    assert dense == shape.attention_per_pair * length * length * 3
    assert ours["attention"] == shape.attention_per_pair * (length * (length + 1) // 2) * 3


def test_token_positions_of_contexts_rows_and_shared_prefix() -> None:
    prefix = list(range(10, 10 + MIN_SHARED_PREFIX))
    prepared = prepare_loglikelihood(
        [
            (prefix + [1, 2], [3, 4, 5]),  # context of 18, continuation row of 2 tokens at 18, 19
            (prefix + [1, 2], [3, 4, 6]),  # same row: computed once
            (prefix + [9], [8]),  # single-token continuation: no row
        ]
    )
    work = TokenWork.of(prepared)
    n = MIN_SHARED_PREFIX
    assert sorted(work.positions) == sorted([*range(n), n, n + 1, n, n + 2, n + 3])
    assert work.scored == 2 + 2  # one per context, one per row token


def test_sweep_reuse_counts_only_the_tail() -> None:
    model = tiny_model("llama", layers=4)
    shape = ModelShape.of(ModelRuntime.of(model))
    work = TokenWork.of(prepare_loglikelihood([([5, 6, 7], [8, 9])]))
    per_layer = sum(work.flops(shape, [0]).values()) - work.flops(shape, [])["lm_head"]
    head = work.flops(shape, [])["lm_head"]
    # The streams' final layer: output projection and feed-forward only at the 2 scored of 4 positions.
    final = per_layer - (4 - 2) * shape.final_read_only_per_token
    assert 0 < shape.final_read_only_per_token < shape.linear_per_token[-1]
    assert evaluation_flops(work, shape) == 4 * per_layer + head
    assert evaluation_flops(work, shape, Ablation.skipping(1)) == 3 * per_layer + head
    assert evaluation_flops(work, shape, Ablation.skipping(1), reuse=True) == per_layer + final + head  # layers 2, 3
    assert evaluation_flops(work, shape, Ablation.skipping(3), reuse=True) == head  # nothing after layer 3
    assert evaluation_flops(work, shape, Ablation(), reuse=True) == 0  # a copy of the intact evaluation
    uniform = Ablation.masking({2: [0]}, mode="uniform")  # not a stream: the ablated model's own forward
    assert evaluation_flops(work, shape, uniform, reuse=True) == 2 * per_layer + head
    scratch, reused = sweep_flops(work, shape, [Ablation.skipping(i) for i in range(4)])
    assert scratch == 5 * head + (4 + 4 * 3) * per_layer
    assert reused == 5 * head + (4 + 2 + 1 + 0) * per_layer + 3 * final


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_streams_count_matches_torch_flop_counter_on_the_real_sweep(family: str) -> None:
    """The matmul work of a sweep with one stream, less the intact scoring's, is the stream's count;
    what the head's one-off check adds (10 head rows: 1 + 1 last positions, 4 + 4 of every position)
    is added to the count."""
    model = tiny_model(family, layers=4)
    runtime = ModelRuntime.of(model)
    shape = ModelShape.of(runtime)
    prepared = prepare_loglikelihood([(list(range(5, 16)), [20, 21, 22, 23])])
    plan = prepared.plan(batch_settings(runtime))
    ablation = Ablation.skipping(1)

    def matmuls(run: Callable[[], object]) -> int:
        with FlopCounterMode(display=False) as counter:
            run()
        ops = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
        return ops.get("aten.mm", 0) + ops.get("aten.addmm", 0)

    stream = matmuls(lambda: run_loglikelihood_sweep(runtime, plan, [ablation])) - matmuls(
        lambda: run_loglikelihood(runtime, plan)
    )
    counted = TokenWork.of(prepared).flops(shape, [2, 3], final_read_only=True)
    assert stream == counted["linear"] + counted["lm_head"] + 10 * shape.lm_head_per_token


def test_generation_work_matches_torch_flop_counter_on_a_real_generate() -> None:
    """Greedy generation of ``max_new_tokens``: the prompt, then every generated token but the last fed
    back, with logits once per generated token."""
    model, length, new = tiny_model("llama", layers=2), 9, 4
    shape = ModelShape.of(ModelRuntime.of(model))
    work = TokenWork.of_generation(
        PreparedGeneration(prompts=(tuple(range(5, 5 + length)),), until=(), max_new_tokens=new)
    )
    assert work.positions == tuple(range(length + new - 1)) and work.scored == new
    ids = torch.arange(5, 5 + length).unsqueeze(0)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
        )
    assert out.shape[1] == length + new
    ops = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    ours = work.flops(shape, range(2))
    assert ours["linear"] + ours["lm_head"] == ops.get("aten.mm", 0) + ops.get("aten.addmm", 0)
