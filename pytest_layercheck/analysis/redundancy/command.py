"""``layercheck redundancy``: the block a similarity metric calls prunable, beside what removing it costs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import RenderableType

from pytest_layercheck.analysis.redundancy.capabilities import RedundancyComparison, compare_with_capabilities
from pytest_layercheck.analysis.redundancy.html import render_redundancy_html
from pytest_layercheck.analysis.redundancy.metrics import RedundancyResult, measure_redundancy
from pytest_layercheck.analysis.redundancy.render import redundancy_markdown, redundancy_renderable
from pytest_layercheck.analysis.registry import Stage
from pytest_layercheck.model.loading import LoadedModel


@dataclass(frozen=True)
class Measured:
    """The metrics, and their comparison with the capability views unless ``--no-compare``."""

    result: RedundancyResult
    comparison: RedundancyComparison | None


def run(
    loaded: LoadedModel,
    stage: Stage,
    *,
    block: int,
    suites: list[str],
    prompts: int | None,
    no_compare: bool,
    views: list[tuple[str, str]],
    **keywords: Any,
) -> Measured:
    with stage("metrics"):
        result = measure_redundancy(loaded, block, suites=suites, limit=prompts)
    if no_compare or not views:
        return Measured(result, None)
    with stage("comparison", "removing blocks") as hook:
        comparison = compare_with_capabilities(loaded, result, views=views, progress=hook, **keywords)
    return Measured(result, comparison)


def terminal(measured: Measured, view: Mapping[str, Any]) -> RenderableType:
    return redundancy_renderable(measured.result, measured.comparison)


def to_json(measured: Measured) -> dict[str, Any]:
    if measured.comparison is None:
        return {"result": measured.result.to_json()}
    return measured.comparison.to_json()


def markdown(measured: Measured, view: Mapping[str, Any]) -> str:
    return redundancy_markdown(measured.result, measured.comparison)


def html(measured: Measured, view: Mapping[str, Any]) -> str:
    return render_redundancy_html(measured.result, measured.comparison)
