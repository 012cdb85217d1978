"""Every analysis on the pytest session's model, behind one fixture (``layercheck_analyses``).

Tests assert on analyses the way they assert on profiles::

    def test_knowledge_heads_stay_concentrated(layercheck_analyses):
        heads = layercheck_analyses.heads("knowledge", layers="0-3")
        assert heads.concentration() > 0.5

Results are memoised per argument set for the session (analyses are deterministic), so several
tests can look at one analysis without paying for it twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pytest_layercheck.report.compare import render_compare_markdown
from pytest_layercheck.report.markdown import append_step_summary

if TYPE_CHECKING:
    from pytest_layercheck.analysis.compare import ModelComparison
    from pytest_layercheck.analysis.heads import HeadImportance
    from pytest_layercheck.analysis.redundancy import RedundancyResult
    from pytest_layercheck.analysis.retrieval_heads import MaskingComparison, RetrievalHeads
    from pytest_layercheck.analysis.thinking import ThinkingResult
    from pytest_layercheck.analysis.transfer import TransferStability
    from pytest_layercheck.pytest_plugin.session import LayercheckSession

T = TypeVar("T")


class SessionAnalyses:
    """Library analyses bound to the session's model (and reference model, for ``compare``)."""

    def __init__(self, session: LayercheckSession) -> None:
        self.session = session
        self._memo: dict[str, tuple[str, Any]] = {}

    def _once(self, name: str, kwargs: dict[str, Any], compute: Callable[[], T]) -> T:
        key = name + json.dumps(kwargs, sort_keys=True, default=repr)
        if key not in self._memo:
            self._memo[key] = (name, compute())
        return self._memo[key][1]

    def __len__(self) -> int:
        return len(self._memo)

    def renderables(self) -> list[Any]:
        """A rich report of every analysis computed this session, for pytest's terminal summary."""
        from rich.text import Text

        from pytest_layercheck.report.analyses import (
            redundancy_renderable,
            thinking_renderable,
            transfer_renderable,
        )
        from pytest_layercheck.report.compare import compare_renderable
        from pytest_layercheck.report.heads import (
            importance_renderable,
            masking_summary,
            masking_title,
            retrieval_renderable,
        )

        render: dict[str, Callable[[Any], Any]] = {
            "heads": lambda r: importance_renderable(r, top=10, grid=False),
            "retrieval_heads": retrieval_renderable,
            "masking": lambda r: Text(f"{masking_title(r)}\n{masking_summary(r)}"),
            "redundancy": redundancy_renderable,
            "thinking": thinking_renderable,
            "transfer": lambda r: transfer_renderable([r]),
            "compare": compare_renderable,
        }
        return [
            render[name](result) if name in render else _generic_renderable(name, result)
            for name, result in self._memo.values()
        ]

    def run(self, name: str, **kwargs: Any) -> Any:
        """The registered analysis ``name`` (see :mod:`pytest_layercheck.analysis.registry`) of the
        session model, computed once per argument set; analyses that take a result cache share the session's."""
        from pytest_layercheck.analysis.registry import get_analysis

        analysis = get_analysis(name)
        call = dict(kwargs)
        if analysis.uses_cache:
            call.setdefault("cache", self.session.cache)
        shown = {k: v for k, v in kwargs.items() if k != "cache"}
        return self._once(name, shown, lambda: analysis.run(self.session.model(), **call))

    def heads(self, suite: str = "knowledge", **kwargs: Any) -> HeadImportance:
        """Head importance (:func:`.heads.head_importance`), sharing the session's result cache."""
        return cast("HeadImportance", self.run("heads", suite=suite, **kwargs))

    def retrieval_heads(self, **kwargs: Any) -> RetrievalHeads:
        """Retrieval heads on generated needle tests (:func:`.retrieval_heads.find_retrieval_heads`)."""
        return cast("RetrievalHeads", self.run("retrieval_heads", **kwargs))

    def masking(self, k: int, **kwargs: Any) -> MaskingComparison:
        """Top-k retrieval heads vs k random heads masked (:func:`.retrieval_heads.compare_masking`)."""
        return cast("MaskingComparison", self.run("masking", k=k, **kwargs))

    def redundancy(self, block: int = 1, **kwargs: Any) -> RedundancyResult:
        """Angular distance and Block Influence (:func:`.redundancy.measure_redundancy`)."""
        return cast("RedundancyResult", self.run("redundancy", block=block, **kwargs))

    def thinking(self, **kwargs: Any) -> ThinkingResult:
        """Fast vs slow answers (:func:`.thinking.compare_thinking`)."""
        return cast("ThinkingResult", self.run("thinking", **kwargs))

    def transfer(self, suite: str = "reasoning", **kwargs: Any) -> TransferStability:
        """Stability of correctness under new numbers or sibling facts (:func:`.transfer.stability`)."""
        return cast("TransferStability", self.run("transfer", suite=suite, **kwargs))

    def compare(self, localise: str = "bands,changed") -> ModelComparison:
        """The session model against ``--layercheck-reference`` (:func:`compare_with_reference`)."""

        return self._once(
            "compare", {"localise": localise}, lambda: compare_with_reference(self.session, localise=localise)
        )


def _generic_renderable(name: str, result: Any) -> Any:
    """An analysis without a renderer of its own: its name and its ``to_dict()`` (or its repr)."""
    from rich.console import Group
    from rich.pretty import Pretty
    from rich.text import Text

    to_dict = getattr(result, "to_dict", None)
    return Group(Text(f"analysis {name}", style="bold"), Pretty(to_dict() if callable(to_dict) else result))


def compare_with_reference(
    session: LayercheckSession, *, localise: str = "bands,changed", summary: bool = True
) -> ModelComparison:
    """The pytest form: the session's model against ``--layercheck-reference``, judged by the session's options.

    Uses the session's suites, protocols, mode, bands, limit, tolerance, alpha and result cache, so a test
    reads ``assert result.passed, result.failure_message()``. Under GitHub Actions (``summary``) the
    comparison's markdown is appended to the job summary.
    """
    from pytest_layercheck.analysis.compare import CompareSettings, compare_models

    verdict = session.verdict
    settings = CompareSettings(
        profile=session.settings,
        tolerance=verdict.tolerance,
        alpha=verdict.alpha,
        correction=verdict.correction,
        allow_precision_mismatch=verdict.allow_precision_mismatch,
        localise=localise,
    )
    result = compare_models(session.reference_model(), session.model(), settings, cache=session.cache)
    if summary and os.environ.get("GITHUB_STEP_SUMMARY"):
        append_step_summary(render_compare_markdown(result))
    return result
