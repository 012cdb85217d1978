"""The layer sweep that reuses the intact model's activations: the same numbers as scoring every
ablated model from scratch, with less layer work.

The reference for every ablation is the plain engine run on the ablated model
(``ablate`` + ``run_loglikelihood``), which recomputes all layers; that engine is itself checked
against unbatched hand computations in test_scoring.py and test_prefix_sharing.py.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any, cast

import pytest
import torch
from scoring_references import sharp_model
from small_suites import mixed_suite
from tiny_models import FAMILIES, tiny_tokenizer
from transformers.cache_utils import DynamicLayer

from pytest_layercheck.model.ablation import Ablation, ablate
from pytest_layercheck.model.architecture import get_adapter
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring.engine import run_loglikelihood
from pytest_layercheck.scoring.model_head import _final_norm, _Head, _head_logits
from pytest_layercheck.scoring.prompt_cache import FilledLayer, PrefixCache
from pytest_layercheck.scoring.protocols import batch_settings, prepare
from pytest_layercheck.scoring.streams import first_affected_layer, resume_layer
from pytest_layercheck.scoring.sweep import run_loglikelihood_sweep
from pytest_layercheck.scoring.wavefront import StreamBudget, _Wavefront

LAYERS = 5


def model(family: str) -> torch.nn.Module:
    return sharp_model(family, seed=3, sharpen_embeddings=False, layers=LAYERS)


ABLATIONS = [
    *(Ablation.skipping(i) for i in range(LAYERS)),
    Ablation.skipping(1, 2),
    Ablation.skipping(2, 4),
    Ablation.skipping(3, 4),  # everything from layer 3 on removed: resumes at layer 2
    Ablation.skipping(range(LAYERS)),  # nothing left to resume from
    Ablation.masking({2: [0, 3]}),
    Ablation.masking({1: [1]}, mode="uniform"),
    Ablation.build(skip=[3], heads={1: [2]}),
]


#: A token budget that splits the suites into several prompt batches, and a batch's continuations
#: (mc_text) into several calls.
BUDGET = 64


def plan_of(family: str, protocol: str, shots: int, token_budget: int | None = None):
    prepared = prepare(mixed_suite(shots), protocol, tiny_tokenizer())
    assert prepared.loglikelihood is not None
    settings = batch_settings(ModelRuntime.of(model(family)), token_budget=token_budget)
    return prepared.loglikelihood.plan(settings)


def reference(m: torch.nn.Module, plan, ablation: Ablation, donor=None):
    with ablate(m, ablation, donor=donor):
        return run_loglikelihood(ModelRuntime.of(m), plan)


def assert_same(a, b) -> None:
    torch.testing.assert_close(a.loglikelihood, b.loglikelihood, rtol=0, atol=1e-5)
    assert torch.equal(a.greedy, b.greedy)


@pytest.mark.parametrize("wavefront", [True, False])
@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2", "qwen3"])
@pytest.mark.parametrize(("protocol", "shots"), [("mc_text", 3), ("continuation", 0), ("mc_letters", 2)])
def test_sweep_equals_scoring_each_ablated_model(family: str, protocol: str, shots: int, wavefront: bool) -> None:
    m = model(family)
    plan = plan_of(family, protocol, shots, token_budget=BUDGET)
    assert len(plan.batches) > 1
    assert protocol != "mc_text" or any(len(batch.chunks) > 1 for batch in plan.batches)
    intact, outputs = run_loglikelihood_sweep(ModelRuntime.of(m), plan, ABLATIONS, wavefront=wavefront)
    assert_same(intact, reference(m, plan, Ablation()))
    for ablation, output in zip(ABLATIONS, outputs):
        assert_same(output, reference(m, plan, ablation))


def test_sweep_with_a_donor_swap() -> None:
    m, donor = model("llama"), sharp_model("llama", seed=11, sharpen_embeddings=False, layers=LAYERS)
    plan = plan_of("llama", "mc_text", 3)
    swaps = [Ablation.swapping([2]), Ablation.swapping([0, 4])]
    _, outputs = run_loglikelihood_sweep(ModelRuntime.of(m), plan, swaps, donor=donor)
    for ablation, output in zip(swaps, outputs):
        assert_same(output, reference(m, plan, ablation, donor=donor))


def test_the_model_is_left_as_it_was() -> None:
    m = model("llama")
    runtime = ModelRuntime.of(m)
    plan = plan_of("llama", "mc_text", 3)
    before = run_loglikelihood(runtime, plan)
    adapter = get_adapter(m)
    blocks = list(adapter.layers)
    run_loglikelihood_sweep(runtime, plan, ABLATIONS)
    assert list(get_adapter(m).layers) == blocks
    assert all(not block._forward_pre_hooks for block in blocks)
    assert all(
        not module._forward_pre_hooks
        for block in blocks
        for module in (adapter.out_proj_of(block), adapter.mlp_of(block))
        if module is not None
    )
    assert_same(run_loglikelihood(runtime, plan), before)


def count_block_calls(m, run) -> tuple[list[int], list[int]]:
    """(calls, rows) per decoder block while ``run()`` runs."""
    calls, rows = [0] * LAYERS, [0] * LAYERS

    def hook(i, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        calls[i] += 1
        rows[i] += hidden.shape[0]

    handles = [
        block.register_forward_pre_hook(lambda mod, args, kwargs, i=i: hook(i, args, kwargs), with_kwargs=True)
        for i, block in enumerate(get_adapter(m).layers)
    ]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return calls, rows


def test_per_ablation_runs_only_compute_the_layers_after_the_resume_point() -> None:
    m = model("llama")
    plan = plan_of("llama", "mc_text", 3)
    calls, _ = count_block_calls(
        m,
        lambda: run_loglikelihood_sweep(
            ModelRuntime.of(m), plan, [Ablation.skipping(i) for i in range(LAYERS)], wavefront=False
        ),
    )
    forwards = 1 + sum(1 + len(batch.chunks) for batch in plan.batches)  # prefix pass + prompt/chunk passes
    # Layer i runs once intact, and once for each removed layer k < i (removing k >= i starts after i),
    # except that removing the last layer resumes at the layer before it.
    expected = [forwards * (1 + i + (1 if i == LAYERS - 2 else 0)) for i in range(LAYERS)]
    assert calls == expected
    assert sum(calls) < forwards * LAYERS * (1 + LAYERS - 1)  # fewer than scoring each model from scratch


def test_the_wavefront_runs_each_layer_once_for_all_streams() -> None:
    m = model("llama")
    runtime = ModelRuntime.of(m)
    plan = plan_of("llama", "mc_text", 3, token_budget=BUDGET)
    ablations = [Ablation.skipping(i) for i in range(LAYERS)]
    calls, rows = count_block_calls(m, lambda: run_loglikelihood_sweep(runtime, plan, ablations))
    old_calls, old_rows = count_block_calls(
        m, lambda: run_loglikelihood_sweep(runtime, plan, ablations, wavefront=False)
    )
    forwards = 1 + sum(1 + len(batch.chunks) for batch in plan.batches)
    # Per forward: layer 0 only intact (every stream branches at or after it); every later layer
    # once intact and once for all the streams that removed an earlier layer.
    assert calls == [forwards] + [2 * forwards] * (LAYERS - 1)
    # The rows computed are those of the per-ablation path, less its re-run of layer N-2 when the
    # last layer is removed: the same work in fewer, fuller calls.
    intact_rows = rows[0]
    assert rows == [intact_rows * (1 + i) for i in range(LAYERS)]
    assert old_rows == [r + (intact_rows if i == LAYERS - 2 else 0) for i, r in enumerate(rows)]
    assert old_calls == [forwards * (1 + i + (1 if i == LAYERS - 2 else 0)) for i in range(LAYERS)]
    # With N layers: 2N - 1 block calls per forward instead of N + N(N + 1)/2 (30 layers: 59 vs 495).
    assert sum(calls) == forwards * (2 * LAYERS - 1) < sum(old_calls)


def test_the_final_layer_works_only_on_the_positions_that_are_read() -> None:
    """A prompt call is scored at its last position and the shared prefix only leaves keys and values,
    so the streams' final-layer feed-forward sees one position per row there; continuation calls are
    scored at every position and keep them all. The intact forward is the model's own, untouched."""
    m = model("llama")
    runtime = ModelRuntime.of(m)
    plan = plan_of("llama", "mc_text", 3, token_budget=BUDGET)
    assert plan.prefix and all(batch.chunks for batch in plan.batches)
    adapter = get_adapter(m)
    positions: list[int] = []
    handle = adapter.mlp_of(adapter.layers[LAYERS - 1]).register_forward_hook(  # sees the work it did
        lambda module, args, output: positions.append(output.shape[0] * output.shape[1])
    )
    try:
        run_loglikelihood(runtime, plan)
        intact = sum(positions)
        positions.clear()
        ablations = [Ablation.skipping(i) for i in range(LAYERS - 1)]  # every stream runs the final layer
        run_loglikelihood_sweep(runtime, plan, ablations)
    finally:
        handle.remove()
    prompts = 1 + sum(batch.input_ids.shape[0] for batch in plan.batches)  # the prefix's row, the prompt rows
    continuations = sum(chunk.input_ids.numel() for batch in plan.batches for chunk in batch.chunks)
    assert sum(positions) == intact + len(ablations) * (prompts + continuations)
    assert sum(positions) < (1 + len(ablations)) * intact  # what every stream would do without the cut


def test_streams_split_by_the_budget_give_the_same_numbers() -> None:
    m = model("gemma2")
    runtime = ModelRuntime.of(m)
    plan = plan_of("gemma2", "continuation", 0, token_budget=BUDGET)
    _, whole = run_loglikelihood_sweep(runtime, plan, ABLATIONS)
    one_at_a_time = StreamBudget(tokens=1, bytes=1)
    calls, _ = count_block_calls(m, lambda: run_loglikelihood_sweep(runtime, plan, ABLATIONS, budget=one_at_a_time))
    _, split = run_loglikelihood_sweep(runtime, plan, ABLATIONS, budget=one_at_a_time)
    for a, b in zip(whole, split):
        assert_same(a, b)
    whole_calls, _ = count_block_calls(m, lambda: run_loglikelihood_sweep(runtime, plan, ABLATIONS))
    assert sum(calls) > sum(whole_calls)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_under_a_mixed_sweep(family: str) -> None:
    """Skips, zero and uniform head masks (the uniform one on the per-ablation path), GQA groups,
    donor swaps next to skips at the same layer, an intact entry: all equal scoring from scratch."""
    m = sharp_model(family, seed=3, sharpen_embeddings=False, layers=LAYERS)
    donor = sharp_model(family, seed=11, sharpen_embeddings=False, layers=LAYERS)
    plan = plan_of(family, "mc_text", 3, token_budget=BUDGET)
    ablations = [
        Ablation(),
        Ablation.skipping(1),
        Ablation.swapping([1]),
        Ablation.build(swap=[2], skip=[3]),
        Ablation.build(skip=[1], heads={2: [1]}),
        Ablation.masking({1: [0]}, gqa="group"),
        Ablation.masking({3: [2]}, mode="uniform"),
        Ablation.skipping(range(LAYERS)),
    ]
    intact, outputs = run_loglikelihood_sweep(ModelRuntime.of(m), plan, ablations, donor=donor)
    assert_same(intact, reference(m, plan, Ablation()))
    for ablation, output in zip(ablations, outputs):
        assert_same(output, reference(m, plan, ablation, donor=donor))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_chunks_run_on_several_cores_give_the_same_numbers(family: str) -> None:
    """Chunks of streams on two threads (one torch thread each) give the numbers of scoring from
    scratch, with head masks (a hook that must act only on its own thread's call) and donor swaps in
    chunks that run at the same time; with the same chunks, the numbers of one thread bit for bit."""
    import threading

    m = sharp_model(family, seed=3, sharpen_embeddings=False, layers=LAYERS)
    runtime = ModelRuntime.of(m)
    donor = sharp_model(family, seed=11, sharpen_embeddings=False, layers=LAYERS)
    plan = plan_of(family, "mc_text", 3, token_budget=BUDGET)
    ablations = [
        *ABLATIONS,
        Ablation.swapping([1]),
        Ablation.build(swap=[2], skip=[3]),
        Ablation.masking({1: [0]}, gqa="group"),
        Ablation.masking({2: [1, 2]}),
    ]
    few = StreamBudget(tokens=800, bytes=2**40)  # a few streams per chunk, several chunks per batch
    one = StreamBudget(tokens=1, bytes=1)  # one stream per chunk, whatever the workers
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        idents: set[int] = set()
        heads: set[int] = set()
        last = get_adapter(m).layers[LAYERS - 1]
        hook = last.register_forward_pre_hook(lambda *_: idents.add(threading.get_ident()))
        head_hook = m.get_output_embeddings().register_forward_pre_hook(lambda *_: heads.add(threading.get_ident()))
        try:
            _, split = run_loglikelihood_sweep(runtime, plan, ablations, donor=donor, budget=few, workers=2)
        finally:
            hook.remove()
            head_hook.remove()
        assert len(idents - {threading.get_ident()}) >= 2  # the chunks ran on other threads, two at a time
        assert len(heads - {threading.get_ident()}) >= 2  # and scored their streams there
        _, alone = run_loglikelihood_sweep(runtime, plan, ablations, donor=donor, budget=one, workers=2)
        _, serial = run_loglikelihood_sweep(runtime, plan, ablations, donor=donor, budget=one, workers=1)
    finally:
        torch.set_num_threads(before)
    for ablation, output in zip(ablations, split):
        assert_same(output, reference(m, plan, ablation, donor=donor))
    for a, b in zip(alone, serial):
        assert torch.equal(a.loglikelihood, b.loglikelihood) and torch.equal(a.greedy, b.greedy)
    assert all(not get_adapter(m).out_proj_of(block)._forward_pre_hooks for block in get_adapter(m).layers)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_direct_head_gives_the_models_own_logits(family: str) -> None:
    """Final norm, LM head and soft-cap applied directly (what chunks on other threads run) against the
    model run with every layer skipped; a head that differs is found by the check and not used."""
    runtime = ModelRuntime.of(model(family))
    adapter = runtime.adapter
    norm = _final_norm(adapter)
    assert norm is not None
    hidden = (
        torch.randn(
            2, 5, adapter.config.hidden_size if hasattr(adapter.config, "hidden_size") else adapter.config.n_embd
        )
        * 3
    )
    head = _Head(runtime, norm)
    head.check(hidden)
    assert head.direct
    for keep_last in (True, False):
        with torch.inference_mode():
            torch.testing.assert_close(
                head(hidden, keep_last), _head_logits(runtime, norm, hidden, keep_last), rtol=1e-6, atol=1e-5
            )
    wrong = _Head(runtime, norm)
    wrong.softcap = 0.5  # a family detail the direct way would miss
    wrong.check(hidden)
    assert wrong.direct is False
    with torch.inference_mode():
        assert torch.equal(wrong(hidden, True), _head_logits(runtime, norm, hidden, True))


def test_resume_points() -> None:
    assert first_affected_layer(Ablation()) is None
    assert first_affected_layer(Ablation.build(skip=[5], heads={3: [0]}, swap=[7])) == 3
    assert resume_layer(Ablation.skipping(4), 10) == 4
    assert resume_layer(Ablation.skipping(0), 10) is None
    assert resume_layer(Ablation.skipping(8, 9), 10) == 7
    assert resume_layer(Ablation.skipping(range(10)), 10) is None


def test_progress_steps_cover_every_batch_and_variant() -> None:
    m = model("llama")
    plan = plan_of("llama", "mc_text", 3, token_budget=BUDGET)
    seen: list[tuple[int, int]] = []
    run_loglikelihood_sweep(
        ModelRuntime.of(m), plan, ABLATIONS[:3], on_step=lambda done, total: seen.append((done, total))
    )
    total = len(plan.batches) * 4
    assert seen == [(i, total) for i in range(1, total + 1)]


def test_a_sweep_with_nothing_to_branch_off_runs_the_intact_batches_on_every_core() -> None:
    """A sweep of only intact entries (the profile's intact cells on every item) is the engine's
    split run: batches on two threads, the serial numbers bit for bit, a progress step per batch and entry."""
    import threading

    m = model("llama")
    runtime = ModelRuntime.of(m)
    plan = plan_of("llama", "mc_text", 3, token_budget=BUDGET)
    assert len(plan.batches) >= 4
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    idents: set[int] = set()
    hook = get_adapter(m).layers[0].register_forward_pre_hook(lambda *_: idents.add(threading.get_ident()))
    seen: list[tuple[int, int]] = []
    try:
        intact, copies = run_loglikelihood_sweep(
            runtime,
            plan,
            [Ablation(), Ablation()],
            workers=2,
            on_step=lambda done, total: seen.append((done, total)),
        )
    finally:
        hook.remove()
        torch.set_num_threads(before)
    assert len(idents - {threading.get_ident()}) == 2
    serial = run_loglikelihood(runtime, plan, workers=1)
    for output in (intact, *copies):
        assert torch.equal(output.loglikelihood, serial.loglikelihood) and torch.equal(output.greedy, serial.greedy)
    pointers = {o.loglikelihood.data_ptr() for o in (intact, *copies)} | {
        o.greedy.data_ptr() for o in (intact, *copies)
    }
    assert len(pointers) == 6  # copies, not views
    total = len(plan.batches) * 3
    assert seen == [(i, total) for i in range(1, total + 1)]


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3", "phi3"])
def test_grouped_sdpa_sweep_equals_eager_scoring(family: str) -> None:
    """On the CPU, SDPA models run grouped-query attention in the kernel (``model/attention.py``);
    the sweep then still equals scoring each ablated model with transformers' eager attention, an
    implementation it shares nothing with."""
    fast = sharp_model(family, "sdpa", seed=3, sharpen_embeddings=False, layers=LAYERS)
    eager = sharp_model(family, "eager", seed=3, sharpen_embeddings=False, layers=LAYERS)
    assert get_adapter(fast).num_kv_heads < get_adapter(fast).num_heads
    plan = plan_of(family, "mc_text", 3, token_budget=BUDGET)
    ablations = [Ablation.skipping(1), Ablation.masking({2: [0, 3]}), Ablation.skipping(range(LAYERS))]
    intact, outputs = run_loglikelihood_sweep(ModelRuntime.of(fast), plan, ablations)
    for ablation, output in zip([Ablation(), *ablations], [intact, *outputs]):
        expected = reference(eager, plan, ablation)
        # two attention implementations round differently: log-likelihoods of about -60 agree to 1e-6
        torch.testing.assert_close(output.loglikelihood, expected.loglikelihood, rtol=1e-6, atol=1e-5)
        assert torch.equal(output.greedy, expected.greedy)


def test_prefix_rows_are_laid_out_as_the_engine_lays_them_out() -> None:
    """A group's prefix states, expanded per prompt row into a layer of the prompt call's full width,
    hold what :meth:`PrefixCache.expand` gives the engine (rows padded past the prefix included); the
    call's own columns are written in place, and attention then reads the contiguous buffer."""
    length, width, heads, dim = 6, 20, 2, 4
    generator = torch.Generator().manual_seed(0)
    states = {
        (i, 0): (
            torch.randn(1, heads, length, dim, generator=generator),
            torch.randn(1, heads, length, dim, generator=generator),
        )
        for i in (3, 7)
    }
    group = cast(Any, SimpleNamespace(members=[SimpleNamespace(index=3), SimpleNamespace(index=7)]))
    pads = torch.tensor([0, 2, 9, 5])  # 9: this row's padding runs past the prefix
    layer = _Wavefront._prefix_layer(cast(Any, SimpleNamespace(prefix=states)), group, 0, pads, width)
    assert layer.keys.shape == (8, heads, length, dim) and layer.buffers[0].shape == (8, heads, width, dim)
    for m, index in enumerate((3, 7)):
        expected = PrefixCache([states[(index, 0)]], length).expand(pads).layers[0]
        assert torch.equal(layer.keys[4 * m : 4 * (m + 1)], expected.keys)
        assert torch.equal(layer.values[4 * m : 4 * (m + 1)], expected.values)
    new = torch.randn(8, heads, width - length, dim, generator=generator)
    keys, values = layer.update(new, -new)
    assert keys.is_contiguous() and keys.data_ptr() == layer.buffers[0].data_ptr() and keys.shape[2] == width
    assert torch.equal(keys[:, :, length:], new) and torch.equal(values[:, :, length:], -new)
    more, _ = layer.update(new[:, :, :1], new[:, :, :1])  # past the planned width: grows as DynamicLayer does
    assert torch.equal(more[:, :, width:], new[:, :, :1]) and torch.equal(more[:, :, :width], keys)


def test_a_filled_layer_extends_selected_rows_as_a_dynamic_layer_does() -> None:
    """Continuation rows selected from a full prompt call's layer, then extended: what ``DynamicLayer``
    gives (select, then concatenate), and the prompt call's layer left as it was."""
    generator = torch.Generator().manual_seed(1)
    keys, values = torch.randn(5, 2, 7, 4, generator=generator), torch.randn(5, 2, 7, 4, generator=generator)
    filled, plain = FilledLayer(keys.clone(), values.clone(), 7), DynamicLayer()
    plain.update(keys, values)
    index, new = torch.tensor([4, 0, 0, 2]), torch.randn(4, 2, 3, 4, generator=generator)
    got, expected = copy.copy(filled), copy.copy(plain)
    got.batch_select_indices(index)
    expected.batch_select_indices(index)
    assert all(torch.equal(a, b) for a, b in zip(got.update(new, 2 * new), expected.update(new, 2 * new)))
    assert torch.equal(filled.keys, keys) and filled.filled == 7  # the original is untouched
