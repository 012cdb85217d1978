"""A stable, cheap fingerprint of a model's configuration and weights.

Baselines and result caches are keyed by it, so it must change whenever the numbers a model produces
can change, and stay the same across reloads of the same checkpoint. Per tensor it hashes the name,
shape, dtype, exact float64 sums over all elements and a fixed strided sample of values: one pass
over the weights, no copy of them to the host.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

SAMPLE_SIZE = 1024
#: Config fields that describe where or how a model was saved, not what it computes.
_VOLATILE_CONFIG_KEYS = frozenset(
    {"_name_or_path", "transformers_version", "_commit_hash", "dtype", "torch_dtype", "quantization_config", "_attn_implementation_autoset"}
)


def config_digest(config: Any) -> str:
    data = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


@torch.inference_mode()
def model_fingerprint(model: torch.nn.Module) -> str:
    """``sha256:<hex>`` over the config and every parameter and buffer of ``model``."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config_digest(config).encode())
    tensors = dict(model.named_parameters())
    tensors.update({f"buffer:{name}": b for name, b in model.named_buffers() if b.is_floating_point()})
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        flat = tensor.reshape(-1)
        stride = max(1, flat.numel() // SAMPLE_SIZE)
        sample = flat[::stride][:SAMPLE_SIZE].to(torch.float64)
        total, absolute = _exact_sums(flat)
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|{total!r}|{absolute!r}".encode())
        digest.update(sample.cpu().numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def _exact_sums(flat: torch.Tensor) -> tuple[float, float]:
    """float64 sum and absolute sum, in fixed-size chunks so huge tensors never get a wide copy."""
    total = absolute = 0.0
    for chunk in flat.split(1 << 22):
        wide = chunk.to(torch.float64)
        total += float(wide.sum())
        absolute += float(wide.abs().sum())
    return total, absolute
