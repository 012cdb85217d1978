"""How much a candidate's weights moved from its base, per decoder layer and module.

The relative change ``‖W_candidate − W_base‖_F / ‖W_base‖_F`` says where a fine-tune wrote. It is the
cheap first look before the expensive one (delta replacement, :mod:`..localise.replacement`): a layer that did not
move cannot hold the change, and the most-moved layers are the natural candidates to revert.

Modules are named by their path inside the decoder block (``self_attn.q_proj``, ``mlp.down_proj``,
``input_layernorm``), so the same code serves every supported family. Weights and biases of a module
are pooled. Parameters outside the decoder layers (embeddings, final norm, LM head) are reported
separately; tied input/output embeddings appear once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pytest_layercheck.core.errors import LayercheckError
from pytest_layercheck.model.architecture import get_adapter, unwrap_model

if TYPE_CHECKING:
    from pytest_layercheck.model.loading import LoadedModel


class ArchitectureMismatchError(LayercheckError):
    """Two models cannot be compared weight by weight (different family, depth or shapes)."""


def relative_change(delta_norm: float, base_norm: float) -> float:
    """‖ΔW‖ / ‖W‖: inf when a zero weight moved, 0 when nothing moved."""
    if base_norm > 0:
        return delta_norm / base_norm
    return 0.0 if delta_norm == 0 else math.inf


@dataclass(frozen=True)
class ModuleDelta:
    """One module's change: Frobenius norms over its parameters (weight and bias pooled)."""

    layer: int | None  # None: outside the decoder layers (embeddings, final norm, LM head)
    module: str  # path inside the decoder block, or inside the model for non-layer modules
    delta_norm: float  # ‖ΔW‖_F
    base_norm: float  # ‖W_base‖_F
    numel: int

    @property
    def relative(self) -> float:
        """‖ΔW‖_F / ‖W_base‖_F; inf when a zero base weight moved, 0 when nothing moved."""
        return relative_change(self.delta_norm, self.base_norm)

    @property
    def short_name(self) -> str:
        """``q_proj`` for ``self_attn.q_proj``: the column header of compact tables."""
        return self.module.rsplit(".", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "module": self.module,
            "relative": _finite(self.relative),
            "delta_norm": self.delta_norm,
            "base_norm": self.base_norm,
            "numel": self.numel,
        }


@dataclass(frozen=True)
class LayerDelta:
    """A decoder layer's change over all its parameters: sqrt(Σ‖ΔW‖²) / sqrt(Σ‖W‖²)."""

    layer: int
    delta_norm: float
    base_norm: float

    @property
    def relative(self) -> float:
        return relative_change(self.delta_norm, self.base_norm)


@dataclass
class WeightDelta:
    """Per-module and per-layer relative weight change between a base and a candidate."""

    num_layers: int
    modules: list[ModuleDelta]  # decoder-layer modules, by layer then module order
    outside: list[ModuleDelta] = field(default_factory=list)  # embeddings, final norm, LM head
    base: dict[str, Any] = field(default_factory=dict)
    candidate: dict[str, Any] = field(default_factory=dict)

    @property
    def module_names(self) -> list[str]:
        """Module paths in the order they appear in a decoder block."""
        seen: dict[str, None] = {}
        for delta in self.modules:
            seen.setdefault(delta.module, None)
        return list(seen)

    def layer(self, index: int) -> LayerDelta:
        """The pooled change of decoder layer ``index``."""
        parts = [d for d in self.modules if d.layer == index]
        if not parts and not 0 <= index < self.num_layers:
            raise IndexError(f"layer {index} out of range (0-{self.num_layers - 1})")
        return LayerDelta(index, _pooled(d.delta_norm for d in parts), _pooled(d.base_norm for d in parts))

    @property
    def layers(self) -> list[LayerDelta]:
        """Every decoder layer's pooled change, shallowest first."""
        return [self.layer(i) for i in range(self.num_layers)]

    def layer_totals(self) -> dict[int, float]:
        """``{layer: relative change}`` for every decoder layer."""
        return {d.layer: d.relative for d in self.layers}

    def module(self, layer: int, name: str) -> ModuleDelta:
        """A module by layer and path or short name (``q_proj`` or ``self_attn.q_proj``)."""
        for delta in self.modules:
            if delta.layer == layer and name in (delta.module, delta.short_name):
                return delta
        raise KeyError(f"no module {name!r} in layer {layer}")

    def most_changed(self, count: int = 3) -> list[LayerDelta]:
        """The ``count`` layers that moved most, most-moved first; layers that did not move are left out."""
        moved = [d for d in self.layers if d.delta_norm > 0]
        return sorted(moved, key=lambda d: (-d.relative, d.layer))[:count]

    def changed_layers(self, fraction: float = 0.5) -> tuple[int, ...]:
        """Layers that moved by at least ``fraction`` of the largest layer change (0: every layer that moved)."""
        totals = self.layer_totals()
        peak = max(totals.values(), default=0.0)
        if peak <= 0:
            return ()
        return tuple(i for i, value in totals.items() if value > 0 and value >= fraction * peak)

    @property
    def unchanged(self) -> bool:
        """True when no parameter differs at all."""
        return all(d.delta_norm == 0 for d in (*self.modules, *self.outside))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per-layer totals, per-module values, the non-layer parameters and the top layers."""
        return {
            "num_layers": self.num_layers,
            "base": dict(self.base),
            "candidate": dict(self.candidate),
            "layers": [
                {
                    "layer": d.layer,
                    "relative": _finite(d.relative),
                    "delta_norm": d.delta_norm,
                    "base_norm": d.base_norm,
                }
                for d in self.layers
            ],
            "modules": [d.to_dict() for d in self.modules],
            "outside_layers": [d.to_dict() for d in self.outside],
            "most_changed": [d.layer for d in self.most_changed()],
        }


def _pooled(norms: Iterable[float]) -> float:
    return math.sqrt(sum(n * n for n in norms))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _identity(model: nn.Module) -> dict[str, Any]:
    config = model.config
    return {"model_type": getattr(config, "model_type", None), "num_layers": get_adapter(model).num_layers}


def _module_path(name: str) -> str:
    """``self_attn.q_proj.weight`` -> ``self_attn.q_proj``; a bare parameter keeps its name."""
    module, dot, _ = name.rpartition(".")
    return module if dot else name


def _parameters(model: nn.Module) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """(per-layer ``{name: tensor}``, ``{name: tensor}`` outside the layers); tied tensors once."""
    adapter = get_adapter(model)
    layers: list[dict[str, torch.Tensor]] = [dict(block.named_parameters()) for block in adapter.layers]
    in_layers = {id(p) for params in layers for p in params.values()}
    outside: dict[str, torch.Tensor] = {
        name: p for name, p in unwrap_model(model).named_parameters() if id(p) not in in_layers
    }
    return layers, outside


def _check_same_layout(
    base: nn.Module,
    candidate: nn.Module,
    base_layers: list[dict[str, torch.Tensor]],
    cand_layers: list[dict[str, torch.Tensor]],
    base_out: dict[str, torch.Tensor],
    cand_out: dict[str, torch.Tensor],
) -> None:
    """Raise ArchitectureMismatchError naming every difference that makes ΔW meaningless."""
    problems: list[str] = []
    b_type, c_type = (getattr(model.config, "model_type", None) for model in (base, candidate))
    if b_type != c_type:
        problems.append(f"model family: base is {b_type!r}, candidate is {c_type!r}")
    if len(base_layers) != len(cand_layers):
        problems.append(f"layer count: base has {len(base_layers)}, candidate has {len(cand_layers)}")
    for index, (mine, theirs) in enumerate(zip(base_layers, cand_layers)):  # noqa: B905 - counted above
        problems.extend(_shape_problems(mine, theirs, f"layer {index} "))
        if len(problems) > 6:
            break
    problems.extend(_shape_problems(base_out, cand_out, ""))
    if problems:
        shown = problems[:6] + ([f"... and {len(problems) - 6} more"] if len(problems) > 6 else [])
        raise ArchitectureMismatchError(
            "the base and the candidate do not have the same architecture, so their weights cannot be "
            "compared:\n" + "\n".join(f"  - {p}" for p in shown),
            "compare a fine-tune with the model it was fine-tuned from (same family, layer count and sizes); "
            "for a PEFT adapter pass its base model",
        )


def _shape_problems(base: dict[str, torch.Tensor], candidate: dict[str, torch.Tensor], where: str) -> list[str]:
    problems = [f"{where}parameter {name} only in the base" for name in sorted(base.keys() - candidate.keys())]
    problems += [f"{where}parameter {name} only in the candidate" for name in sorted(candidate.keys() - base.keys())]
    for name in sorted(base.keys() & candidate.keys()):
        if base[name].shape != candidate[name].shape:
            problems.append(
                f"{where}{name}: base shape {tuple(base[name].shape)}, candidate shape {tuple(candidate[name].shape)}"
            )
    return problems


@torch.no_grad()
def _norms(base: torch.Tensor, candidate: torch.Tensor) -> tuple[float, float]:
    """(‖c − b‖_F, ‖b‖_F) in float64 accumulation; float32 differences keep small deltas exact."""
    b = base.detach().float()
    c = candidate.detach().to(device=b.device).float()
    delta = torch.linalg.vector_norm(c - b, dtype=torch.float64).item()
    return delta, torch.linalg.vector_norm(b, dtype=torch.float64).item()


def _module_deltas(
    base: dict[str, torch.Tensor], candidate: dict[str, torch.Tensor], layer: int | None
) -> list[ModuleDelta]:
    grouped: dict[str, list[str]] = {}
    for name in base:  # parameter registration order: attention before MLP, as in the block
        grouped.setdefault(_module_path(name), []).append(name)
    out = []
    for module, names in grouped.items():
        pairs = [_norms(base[n], candidate[n]) for n in names]
        out.append(
            ModuleDelta(
                layer,
                module,
                _pooled(d for d, _ in pairs),
                _pooled(b for _, b in pairs),
                sum(base[n].numel() for n in names),
            )
        )
    return out


def measure_weight_delta(base: LoadedModel | nn.Module, candidate: LoadedModel | nn.Module) -> WeightDelta:
    """‖ΔW‖_F/‖W‖_F per layer and module between ``base`` and ``candidate`` (models or LoadedModels).

    Raises :class:`ArchitectureMismatchError` when family, layer count, parameter names or shapes
    differ. The models may sit on different devices; nothing is modified.
    """
    base_model, cand_model = _module_of(base), _module_of(candidate)
    base_layers, base_out = _parameters(base_model)
    cand_layers, cand_out = _parameters(cand_model)
    _check_same_layout(base_model, cand_model, base_layers, cand_layers, base_out, cand_out)
    modules = [
        d
        for index, (b, c) in enumerate(zip(base_layers, cand_layers, strict=True))
        for d in _module_deltas(b, c, index)
    ]
    return WeightDelta(
        num_layers=len(base_layers),
        modules=modules,
        outside=_module_deltas(base_out, cand_out, None),
        base=_describe(base),
        candidate=_describe(candidate),
    )


def _module_of(model: LoadedModel | nn.Module) -> nn.Module:
    """The torch module of a LoadedModel, or the module itself (a causal LM has its own ``.model``)."""
    return model if isinstance(model, nn.Module) else model.model


def _describe(model: LoadedModel | nn.Module) -> dict[str, Any]:
    if not isinstance(model, nn.Module):
        info = model.describe()
        return {key: info[key] for key in ("name", "spec", "fingerprint") if key in info}
    return _identity(model)
