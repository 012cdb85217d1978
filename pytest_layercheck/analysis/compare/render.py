"""A model comparison (``layercheck compare``) for the terminal (rich) and for GitHub (markdown).

Three sections, in the order a reader asks the questions: which cells shifted (the usual profile
table, the base as the baseline), where the weights moved (one compact row per changed layer, runs of
unchanged layers folded: :mod:`..weight_delta.render`), and which reverted layers bring a lost capability
back (one table per dropped suite, then the verdict: :mod:`..localise.render`).
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from pytest_layercheck.analysis.compare.models import ModelComparison
from pytest_layercheck.analysis.localise.render import localisation_markdown, localisation_parts
from pytest_layercheck.analysis.weight_delta.render import weights_markdown, weights_parts
from pytest_layercheck.report.format import fingerprint_text, render_text
from pytest_layercheck.report.markdown import render_markdown
from pytest_layercheck.report.terminal import terminal_renderable


def header_text(result: ModelComparison) -> str:
    base, cand = result.base.model, result.candidate.model
    verdict = "passed" if result.passed else f"FAILED ({len(result.comparison.failures)} failing cell(s))"
    return (
        f"layercheck compare: {cand.get('name')} ({fingerprint_text(cand.get('fingerprint'))}) against base "
        f"{base.get('name')} ({fingerprint_text(base.get('fingerprint'))}): {verdict}"
    )


def _timing_text(result: ModelComparison) -> str:
    parts = [f"{name.replace('_', ' ')} {seconds:.1f} s" for name, seconds in result.seconds.items()]
    return "time: " + ", ".join(parts) if parts else ""


def compare_renderable(result: ModelComparison) -> RenderableType:
    """Header, the profile-shift table with its verdict, weight deltas, then localisation and verdicts."""
    parts: list[RenderableType] = [
        Text(header_text(result), style="bold green" if result.passed else "bold red"),
        terminal_renderable(result.candidate, result.comparison, baseline=result.base),
    ]
    if result.weights is not None:
        parts += [Text(""), *weights_parts(result.weights, result.candidate.bands)]
    if result.localisation is not None:
        parts += localisation_parts(result.localisation)
    timing = _timing_text(result)
    if timing:
        parts.append(Text(timing, style="dim"))
    return Group(*parts)


def render_compare_terminal(result: ModelComparison, *, width: int = 120, color: bool = False) -> str:
    """The comparison as text (ANSI colours only when ``color``)."""
    return render_text(compare_renderable(result), width, color)


def render_compare_markdown(result: ModelComparison) -> str:
    """GitHub-flavoured markdown: verdict heading, profile shift, weight deltas, localisation."""
    mark = "✅" if result.passed else "❌"
    lines = [f"## {mark} {header_text(result)}", "", render_markdown(result.candidate, result.comparison).rstrip()]
    if result.weights is not None:
        lines += weights_markdown(result.weights, result.candidate.bands)
    if result.localisation is not None:
        lines += localisation_markdown(result.localisation)
    timing = _timing_text(result)
    if timing:
        lines += ["", f"_{timing}_"]
    return "\n".join(lines) + "\n"
