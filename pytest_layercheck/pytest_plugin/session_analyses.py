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
from typing import TYPE_CHECKING, Any, TypeVar

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
        return [render[name](result) for name, result in self._memo.values()]

    def heads(self, suite: str = "knowledge", **kwargs: Any) -> HeadImportance:
        """Head importance (:func:`.heads.head_importance`), sharing the session's result cache."""
        from pytest_layercheck.analysis.heads import head_importance

        kwargs.setdefault("cache", self.session.cache)
        shown = {k: v for k, v in kwargs.items() if k != "cache"}
        return self._once("heads", {"suite": suite, **shown},
                          lambda: head_importance(self.session.model(), suite=suite, **kwargs))

    def retrieval_heads(self, **kwargs: Any) -> RetrievalHeads:
        """Retrieval heads on generated needle tests (:func:`.retrieval_heads.find_retrieval_heads`)."""
        from pytest_layercheck.analysis.retrieval_heads import find_retrieval_heads

        return self._once("retrieval_heads", kwargs, lambda: find_retrieval_heads(self.session.model(), **kwargs))

    def masking(self, k: int, **kwargs: Any) -> MaskingComparison:
        """Top-k retrieval heads vs k random heads masked (:func:`.retrieval_heads.compare_masking`)."""
        from pytest_layercheck.analysis.retrieval_heads import compare_masking

        return self._once("masking", {"k": k, **kwargs},
                          lambda: compare_masking(self.session.model(), k=k, **kwargs))

    def redundancy(self, block: int = 1, **kwargs: Any) -> RedundancyResult:
        """Angular distance and Block Influence (:func:`.redundancy.measure_redundancy`)."""
        from pytest_layercheck.analysis.redundancy import measure_redundancy

        return self._once("redundancy", {"block": block, **kwargs},
                          lambda: measure_redundancy(self.session.model(), block=block, **kwargs))

    def thinking(self, **kwargs: Any) -> ThinkingResult:
        """Fast vs slow answers (:func:`.thinking.compare_thinking`)."""
        from pytest_layercheck.analysis.thinking import compare_thinking

        return self._once("thinking", kwargs, lambda: compare_thinking(self.session.model(), **kwargs))

    def transfer(self, suite: str = "reasoning", **kwargs: Any) -> TransferStability:
        """Stability of correctness under new numbers or sibling facts (:func:`.transfer.stability`)."""
        from pytest_layercheck.analysis.transfer import stability

        return self._once("transfer", {"suite": suite, **kwargs},
                          lambda: stability(self.session.model(), suite, **kwargs))

    def compare(self, localise: str = "bands,changed") -> ModelComparison:
        """The session model against ``--layercheck-reference`` (:func:`compare_with_reference`)."""

        return self._once("compare", {"localise": localise},
                          lambda: compare_with_reference(self.session, localise=localise))


def compare_with_reference(session: LayercheckSession, *, localise: str = "bands,changed",
                           summary: bool = True) -> ModelComparison:
    """The pytest form: the session's model against ``--layercheck-reference``, judged by the session's options.

    Uses the session's suites, protocols, mode, bands, limit, tolerance, alpha and result cache, so a test
    reads ``assert result.passed, result.failure_message()``. Under GitHub Actions (``summary``) the
    comparison's markdown is appended to the job summary.
    """
    from pytest_layercheck.analysis.compare import CompareSettings, compare_models

    verdict = session.verdict
    settings = CompareSettings(profile=session.settings, tolerance=verdict.tolerance, alpha=verdict.alpha,
                               correction=verdict.correction, allow_precision_mismatch=verdict.allow_precision_mismatch,
                               localise=localise)
    result = compare_models(session.reference_model(), session.model(), settings, cache=session.cache)
    if summary and os.environ.get("GITHUB_STEP_SUMMARY"):
        append_step_summary(render_compare_markdown(result))
    return result
