"""Every analysis on the pytest session's model, behind one fixture (``layercheck_analyses``).

Tests assert on analyses the way they assert on profiles::

    def test_knowledge_heads_stay_concentrated(layercheck_analyses):
        heads = layercheck_analyses.heads("knowledge", layers="0-3")
        assert heads.concentration() > 0.5

Results are memoised per argument set for the session (analyses are deterministic), so several
tests can look at one analysis without paying for it twice. The analyses are the registry's
(:mod:`pytest_layercheck.analysis.registry`), and so are the renderers of pytest's summary.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from pytest_layercheck.analysis.registry import get_analysis, resolve
from pytest_layercheck.report.markdown import append_step_summary

if TYPE_CHECKING:
    from pytest_layercheck.analysis.compare.models import ModelComparison
    from pytest_layercheck.analysis.heads.importance import HeadImportance
    from pytest_layercheck.analysis.redundancy.metrics import RedundancyResult
    from pytest_layercheck.analysis.retrieval_heads.detection import RetrievalHeads
    from pytest_layercheck.analysis.retrieval_heads.masking import MaskingComparison
    from pytest_layercheck.analysis.thinking.fast_slow import ThinkingResult
    from pytest_layercheck.analysis.transfer.stability import TransferStability
    from pytest_layercheck.evaluation.comparison import Verdict
    from pytest_layercheck.evaluation.result_cache import ResultCache
    from pytest_layercheck.evaluation.settings import ProfileSettings
    from pytest_layercheck.model.loading import LoadedModel

T = TypeVar("T")


class ReferenceSession(Protocol):
    """What a comparison with the reference model reads from a pytest session (``layercheck_session``)."""

    settings: ProfileSettings
    verdict: Verdict
    cache: ResultCache

    def model(self) -> LoadedModel: ...

    def reference_model(self) -> LoadedModel: ...


class SessionAnalyses:
    """Library analyses bound to the session's model (and its reference model, for the analyses that
    compare two). ``model`` and ``reference`` load their model on first call; ``cache`` is the session's
    result cache, ``settings`` and ``verdict`` what ``compare`` profiles and how it judges."""

    def __init__(
        self,
        model: Callable[[], LoadedModel],
        reference: Callable[[], LoadedModel],
        cache: ResultCache,
        settings: ProfileSettings,
        verdict: Verdict,
    ) -> None:
        self._model = model
        self._reference = reference
        self.cache = cache
        self.settings = settings
        self.verdict = verdict
        self._memo: dict[str, tuple[str, Any]] = {}

    def _once(self, name: str, kwargs: dict[str, Any], compute: Callable[[], T]) -> T:
        key = name + json.dumps(kwargs, sort_keys=True, default=repr)
        if key not in self._memo:
            self._memo[key] = (name, compute())
        return self._memo[key][1]

    def __len__(self) -> int:
        return len(self._memo)

    def model(self) -> LoadedModel:
        return self._model()

    def reference_model(self) -> LoadedModel:
        return self._reference()

    def renderables(self) -> list[Any]:
        """A rich report of every analysis computed this session, for pytest's terminal summary."""
        return [_summary(name, result) for name, result in self._memo.values()]

    def run(self, name: str, **kwargs: Any) -> Any:
        """The registered analysis ``name`` (see :mod:`pytest_layercheck.analysis.registry`) of the
        session model (against the reference model, for one that compares two), computed once per
        argument set; analyses that take a result cache share the session's."""
        analysis = get_analysis(name)
        call = dict(kwargs)
        if analysis.uses_cache:
            call.setdefault("cache", self.cache)
        shown = {k: v for k, v in kwargs.items() if k != "cache"}
        return self._once(
            name,
            shown,
            lambda: analysis.run(self._model(), self._reference() if analysis.compares else None, **call),
        )

    def heads(self, suite: str = "knowledge", **kwargs: Any) -> HeadImportance:
        """Head importance (:func:`.heads.importance.head_importance`), sharing the session's result cache."""
        return cast("HeadImportance", self.run("heads", suite=suite, **kwargs))

    def retrieval_heads(self, **kwargs: Any) -> RetrievalHeads:
        """Retrieval heads on generated needle tests (:func:`.retrieval_heads.detection.find_retrieval_heads`)."""
        return cast("RetrievalHeads", self.run("retrieval_heads", **kwargs))

    def masking(self, k: int, **kwargs: Any) -> MaskingComparison:
        """Top-k retrieval heads vs k random heads masked (:func:`.retrieval_heads.masking.compare_masking`)."""
        return cast("MaskingComparison", self.run("masking", k=k, **kwargs))

    def redundancy(self, block: int = 1, **kwargs: Any) -> RedundancyResult:
        """Angular distance and Block Influence (:func:`.redundancy.metrics.measure_redundancy`)."""
        return cast("RedundancyResult", self.run("redundancy", block=block, **kwargs))

    def thinking(self, **kwargs: Any) -> ThinkingResult:
        """Fast vs slow answers (:func:`.thinking.fast_slow.compare_thinking`)."""
        return cast("ThinkingResult", self.run("thinking", **kwargs))

    def transfer(self, suite: str = "reasoning", **kwargs: Any) -> TransferStability:
        """Stability of correctness under new numbers or sibling facts (:func:`.transfer.stability.stability`)."""
        return cast("TransferStability", self.run("transfer", suite=suite, **kwargs))

    def compare(self, localise: str = "bands,changed") -> ModelComparison:
        """The session model against ``--layercheck-reference`` (:func:`compare_with_reference`)."""
        return self._once("compare", {"localise": localise}, lambda: compare_with_reference(self, localise=localise))


def _summary(name: str, result: Any) -> Any:
    """An analysis's report in pytest's summary: its registered renderer, else its name and its
    ``to_dict()`` (or its repr)."""
    renderer = get_analysis(name).summary
    if renderer is not None:
        return resolve(renderer)(result)
    from rich.console import Group
    from rich.pretty import Pretty
    from rich.text import Text

    to_dict = getattr(result, "to_dict", None)
    return Group(Text(f"analysis {name}", style="bold"), Pretty(to_dict() if callable(to_dict) else result))


def compare_with_reference(
    session: ReferenceSession, *, localise: str = "bands,changed", summary: bool = True
) -> ModelComparison:
    """The pytest form: the session's model against ``--layercheck-reference``, judged by the session's options.

    Uses the session's suites, protocols, mode, bands, limit, tolerance, alpha and result cache, so a test
    reads ``assert result.passed, result.failure_message()``. Under GitHub Actions (``summary``) the
    comparison's markdown is appended to the job summary.
    """
    from pytest_layercheck.analysis.compare.models import CompareSettings, compare_models
    from pytest_layercheck.analysis.compare.render import render_compare_markdown

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
