"""Ablation primitives: exact against independently built references, restorable, composable.

References never go through the code under test: skipped models are rebuilt from a smaller config with
remapped state dicts, head masks are compared with weight surgery on deep copies, uniform attention with
a hand-computed mean of captured value vectors, swaps with state-dict copies.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager

import pytest
import torch
from scoring_references import sharp_attention_model
from tiny_models import FAMILIES, tiny_config, tiny_model
from torch import nn
from transformers import AutoModelForCausalLM

from pytest_layercheck.core.errors import AblationError
from pytest_layercheck.model import kv_cache
from pytest_layercheck.model.ablation import Ablation, ablate
from pytest_layercheck.model.head_masking import mask_heads, resolve_heads
from pytest_layercheck.model.layer_skipping import skip_layers
from pytest_layercheck.model.layer_swapping import swap_layers

HEAD_DIM = 16
IDS = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(0))  # longer than window 8
PROMPT = IDS[:1, :10]

# Independent module paths (see test_architecture.py for the check that the adapter agrees).
LAYER_PATH = {"gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers"}
ATTN_OUT = {"gpt2": ("attn", "c_proj"), "gpt_neox": ("attention", "dense")}


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and threads thrash badly when cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def blocks(model: nn.Module, family: str) -> nn.ModuleList:
    return model.get_submodule(LAYER_PATH.get(family, "model.layers"))


def out_proj(model: nn.Module, family: str, layer: int) -> nn.Module:
    attn, out = ATTN_OUT.get(family, ("self_attn", "o_proj"))
    return getattr(getattr(blocks(model, family)[layer], attn), out)


def zero_head_inputs(proj: nn.Module, heads: Iterable[int]) -> None:
    """Weight surgery: remove heads by zeroing the output projection's input columns (in place)."""
    with torch.no_grad():
        for h in heads:
            cols = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
            if type(proj).__name__ == "Conv1D":  # GPT-2 stores (in, out)
                proj.weight[cols, :] = 0
            else:
                proj.weight[:, cols] = 0


def logits(model: nn.Module, ids: torch.Tensor = IDS, **kwargs: object) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, **kwargs).logits


def greedy(model: nn.Module, prompt: torch.Tensor = PROMPT, **kwargs: object) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0, **kwargs)


def rebuilt_without(model: nn.Module, family: str, skip: Iterable[int]) -> nn.Module:
    """A fresh model with fewer layers, loaded with the kept layers' weights (the skip reference)."""
    skip = set(skip)
    n = len(blocks(model, family))
    keep = [i for i in range(n) if i not in skip]
    config = tiny_config(family, layers=len(keep))
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [model.config.layer_types[i] for i in keep]
    config._attn_implementation = "eager"
    reference = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    prefix = LAYER_PATH.get(family, "model.layers") + "."
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith(prefix):
            index, rest = key[len(prefix) :].split(".", 1)
            if int(index) in keep:
                state[f"{prefix}{keep.index(int(index))}.{rest}"] = value
        else:
            state[key] = value
    reference.load_state_dict(state, strict=True)
    return reference


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# skip_layers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_skip_matches_rebuilt_model_including_generation(family: str) -> None:
    model = tiny_model(family)
    reference = rebuilt_without(model, family, {1, 3})
    with skip_layers(model, [1, 3]):
        close(logits(model), logits(reference))
        assert torch.equal(greedy(model), greedy(reference))  # KV cache on (the default)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gemma3", "gpt2"])
def test_skip_first_layer_generation_matches_rebuilt(family: str) -> None:
    model = tiny_model(family)
    reference = rebuilt_without(model, family, {0})
    with skip_layers(model, [0]):
        assert torch.equal(greedy(model), greedy(reference))
        assert torch.equal(greedy(model, use_cache=False), greedy(model))


def test_skip_renumbers_and_restores_layer_idx_and_config() -> None:
    model = tiny_model("gemma2")
    layers = model.model.layers
    types = model.config.layer_types
    with skip_layers(model, [0, 3]):
        assert [b.self_attn.layer_idx for b in model.model.layers] == [0, 1, 2, 3]
        assert list(model.model.layers) == [layers[1], layers[2], layers[4], layers[5]]
        assert model.config.num_hidden_layers == 4
        assert model.config.layer_types == [types[1], types[2], types[4], types[5]]
    assert model.model.layers is layers
    assert [b.self_attn.layer_idx for b in layers] == list(range(6))
    assert model.config.num_hidden_layers == 6
    assert model.config.layer_types is types


@pytest.mark.parametrize("family", FAMILIES)
def test_skip_all_layers_is_allowed(family: str) -> None:
    model = tiny_model(family, layers=3)
    with skip_layers(model, range(3)):
        out = logits(model)
        assert out.shape == (2, 12, 128)
        assert greedy(model).shape == (1, 15)
    if family == "llama":  # embeddings -> final norm -> LM head, computed by hand
        with torch.no_grad():
            expected = model.lm_head(model.model.norm(model.model.embed_tokens(IDS)))
        close(out, expected)


def test_nested_skips_use_original_indices() -> None:
    model = tiny_model("qwen3")
    both = rebuilt_without(model, "qwen3", {1, 3})
    only_one = rebuilt_without(model, "qwen3", {1})
    with skip_layers(model, [1]):
        with skip_layers(model, [3, 1]):
            close(logits(model), logits(both))
            assert torch.equal(greedy(model), greedy(both))
        close(logits(model), logits(only_one))


def test_head_mask_inside_skip_uses_original_index() -> None:
    model = tiny_model("llama")
    edited = copy.deepcopy(model)
    zero_head_inputs(out_proj(edited, "llama", 3), [0, 2])
    reference = rebuilt_without(edited, "llama", {1})
    with skip_layers(model, [1]), mask_heads(model, {3: [0, 2]}):
        close(logits(model), logits(reference))


# --------------------------------------------------------------------------------------------------
# mask_heads, zero mode
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_masking_all_heads_removes_attention_output(family: str) -> None:
    model = tiny_model(family)
    reference = copy.deepcopy(model)
    with torch.no_grad():  # attention output becomes the bias alone (GPT-2 c_proj, NeoX dense) or zero
        out_proj(reference, family, 2).weight.zero_()
    with mask_heads(model, {2: range(4)}):
        close(logits(model), logits(reference))
        assert torch.equal(greedy(model), greedy(reference))


@pytest.mark.parametrize("family", FAMILIES)
def test_masking_one_query_head_equals_zeroed_projection_columns(family: str) -> None:
    model = tiny_model(family)
    reference = copy.deepcopy(model)
    zero_head_inputs(out_proj(reference, family, 1), [2])
    zero_head_inputs(out_proj(reference, family, 4), [0, 3])
    with mask_heads(model, {1: [2], 4: [3, 0]}):
        close(logits(model), logits(reference))
    assert not torch.allclose(logits(model), logits(reference), atol=1e-4)  # the mask did something


def test_gqa_group_mode_equals_paper_weight_surgery() -> None:
    """gqa="group" reproduces the paper's code: zero q rows and o_proj columns of the head and the
    shared k/v rows of its KV group (Llama has no attention biases, so the whole group goes silent)."""
    model = tiny_model("llama")
    reference = copy.deepcopy(model)
    attn = reference.model.layers[2].self_attn
    with torch.no_grad():
        attn.q_proj.weight[1 * HEAD_DIM : 2 * HEAD_DIM] = 0
        attn.o_proj.weight[:, 1 * HEAD_DIM : 2 * HEAD_DIM] = 0
        attn.k_proj.weight[0:HEAD_DIM] = 0  # query head 1 reads KV head 1 // 2 = 0
        attn.v_proj.weight[0:HEAD_DIM] = 0
    with mask_heads(model, {2: [1]}, gqa="group"):
        close(logits(model), logits(reference))
    with mask_heads(model, {2: [1]}, gqa="query"):  # only query head 1: head 0 still speaks
        assert not torch.allclose(logits(model), logits(reference), atol=1e-4)


# --------------------------------------------------------------------------------------------------
# mask_heads, uniform mode
# --------------------------------------------------------------------------------------------------


def capture_head_io(model: nn.Module, layer: int, run: Callable[[], object]) -> tuple[torch.Tensor, torch.Tensor]:
    """(v_proj output, o_proj input) of ``layer`` during ``run()``."""
    attn = model.model.layers[layer].self_attn
    seen: dict[str, torch.Tensor] = {}
    handles = [
        attn.v_proj.register_forward_hook(lambda m, a, out: seen.__setitem__("v", out)),
        attn.o_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("heads", a[0])),
    ]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return seen["v"], seen["heads"]


def head_slice(x: torch.Tensor, head: int) -> torch.Tensor:
    return x[..., head * HEAD_DIM : (head + 1) * HEAD_DIM]


def windowed_mean(v: torch.Tensor, valid: torch.Tensor, window: int | None) -> torch.Tensor:
    """Mean over the positions a uniform causal head may see: valid (unpadded), <= t, within window."""
    b, t, _ = v.shape
    out = torch.zeros_like(v)
    for row in range(b):
        for q in range(t):
            lo = 0 if window is None else max(0, q - window + 1)
            keys = [k for k in range(lo, q + 1) if valid[row, k]]
            if keys:
                out[row, q] = v[row, keys].mean(0)
    return out


@pytest.mark.parametrize(("family", "layer", "window"), [("llama", 2, None), ("qwen2", 1, None), ("gemma2", 0, 8)])
def test_uniform_head_outputs_mean_of_visible_values(family: str, layer: int, window: int | None) -> None:
    model = sharp_attention_model(family)
    mask = torch.ones_like(IDS)
    mask[1, :3] = 0  # left padding in row 1
    run = lambda: model(IDS, attention_mask=mask)  # noqa: E731
    head, kv = 3, 1  # query head 3 reads KV head 3 // 2 = 1
    with mask_heads(model, {layer: [head]}, mode="uniform"):
        v, heads = capture_head_io(model, layer, run)
    expected = windowed_mean(head_slice(v, kv), mask.bool(), window)
    valid_rows = mask.bool()  # padded query rows have no visible keys; not compared
    close(head_slice(heads, head)[valid_rows], expected[valid_rows])

    _, plain = capture_head_io(model, layer, run)
    assert (head_slice(plain, head) - expected)[valid_rows].abs().max() > 0.05  # the test can fail
    close(head_slice(heads, 0), head_slice(plain, 0))  # other heads untouched


@pytest.mark.parametrize("family", FAMILIES)
def test_uniform_mode_leaves_unflagged_layers_exact(family: str) -> None:
    """The replacement attention function reproduces each family's attention (scaling, GQA, softcap,
    sliding window) for layers without flagged heads."""
    model = tiny_model(family)
    with torch.no_grad():
        base = model(IDS, output_hidden_states=True).hidden_states
    with mask_heads(model, {4: [0, 1]}, mode="uniform"), torch.no_grad():
        masked = model(IDS, output_hidden_states=True).hidden_states
    for i in range(5):  # inputs to layers 0..4 are produced by unflagged layers only
        close(masked[i], base[i])
    assert not torch.allclose(masked[5], base[5], atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma2", "gemma3", "gpt2", "gpt_neox"])
def test_uniform_mode_with_kv_cache(family: str) -> None:
    model = tiny_model(family)
    zeroed = copy.deepcopy(model)
    with mask_heads(model, {1: [0, 3], 3: [2]}, mode="uniform"), torch.no_grad():
        full = model(IDS).logits[:, -1]
        prefix = model(IDS[:, :-1], use_cache=True)
        step = model(
            IDS[:, -1:], use_cache=True, **kv_cache.cache_kwargs(model, kv_cache.returned_cache(prefix))
        ).logits[:, -1]
        close(step, full)
        assert torch.equal(greedy(model), greedy(model, use_cache=False))
        uniform_logits = logits(model)
    with mask_heads(zeroed, {1: [0, 3], 3: [2]}, mode="zero"):
        assert not torch.allclose(uniform_logits, logits(zeroed), atol=1e-6)
    assert model.config._attn_implementation == "eager"


def test_uniform_mode_on_an_sdpa_model_restores_sdpa() -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama"), attn_implementation="sdpa").eval()
    with torch.no_grad():
        base = model(IDS, output_hidden_states=True).hidden_states
    with mask_heads(model, {3: [1]}, mode="uniform"), torch.no_grad():
        assert model.model.layers[0].self_attn.config._attn_implementation != "sdpa"
        masked = model(IDS, output_hidden_states=True).hidden_states
        assert torch.equal(greedy(model), greedy(model, use_cache=False))
    for i in range(4):
        close(masked[i], base[i])
    assert not torch.allclose(masked[4], base[4], atol=1e-6)
    assert model.config._attn_implementation == "sdpa"


def test_resolve_heads_expands_kv_groups() -> None:
    model = tiny_model("llama", layers=2)
    assert resolve_heads(model, {1: [3], 0: [1, 2]}) == {0: (1, 2), 1: (3,)}
    assert resolve_heads(model, {1: [3], 0: [1, 2]}, gqa="group") == {0: (0, 1, 2, 3), 1: (2, 3)}
    assert resolve_heads(tiny_model("gpt2", layers=2), {1: [3]}, gqa="group") == {1: (3,)}


# --------------------------------------------------------------------------------------------------
# swap_layers
# --------------------------------------------------------------------------------------------------


def with_donor_layers(model: nn.Module, donor: nn.Module, family: str, pairs: dict[int, int]) -> nn.Module:
    reference = copy.deepcopy(model)
    for target, source in pairs.items():
        blocks(reference, family)[target].load_state_dict(blocks(donor, family)[source].state_dict())
    return reference


@pytest.mark.parametrize("family", FAMILIES)
def test_swap_equals_state_dict_copy(family: str) -> None:
    model, donor = tiny_model(family), tiny_model(family, seed=1)
    reference = with_donor_layers(model, donor, family, {1: 1, 4: 4})
    with swap_layers(model, donor, [1, 4]):
        close(logits(model), logits(reference))
        assert torch.equal(greedy(model), greedy(reference))


def test_swap_mapping_and_dtype_conversion() -> None:
    model = tiny_model("llama")
    donor = tiny_model("llama", seed=1).to(torch.bfloat16)
    reference = with_donor_layers(model, donor.float(), "llama", {2: 4})
    donor.to(torch.bfloat16)
    with swap_layers(model, donor, {2: 4}):
        assert model.model.layers[2].self_attn.layer_idx == 2
        assert model.model.layers[2].mlp.up_proj.weight.dtype == torch.float32
        close(logits(model), logits(reference))
    assert donor.model.layers[4].self_attn.layer_idx == 4  # donor untouched


def test_swap_rejects_mismatched_donors() -> None:
    model = tiny_model("llama", layers=4)
    with (
        pytest.raises(AblationError, match="model_type: llama vs donor gpt2"),
        swap_layers(model, tiny_model("gpt2", layers=4), [1]),
    ):
        pass
    wider = tiny_config("llama", layers=4)
    wider.intermediate_size = 256
    with (
        pytest.raises(AblationError, match="mlp"),
        swap_layers(model, AutoModelForCausalLM.from_config(wider), [1]),
    ):
        pass
    with (
        pytest.raises(AblationError, match="out of range"),
        swap_layers(model, tiny_model("llama", layers=2), {3: 3}),
    ):
        pass
    gemma2 = tiny_model("gemma2", layers=4)  # layer 0 sliding, layer 1 full attention
    with (
        pytest.raises(AblationError, match="same attention type"),
        swap_layers(gemma2, tiny_model("gemma2", layers=4, seed=1), {0: 1}),
    ):
        pass


def test_swap_inside_skip_is_rejected() -> None:
    model, donor = tiny_model("llama", layers=4), tiny_model("llama", layers=4, seed=1)
    with (
        skip_layers(model, [0]),
        pytest.raises(AblationError, match="before skip_layers"),
        swap_layers(model, donor, [1]),
    ):
        pass


# --------------------------------------------------------------------------------------------------
# Ablation and ablate
# --------------------------------------------------------------------------------------------------


def test_ablation_normalises_and_keys() -> None:
    ablation = Ablation(skip=(4, 3, 3), heads={2: [1, 0, 1]}, swap=[5])
    assert ablation.skip == (3, 4)
    assert ablation.heads == ((2, (0, 1)),)
    assert ablation.swap == ((5, 5),)
    assert ablation.key == "skip=3,4;heads=2:0,1;swap=5<-5"
    assert ablation == Ablation(skip=[3, 4], heads=[(2, (0, 1))], swap={5: 5})
    assert hash(ablation) == hash(Ablation(skip=[3, 4], heads=[(2, (0, 1))], swap={5: 5}))
    assert Ablation().key == "intact" and Ablation().is_intact
    assert Ablation(head_mode="uniform") == Ablation()  # mode means nothing without heads
    assert Ablation.skipping(3, 4) == Ablation.skipping([4, 3]) == Ablation(skip=(3, 4))
    assert Ablation.masking({5: [3], 2: 0}, mode="uniform", gqa="group").key == (
        "heads=2:0/5:3;head_mode=uniform;gqa=group"
    )
    assert Ablation.swapping({5: 7, 6: 6}).key == "swap=5<-7,6<-6"
    assert Ablation.build(skip={4, 3}, heads={2: {1, 0}}, swap=[5]) == ablation
    assert not Ablation.skipping(0).is_intact
    assert str(Ablation.skipping(1)) == "skip=1"


@pytest.mark.parametrize(
    "make",
    [
        lambda: Ablation(skip=(-1,)),
        lambda: Ablation(skip=(1.5,)),
        lambda: Ablation(skip=(True,)),
        lambda: Ablation(heads={1: ["a"]}),
        lambda: Ablation(heads=[1, 2]),
        lambda: Ablation(head_mode="mean"),
        lambda: Ablation(gqa="kv"),
        lambda: Ablation(swap=[(1, 2), (1, 3)]),
        lambda: Ablation(swap=[(1, 2, 3)]),
    ],
)
def test_ablation_rejects_bad_input(make: Callable[[], Ablation]) -> None:
    with pytest.raises(AblationError) as info:
        make()
    assert "How to fix" in str(info.value)


def test_primitives_validate_against_the_model() -> None:
    model = tiny_model("llama", layers=4)
    bad: list[Callable[[], AbstractContextManager]] = [
        lambda: skip_layers(model, [4]),
        lambda: mask_heads(model, {4: [0]}),
        lambda: mask_heads(model, {0: [4]}),
        lambda: mask_heads(model, {0: [0]}, mode="mean"),
        lambda: ablate(model, Ablation.swapping([1])),  # no donor
    ]
    for make in bad:
        with pytest.raises(AblationError, match="How to fix"), make():
            pass
    with pytest.raises(AblationError, match=r"valid: 0-3"), skip_layers(model, [7]):
        pass


def test_ablate_composes_against_hand_built_reference() -> None:
    model, donor = tiny_model("llama"), tiny_model("llama", seed=1)
    edited = with_donor_layers(model, donor, "llama", {1: 1})
    zero_head_inputs(out_proj(edited, "llama", 2), [0])
    reference = rebuilt_without(edited, "llama", {3})
    ablation = Ablation(skip=(3,), heads={2: [0]}, swap=(1,))
    with ablate(model, ablation, donor=donor) as ablated:
        assert ablated is model
        close(logits(model), logits(reference))
        assert torch.equal(greedy(model), greedy(reference))


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])
def test_generation_under_every_ablation(family: str) -> None:
    model, donor = tiny_model(family), tiny_model(family, seed=1)
    ablations = [
        Ablation.skipping(0),
        Ablation.masking({1: [0], 2: [1, 2]}),
        Ablation.masking({1: [0], 2: [1, 2]}, mode="uniform"),
        Ablation.masking({2: [1]}, mode="uniform", gqa="group"),
        Ablation.swapping([2]),
        Ablation(skip=(0, 4), heads={1: [3], 4: [0]}, head_mode="uniform", swap=(1, 4)),
    ]
    for ablation in ablations:
        with ablate(model, ablation, donor=donor):
            tokens = greedy(model)
            assert tokens.shape == (1, 15)
            assert torch.equal(tokens, greedy(model, use_cache=False)), ablation.key


# --------------------------------------------------------------------------------------------------
# Exact restore
# --------------------------------------------------------------------------------------------------


def snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "modules": [(name, id(m)) for name, m in model.named_modules()],
        "params": [(name, id(p)) for name, p in model.named_parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "config": model.config.to_dict(),
        "attn_impl": model.config._attn_implementation,
        "layer_idx": [(n, m.layer_idx) for n, m in model.named_modules() if hasattr(m, "layer_idx")],
        "hooks": sum(
            len(m._forward_pre_hooks) + len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules()
        ),
        "logits": logits(model),
    }


def assert_same(before: dict[str, object], after: dict[str, object]) -> None:
    for key in ("modules", "params", "config", "attn_impl", "layer_idx", "hooks"):
        assert after[key] == before[key], key
    assert before["state"].keys() == after["state"].keys()
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    assert torch.equal(after["logits"], before["logits"])


RESTORE_CASES: dict[str, Callable[[nn.Module, nn.Module], AbstractContextManager]] = {
    "skip": lambda m, d: skip_layers(m, [0, 2, 5]),
    "skip_all": lambda m, d: skip_layers(m, range(6)),
    "heads_zero": lambda m, d: mask_heads(m, {1: [0, 3]}),
    "heads_uniform": lambda m, d: mask_heads(m, {1: [0, 3]}, mode="uniform", gqa="group"),
    "swap": lambda m, d: swap_layers(m, d, {1: 1, 3: 3}),
    "ablate": lambda m, d: ablate(m, Ablation(skip=(0, 4), heads={1: [1]}, head_mode="uniform", swap=(1, 4)), donor=d),
}


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
@pytest.mark.parametrize("case", list(RESTORE_CASES))
def test_exact_restore_after_exit_and_after_exception(family: str, case: str) -> None:
    model, donor = tiny_model(family), tiny_model(family, seed=1)
    before = snapshot(model)
    with RESTORE_CASES[case](model, donor):
        assert not torch.equal(logits(model), before["logits"])
        greedy(model)
    assert_same(before, snapshot(model))

    with pytest.raises(RuntimeError, match="boom"), RESTORE_CASES[case](model, donor):
        greedy(model)
        raise RuntimeError("boom")
    assert_same(before, snapshot(model))


def test_failed_composition_undoes_the_steps_already_applied() -> None:
    model, donor = tiny_model("llama"), tiny_model("llama", seed=1)
    before = snapshot(model)
    with (
        pytest.raises(AblationError, match="out of range"),
        ablate(model, Ablation(swap=(1,), heads={1: [0]}, skip=(9,)), donor=donor),
    ):
        pass
    assert_same(before, snapshot(model))


# --------------------------------------------------------------------------------------------------
# Wrapped and dispatched models
# --------------------------------------------------------------------------------------------------


def test_ablations_through_a_peft_wrapper() -> None:
    peft = pytest.importorskip("peft")
    base = tiny_model("llama")
    reference = copy.deepcopy(base)
    with torch.no_grad():
        reference.model.layers[1].self_attn.o_proj.weight.zero_()
    skipped = rebuilt_without(base, "llama", {2})
    wrapped = peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["q_proj", "o_proj"]))
    wrapped.eval()
    with mask_heads(wrapped, {1: range(4)}):  # LoRA B starts at zero, so the adapter adds nothing
        close(logits(wrapped), logits(reference))
    with skip_layers(wrapped, [2]):
        close(logits(wrapped), logits(skipped))


def test_ablations_on_a_dispatched_model() -> None:
    from accelerate import dispatch_model

    model, donor = tiny_model("llama", layers=4), tiny_model("llama", layers=4, seed=1)
    reference = with_donor_layers(model, donor, "llama", {2: 2})
    device_map = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.norm": "cpu",
        "lm_head": "cpu",
    }
    device_map |= {f"model.layers.{i}": "cpu" for i in range(4)}
    model = dispatch_model(model, device_map=device_map, force_hooks=True)
    before = snapshot(model)
    with swap_layers(model, donor, [2]):
        assert hasattr(model.model.layers[2], "_hf_hook")
        close(logits(model), logits(reference))
    with skip_layers(model, [1]), mask_heads(model, {2: [0]}, mode="uniform"):
        assert torch.equal(greedy(model), greedy(model, use_cache=False))
    assert_same(before, snapshot(model))


# --------------------------------------------------------------------------------------------------
# eager_attention
# --------------------------------------------------------------------------------------------------


def _attention_weights(model: nn.Module, family: str, layer: int) -> list[object]:
    """Register a hook on one layer's attention module that keeps its second output (the weights)."""
    attn_name = ATTN_OUT.get(family, ("self_attn", "o_proj"))[0]
    seen: list[object] = []
    getattr(blocks(model, family)[layer], attn_name).register_forward_hook(
        lambda module, args, output: seen.append(output[1])
    )
    return seen


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3", "phi3", "gpt2", "gpt_neox"])
def test_eager_attention_returns_weights_and_restores_sdpa(family: str) -> None:
    """On an SDPA model the attention modules return no weights; inside ``eager_attention`` they
    return softmax rows over the visible keys, the logits stay the same, and SDPA comes back."""
    from pytest_layercheck.model.head_masking import eager_attention

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(family), attn_implementation="sdpa").eval()
    seen = _attention_weights(model, family, 1)
    base = logits(model)
    assert seen[-1] is None  # SDPA: nothing to read
    with eager_attention(model):
        eager = logits(model)
        weights = seen[-1]
    assert isinstance(weights, torch.Tensor) and weights.shape == (2, 4, 12, 12)
    close(weights.sum(-1), torch.ones(2, 4, 12))
    assert torch.all(weights.triu(1) == 0)  # causal: no weight on later positions
    close(eager, base)
    assert model.config._attn_implementation == "sdpa"
    logits(model)
    assert seen[-1] is None


def test_eager_attention_inside_uniform_mask_keeps_the_mask() -> None:
    """A head flagged by an enclosing uniform mask still attends uniformly (weights 1/(t+1))."""
    from pytest_layercheck.model.head_masking import eager_attention

    model = sharp_attention_model("llama")
    seen = _attention_weights(model, "llama", 2)
    with mask_heads(model, {2: [3]}, mode="uniform"), eager_attention(model):
        logits(model)
    weights = seen[-1]
    assert isinstance(weights, torch.Tensor)
    rows = torch.arange(1, 13, dtype=torch.float32)[:, None]
    expected = torch.tril(torch.ones(12, 12)) / rows
    close(weights[0, 3], expected)
    assert (weights[0, 0] - expected).abs().max() > 0.05  # an unflagged head is not uniform
    assert model.config._attn_implementation == "eager"
