"""Number and label formatting shared by every renderer, so a cell reads the same everywhere.

Every number is shown next to its metric name (``acc`` vs ``acc_norm`` confusion is a known pitfall),
values use three decimals, and the sentences describing a changed cell are built here once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pytest_layercheck.data.bands import format_layers
from pytest_layercheck.data.profile_data import INTACT, DepthProfile
from pytest_layercheck.evaluation.comparison_result import CellComparison, ProfileComparison
from pytest_layercheck.evaluation.describe import (  # noqa: F401 - the renderers' shared vocabulary
    describe_change,
    describe_detail,
    fmt_delta,
    fmt_p,
    fmt_value,
    unit_name,
)

#: Marker next to a compared cell; "✗" is reserved for cells that fail the run.
FAIL_MARK = "✗"
STATUS_MARKS = {"regressed": FAIL_MARK, "moved": FAIL_MARK, "changed": "~", "improved": "↑", "ok": ""}
LEGEND = (
    f"{FAIL_MARK} fails (a significant drop of at least half the tolerance) · ~ beyond tolerance, "
    "not significant · ↑ improved"
)


def band_order(profile: DepthProfile) -> list[str]:
    """Columns of every table: intact first, then the bands in the profile's (shallow-to-deep) order."""
    return [INTACT, *profile.bands]


def band_header(profile: DepthProfile, band: str) -> str:
    return band if band == INTACT else f"{band} ({format_layers(profile.bands[band], prefix='L')})"


def marker(cell: CellComparison) -> str:
    return FAIL_MARK if cell.failed else STATUS_MARKS[cell.status]


def cell_text(value: float, compared: CellComparison | None = None) -> str:
    """``0.280`` alone, or ``0.280 (-0.150 ✗)`` against a baseline."""
    if compared is None:
        return fmt_value(value)
    mark = marker(compared)
    return f"{fmt_value(value)} ({fmt_delta(compared.delta)}{' ' + mark if mark else ''})"


def status_line(comparison: ProfileComparison) -> str:
    """``FAILED: 1 regressed, 2 changed (not significant), 9 ok`` or ``passed: 12 ok``."""
    counts = comparison.counts()
    labels = {
        "regressed": "regressed",
        "moved": "moved along depth",
        "improved": "improved",
        "changed": "changed (not significant)",
        "ok": "ok",
    }
    parts = [f"{n} {labels[status]}" for status, n in counts.items() if n]
    verdict = "passed" if comparison.passed else "FAILED"
    return f"{verdict}: {', '.join(parts) or 'no cells compared'}"


def fingerprint_text(fingerprint: object) -> str:
    return str(fingerprint or "?")[:12]


def metrics_text(profile: DepthProfile, metrics: Sequence[str] | None = None) -> str:
    """``acc (knowledge, reasoning), exact_match (retrieval)``."""
    by_metric: dict[str, list[str]] = {}
    for name, info in profile.suites.items():
        for metric in metrics or [info.cell_metric]:
            by_metric.setdefault(metric, []).append(name)
    return ", ".join(f"{metric} ({', '.join(names)})" for metric, names in by_metric.items())


def title_text(
    profile: DepthProfile, comparison: ProfileComparison | None = None, metrics: Sequence[str] | None = None
) -> str:
    """Model, fingerprint (and the baseline's), metric names and mode: what a reader needs to trust the numbers."""
    parts = [
        f"layercheck: {profile.model.get('name', '?')}",
        f"fingerprint {fingerprint_text(profile.model.get('fingerprint'))}",
    ]
    if comparison is not None:
        parts[-1] += f" vs baseline {fingerprint_text(comparison.baseline_model.get('fingerprint'))}"
    parts.append(f"metric: {metrics_text(profile, metrics)}")
    parts.append(f"mode {profile.settings.get('mode', '?')}")
    return " · ".join(parts)


def criteria_text(comparison: ProfileComparison) -> str:
    return comparison.criteria()


def render_text(renderable: Any, width: int = 120, color: bool = False) -> str:
    """A rich renderable as text for tests, logs, files and pytest's terminal summary; ANSI colours
    only when ``color``."""
    import io

    from rich.console import Console

    console = Console(
        record=True,
        width=width,
        file=io.StringIO(),
        force_terminal=color,
        no_color=not color,
        color_system="standard" if color else None,
        highlight=False,
    )
    console.print(renderable)
    return console.export_text(styles=color)


def finite(value: Any) -> Any:
    """NaN/inf become null and tuples lists: strict JSON readers (jq, JavaScript) reject Python's ``NaN``."""

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_text(payload: Any) -> str:
    """Indented strict JSON (non-finite numbers as null), newline-terminated."""
    import json

    return json.dumps(finite(payload), indent=2, allow_nan=False) + "\n"
