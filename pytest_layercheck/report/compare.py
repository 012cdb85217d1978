"""A model comparison (``layercheck compare``) for the terminal (rich) and for GitHub (markdown).

Three sections, in the order a reader asks the questions: which cells shifted (the usual profile
table, the base as the baseline), where the weights moved (one compact row per changed layer, runs of
unchanged layers folded), and which reverted layers bring a lost capability back (one table per
dropped suite, then the verdict).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.text import Text
from tabulate import tabulate

from pytest_layercheck.analysis.compare import ModelComparison
from pytest_layercheck.analysis.localise import SuiteLocalisation
from pytest_layercheck.analysis.weight_delta import ModuleDelta, WeightDelta
from pytest_layercheck.report.format import fingerprint_text, fmt_p, render_text
from pytest_layercheck.report.markdown import render_markdown
from pytest_layercheck.report.terminal import Fitting, fitted_rows, records, rows_table, terminal_renderable

BAR_WIDTH = 10
WINNER = "◀"


def fmt_relative(value: float) -> str:
    """‖ΔW‖/‖W‖ readable across eight orders of magnitude: ``0``, ``3.1e-06``, ``0.0412``."""
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return "inf"
    return f"{value:.4f}" if value >= 1e-3 else f"{value:.1e}"


def _bar(value: float, peak: float) -> str:
    if peak <= 0 or value <= 0 or not math.isfinite(value):
        return ""
    return "█" * max(1, round(BAR_WIDTH * min(value, peak) / peak))


def _pooled_relative(parts: Sequence[ModuleDelta]) -> float:
    delta = math.sqrt(sum(p.delta_norm**2 for p in parts))
    base = math.sqrt(sum(p.base_norm**2 for p in parts))
    return delta / base if base > 0 else (0.0 if delta == 0 else math.inf)


@dataclass(frozen=True)
class _Rows:
    headers: list[str]
    rows: list[list[str]]

    def without(self, columns: Sequence[int]) -> _Rows:
        keep = [i for i in range(len(self.headers)) if i not in set(columns)]
        return _Rows([self.headers[i] for i in keep], [[row[i] for i in keep] for row in self.rows])


def _groups_of(weights: WeightDelta) -> list[str]:
    """Top-level parts of a block (``self_attn``, ``mlp``, ``input_layernorm``…), in block order."""
    return list(dict.fromkeys(m.split(".", 1)[0] for m in weights.module_names))


def part_header(part: str) -> str:
    """Shorter column names: ``post_attention_layernorm`` -> ``post_attn_ln``, ``self_attn`` stays."""
    return part.replace("attention", "attn").replace("layernorm", "ln")


def weight_rows(weights: WeightDelta, bands: dict[str, tuple[int, ...]] | None = None) -> _Rows:
    """One row per moved layer (runs of unmoved layers folded into one), per-part relative change."""
    parts = _groups_of(weights)
    headers = ["layers", *(["band"] if bands else []), "‖ΔW‖/‖W‖", "", *map(part_header, parts), "top module"]
    band_of = {i: name for name, layers in (bands or {}).items() for i in layers}
    peak = max((d.relative for d in weights.layers if math.isfinite(d.relative)), default=0.0)
    rows: list[list[str]] = []
    still: list[int] = []

    def flush() -> None:
        if still:
            label = f"L{still[0]}" if len(still) == 1 else f"L{still[0]}-{still[-1]}"
            names = sorted({band_of.get(i, "") for i in still} - {""}, key=list(bands or {}).index)
            rows.append([label, *(["/".join(names)] if bands else []), "0", "", *("0" for _ in parts), "(unchanged)"])
            still.clear()

    for layer in weights.layers:
        if layer.delta_norm == 0:
            still.append(layer.layer)
            continue
        flush()
        modules = [m for m in weights.modules if m.layer == layer.layer]
        top = max(modules, key=lambda m: (m.relative, m.module))
        by_part = [
            fmt_relative(_pooled_relative([m for m in modules if m.module.split(".", 1)[0] == part])) for part in parts
        ]
        rows.append(
            [
                f"L{layer.layer}",
                *([band_of.get(layer.layer, "")] if bands else []),
                fmt_relative(layer.relative),
                _bar(layer.relative, peak),
                *by_part,
                f"{part_header(top.short_name)} {fmt_relative(top.relative)}",
            ]
        )
    flush()
    return _Rows(headers, rows)


def outside_text(weights: WeightDelta) -> str:
    """``outside the layers: model.embed_tokens 0, model.norm 0.0031``."""
    if not weights.outside:
        return "outside the layers: (no parameters)"
    return "outside the layers: " + ", ".join(f"{m.module} {fmt_relative(m.relative)}" for m in weights.outside)


def most_changed_text(weights: WeightDelta) -> str:
    top = weights.most_changed(3)
    if not top:
        return "no weight differs between the base and the candidate"
    return "most changed: " + ", ".join(f"L{d.layer} ({fmt_relative(d.relative)})" for d in top)


def localisation_rows(entry: SuiteLocalisation) -> _Rows:
    """One row per reverted group: accuracy after reverting, share of the loss recovered, paired test."""
    winner = entry.restored_by
    headers = ["reverted to base", entry.metric, "recovered", "fixed / broken", "p (vs candidate)", ""]
    rows = [["nothing (the candidate)", f"{entry.candidate:.3f}", "0%", "", "", ""]]
    for r in entry.restorations:
        recovered = "n/a" if r.recovered is None else f"{100 * r.recovered:.0f}%"
        rows.append(
            [
                r.group.label,
                f"{r.accuracy:.3f}",
                recovered,
                f"{r.fixed} / {r.broken}",
                fmt_p(r.p_value),
                WINNER if winner is not None and r is winner else "",
            ]
        )
    rows.append(["everything (the base)", f"{entry.base:.3f}", "100%", "", "", ""])
    return _Rows(headers, rows)


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


# --------------------------------------------------------------------------------------------------
# rich
# --------------------------------------------------------------------------------------------------


def weight_table(weights: WeightDelta, bands: dict[str, tuple[int, ...]] | None = None) -> Fitting:
    """The weight-change table, boxed where it fits; on narrow consoles lighter, then without the
    per-part columns (the top module still names its part), then without the bar."""
    rows = weight_rows(weights, bands)
    title = "weight change per layer (relative Frobenius norm)"
    lead = 2 if bands else 1
    narrow = rows.without(range(lead + 2, len(rows.headers) - 1))
    layouts = [(rows, False), (rows, True), (narrow, True), (narrow.without([lead + 1]), True)]
    return Fitting(
        *(rows_table(r.headers, r.rows, title, lead=lead, light=light) for r, light in layouts),
        records(narrow.headers, narrow.rows, title),
    )


def compare_renderable(result: ModelComparison) -> RenderableType:
    """Header, the profile-shift table with its verdict, weight deltas, then localisation and verdicts."""
    parts: list[RenderableType] = [
        Text(header_text(result), style="bold green" if result.passed else "bold red"),
        terminal_renderable(result.candidate, result.comparison, baseline=result.base),
    ]
    if result.weights is not None:
        parts += [Text(""), weight_table(result.weights, result.candidate.bands)]
        parts.append(Text(f"{most_changed_text(result.weights)} · {outside_text(result.weights)}", style="dim"))
    if result.localisation is not None:
        for entry in result.localisation.suites:
            if entry.localised:
                rows = localisation_rows(entry)
                parts.append(Text(""))
                parts.append(
                    fitted_rows(rows.headers, rows.rows, f"delta replacement: {entry.suite} ({entry.items} items)")
                )
        for entry in result.localisation.suites:
            style = "bold" if entry.restored_by is not None else "yellow"
            parts.append(Text(f"⇒ {entry.verdict}", style=style))
    timing = _timing_text(result)
    if timing:
        parts.append(Text(timing, style="dim"))
    return Group(*parts)


def render_compare_terminal(result: ModelComparison, *, width: int = 120, color: bool = False) -> str:
    """The comparison as text (ANSI colours only when ``color``)."""
    return render_text(compare_renderable(result), width, color)


# --------------------------------------------------------------------------------------------------
# markdown
# --------------------------------------------------------------------------------------------------


def _md(rows: _Rows) -> str:
    return tabulate(rows.rows, headers=rows.headers, tablefmt="github", disable_numparse=True)


def render_compare_markdown(result: ModelComparison) -> str:
    """GitHub-flavoured markdown: verdict heading, profile shift, weight deltas, localisation."""
    mark = "✅" if result.passed else "❌"
    lines = [f"## {mark} {header_text(result)}", "", render_markdown(result.candidate, result.comparison).rstrip()]
    if result.weights is not None:
        lines += [
            "",
            "#### Weight change per layer (‖ΔW‖_F / ‖W‖_F)",
            "",
            _md(weight_rows(result.weights, result.candidate.bands)),
            "",
            f"_{most_changed_text(result.weights)} · {outside_text(result.weights)}_",
        ]
    if result.localisation is not None:
        localised = [e for e in result.localisation.suites if e.localised]
        if localised:
            lines += ["", "#### Delta replacement: reverting layers to the base"]
        for entry in localised:
            lines += ["", f"**{entry.suite}** ({entry.items} items)", "", _md(localisation_rows(entry))]
        lines += [
            "",
            *(f"- **{e.verdict}**" if e.restored_by else f"- {e.verdict}" for e in result.localisation.suites),
        ]
    timing = _timing_text(result)
    if timing:
        lines += ["", f"_{timing}_"]
    return "\n".join(lines) + "\n"


__all__ = [
    "compare_renderable",
    "fmt_relative",
    "localisation_rows",
    "render_compare_markdown",
    "render_compare_terminal",
    "weight_rows",
]
