"""Where each supported model family keeps its decoder layers, attention and head geometry.

Ablations must touch exactly the right module (the attention *output projection*, the decoder-layer
``ModuleList``) and know the head layout (query heads, KV heads, head dim). Families name these
differently, so every family gets one small, explicit entry here instead of guessing from module names:
an unknown family fails loudly rather than being ablated in the wrong place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from pytest_layercheck.core.errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class _FamilyLayout:
    """Attribute names of one family; paths are dotted and relative to the causal-LM module."""

    backbone_paths: tuple[str, ...]  # first path that exists wins
    layers_attr: str  # ModuleList attribute on the backbone
    attention_attr: str  # attention module attribute on a decoder layer
    out_proj_attr: str  # output projection on the attention module (input = concatenated heads)
    v_proj_attr: str | None  # separate value projection, None where QKV is fused
    mlp_attr: str = "mlp"  # feed-forward module on a decoder layer (its output is added to the residual)


_LLAMA_LIKE = _FamilyLayout(("model",), "layers", "self_attn", "o_proj", "v_proj")

_FAMILIES: dict[str, _FamilyLayout] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    # Gemma3ForConditionalGeneration nests the text decoder one level deeper; text-only prompts only.
    "gemma3": _FamilyLayout(("model.language_model", "model"), "layers", "self_attn", "o_proj", "v_proj"),
    "phi3": _FamilyLayout(("model",), "layers", "self_attn", "o_proj", None),  # fused qkv_proj
    "gpt2": _FamilyLayout(("transformer",), "h", "attn", "c_proj", None),  # fused c_attn (Conv1D)
    "gpt_neox": _FamilyLayout(("gpt_neox",), "layers", "attention", "dense", None),  # fused QKV
}

SUPPORTED_FAMILIES: tuple[str, ...] = tuple(_FAMILIES)


@dataclass(frozen=True, eq=False)
class ArchitectureAdapter:
    """Family-independent access to one model's decoder stack and head geometry.

    ``model`` is the unwrapped causal LM (PEFT wrappers removed). ``decoder_configs`` are the distinct
    config objects that describe the decoder stack (the backbone's config and the top-level text config,
    which differ for composite models); ablations that change the layer count must update all of them.
    """

    model: nn.Module
    family: str
    backbone: nn.Module
    decoder_configs: tuple[object, ...]
    num_heads: int
    num_kv_heads: int
    head_dim: int
    _layout: _FamilyLayout

    @property
    def config(self) -> object:
        """The config the backbone's forward reads (layer count, layer types, attention implementation)."""
        return self.decoder_configs[0]

    @property
    def layers(self) -> nn.ModuleList:
        """The decoder-layer ``ModuleList`` currently installed on the backbone."""
        return getattr(self.backbone, self._layout.layers_attr)

    def set_layers(self, layers: nn.ModuleList) -> None:
        """Install ``layers`` as the backbone's decoder stack (used by skip and swap to restore, too)."""
        setattr(self.backbone, self._layout.layers_attr, layers)

    @property
    def num_layers(self) -> int:
        """Number of decoder layers currently installed."""
        return len(self.layers)

    def attention_of(self, block: nn.Module) -> nn.Module:
        """The self-attention module of a decoder block."""
        return getattr(block, self._layout.attention_attr)

    def out_proj_of(self, block: nn.Module) -> nn.Module:
        """The attention output projection of a decoder block; its input is the concatenated heads."""
        return getattr(self.attention_of(block), self._layout.out_proj_attr)

    def v_proj_of(self, block: nn.Module) -> nn.Module | None:
        """The value projection of a decoder block, or None where Q/K/V are fused into one matrix."""
        if self._layout.v_proj_attr is None:
            return None
        return getattr(self.attention_of(block), self._layout.v_proj_attr)

    def mlp_of(self, block: nn.Module) -> nn.Module | None:
        """The feed-forward module of a decoder block, or None where the block has none by that name."""
        module = getattr(block, self._layout.mlp_attr, None)
        return module if isinstance(module, nn.Module) else None

    def attention(self, layer: int) -> nn.Module:
        """Attention module of installed layer ``layer``."""
        return self.attention_of(self.layers[layer])

    def out_proj(self, layer: int) -> nn.Module:
        """Output projection of installed layer ``layer``."""
        return self.out_proj_of(self.layers[layer])

    def v_proj(self, layer: int) -> nn.Module | None:
        """Value projection of installed layer ``layer`` (None for fused-QKV families)."""
        return self.v_proj_of(self.layers[layer])

    @property
    def heads_per_kv(self) -> int:
        """Query heads sharing one KV head (1 without grouped-query attention)."""
        return self.num_heads // self.num_kv_heads

    def kv_head_of(self, head: int) -> int:
        """The KV head that query head ``head`` reads: ``head // (num_heads // num_kv_heads)``."""
        return head // self.heads_per_kv

    def query_heads_of(self, kv_head: int) -> tuple[int, ...]:
        """The query heads that share KV head ``kv_head``."""
        start = kv_head * self.heads_per_kv
        return tuple(range(start, start + self.heads_per_kv))

    @property
    def kv_groups(self) -> tuple[tuple[int, ...], ...]:
        """All KV groups, as tuples of query heads, indexed by KV head."""
        return tuple(self.query_heads_of(g) for g in range(self.num_kv_heads))


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip a PEFT wrapper (``PeftModel.get_base_model()``); other models pass through unchanged."""
    get_base_model = getattr(model, "get_base_model", None)
    if callable(get_base_model) and hasattr(model, "peft_config"):
        return get_base_model()
    return model


def _unsupported(model_type: object, why: str) -> UnsupportedArchitectureError:
    return UnsupportedArchitectureError(
        f"Model type {model_type!r} is not supported by pytest-layercheck ({why}). "
        f"Supported families: {', '.join(SUPPORTED_FAMILIES)}.",
        fix="use a model from one of the supported families, or open an issue on the pytest-layercheck "
        f"tracker asking for a {model_type!r} adapter (include the model id and its config.json).",
    )


def _resolve_path(root: nn.Module, path: str) -> nn.Module | None:
    obj: object = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, nn.Module) else None


def _find_backbone(model: nn.Module, layout: _FamilyLayout) -> nn.Module | None:
    """The first module on the family's backbone paths that holds the decoder-layer ModuleList."""
    for path in layout.backbone_paths:
        backbone = _resolve_path(model, path)
        if isinstance(getattr(backbone, layout.layers_attr, None), nn.ModuleList):
            return backbone
    return None


def _in_features(proj: nn.Module) -> int | None:
    """Input width of a Linear, GPT-2 Conv1D (weight is ``(in, out)``) or a PEFT wrapper of either."""
    for name in ("in_features", "nx"):
        if hasattr(proj, name):
            return int(getattr(proj, name))
    return None


def _layout_for(model_type: object) -> _FamilyLayout:
    layout = _FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if layout is None:
        raise _unsupported(model_type, "no architecture adapter for this family")
    return layout


def get_adapter_for_config(config: object) -> str:
    """Check a config's family before any weights are loaded; returns its ``model_type``.

    Raises the same ``UnsupportedArchitectureError`` as :func:`get_adapter`, so loaders can fail fast.
    (A full adapter needs the instantiated modules, hence only the family is returned.)
    """
    model_type = getattr(config, "model_type", None)
    _layout_for(model_type)
    return str(model_type)


def checkpoint_layer_count(names: Iterable[str], model_type: str) -> int | None:
    """How many decoder layers a checkpoint's tensor ``names`` hold (highest layer index + 1).

    None where no name is a decoder layer's (a layout this cannot read). Any ``<layers>.<i>.`` counts,
    a vision tower's too, so the count errs high: it bounds what a config may ask for.
    """
    pattern = re.compile(rf"(?:^|\.){re.escape(_layout_for(model_type).layers_attr)}\.(\d+)\.")
    indices = [int(match.group(1)) for name in names if (match := pattern.search(name))]
    return max(indices) + 1 if indices else None


def get_adapter(model: nn.Module) -> ArchitectureAdapter:
    """Build the adapter for ``model`` or raise ``UnsupportedArchitectureError``.

    Works on PEFT-wrapped models and on models dispatched with ``device_map`` (accelerate only adds hooks,
    the module tree is unchanged).
    """
    model = unwrap_model(model)
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    family: str = model_type if model_type is not None else type(model).__name__
    layout = _layout_for(family)

    backbone = _find_backbone(model, layout)
    if backbone is None:
        raise _unsupported(
            model_type,
            f"{type(model).__name__} has no decoder-layer list at "
            f"{' or '.join(p + '.' + layout.layers_attr for p in layout.backbone_paths)}; "
            "load it as a causal LM (AutoModelForCausalLM)",
        )

    if config is None:  # only a module whose class is named like a family gets here without a config
        raise _unsupported(family, f"{type(model).__name__} has no config")
    text_config = config.get_text_config(decoder=True)
    backbone_config = getattr(backbone, "config", text_config)
    decoder_configs = tuple({id(c): c for c in (backbone_config, text_config)}.values())

    num_heads = int(text_config.num_attention_heads)
    num_kv_heads = int(getattr(text_config, "num_key_value_heads", None) or num_heads)
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // num_heads
    adapter = ArchitectureAdapter(
        model=model,
        family=family,
        backbone=backbone,
        decoder_configs=decoder_configs,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=int(head_dim),
        _layout=layout,
    )
    _check_geometry(adapter)
    return adapter


def _check_geometry(adapter: ArchitectureAdapter) -> None:
    """Fail early if the config's head geometry does not match the actual output projection."""
    if adapter.num_heads % adapter.num_kv_heads:
        raise _unsupported(
            adapter.family,
            f"{adapter.num_heads} query heads are not a multiple of {adapter.num_kv_heads} KV heads",
        )
    if adapter.num_layers == 0:
        return
    width = _in_features(adapter.out_proj(0))
    if width is not None and width != adapter.num_heads * adapter.head_dim:
        raise _unsupported(
            adapter.family,
            f"output projection takes {width} inputs, expected {adapter.num_heads} heads x "
            f"{adapter.head_dim} dims; this variant has a layout the adapter does not know",
        )
