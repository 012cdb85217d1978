"""Greedy decoding the retrieval-head paper's way, recording each head's top-1 attended position per step.

As in the paper's code, the prompt minus its last token is prefilled and every generated token
comes from a single-token decoding step (the first from the prompt's last token), so the first
answer token is scored too and masking "during decoding only" covers every answer token.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pytest_layercheck.core.errors import ConfigError, LayercheckError
from pytest_layercheck.model import kv_cache
from pytest_layercheck.model.architecture import get_adapter
from pytest_layercheck.model.devices import model_device
from pytest_layercheck.model.head_masking import eager_attention, mask_heads
from pytest_layercheck.model.layer_skipping import original_layers
from pytest_layercheck.model.probes import probe_attention
from pytest_layercheck.scoring.forward import accepts_logits_to_keep
from pytest_layercheck.scoring.generation import eos_token_ids

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


# --------------------------------------------------------------------------------------------------
# Greedy decoding with per-head top-1 positions recorded
# --------------------------------------------------------------------------------------------------


class _ArgmaxRecorder:
    """Attention probes that keep each head's top-1 key for the last query, per decoding step."""

    def __init__(self, attentions: Sequence[nn.Module]) -> None:
        self.attentions = list(attentions)
        self.current: list[torch.Tensor | None] = [None] * len(self.attentions)
        self.steps: list[torch.Tensor] = []

    def _probe(self, index: int, module: nn.Module, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if not isinstance(weights, torch.Tensor) or weights.ndim != 4:
            raise LayercheckError(
                f"attention module {type(module).__name__} returned no attention weights",
                "this model family does not return weights from its attention function; please report it",
            )
        self.current[index] = weights[0, :, -1, :].argmax(-1).cpu()

    @contextmanager
    def attached(self) -> Iterator[_ArgmaxRecorder]:
        with probe_attention(self.attentions, self._probe):
            yield self

    def end_step(self) -> None:
        missing = [i for i, t in enumerate(self.current) if t is None]
        if missing:
            raise LayercheckError(f"no attention recorded for layers {missing}", "please report it")
        self.steps.append(torch.stack([t for t in self.current if t is not None]))  # none is, checked above
        self.current = [None] * len(self.attentions)


def decode(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    """The text of ``ids``, special tokens dropped."""
    text = tokenizer.decode(list(ids), skip_special_tokens=True)
    assert isinstance(text, str)  # one sequence decodes to one text
    return text


@dataclass(frozen=True)
class Decoded:
    """Greedy output: generated token ids (EOS excluded) and, if recorded, (steps, layers, heads)
    top-1 positions aligned with ``tokens``."""

    tokens: tuple[int, ...]
    argmax: torch.Tensor | None


@torch.inference_mode()
def greedy_decode(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    *,
    until: Sequence[str] = ("\n",),
    record: bool = False,
    masked: Mapping[int, Iterable[int]] | None = None,
) -> Decoded:
    """Greedy decoding the paper's way: prefill ``prompt_ids[:-1]``, then one token per step.

    ``masked``: heads masked with uniform attention during the decoding steps only (the prefill is
    intact), as in the paper. ``record``: keep each head's top-1 attended position per step (layers
    run eager attention during decoding). Stops at an EOS token (not returned) or once the decoded
    text contains a string of ``until``.
    """
    if not prompt_ids:
        raise ConfigError("cannot decode from an empty prompt", "pass at least one prompt token")
    device = model_device(model)
    eos = set(eos_token_ids(model, tokenizer))
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    past = None
    if ids.shape[1] > 1:  # only the cache is needed: skip the LM head on the prefilled positions
        keep = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
        past = kv_cache.returned_cache(model(input_ids=ids[:, :-1], use_cache=True, **keep))
    step_input = ids[:, -1:]
    tokens: list[int] = []
    recorder = _ArgmaxRecorder([get_adapter(model).attention_of(b) for b in original_layers(model)])
    stops = [s for s in until if s]
    with ExitStack() as stack:
        if masked:
            stack.enter_context(mask_heads(model, masked, mode="uniform"))
        if record:
            stack.enter_context(eager_attention(model))
            stack.enter_context(recorder.attached())
        for _ in range(max_new_tokens):
            out = model(input_ids=step_input, use_cache=True, **kv_cache.cache_kwargs(model, past))
            past = kv_cache.returned_cache(out)
            token = int(out.logits[0, -1].argmax())
            if token in eos:
                break
            tokens.append(token)
            if record:
                recorder.end_step()
            if stops and any(s in decode(tokenizer, tokens) for s in stops):
                break
            step_input = torch.tensor([[token]], dtype=torch.long, device=device)
    argmax = torch.stack(recorder.steps) if record and recorder.steps else None
    if record and argmax is None:
        adapter = get_adapter(model)
        argmax = torch.zeros((0, len(recorder.attentions), adapter.num_heads), dtype=torch.long)
    return Decoded(tuple(tokens), argmax)
