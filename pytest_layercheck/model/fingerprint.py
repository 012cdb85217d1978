"""A stable fingerprint of a model's configuration and weights.

Baselines and result caches are keyed by it, so it must change whenever the numbers a model produces
can change, and stay the same across reloads of the same checkpoint. It is a sha256 over the
computation-relevant config and the exact bytes of every parameter and floating-point buffer (names,
shapes and dtypes included). Hashing raw bytes is both exact and cheap: about 0.5 s for a 135M model
on a 2-core CPU, far faster than any float reduction over the same weights.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from pytest_layercheck.core.hashing import file_sha256

#: Config fields that describe where or how a model was saved, not what it computes.
_VOLATILE_CONFIG_KEYS = frozenset(
    {
        "_name_or_path",
        "transformers_version",
        "_commit_hash",
        "dtype",
        "torch_dtype",
        "quantization_config",
        "_attn_implementation_autoset",
    }
)
_CHUNK = 1 << 24  # elements copied to the host at a time, so huge GPU tensors never need a full copy


def config_digest(config: Any) -> str:
    data = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


@torch.inference_mode()
def model_fingerprint(model: torch.nn.Module) -> str:
    """``sha256:<hex>`` over the config and every parameter and floating buffer of ``model``."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config_digest(config).encode())
    tensors: dict[str, torch.Tensor] = dict(model.named_parameters())
    tensors.update({f"buffer:{name}": b for name, b in model.named_buffers() if b.is_floating_point()})
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        if tensor.device.type == "meta":
            tensor = _offloaded(model, name.removeprefix("buffer:"))
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        flat = tensor.reshape(-1)
        for chunk in flat.split(_CHUNK):
            digest.update(chunk.contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def _offloaded(model: torch.nn.Module, name: str) -> torch.Tensor:
    """The real value of a weight that accelerate offloaded (a meta tensor in the model): it sits in the
    ``weights_map`` of the hook of the module that owns it, or of an ancestor that loads it."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        module = model.get_submodule(".".join(parts[:cut]))
        hook = getattr(module, "_hf_hook", None)
        weights = getattr(hook, "weights_map", None) if getattr(hook, "offload", False) else None
        if weights is None:
            continue
        with contextlib.suppress(KeyError):
            value: torch.Tensor = weights[".".join(parts[cut:])]
            return value
    from pytest_layercheck.core.errors import LayercheckError

    raise LayercheckError(
        f"weight {name!r} is on the meta device and no offload hook holds its value",
        "load the model fully (without device_map/offloading), or report this model's layout",
    )


#: Files a tokenizer folder may hold; their bytes are hashed when the tokenizer was loaded from a folder.
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
)
#: Tokenizer attributes that change how text becomes ids.
_TOKENIZER_ATTRIBUTES: tuple[str, ...] = (
    "add_bos_token",
    "add_eos_token",
    "add_prefix_space",
    "padding_side",
    "truncation_side",
    "model_max_length",
    "clean_up_tokenization_spaces",
    "split_special_tokens",
    "legacy",
    "do_lower_case",
)
#: Package code whose change can change a score; its hash is part of every result-cache key.
SCORING_CODE: tuple[str, ...] = (
    "scoring",
    "model/ablation.py",
    "model/ablation_spec.py",
    "model/layer_skipping.py",
    "model/head_masking.py",
    "model/layer_swapping.py",
    "model/architecture.py",
    "model/attention.py",
    "model/probes.py",
    "model/runtime.py",
    "evaluation/profiler.py",
    "evaluation/service.py",
    "model/loading.py",
    "model/devices.py",
    "suites/schema.py",
    "suites/protocols.py",
)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """``sha256:<hex>`` over everything that decides how a tokenizer turns text into ids.

    The serialised tokenizer (the fast backend's JSON, or a slow tokenizer's vocabulary and model
    proto), special and added tokens, the attributes above, the chat template, and the bytes of the
    tokenizer files in the folder it was loaded from. A tokenizer that adds a BOS token, or any other
    change to those files, gets another fingerprint.
    """
    state: dict[str, Any] = {"class": type(tokenizer).__name__}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state["backend"] = backend.to_str()
    else:
        with contextlib.suppress(Exception):
            state["vocab"] = sorted(tokenizer.get_vocab().items())
        proto = getattr(getattr(tokenizer, "sp_model", None), "serialized_model_proto", None)
        if callable(proto):
            state["sentencepiece"] = hashlib.sha256(proto()).hexdigest()
    state["special"] = {k: str(v) for k, v in (getattr(tokenizer, "special_tokens_map", None) or {}).items()}
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    state["added"] = {str(k): str(v) for k, v in added.items()}
    state["attributes"] = {name: getattr(tokenizer, name, None) for name in _TOKENIZER_ATTRIBUTES}
    state["chat_template"] = getattr(tokenizer, "chat_template", None)
    folder = Path(str(getattr(tokenizer, "name_or_path", "") or ""))
    if str(folder) and folder.is_dir():
        state["files"] = {name: file_sha256(folder / name) for name in TOKENIZER_FILES if (folder / name).is_file()}
    return "sha256:" + _digest(state)


def chat_template_digest(tokenizer: Any) -> str | None:
    """``sha256:<hex>`` of the tokenizer's chat template, None when it has none."""
    template = getattr(tokenizer, "chat_template", None)
    return None if template is None else "sha256:" + _digest(template)


def generation_config_digest(model: Any) -> str | None:
    """``sha256:<hex>`` of the model's generation config (defaults of ``generate``), None without one."""
    config = getattr(model, "generation_config", None)
    if config is None:
        return None
    data = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    return "sha256:" + _digest(data)


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """``sha256:<hex>`` of the package code that computes scores (:data:`SCORING_CODE`), read once per process."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for entry in SCORING_CODE:
        path = package / entry
        if not path.exists():
            continue  # a module on its way into its layer folder exists at one of its two paths
        for source in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(source.relative_to(package).as_posix().encode() + b"\0")
            digest.update(source.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()
