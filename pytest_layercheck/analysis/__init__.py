"""The analyses' public namespace: heads, retrieval heads, redundancy, fast vs slow thinking, transfer
across numbers, and localising a fine-tune's change (weight deltas, delta replacement, the model comparison)::

    from pytest_layercheck.analysis import head_importance, register_analysis

Each analysis is one room, a package here holding its computation, result, renderers, subcommand and
registration; :mod:`.registry` lists the rooms and is what the front ends read. The functions below are the
rooms' public entry points, under their own names, loaded on first use (importing this package loads no
model code); each result type is in its room's module, beside the function that returns it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_layercheck.analysis.registry import public_functions
from pytest_layercheck.core.lazy import lazy_attributes

#: Public name -> (defining module, the same name there).
_EXPORTS: dict[str, tuple[str, str]] = {
    **public_functions(),
    "Analysis": ("pytest_layercheck.analysis.registry", "Analysis"),
    "Command": ("pytest_layercheck.analysis.registry", "Command"),
    "register_analysis": ("pytest_layercheck.analysis.registry", "register_analysis"),
    "unregister_analysis": ("pytest_layercheck.analysis.registry", "unregister_analysis"),
}

__all__ = [*_EXPORTS]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads these on first use
    from pytest_layercheck.analysis.compare.models import compare_models
    from pytest_layercheck.analysis.heads.importance import head_importance
    from pytest_layercheck.analysis.redundancy.metrics import measure_redundancy
    from pytest_layercheck.analysis.registry import Analysis, Command, register_analysis, unregister_analysis
    from pytest_layercheck.analysis.retrieval_heads.detection import find_retrieval_heads
    from pytest_layercheck.analysis.retrieval_heads.masking import compare_masking
    from pytest_layercheck.analysis.thinking.fast_slow import compare_thinking
    from pytest_layercheck.analysis.transfer.stability import transfer_stability
    from pytest_layercheck.analysis.weight_delta.deltas import measure_weight_delta


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS, __all__)
