"""``layercheck compare BASE CANDIDATE``: profile both, show the shift per cell, weight deltas, localisation.

The command exits 0 when no cell regressed and 1 when the candidate regressed (a drop beyond the tolerance
that the paired test calls significant); in GitHub Actions it also prints a workflow annotation per cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import RenderableType

from pytest_layercheck.analysis.compare.models import CompareSettings, ModelComparison, compare_models
from pytest_layercheck.analysis.compare.render import compare_renderable, render_compare_markdown
from pytest_layercheck.analysis.registry import Stage
from pytest_layercheck.evaluation.options import checked_profile_settings, verdict
from pytest_layercheck.evaluation.result_cache import ResultCache
from pytest_layercheck.model.loading import LoadedModel
from pytest_layercheck.report.html_items import run_item_texts
from pytest_layercheck.report.html_page import render_html
from pytest_layercheck.report.markdown import github_annotations


def settings(keywords: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The comparison's settings, checked before the two models load: a typo should not cost two loads."""
    localise = keywords["localise"]
    if keywords["no_weights"] and "changed" in localise:
        localise = ",".join(s for s in localise.split(",") if s.strip() != "changed") or "none"
    judged = verdict(values)
    return {
        "settings": CompareSettings(
            profile=checked_profile_settings(values),
            tolerance=judged.tolerance,
            alpha=judged.alpha,
            correction=judged.correction,
            allow_precision_mismatch=judged.allow_precision_mismatch,
            localise=localise,
            threshold=keywords["threshold"],
            weights=not keywords["no_weights"],
        )
    }


def run(
    base: LoadedModel, candidate: LoadedModel, stage: Stage, *, settings: CompareSettings, cache: ResultCache
) -> ModelComparison:
    with stage("compare", "comparing", note=lambda: f"evaluations: {cache.summary()}") as hook:
        return compare_models(base, candidate, settings, cache=cache, progress=hook)


def terminal(result: ModelComparison, view: Mapping[str, Any]) -> RenderableType:
    return compare_renderable(result)


def to_json(result: ModelComparison) -> dict[str, Any]:
    return result.to_dict()


def markdown(result: ModelComparison, view: Mapping[str, Any]) -> str:
    return render_compare_markdown(result)


def html(result: ModelComparison, view: Mapping[str, Any]) -> str:
    """The depth report's page: the candidate against the base, with the localisation verdicts."""
    return render_html(
        result.candidate,
        result.comparison,
        baseline=result.base,
        notes=result.verdicts,
        item_texts=run_item_texts(result.settings.profile.suites),
    )


def passed(result: ModelComparison) -> bool:
    return result.passed


def workflow_commands(result: ModelComparison) -> list[str]:
    return github_annotations(result.comparison)
