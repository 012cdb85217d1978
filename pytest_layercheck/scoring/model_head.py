"""The model's final norm, LM head and logit soft-cap, applied to the streams' final hidden states.

Applied directly, the head leaves the model as it is, so chunks of streams can score on several
threads; once per sweep that is checked against the model's own head (the model run with every layer
skipped and the norm's input replaced), which is used instead wherever the two differ.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from pytest_layercheck.model.architecture import ArchitectureAdapter
from pytest_layercheck.model.layer_skipping import skip_layers
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring.forward import _forward_logits

#: Final-norm attribute names on the backbone, by family (llama-like, GPT-2, GPT-NeoX).
_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm")


def _final_norm(adapter: ArchitectureAdapter) -> nn.Module | None:
    for name in _FINAL_NORMS:
        module = getattr(adapter.backbone, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


def _head_logits(runtime: ModelRuntime, norm: nn.Module, hidden: torch.Tensor, keep_last: bool) -> torch.Tensor:
    """The model's own final norm + LM head on ``hidden`` (run with every layer skipped)."""

    def replace(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (hidden, *args[1:])

    model = runtime.model
    ids = torch.zeros(hidden.shape[:2], dtype=torch.long, device=runtime.device)
    with skip_layers(model, range(len(runtime.adapter.layers))):
        handle = norm.register_forward_pre_hook(replace)
        try:
            logits, _ = _forward_logits(model, keep_last=keep_last, input_ids=ids, use_cache=False)
        finally:
            handle.remove()
    return logits


class _Head:
    """The final norm, LM head and the family's logit soft-cap applied directly to hidden states.

    Unlike :func:`_head_logits` it leaves the model as it is, so chunks run it on their own threads
    beside other chunks' block calls. It is used only once :meth:`check` found it to give the
    model's own logits on the sweep's data; else every head runs through the model, between waves.
    """

    def __init__(self, runtime: ModelRuntime, norm: nn.Module) -> None:
        self.runtime, self.norm = runtime, norm
        adapter = runtime.adapter
        self.lm_head = cast(Any, adapter.model).get_output_embeddings()
        self.softcap = getattr(adapter.config, "final_logit_softcapping", None)
        self.direct: bool | None = None  # None: not checked yet

    def __call__(self, hidden: torch.Tensor, keep_last: bool) -> torch.Tensor:
        return (
            self._apply(hidden, keep_last) if self.direct else _head_logits(self.runtime, self.norm, hidden, keep_last)
        )

    def _apply(self, hidden: torch.Tensor, keep_last: bool) -> torch.Tensor:
        x = self.norm(hidden[:, -1:] if keep_last else hidden)  # the norm acts per position
        logits = self.lm_head(x)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def check(self, hidden: torch.Tensor) -> None:
        """Compare both ways on a few positions of ``hidden`` (real hidden states of the model), once per
        sweep. Call it where no block call runs beside it: the model's way rewires the model briefly."""
        if self.direct is None:
            sample = hidden[:1, -4:]
            self.direct = self.lm_head is not None and all(
                torch.allclose(
                    self._apply(sample, keep), _head_logits(self.runtime, self.norm, sample, keep), rtol=1e-5, atol=1e-4
                )
                for keep in (True, False)
            )
