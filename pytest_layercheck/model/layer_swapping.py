"""``swap_layers``: copies of a donor model's blocks in place of the model's own, until exit.

The copies are made to behave as the replaced blocks (config objects, device, dtype, KV-cache slot,
accelerate hooks), so a swapped model runs, generates and restores like any other ablation.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from torch import nn

from pytest_layercheck.core.errors import AblationError
from pytest_layercheck.model.ablation_spec import SwapSpec, check_range, normalise_swap
from pytest_layercheck.model.architecture import ArchitectureAdapter, get_adapter
from pytest_layercheck.model.layer_skipping import _ACTIVE_SKIPS, _describe, _renumber


def _check_donor(target: ArchitectureAdapter, donor: ArchitectureAdapter) -> None:
    """Donor blocks must be drop-in replacements: same family, widths and head layout."""

    def signature(a: ArchitectureAdapter) -> dict[str, object]:
        return {
            "model_type": a.family,
            "hidden_size": getattr(a.config, "hidden_size", None),
            "num_heads": a.num_heads,
            "num_kv_heads": a.num_kv_heads,
            "head_dim": a.head_dim,
        }

    mine, theirs = signature(target), signature(donor)
    diffs = [f"{k}: {mine[k]} vs donor {theirs[k]}" for k in mine if mine[k] != theirs[k]]
    if diffs:
        raise AblationError(
            "donor model does not match the model's architecture (" + "; ".join(diffs) + ").",
            fix="use a donor of the same architecture and size, e.g. a fine-tuned or distilled variant "
            "of the same base model.",
        )


def _check_block_shapes(target: nn.Module, donor: nn.Module, target_idx: int, donor_idx: int) -> None:
    mine = {k: v.shape for k, v in target.state_dict().items()}
    theirs = {k: v.shape for k, v in donor.state_dict().items()}
    if mine != theirs:
        diffs = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        raise AblationError(
            f"donor layer {donor_idx} does not fit layer {target_idx}: parameters differ in "
            f"{', '.join(diffs[:5])}{' ...' if len(diffs) > 5 else ''}.",
            fix="use a donor of the same architecture and size (same intermediate size and head layout).",
        )


def _layer_type(adapter: ArchitectureAdapter, index: int) -> str | None:
    types = getattr(adapter.config, "layer_types", None)
    return types[index] if types is not None else None


def _copy_block(donor: ArchitectureAdapter, source: int, target: ArchitectureAdapter, target_idx: int) -> nn.Module:
    """A deep copy of the donor block that behaves as the target's layer ``target_idx``.

    It shares the target's config objects (so attention-implementation switches reach it), lives on the
    target block's device and dtype, and has ``layer_idx`` set to the target index.
    """
    reference = target.layers[target_idx]
    memo: dict[int, object] = {id(donor.model.config): target.model.config}
    memo.update({id(c): target.config for c in donor.decoder_configs})
    block = copy.deepcopy(donor.layers[source], memo)
    _strip_dispatch_hooks(block)
    param = next(reference.parameters(), None)
    if param is not None:
        if param.device.type == "meta":
            raise AblationError(
                f"layer {target_idx} is offloaded (weights on the meta device) and cannot be swapped.",
                fix="load the model without disk/CPU offloading (a device_map that fits in memory).",
            )
        block.to(device=param.device, dtype=param.dtype)
    _renumber(None, block, target_idx)
    _copy_dispatch_hook(reference, block)
    return block


def _strip_dispatch_hooks(block: nn.Module) -> None:
    """Drop accelerate hooks the copy inherited from a dispatched donor."""
    if any(hasattr(m, "_hf_hook") for m in block.modules()):
        from accelerate.hooks import remove_hook_from_module

        remove_hook_from_module(block, recurse=True)


def _copy_dispatch_hook(reference: nn.Module, block: nn.Module) -> None:
    """Give the copy the device-alignment hook of the block it replaces (models with a device_map)."""
    device = getattr(getattr(reference, "_hf_hook", None), "execution_device", None)
    if device is not None:
        from accelerate.hooks import AlignDevicesHook, add_hook_to_module

        add_hook_to_module(block, AlignDevicesHook(execution_device=device))


@contextmanager
def swap_layers(model: nn.Module, donor: nn.Module, layers: SwapSpec) -> Iterator[nn.Module]:
    """Put copies of donor layers into ``model`` ("delta model replacement"); originals return on exit.

    ``layers`` is an iterable of indices (same index in both models) or a mapping
    ``{target_index: donor_index}``. The donor needs the same architecture and shapes, and for models with
    per-layer attention types (sliding/full) the two layers must be of the same type.
    """
    adapter, donor_adapter = get_adapter(model), get_adapter(donor)
    if adapter.layers in _ACTIVE_SKIPS:
        raise AblationError(
            "swap_layers was entered while skip_layers is active on the same model.",
            fix="enter swap_layers before skip_layers (ablate() applies swap, then heads, then skip).",
        )
    _check_donor(adapter, donor_adapter)
    pairs = normalise_swap(layers)
    check_range([t for t, _ in pairs], adapter.num_layers, "layer", _describe(adapter))
    check_range([s for _, s in pairs], donor_adapter.num_layers, "layer", "donor model")
    for target, source in pairs:
        if _layer_type(adapter, target) != _layer_type(donor_adapter, source):
            raise AblationError(
                f"layer {target} is {_layer_type(adapter, target)} but donor layer {source} is "
                f"{_layer_type(donor_adapter, source)}.",
                fix="swap layers of the same attention type (usually the same index).",
            )
        _check_block_shapes(adapter.layers[target], donor_adapter.layers[source], target, source)
    with ExitStack() as stack:
        installed = adapter.layers
        for target, source in pairs:
            replacement = _copy_block(donor_adapter, source, adapter, target)
            stack.callback(installed.__setitem__, target, installed[target])
            installed[target] = replacement
        yield model
