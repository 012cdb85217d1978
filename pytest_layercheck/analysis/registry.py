"""The analyses, one entry each: a name, the function that runs it on a loaded model, and what it needs.

The ``layercheck_analyses`` fixture runs, memoises and reports analyses by name through this
registry, so a new analysis is one module with a function ``run(loaded, **kwargs) -> result`` and
one :func:`register_analysis` call, as a protocol is one entry in ``suites/protocols.py``. A result
that has ``to_dict()`` is reported in the terminal summary even without a renderer of its own.

Built-in entries name their function by import path, so listing the analyses imports no model code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.core.registry import Registry


@dataclass(frozen=True)
class Analysis:
    """One analysis: ``target`` is the function, or ``"module:function"`` to import on first use."""

    name: str
    target: Callable[..., Any] | str
    #: One line for listings and error messages.
    description: str
    #: The function takes ``cache=`` (a result cache) and should share the session's.
    uses_cache: bool = False

    def function(self) -> Callable[..., Any]:
        if callable(self.target):
            return self.target
        module, _, attribute = self.target.partition(":")
        function: Callable[..., Any] = getattr(importlib.import_module(module), attribute)
        return function

    def run(self, loaded: Any, **kwargs: Any) -> Any:
        """The analysis of ``loaded`` (a :class:`~pytest_layercheck.model.loading.LoadedModel`)."""
        return self.function()(loaded, **kwargs)


_REGISTRY: Registry[Analysis] = Registry("analysis", ConfigError)


def register_analysis(analysis: Analysis) -> Analysis:
    """Make ``analysis`` available to the ``layercheck_analyses`` fixture by its name."""
    return _REGISTRY.register(
        analysis.name, analysis, "choose another name, or unregister_analysis() the old one first"
    )


def unregister_analysis(name: str) -> None:
    """Remove an analysis (tests register toy analyses and remove them afterwards)."""
    _REGISTRY.unregister(name)


def get_analysis(name: str) -> Analysis:
    return _REGISTRY.get(name, ", or register_analysis() your own")


def analysis_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY.names()))


for _builtin in (
    Analysis(
        "heads",
        "pytest_layercheck.analysis.heads:head_importance",
        "accuracy drop when each attention head is masked",
        uses_cache=True,
    ),
    Analysis(
        "retrieval_heads",
        "pytest_layercheck.analysis.retrieval_heads:find_retrieval_heads",
        "retrieval score of every head on needle-in-a-haystack tests",
    ),
    Analysis(
        "masking",
        "pytest_layercheck.analysis.retrieval_heads:compare_masking",
        "top-k retrieval heads against k random heads, masked",
    ),
    Analysis(
        "redundancy",
        "pytest_layercheck.analysis.redundancy:measure_redundancy",
        "angular distance and Block Influence per layer",
    ),
    Analysis(
        "thinking",
        "pytest_layercheck.analysis.thinking:compare_thinking",
        "fast (direct) against slow (step-by-step) answers",
    ),
    Analysis(
        "transfer",
        "pytest_layercheck.analysis.transfer:stability",
        "stability of correctness under new numbers or sibling facts",
    ),
):
    register_analysis(_builtin)
