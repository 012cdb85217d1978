"""``skip_layers``, and the bookkeeping that lets every primitive use ORIGINAL layer indices while it is active.

Skipping replaces the backbone's block list; head masking and swapping look up the list it replaced
(:func:`_skip_origin`), so ablations compose without index arithmetic.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from torch import nn

from pytest_layercheck.model.ablation_spec import check_range, normalise_layers
from pytest_layercheck.model.architecture import ArchitectureAdapter, get_adapter


def _set_restorably(stack: ExitStack, obj: object, name: str, value: object) -> None:
    """Set ``obj.name = value`` and register putting the old value back when ``stack`` closes."""
    stack.callback(setattr, obj, name, getattr(obj, name))
    setattr(obj, name, value)


def _renumber(stack: ExitStack | None, block: nn.Module, layer_idx: int) -> None:
    """Set ``layer_idx`` on every submodule that carries one (attention, decoder layer) — KV-cache slot."""
    for module in block.modules():
        current = getattr(module, "layer_idx", None)
        if isinstance(current, int) and not isinstance(current, bool) and current != layer_idx:
            if stack is None:
                # torch annotates Module.__setattr__ for tensors and modules only; plain attributes work
                module.layer_idx = layer_idx  # type: ignore[assignment]
            else:
                _set_restorably(stack, module, "layer_idx", layer_idx)


@dataclass(frozen=True)
class _SkipOrigin:
    """What the model looked like before the outermost active ``skip_layers``."""

    blocks: nn.ModuleList
    layer_types: dict[int, list[str] | None]  # id(config) -> its original layer_types


# Temporary (skipped) ModuleList -> origin; lets nested ablations resolve original indices.
_ACTIVE_SKIPS: weakref.WeakKeyDictionary[nn.ModuleList, _SkipOrigin] = weakref.WeakKeyDictionary()


def _skip_origin(adapter: ArchitectureAdapter) -> _SkipOrigin:
    current = adapter.layers
    origin = _ACTIVE_SKIPS.get(current)
    if origin is not None:
        return origin
    return _SkipOrigin(
        blocks=current,
        layer_types={id(c): getattr(c, "layer_types", None) for c in adapter.decoder_configs},
    )


def original_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks by ORIGINAL index, even while ``skip_layers`` is active."""
    return _skip_origin(get_adapter(model)).blocks


def _describe(adapter: ArchitectureAdapter) -> str:
    return f"{adapter.family} model"


@contextmanager
def skip_layers(model: nn.Module, layers: Iterable[int] | int) -> Iterator[nn.Module]:
    """Remove decoder blocks so each skipped block acts as the identity on the residual stream.

    Done as in the code of "Demystifying the Roles of LLM Layers" (arXiv 2510.02091): the backbone gets a new ``ModuleList`` of the kept blocks, the kept blocks'
    ``layer_idx`` are renumbered (their KV-cache slots; without this generation breaks, transformers
    #30508), ``config.num_hidden_layers`` shrinks and ``config.layer_types`` (read per index by Gemma2/3
    and Qwen and used to build the cache) becomes the kept layers' types. The result is numerically the
    same model as one rebuilt with fewer layers, including ``generate`` with a KV cache.

    Skipping every layer is allowed: the model becomes embeddings -> final norm -> LM head, the floor a
    capability can fall to. Nested ``skip_layers`` use original indices and skip the union.
    """
    adapter = get_adapter(model)
    origin = _skip_origin(adapter)
    skip = normalise_layers(layers)
    check_range(skip, len(origin.blocks), "layer", _describe(adapter))
    installed = {id(b) for b in adapter.layers}
    keep = [i for i, b in enumerate(origin.blocks) if id(b) in installed and i not in skip]
    with ExitStack() as stack:
        if len(keep) < len(installed):
            kept = nn.ModuleList([origin.blocks[i] for i in keep])
            _ACTIVE_SKIPS[kept] = origin
            stack.callback(adapter.set_layers, adapter.layers)
            adapter.set_layers(kept)
            for position, block in enumerate(kept):
                _renumber(stack, block, position)
            for config in adapter.decoder_configs:
                _set_restorably(stack, config, "num_hidden_layers", len(keep))
                types = origin.layer_types.get(id(config))
                if types is not None:
                    _set_restorably(stack, config, "layer_types", [types[i] for i in keep])
        yield model
