"""Weight deltas in the terminal and as markdown: one compact row per moved layer (runs of unmoved layers
folded), the relative change per part of the block, and the most-changed layers."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.text import Text

from pytest_layercheck.analysis.weight_delta.deltas import ModuleDelta, WeightDelta, relative_change
from pytest_layercheck.report.analyses import Rows, markdown_rows, without
from pytest_layercheck.report.terminal import Fitting, records, rows_table

BAR_WIDTH = 10


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
    return relative_change(delta, base)


def _groups_of(weights: WeightDelta) -> list[str]:
    """Top-level parts of a block (``self_attn``, ``mlp``, ``input_layernorm``…), in block order."""
    return list(dict.fromkeys(m.split(".", 1)[0] for m in weights.module_names))


def part_header(part: str) -> str:
    """Shorter column names: ``post_attention_layernorm`` -> ``post_attn_ln``, ``self_attn`` stays."""
    return part.replace("attention", "attn").replace("layernorm", "ln")


def weight_rows(weights: WeightDelta, bands: dict[str, tuple[int, ...]] | None = None) -> Rows:
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
    return headers, rows


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


def weight_table(weights: WeightDelta, bands: dict[str, tuple[int, ...]] | None = None) -> Fitting:
    """The weight-change table, boxed where it fits; on narrow consoles lighter, then without the
    per-part columns (the top module still names its part), then without the bar."""
    rows = weight_rows(weights, bands)
    title = "weight change per layer (relative Frobenius norm)"
    lead = 2 if bands else 1
    narrow = without(rows, range(lead + 2, len(rows[0]) - 1))
    layouts = [(rows, False), (rows, True), (narrow, True), (without(narrow, [lead + 1]), True)]
    return Fitting(
        *(rows_table(*r, title, lead=lead, light=light) for r, light in layouts),
        records(*narrow, title),
    )


def weights_parts(weights: WeightDelta, bands: dict[str, tuple[int, ...]] | None = None) -> list[RenderableType]:
    """The weight-change table, then the most-changed layers and what moved outside the layers."""
    return [weight_table(weights, bands), Text(f"{most_changed_text(weights)} · {outside_text(weights)}", style="dim")]


def weights_renderable(weights: WeightDelta) -> RenderableType:
    return Group(*weights_parts(weights))


def weights_markdown(weights: WeightDelta, bands: dict[str, tuple[int, ...]] | None = None) -> list[str]:
    """Markdown lines: a heading, the weight-change table and the most-changed layers."""
    return [
        "",
        "#### Weight change per layer (‖ΔW‖_F / ‖W‖_F)",
        "",
        markdown_rows(weight_rows(weights, bands)),
        "",
        f"_{most_changed_text(weights)} · {outside_text(weights)}_",
    ]
