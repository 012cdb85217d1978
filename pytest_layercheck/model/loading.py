"""Turn a model spec into a loaded, evaluation-ready model and tokenizer.

A spec is one of: ``default`` (SmolLM2-135M-Instruct from the package cache), a local transformers
folder, a ``.gguf`` file, or a PEFT adapter folder (its base from ``adapter_config.json`` or given
explicitly). Loading never reaches a model hub (``local_files_only``), prefers safetensors, and runs
remote code only when the caller asks for it.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pytest_layercheck.core.errors import LayercheckError, ModelLoadError, first_line
from pytest_layercheck.model.architecture import ArchitectureAdapter, get_adapter, get_adapter_for_config
from pytest_layercheck.model.default_model import (
    DEFAULT_MODEL_ALIASES,
    DEFAULT_MODEL_NAME,
    Progress,
    _silent,
    ensure_default_model,
    gguf_error,
    safetensors_problem,
)
from pytest_layercheck.model.devices import dtype_name, model_device, resolve_device, resolve_dtype
from pytest_layercheck.model.fingerprint import generation_config_digest, model_fingerprint, tokenizer_fingerprint
from pytest_layercheck.model.hub_cache import looks_like_hub_id, resolve_hub_model
from pytest_layercheck.model.runtime import ModelRuntime

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SPEC_HELP = "a spec is 'default', a local transformers folder, a .gguf file or a PEFT adapter folder"


@dataclass
class LoadedModel:
    """The typed handle every layer above ``model/`` passes around: the model, its tokenizer, what scoring
    reads about the model (:attr:`runtime`, derived once), with what a baseline needs to identify them."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    spec: str
    name: str
    kind: str
    device: torch.device
    dtype: torch.dtype
    load_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def runtime(self) -> ModelRuntime:
        """The model as scoring runs it: its device, window, vocabulary and adapter, read once."""
        return ModelRuntime.of(self.model)

    @property
    def adapter(self) -> ArchitectureAdapter:
        """Where the model keeps its layers, heads and norms (raises for an unsupported family)."""
        return self.runtime.adapter

    @cached_property
    def fingerprint(self) -> str:
        return model_fingerprint(self.model)

    @cached_property
    def tokenizer_fingerprint(self) -> str:
        """Hash of everything that decides the token ids (see :func:`fingerprint.tokenizer_fingerprint`)."""
        return tokenizer_fingerprint(self.tokenizer)

    @cached_property
    def generation_fingerprint(self) -> str | None:
        return generation_config_digest(self.model)

    @property
    def num_layers(self) -> int:
        return self.adapter.num_layers

    def describe(self) -> dict[str, Any]:
        """The identity recorded in baselines and reports."""
        return {
            "name": self.name,
            "spec": self.spec,
            "kind": self.kind,
            "model_type": self.model.config.model_type,
            "num_layers": self.num_layers,
            "fingerprint": self.fingerprint,
            "device": str(self.device),
            "dtype": dtype_name(self.dtype),
            **self.extra,
        }


def load_model(
    spec: str | Path = "default",
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    device_map: str | dict[str, Any] | None = None,
    adapter_base: str | Path | None = None,
    trust_remote_code: bool = False,
    progress: Progress = _silent,
    max_memory: dict[int | str, int | str] | None = None,
    offload_folder: str | Path | None = None,
) -> LoadedModel:
    """Load ``spec`` on ``device`` (auto: CUDA+bf16, else CPU+float32) in eval mode.

    ``device_map="auto"`` shards a model too large for one GPU (accelerate), offloading what does
    not fit to CPU memory, or to ``offload_folder`` on disk; ``max_memory`` caps each device
    (accelerate's ``{0: "70GiB", "cpu": "200GiB"}``). Then ``device`` only decides the dtype
    default, and ``LoadedModel.device`` is where inputs go (the first layer's execution device).
    """
    placement: dict[str, Any] = {}
    if max_memory is not None:
        placement["max_memory"] = max_memory
    if offload_folder is not None:
        placement["offload_folder"] = str(offload_folder)
    with _quiet_transformers():
        return _load(spec, device, dtype, device_map, adapter_base, trust_remote_code, progress, placement)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-tensor progress bars; layercheck reports loading its own way."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load(
    spec: str | Path,
    device: str | torch.device | None,
    dtype: str | torch.dtype | None,
    device_map: str | dict[str, Any] | None,
    adapter_base: str | Path | None,
    trust_remote_code: bool,
    progress: Progress,
    placement: dict[str, Any] | None = None,
) -> LoadedModel:
    started = time.perf_counter()
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    spec_text = str(spec)
    common = dict(dtype=resolved_dtype, device_map=device_map, trust_remote_code=trust_remote_code, **(placement or {}))

    if spec_text in DEFAULT_MODEL_ALIASES:
        folder = ensure_default_model(progress)
        model, tokenizer = _load_folder(folder, **common)
        kind, name = "default", DEFAULT_MODEL_NAME
    else:
        path = Path(spec_text).expanduser()
        hub = resolve_hub_model(spec_text) if not path.exists() and looks_like_hub_id(spec_text) else None
        if hub is not None:  # a hub id, read offline from the local Hugging Face cache
            path = hub.folder
        kind, name = _classify(path, spec_text), hub.repo_id if hub is not None else path.name
        if kind == "gguf":
            progress(f"loading GGUF {path.name} (de-quantising; about 20 s for small models)")
            model, tokenizer = _load_gguf(path, **common)
        elif kind == "peft":
            model, tokenizer, base_spec = _load_peft(path, adapter_base, common, progress)
            name = f"{name} (adapter on {Path(base_spec).name if base_spec not in DEFAULT_MODEL_ALIASES else DEFAULT_MODEL_NAME})"
        else:
            model, tokenizer = _load_folder(path, **common)

    if device_map is None:
        model.to(resolved_device)
    model.eval()
    _check_architecture(model, spec_text)
    _check_finite_weights(model, spec_text)
    _ensure_pad_token(tokenizer)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=spec_text,
        name=name,
        kind=kind,
        device=resolved_device if device_map is None else _input_device(model),
        dtype=resolved_dtype,
        load_seconds=time.perf_counter() - started,
    )


def _classify(path: Path, spec: str) -> str:
    if not path.exists():
        hint = (
            " It looks like a hub id; pytest-layercheck never downloads from a model hub."
            if "/" in spec and not spec.startswith((".", "/", "~"))
            else ""
        )
        raise ModelLoadError(
            f"model path {spec!r} does not exist.{hint}",
            f"{SPEC_HELP}; save the model locally first (e.g. model.save_pretrained('my-model')) and pass that folder",
        )
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "gguf"
        raise ModelLoadError(
            f"{spec!r} is a file but not a .gguf file",
            f"{SPEC_HELP}; for a transformers checkpoint pass its folder, not a weight file",
        )
    if (path / "adapter_config.json").is_file():
        return "peft"
    if (path / "config.json").is_file():
        return "transformers"
    ggufs = sorted(path.glob("*.gguf"))
    fix = f"pass the GGUF file itself, e.g. {ggufs[0]}" if ggufs else SPEC_HELP
    raise ModelLoadError(f"folder {spec!r} has no config.json or adapter_config.json, so it is not a model folder", fix)


def _input_device(model: Any) -> torch.device:

    return model_device(model)


def _load_folder(
    folder: Path, *, dtype: torch.dtype, device_map: Any, trust_remote_code: bool, **placement: Any
) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, OSError) as exc:
        raise ModelLoadError(
            f"cannot read the model config in {folder}: {exc}",
            "check config.json; models with custom code need trust_remote_code, which you must opt into explicitly",
        ) from None
    architectures = list(getattr(config, "architectures", None) or [])
    causal_heads = ("ForCausalLM", "LMHeadModel")
    saved_as_other = architectures and not any(a.endswith(causal_heads) for a in architectures)
    if saved_as_other or config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        what = ", ".join(architectures) or f"{config.model_type!r} model"
        raise ModelLoadError(
            f"{folder} holds a {what}, which is not a causal language model",
            "pass a decoder-only causal LM checkpoint (e.g. Llama, Qwen2, GPT-2 families) saved with its LM head",
        )

    get_adapter_for_config(config)  # fail before reading weights if the family is unsupported
    weights = sorted(folder.glob("*.safetensors"))
    for path in weights:
        problem = safetensors_problem(path)
        if problem:
            raise ModelLoadError(f"cannot load the model in {folder}: {problem}", _WEIGHTS_FIX)
    _check_layer_count(config, weights, folder)
    has_safetensors = bool(weights)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            dtype=dtype,
            device_map=device_map,
            local_files_only=True,
            trust_remote_code=trust_remote_code,
            use_safetensors=True if has_safetensors else None,
            **placement,
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except LayercheckError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers and safetensors raise many types for bad files
        raise ModelLoadError(f"cannot load the model in {folder}: {first_line(exc)}", _WEIGHTS_FIX) from None
    return model, tokenizer


def _tensor_names(path: Path) -> list[str]:
    """The tensor names in a safetensors header (already checked by ``safetensors_problem``)."""
    with path.open("rb") as handle:
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    return [name for name in header if name != "__metadata__"]


def _check_layer_count(config: Any, weights: list[Path], folder: Path) -> None:
    """Hold the config's layer count to the layers the checkpoint holds, before anything is allocated.

    transformers builds every layer a config asks for before it reads a weight, so ``num_hidden_layers:
    100000`` grows memory without bound (and the missing layers would be random). Only safetensors
    headers can be read without loading; other checkpoints are left to transformers.
    """
    from pytest_layercheck.model.architecture import checkpoint_layer_count

    asked = getattr(config.get_text_config(decoder=True), "num_hidden_layers", None)
    if not weights or not isinstance(asked, int):
        return
    held = checkpoint_layer_count((name for path in weights for name in _tensor_names(path)), config.model_type)
    if held is not None and asked > held:
        raise ModelLoadError(
            f"{folder / 'config.json'} asks for {asked} decoder layers (num_hidden_layers), but the weights in "
            f"{folder} hold {held}; the missing layers would be random, and building them alone could exhaust memory",
            f"set num_hidden_layers to {held} in config.json (a config edited by hand or copied from a larger model), "
            "or restore the missing weight files",
        )


_WEIGHTS_FIX = (
    "the folder needs complete weights (model.safetensors) and tokenizer files as written by "
    "save_pretrained; re-save or re-download it (a copy interrupted midway leaves a truncated file)"
)


def _load_gguf(
    path: Path, *, dtype: torch.dtype, device_map: Any, trust_remote_code: bool, **placement: Any
) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise gguf_error(path, ValueError(f"bad magic bytes {magic!r}, expected b'GGUF'"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent,
            gguf_file=path.name,
            dtype=dtype,
            device_map=device_map,
            trust_remote_code=trust_remote_code,
            **placement,
        )
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad GGUF
        raise gguf_error(path, exc) from None
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    return model, tokenizer


def _load_peft(
    path: Path, adapter_base: str | Path | None, common: dict[str, Any], progress: Progress
) -> tuple[Any, Any, str]:
    """Load the base (recursively, so it may itself be 'default' or a GGUF) and merge the adapter."""
    try:
        from peft import PeftModel
    except ImportError:
        raise ModelLoadError(
            f"{path} is a PEFT adapter but the 'peft' package is not installed",
            "pip install 'pytest-layercheck[peft]'",
        ) from None
    base_spec = _adapter_base_spec(path, adapter_base, _read_adapter_config(path))
    base = load_model(
        base_spec, device="cpu", dtype=common["dtype"], trust_remote_code=common["trust_remote_code"], progress=progress
    )
    progress(f"applying adapter {path.name}")
    try:
        with _quiet_peft():
            peft_model = PeftModel.from_pretrained(base.model, str(path), is_trainable=False)
    except Exception as exc:  # noqa: BLE001 - a broken adapter raises many types
        raise ModelLoadError(
            f"cannot apply the adapter in {path}: {first_line(exc)}",
            "the adapter must be complete (adapter_model.safetensors) and made for this base model",
        ) from None
    # Merging gives a plain model whose layers the ablation primitives can address directly.
    with _quiet_peft():
        merged = peft_model.merge_and_unload()
    return merged, base.tokenizer, base_spec


def _read_adapter_config(path: Path) -> dict[str, Any]:
    """The adapter's ``adapter_config.json``, which must be a JSON object."""
    try:
        config = json.loads((path / "adapter_config.json").read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot read {path}/adapter_config.json: {first_line(exc)}",
            "restore the adapter folder as written by PEFT's save_pretrained",
        ) from None
    return config


def _adapter_base_spec(path: Path, adapter_base: str | Path | None, config: dict[str, Any]) -> str:
    """The spec of the adapter's base: ``adapter_base`` if given, else the one its config names, with a hub
    id resolved to its folder in the local cache (never downloaded)."""
    base_spec = str(adapter_base) if adapter_base is not None else config.get("base_model_name_or_path")
    if not base_spec:
        raise ModelLoadError(
            f"{path}/adapter_config.json names no base model",
            "pass the base explicitly (adapter_base=... or --layercheck-adapter-base)",
        )
    if adapter_base is None and base_spec in DEFAULT_MODEL_ALIASES and looks_like_hub_id(base_spec):
        # Trained on the hub's weights: 'default' is a de-quantised Q4_1 copy, not those weights, so the
        # adapter is merged onto them only when they are cached, or onto 'default' only when asked.
        try:
            base_spec = str(resolve_hub_model(base_spec).folder)
        except ModelLoadError as exc:
            raise ModelLoadError(
                f"{path} was trained on {base_spec!r} (the hub's weights), which are not in the local Hugging "
                f"Face cache; 'default' is a de-quantised Q4_1 copy with slightly different weights",
                f"fetch them ({exc.fix}), or merge onto the de-quantised copy on purpose with "
                "--adapter-base default (--layercheck-adapter-base default)",
            ) from None
    elif (
        base_spec not in DEFAULT_MODEL_ALIASES
        and not Path(base_spec).expanduser().exists()
        and looks_like_hub_id(base_spec)
    ):
        try:
            base_spec = str(resolve_hub_model(base_spec).folder)
        except ModelLoadError as exc:
            raise ModelLoadError(
                f"the adapter's base model {base_spec!r} is a hub id that is not cached locally",
                f"{exc.fix}; or pass the base explicitly as a local folder, .gguf file or 'default' "
                "(adapter_base=... or --layercheck-adapter-base)",
            ) from None
    if base_spec not in DEFAULT_MODEL_ALIASES and not Path(base_spec).expanduser().exists():
        raise ModelLoadError(
            f"the adapter's base model {base_spec!r} is not a local path (hub downloads are disabled)",
            "pass the base explicitly as a local folder, .gguf file or 'default' (adapter_base=... or --layercheck-adapter-base)",
        )
    return base_spec


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft calls a transformers method that transformers has deprecated; the FutureWarning says nothing
    a user can act on, so it is not shown (everything else still is)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _check_architecture(model: Any, spec: str) -> None:
    get_adapter(model)


def _check_finite_weights(model: Any, spec: str) -> None:
    """Refuse a model whose weights hold NaN or infinities, naming the first such tensor.

    A diverged fine-tune scores NaN for every answer, and an argmax over NaN picks the first choice, so
    it would pass as well as any model. At load the tensor can still be named; one min/max pass over the
    weights (NaN propagates through both, allocating nothing) takes well under a second for a small model.
    Weights offloaded to disk (meta) are not read.
    """
    for name, parameter in model.named_parameters():
        if not parameter.is_floating_point() or parameter.device.type == "meta" or parameter.numel() == 0:
            continue
        low, high = torch.aminmax(parameter.detach())
        if bool(torch.isfinite(low)) and bool(torch.isfinite(high)):
            continue
        what = "NaN" if bool(torch.isnan(low) | torch.isnan(high)) else "infinite values"
        raise ModelLoadError(
            f"{name} holds {what}, in the weights of {spec}: the model cannot be scored (every answer's "
            "log-likelihood would be NaN, and NaN scores would pass as the first choice)",
            "use a checkpoint saved before training diverged (before the loss became NaN), and train on "
            "with a lower learning rate or gradient clipping; if the weights are finite in float32 and "
            "overflowed when converted, load them in float32 (--dtype float32 / --layercheck-dtype float32)",
        )


def _ensure_pad_token(tokenizer: Any) -> None:
    """Batched scoring pads; models without a pad token reuse EOS (masked out, so it never scores)."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
