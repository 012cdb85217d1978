"""One way to watch a model run: callbacks on decoder-block inputs and outputs and on attention outputs.

The layer sweep records each block's call to replay it under ablations, the redundancy analysis
compares each block's input with its output, and the retrieval-head analysis reads attention weights.
All three watch the same places, so the hook plumbing lives here once: a probe is a plain callback
given the block's index, and the context managers guarantee that no hook outlives its ``with``.

Probes observe; they never change a value. Interventions (skipped layers, masked heads, injected
inputs) are ablations and live in :mod:`pytest_layercheck.model.ablation`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

#: ``(block index, positional args, keyword args)`` of a decoder block's call, before it runs.
InputProbe = Callable[[int, tuple[Any, ...], dict[str, Any]], None]
#: ``(block index, positional args, keyword args, output)`` after the block ran.
OutputProbe = Callable[[int, tuple[Any, ...], dict[str, Any], Any], None]
#: ``(layer index, attention module, output)`` after an attention module ran.
AttentionProbe = Callable[[int, nn.Module, Any], None]


def block_input(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> torch.Tensor:
    """The hidden states a decoder block was called with (positional in most families, keyword in some)."""
    return args[0] if args else kwargs["hidden_states"]


def block_output(output: Any) -> torch.Tensor:
    """The hidden states a decoder block returned (a tuple in older transformers, a tensor in 5.x)."""
    return output[0] if isinstance(output, (tuple, list)) else output


@contextmanager
def probe_blocks(
    blocks: Sequence[nn.Module], *, on_input: InputProbe | None = None, on_output: OutputProbe | None = None
) -> Iterator[None]:
    """Call ``on_input`` before and ``on_output`` after every block of ``blocks`` runs, inside the ``with``."""

    def before(index: int, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        assert on_input is not None
        on_input(index, args, kwargs)

    def after(index: int, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        assert on_output is not None
        on_output(index, args, kwargs, output)

    with ExitStack() as stack:
        for index, block in enumerate(blocks):
            if on_input is not None:
                handle = block.register_forward_pre_hook(functools.partial(before, index), with_kwargs=True)
                stack.callback(handle.remove)
            if on_output is not None:
                handle = block.register_forward_hook(functools.partial(after, index), with_kwargs=True)
                stack.callback(handle.remove)
        yield


@contextmanager
def probe_attention(attentions: Sequence[nn.Module], on_output: AttentionProbe) -> Iterator[None]:
    """Call ``on_output`` after every attention module of ``attentions`` runs, inside the ``with``.

    The output is the module's own return value: ``(attn_output, attn_weights)`` in transformers'
    families, where the weights are only present under eager attention.
    """

    def after(index: int, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        on_output(index, module, output)

    with ExitStack() as stack:
        for index, attention in enumerate(attentions):
            stack.callback(attention.register_forward_hook(functools.partial(after, index)).remove)
        yield
