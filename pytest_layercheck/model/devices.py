"""Device and dtype choice: CUDA with bf16 when available, otherwise CPU with float32."""

from __future__ import annotations

from typing import Any

import torch

from pytest_layercheck.core.errors import ConfigError

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto" picks CUDA if present; an explicit CUDA request without CUDA is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r} ({exc})", "use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} was requested but CUDA is not available", "use --layercheck-device=cpu or 'auto'"
        )
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/"auto" gives bf16 on CUDA and float32 elsewhere (CPU bf16 matmuls are slow and inexact)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}", f"use one of {sorted(set(_DTYPES))} or 'auto'") from None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def model_device(model: Any) -> torch.device:
    """Where inputs go: the device of the model's first parameter, or, when that parameter is
    offloaded (``device_map`` with CPU/disk offload: weights on the meta device), the execution
    device accelerate's hooks load the weights to."""
    device = next(model.parameters()).device
    if device.type != "meta":
        return device
    for module in model.modules():
        execution = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
        if execution is not None:
            return torch.device(f"cuda:{execution}" if isinstance(execution, int) else execution)
    return device


def worker_device(worker_index: int, gpu_count: int) -> str | None:
    """The device of pytest-xdist worker ``worker_index`` when the user pinned none: ``cuda:N``
    (round-robin over the GPUs) when there are several GPUs, else None (the usual choice: the one
    GPU, which the workers share, or the CPU)."""
    if gpu_count < 2 or worker_index < 0:
        return None
    return f"cuda:{worker_index % gpu_count}"


def device_for_worker(
    device: str | None, device_map: str | None, worker_index: int | None, gpu_count: int | None = None
) -> str | None:
    """``device`` as given, unless it is unpinned (None or "auto", no ``device_map``) and this process is
    xdist worker ``worker_index`` on a machine with several GPUs: then that worker's own GPU."""
    if worker_index is None or device_map or (device is not None and str(device) != "auto"):
        return device
    count = torch.cuda.device_count() if gpu_count is None else gpu_count
    return worker_device(worker_index, count) or device
