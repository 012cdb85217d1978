"""Architecture adapters: every family resolves to the right modules and head geometry."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, tiny_config, tiny_model
from torch import nn

from pytest_layercheck.core.errors import UnsupportedArchitectureError
from pytest_layercheck.model.architecture import get_adapter, get_adapter_for_config

# Independent expectations, written from the transformers module trees:
# (layer list path, attention attr, output projection attr, v projection attr or None, KV heads)
EXPECTED = {
    "llama": ("model.layers", "self_attn", "o_proj", "v_proj", 2),
    "mistral": ("model.layers", "self_attn", "o_proj", "v_proj", 2),
    "qwen2": ("model.layers", "self_attn", "o_proj", "v_proj", 2),
    "qwen3": ("model.layers", "self_attn", "o_proj", "v_proj", 2),
    "gemma": ("model.layers", "self_attn", "o_proj", "v_proj", 2),
    "gemma2": ("model.layers", "self_attn", "o_proj", "v_proj", 2),
    "gemma3": ("model.layers", "self_attn", "o_proj", "v_proj", 2),
    "phi3": ("model.layers", "self_attn", "o_proj", None, 2),
    "gpt2": ("transformer.h", "attn", "c_proj", None, 4),
    "gpt_neox": ("gpt_neox.layers", "attention", "dense", None, 4),
}


def test_expectations_cover_all_tiny_families() -> None:
    assert set(EXPECTED) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_locates_modules_and_geometry(family: str) -> None:
    model = tiny_model(family, layers=3)
    layers_path, attn_attr, out_attr, v_attr, kv_heads = EXPECTED[family]
    adapter = get_adapter(model)

    assert adapter.layers is model.get_submodule(layers_path)
    assert adapter.num_layers == 3
    assert (adapter.num_heads, adapter.num_kv_heads, adapter.head_dim) == (4, kv_heads, 16)
    for i in range(3):
        assert adapter.attention(i) is model.get_submodule(f"{layers_path}.{i}.{attn_attr}")
        assert adapter.out_proj(i) is model.get_submodule(f"{layers_path}.{i}.{attn_attr}.{out_attr}")
        expected_v = None if v_attr is None else model.get_submodule(f"{layers_path}.{i}.{attn_attr}.{v_attr}")
        assert adapter.v_proj(i) is expected_v
    # The output projection reads the concatenated heads: 4 heads x 16 dims = 64 inputs.
    weight = adapter.out_proj(0).weight
    in_dim = weight.shape[0] if family == "gpt2" else weight.shape[1]  # GPT-2 Conv1D stores (in, out)
    assert in_dim == 64
    assert adapter.config is model.config


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_kv_group_layout(family: str) -> None:
    adapter = get_adapter(tiny_model(family, layers=1))
    if adapter.num_kv_heads == 2:
        assert adapter.kv_groups == ((0, 1), (2, 3))
        assert [adapter.kv_head_of(h) for h in range(4)] == [0, 0, 1, 1]
    else:
        assert adapter.kv_groups == ((0,), (1,), (2,), (3,))
        assert [adapter.kv_head_of(h) for h in range(4)] == [0, 1, 2, 3]


def test_gemma3_multimodal_model_exposes_its_text_decoder() -> None:
    from transformers import AutoModelForCausalLM, Gemma3Config

    text = tiny_config("gemma3", layers=2)
    vision = dict(
        model_type="siglip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    config = Gemma3Config(
        text_config=text.to_dict(),
        vision_config=vision,
        mm_tokens_per_image=4,
        image_token_index=127,
        boi_token_index=125,
        eoi_token_index=126,
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    adapter = get_adapter(model)
    assert adapter.family == "gemma3"
    assert adapter.layers is model.model.language_model.layers
    assert adapter.config is model.model.language_model.config
    assert any(c is model.config.text_config for c in adapter.decoder_configs)
    assert (adapter.num_heads, adapter.num_kv_heads, adapter.head_dim) == (4, 2, 16)


def test_set_layers_replaces_the_module_list() -> None:
    model = tiny_model("gpt2", layers=3)
    adapter = get_adapter(model)
    original = adapter.layers
    replacement = nn.ModuleList([original[0]])
    adapter.set_layers(replacement)
    assert model.transformer.h is replacement
    assert get_adapter(model).num_layers == 1
    adapter.set_layers(original)
    assert model.transformer.h is original


def _assert_lists_families(error: UnsupportedArchitectureError, model_type: str) -> None:
    message = str(error)
    assert repr(model_type) in message
    for family in FAMILIES:
        assert family in message
    assert "How to fix" in message


def test_unsupported_opt_model() -> None:
    from transformers import AutoModelForCausalLM, OPTConfig

    config = OPTConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=1,
        ffn_dim=64,
        num_attention_heads=2,
        word_embed_proj_dim=32,
        max_position_embeddings=64,
    )
    with pytest.raises(UnsupportedArchitectureError) as info:
        get_adapter(AutoModelForCausalLM.from_config(config))
    _assert_lists_families(info.value, "opt")


def test_config_check_before_loading_weights() -> None:
    from transformers import OPTConfig

    assert get_adapter_for_config(tiny_config("gemma3")) == "gemma3_text"
    assert get_adapter_for_config(tiny_config("gpt2")) == "gpt2"
    with pytest.raises(UnsupportedArchitectureError) as info:
        get_adapter_for_config(OPTConfig())
    _assert_lists_families(info.value, "opt")


def test_unsupported_bert_model() -> None:
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    with pytest.raises(UnsupportedArchitectureError) as info:
        get_adapter(BertForMaskedLM(config))
    _assert_lists_families(info.value, "bert")


def test_plain_module_is_unsupported() -> None:
    with pytest.raises(UnsupportedArchitectureError, match="Linear"):
        get_adapter(nn.Linear(2, 2))


def test_peft_wrapped_model_resolves_to_base_model() -> None:
    peft = pytest.importorskip("peft")
    base = tiny_model("llama", layers=2)
    wrapped = peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["q_proj", "o_proj"]))
    adapter = get_adapter(wrapped)
    assert adapter.model is base
    assert adapter.layers is base.model.layers
    assert adapter.out_proj(1) is base.model.layers[1].self_attn.o_proj  # the LoRA wrapper module
    assert adapter.head_dim == 16


def test_dispatched_model_resolves() -> None:
    from accelerate import dispatch_model

    model = tiny_model("llama", layers=2)
    device_map = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.norm": "cpu",
        "lm_head": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "cpu",
    }
    model = dispatch_model(model, device_map=device_map, force_hooks=True)
    assert hasattr(model.model.layers[0], "_hf_hook")
    adapter = get_adapter(model)
    assert adapter.layers is model.model.layers
    assert adapter.out_proj(0) is model.model.layers[0].self_attn.o_proj
    with torch.no_grad():
        assert model(torch.tensor([[1, 5, 7]])).logits.shape == (1, 3, 128)
