"""``layercheck retrieval-heads``: find retrieval heads on needle tests and compare masking them with random heads."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import RenderableType

from pytest_layercheck.analysis.registry import Stage
from pytest_layercheck.analysis.retrieval_heads.detection import RetrievalHeads, find_retrieval_heads
from pytest_layercheck.analysis.retrieval_heads.html import render_retrieval_html
from pytest_layercheck.analysis.retrieval_heads.masking import MaskingComparison, compare_masking
from pytest_layercheck.analysis.retrieval_heads.render import retrieval_markdown, retrieval_renderable
from pytest_layercheck.model.loading import LoadedModel


@dataclass(frozen=True)
class Found:
    """The retrieval heads, and the masking comparison unless ``--k 0``."""

    heads: RetrievalHeads
    masking: MaskingComparison | None


def run(
    loaded: LoadedModel,
    stage: Stage,
    *,
    tests: int,
    seed: int,
    threshold: float,
    k: int | None,
    **keywords: Any,
) -> Found:
    with stage("retrieval scores", "needle tests") as hook:
        heads = find_retrieval_heads(loaded, tests=tests, seed=seed, threshold=threshold, progress=hook)
    k = k if k is not None else max(1, math.ceil(0.05 * len(heads.scores)))
    if not k:
        return Found(heads, None)
    with stage("masking comparison", "masking") as hook:
        masking = compare_masking(loaded, heads=heads, k=k, seed=seed, progress=hook, **keywords)
    return Found(heads, masking)


def terminal(found: Found, view: Mapping[str, Any]) -> RenderableType:
    return retrieval_renderable(found.heads, found.masking, top=view["top"])


def to_json(found: Found) -> dict[str, Any]:
    return {"retrieval_heads": found.heads.to_dict(), "masking": found.masking.to_dict() if found.masking else None}


def markdown(found: Found, view: Mapping[str, Any]) -> str:
    return retrieval_markdown(found.heads, found.masking, top=view["top"])


def html(found: Found, view: Mapping[str, Any]) -> str:
    return render_retrieval_html(found.heads, found.masking, top=view["top"])
