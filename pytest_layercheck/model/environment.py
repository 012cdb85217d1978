"""What a baseline records about the software and hardware that produced it."""

from __future__ import annotations

import platform
from typing import Any

import torch


def collect_environment(device: torch.device | str) -> dict[str, Any]:
    import transformers

    from pytest_layercheck.core.version import __version__

    device = torch.device(device)
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = platform.processor() or platform.machine()
    return {
        "pytest_layercheck": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "hardware": hardware,
        "torch_threads": torch.get_num_threads(),
    }
