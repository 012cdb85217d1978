"""``layercheck heads``: mask each attention head in turn and show which ones a suite needs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from rich.console import RenderableType

from pytest_layercheck.analysis.heads.html import render_heads_html
from pytest_layercheck.analysis.heads.importance import HeadImportance, head_importance
from pytest_layercheck.analysis.heads.render import importance_markdown, importance_renderable
from pytest_layercheck.analysis.registry import Stage
from pytest_layercheck.evaluation.result_cache import ResultCache
from pytest_layercheck.model.loading import LoadedModel


def run(loaded: LoadedModel, stage: Stage, *, cache: ResultCache, **keywords: Any) -> HeadImportance:
    def note() -> str:
        return f"{cache.summary()}, {torch.get_num_threads()} CPU threads"

    with stage("heads", "heads", note) as hook:
        return head_importance(loaded, cache=cache, progress=hook, **keywords)


def terminal(result: HeadImportance, view: Mapping[str, Any]) -> RenderableType:
    return importance_renderable(result, top=view["top"], grid=not view["no_grid"])


def to_json(result: HeadImportance) -> dict[str, Any]:
    return result.to_dict()


def markdown(result: HeadImportance, view: Mapping[str, Any]) -> str:
    return importance_markdown(result, top=view["top"], grid=not view["no_grid"])


def html(result: HeadImportance, view: Mapping[str, Any]) -> str:
    return render_heads_html(result, top=view["top"])
