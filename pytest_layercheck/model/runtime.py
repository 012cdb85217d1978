"""The model as scoring runs it: what scoring needs to know about a model, read from it once.

A depth profile scores one model under ~31 ablations. Its device, dtype, window, vocabulary and the
keyword its forward takes a KV cache under stay the same under every ablation (ablations change
layers and heads, never the embeddings, the config's window or where the weights live), so they are
derived here once and travel down with the model as a :class:`ModelRuntime`, instead of each scoring
step asking the model again.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

import torch

from pytest_layercheck.core.errors import UnsupportedArchitectureError
from pytest_layercheck.model import kv_cache
from pytest_layercheck.model.architecture import ArchitectureAdapter, get_adapter
from pytest_layercheck.model.attention import grouped_query_sdpa
from pytest_layercheck.model.devices import model_device
from pytest_layercheck.model.threads import cores_for

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def model_max_length(model: PreTrainedModel) -> int | None:
    """The longest input a model accepts, from the config attributes lm-eval also consults."""
    config = getattr(model, "config", None)
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def vocabulary_rows(model: PreTrainedModel) -> int | None:
    """How many token ids ``model`` can embed and score: its embedding's rows (its LM head's, if fewer).

    Checked before scoring: an id beyond them is an ``IndexError`` on a CPU and a device-side assert,
    which ends the process, on CUDA. None where the model exposes neither matrix.
    """
    rows = []
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        try:
            module = getattr(model, getter, lambda: None)()
        except (NotImplementedError, AttributeError):  # custom code without the accessor
            continue
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.ndim == 2:
            rows.append(int(weight.shape[0]))
    return min(rows) if rows else None


@dataclass(frozen=True)
class ModelRuntime:
    """A model with the facts scoring reads about it, derived once (:meth:`of`); the model itself still
    changes under ablations (``ablate(runtime.model, ...)``), these facts do not."""

    model: PreTrainedModel
    #: Where inputs go (:func:`model_device`: the execution device when weights are offloaded).
    device: torch.device
    #: The dtype of the model's first parameter: its activations' and KV caches' element type.
    dtype: torch.dtype
    #: The model's window in tokens (:func:`model_max_length`); None when its config names none.
    max_length: int | None
    #: Token ids the model can embed and score (:func:`vocabulary_rows`).
    vocabulary_rows: int | None
    #: Logits per scored position.
    vocab_size: int
    #: The keyword the model's forward takes a KV cache under (:func:`kv_cache.argument_name`).
    cache_argument: str

    @classmethod
    def of(cls, model: PreTrainedModel) -> ModelRuntime:
        """Read what scoring needs from ``model`` (intact; the facts hold under its ablations too)."""
        config = getattr(model, "config", None)
        return cls(
            model=model,
            device=model_device(model),
            dtype=next(model.parameters()).dtype,
            max_length=model_max_length(model),
            vocabulary_rows=vocabulary_rows(model),
            vocab_size=int(
                getattr(config, "vocab_size", None) or cast(Any, model).get_output_embeddings().weight.shape[0]
            ),
            cache_argument=kv_cache.argument_name(model),
        )

    @cached_property
    def adapter(self) -> ArchitectureAdapter:
        """Where the model keeps its layers, heads and norms (raises for an unsupported family, when first
        asked: scoring a whole model needs none)."""
        return get_adapter(self.model)

    @property
    def workers(self) -> int:
        """How many tasks scoring runs at once by default: torch's thread count (as it is now) on a CPU,
        else 1 (:func:`cores_for`)."""
        return cores_for(self.device)

    def cache_kwargs(self, cache: Any) -> dict[str, Any]:
        """``{name: cache}`` for ``model(**...)``; empty when there is no cache to pass."""
        return kv_cache.as_keyword(self.cache_argument, cache)

    def grouped_query_sdpa(self) -> AbstractContextManager[None]:
        """Grouped-query SDPA on the CPU for the duration (:func:`attention.grouped_query_sdpa`); a model of
        a family layercheck does not know is left exactly as it is."""
        try:
            adapter = self.adapter
        except UnsupportedArchitectureError:
            return nullcontext()
        return grouped_query_sdpa(adapter, self.device)
