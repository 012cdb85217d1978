"""``layercheck transfer``: does correctness survive new numbers (reasoning) vs another fact (knowledge)?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import RenderableType

from pytest_layercheck.analysis.registry import Stage
from pytest_layercheck.analysis.transfer.html import render_transfer_html
from pytest_layercheck.analysis.transfer.render import transfer_markdown, transfer_renderable
from pytest_layercheck.analysis.transfer.stability import TransferStability, contrast
from pytest_layercheck.model.loading import LoadedModel


def run(loaded: LoadedModel, stage: Stage, *, suites: list[str], **keywords: Any) -> list[TransferStability]:
    with stage("transfer", "scoring variants") as hook:
        return contrast(loaded, suites, progress=hook, **keywords)


def terminal(results: list[TransferStability], view: Mapping[str, Any]) -> RenderableType:
    return transfer_renderable(results, by_domain=view["by_domain"])


def to_json(results: list[TransferStability]) -> list[dict[str, Any]]:
    return [r.to_json() for r in results]


def markdown(results: list[TransferStability], view: Mapping[str, Any]) -> str:
    return transfer_markdown(results, by_domain=view["by_domain"])


def html(results: list[TransferStability], view: Mapping[str, Any]) -> str:
    return render_transfer_html(results)
