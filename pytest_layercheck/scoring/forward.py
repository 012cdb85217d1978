"""One model call that returns only the logits that are read (the last position's, or all) and the cache.

Skipping the LM head elsewhere saves a full-vocabulary row per position, the largest output of a call.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import torch

from pytest_layercheck.model import kv_cache

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def accepts_logits_to_keep(model: PreTrainedModel) -> bool:
    """Whether ``model.forward`` can return logits for the last positions only (saves the full vocab rows)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _forward_logits(model: PreTrainedModel, keep_last: bool, **inputs: Any) -> tuple[torch.Tensor, Any]:
    """Run the model; logits for the last position only when ``keep_last`` (LM head skipped elsewhere)."""
    if accepts_logits_to_keep(model):
        out = model(**inputs, logits_to_keep=1 if keep_last else 0)
        logits = out.logits
    else:  # custom models without logits_to_keep: compute everything, keep what is needed
        out = model(**inputs)
        logits = out.logits[:, -1:] if keep_last else out.logits
    return logits, kv_cache.returned_cache(out)
