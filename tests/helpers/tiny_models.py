"""Tiny random-weight causal LMs of every supported family, built in-process for fast tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from pytest_layercheck.model import default_model

VOCAB = 128


def _decoder_kwargs(layers: int) -> dict:
    return dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def tiny_config(family: str, layers: int = 6) -> PretrainedConfig:
    """A small config of ``family`` with grouped-query attention where the family has it."""
    kw = _decoder_kwargs(layers)
    if family == "llama":
        return LlamaConfig(**kw)
    if family == "mistral":
        return MistralConfig(**kw, sliding_window=None)
    if family == "qwen2":
        return Qwen2Config(**kw)
    if family == "qwen3":
        return Qwen3Config(**kw, head_dim=16)
    if family == "gemma":
        return GemmaConfig(**kw, head_dim=16)
    if family == "gemma2":
        return Gemma2Config(**kw, head_dim=16, sliding_window=8, query_pre_attn_scalar=16)
    if family == "gemma3":
        return Gemma3TextConfig(**kw, head_dim=16, sliding_window=8, query_pre_attn_scalar=16)
    if family == "phi3":
        return Phi3Config(**kw)
    if family == "gpt2":
        return GPT2Config(
            vocab_size=VOCAB,
            n_embd=64,
            n_layer=layers,
            n_head=4,
            n_positions=256,
            bos_token_id=1,
            eos_token_id=2,
        )
    if family == "gpt_neox":
        return GPTNeoXConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=layers,
            num_attention_heads=4,
            max_position_embeddings=256,
            bos_token_id=1,
            eos_token_id=2,
        )
    raise ValueError(f"no tiny config for {family!r}")


FAMILIES: tuple[str, ...] = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3",
    "phi3",
    "gpt2",
    "gpt_neox",
)


def tiny_model(family: str = "llama", layers: int = 6, seed: int = 0, attention: str = "eager") -> torch.nn.Module:
    """A float32, eval-mode random model; the same ``seed`` gives the same weights.

    ``attention`` is transformers' attention implementation (``"sdpa"`` is what loading picks for
    real models on the families that support it).
    """
    torch.manual_seed(seed)
    config = tiny_config(family, layers)
    config._attn_implementation = attention
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attention)
    return model.eval()


def tiny_tokenizer(add_bos: bool = False) -> PreTrainedTokenizerFast:
    """A character-level BPE tokenizer (108 ids) that fits ``tiny_model``'s vocabulary of 128.

    Ids 0-3 are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>`` (matching the tiny configs' pad/bos/eos
    ids), then printable ASCII and newline, then a few merges such as " A" and " th" so that
    word-initial spaces join the following token, as in real BPE vocabularies. ``add_bos`` adds
    a post-processor that prepends ``<bos>``, like Llama/Gemma tokenizers.
    """
    from tokenizers import Tokenizer, decoders, models, processors

    special = ["<pad>", "<bos>", "<eos>", "<unk>"]
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {token: i for i, token in enumerate(special + chars)}
    merges = [(" ", "A"), (" ", "B"), (" ", "C"), (" ", "D"), (" ", "t"), ("t", "h"), (" t", "h"), ("e", "r")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    assert len(vocab) <= VOCAB
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 1)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=256,
    )


def save_tiny(folder: Path, family: str = "llama", seed: int = 0) -> Path:
    """``tiny_model(family, seed=seed)`` and the tiny tokenizer saved in ``folder``, as a model folder on disk."""
    model = tiny_model(family, seed=seed)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def fake_default_model(cache: Path, *, with_hashes: bool = True) -> Path:
    """A tiny model in the default model's cache folder, with a manifest as conversion writes it."""
    target = save_tiny(cache / "models" / "smollm2-135m-instruct")
    manifest = {"model": default_model.DEFAULT_MODEL_NAME, "gguf_sha256": default_model.GGUF_SHA256}
    if with_hashes:
        manifest["files"] = default_model._file_records(target)
    (target / default_model.MANIFEST).write_text(json.dumps(manifest))
    return target
