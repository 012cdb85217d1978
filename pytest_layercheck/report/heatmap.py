"""Suites × layers heatmap of accuracy with each single layer removed (needs the ``plot`` extra)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_layercheck.core.atomic import atomic_write_bytes
from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.profile_data import DepthProfile
from pytest_layercheck.report.format import fmt_value

#: Above this many layers the per-cell numbers would be unreadable and are left out.
ANNOTATE_MAX_LAYERS = 32


def _matplotlib() -> tuple[Any, Any, Any]:
    """Figure and the Agg canvas, imported only when a heatmap is asked for.

    Uses the Agg canvas directly instead of pyplot, so no global backend is switched and no window
    can open.
    """
    try:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("matplotlib is needed for heatmaps", "pip install 'pytest-layercheck[plot]'") from None
    return Figure, FigureCanvasAgg, colormaps


def plot_layer_heatmap(profile: DepthProfile, path: Path | str, metrics: Mapping[str, str] | None = None) -> Path:
    """Write a PNG: one row per suite, one column per layer, band boundaries marked, intact value in the label.

    ``metrics`` maps suite -> metric (default: each suite's primary metric). Layers without a
    single-layer ablation (e.g. a profile in bands mode) are left blank; a profile with none at all
    is a ConfigError, since the plot would be empty.
    """
    Figure, FigureCanvasAgg, colormaps = _matplotlib()
    suites = list(profile.suites)
    num_layers = int(
        profile.model.get("num_layers")
        or 1 + max((layer for layers in profile.bands.values() for layer in layers), default=0)
    )
    grid: list[list[float]] = []
    labels: list[str] = []
    for suite in suites:
        metric = (metrics or {}).get(suite) or profile.suites[suite].cell_metric
        values = profile.per_layer(suite, metric)
        grid.append([values.get(layer, math.nan) for layer in range(num_layers)])
        intact = profile.evaluation(suite).mean(metric)
        labels.append(f"{suite} ({metric})\nintact {fmt_value(intact)}")
    if all(math.isnan(v) for row in grid for v in row):
        raise ConfigError(
            "the profile has no single-layer ablations, so there is no per-layer heatmap",
            "record the profile in per-layer mode ('layers')",
        )

    fig = Figure(figsize=(max(6.0, 0.35 * num_layers + 3), 1.0 + 0.7 * len(suites)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")  # blank = layer not ablated on its own
    image = ax.imshow(grid, aspect="auto", vmin=0.0, vmax=1.0, cmap=cmap, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="accuracy with the layer removed")
    ax.set_yticks(range(len(suites)), labels)
    ax.set_xticks(range(num_layers))
    ax.set_xlabel("removed layer")
    if num_layers <= ANNOTATE_MAX_LAYERS:
        for row, row_values in enumerate(grid):
            for col, value in enumerate(row_values):
                if not math.isnan(value):
                    ax.text(
                        col,
                        row,
                        f"{value:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if value > 0.6 else "white",
                    )
    _mark_bands(ax, profile)
    ax.set_title(f"{profile.model.get('name', '?')}: depth sensitivity", loc="left", pad=16)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _mark_bands(ax: Any, profile: DepthProfile) -> None:
    """A dashed line between bands and each band's name above its layers."""
    spans = sorted((min(layers), max(layers), band) for band, layers in profile.bands.items() if layers)
    for index, (first, last, band) in enumerate(spans):
        if index:
            ax.axvline(first - 0.5, color="white", linestyle="--", linewidth=1.5)
        ax.text(
            (first + last) / 2, 1.01, band, ha="center", va="bottom", fontsize=8, transform=ax.get_xaxis_transform()
        )
