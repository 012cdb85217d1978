"""``layercheck thinking``: the same items answered directly and with chain-of-thought, per domain."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from pytest_layercheck.analysis.registry import Stage
from pytest_layercheck.analysis.thinking.fast_slow import ThinkingResult, compare_thinking
from pytest_layercheck.analysis.thinking.html import render_thinking_html
from pytest_layercheck.analysis.thinking.render import thinking_markdown, thinking_renderable
from pytest_layercheck.model.loading import LoadedModel


def run(loaded: LoadedModel, stage: Stage, **keywords: Any) -> ThinkingResult:
    with stage("thinking", "generating") as hook:
        return compare_thinking(loaded, progress=hook, **keywords)


def terminal(result: ThinkingResult, view: Mapping[str, Any]) -> RenderableType:
    """The tables (``by_domain``: per domain too), then ``show`` example generations per group."""
    parts = [thinking_renderable(result, fine=view["by_domain"])]
    for group in result.groups() if view["show"] else ():
        for pair in [p for p in result.items if p.group == group][: view["show"]]:
            parts.append(
                Text.from_markup(
                    f"[bold]{pair.item_id}[/] target {pair.target!r}: fast {pair.fast.answer!r} "
                    f"({'right' if pair.fast.correct else 'wrong'}), slow {pair.slow.answer!r} "
                    f"({'right' if pair.slow.correct else 'wrong'})"
                )
            )
            parts.append(Text.from_markup(f"  chain of thought: {pair.slow_text.strip()[:240]!r}"))
    return Group(*parts)


def to_json(result: ThinkingResult) -> dict[str, Any]:
    return result.to_json()


def markdown(result: ThinkingResult, view: Mapping[str, Any]) -> str:
    return thinking_markdown(result, fine=view["by_domain"])


def html(result: ThinkingResult, view: Mapping[str, Any]) -> str:
    return render_thinking_html(result)
