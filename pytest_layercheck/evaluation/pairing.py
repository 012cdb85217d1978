"""Pairing the cells of two profiles: which metrics of a suite are compared, and each cell's outcomes on
both sides as items × ablations matrices over the items both runs scored.

**Unit: the item.** The ``m`` ablations of one item are correlated, so the tests of
:mod:`pytest_layercheck.evaluation.drop_cells` and :mod:`pytest_layercheck.evaluation.shift_cells` count
an item once, never ``m`` times; items are paired by position.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_layercheck.data.metrics import metric_kind
from pytest_layercheck.data.profile_data import INTACT, DepthProfile


def wanted_metrics(
    metrics: Iterable[str] | Mapping[str, Iterable[str]] | None,
    suite: str,
    profile: DepthProfile,
    metric: str | None = None,
) -> list[str]:
    """The metrics of ``suite`` to compare: ``metrics`` (all, or per suite), else the suite's cell metric, or
    ``metric`` where the suite records it."""
    if metrics is None:
        own = profile.evaluation(suite).outcomes
        return [metric if metric is not None and metric in own else profile.suites[suite].cell_metric]
    if isinstance(metrics, Mapping):
        return list(metrics.get(suite, ()))
    return list(metrics)


def metric_problem(baseline: DepthProfile, current: DepthProfile, suite: str, metric: str) -> str | None:
    """Why ``metric`` of ``suite`` cannot be compared with a paired exact test ("" if it needs no
    mention), or None when it can."""
    present = [
        any(metric in ev.outcomes for (name, _, _), ev in profile.evaluations.items() if name == suite)
        for profile in (baseline, current)
    ]
    if not any(present):
        return ""  # the suite's protocol has no such metric: nothing to compare, nothing to report
    if not all(present):
        side = "the baseline" if not present[0] else "this run"
        return f"suite {suite!r}: metric {metric!r} is missing from {side}; not compared"
    kind = metric_kind(metric)
    for profile in (baseline, current):
        for (name, _, _), ev in profile.evaluations.items():
            values = ev.outcomes.get(metric, ()) if name == suite else ()
            if kind.binary and any(v not in (0.0, 1.0) for v in values):
                return f"suite {suite!r}: metric {metric!r} is not 0/1 per item in every evaluation; not compared"
            if any(not math.isfinite(v) for v in values):  # e.g. a metric logged as a list, read as NaN
                return f"suite {suite!r}: metric {metric!r} is not a finite number per item; not compared"
    return None


@dataclass(frozen=True)
class Paired:
    """One cell's outcomes on both sides: items × ablations 0/1 matrices over the paired items.

    ``identity``: the CellComparison fields that name the cell (suite ... ablations)."""

    identity: dict[str, Any]
    item_ids: tuple[str, ...]
    before: np.ndarray
    after: np.ndarray
    num_layers: int = 0  # the model's depth (shift cells place layers by it)


def paired_cells(
    baseline: DepthProfile, current: DepthProfile, suite: str, metric: str, warnings: list[str]
) -> list[Paired]:
    """The intact cell and every band cell both profiles hold, items paired by position."""
    info = current.suites[suite]
    groups: list[tuple[str, tuple[int, ...], list[str]]] = [(INTACT, (), [INTACT])]
    groups += [(band, tuple(layers), []) for band, layers in current.bands.items()]
    for band, _, keys in groups[1:]:
        old_keys = [ev.ablation for ev in baseline.band_ablations(suite, band)]
        new_keys = [ev.ablation for ev in current.band_ablations(suite, band)]
        if old_keys and new_keys and old_keys != new_keys:
            warnings.append(
                f"{suite}/{band} {metric}: the two profiles hold different ablations of the band "
                f"({len(old_keys)} vs {len(new_keys)}), so the cell is not compared"
            )
        elif old_keys and new_keys:
            keys.extend(new_keys)
    out = []
    for band, layers, keys in groups:
        found = [[outcomes(profile, suite, key, metric) for key in keys] for profile in (baseline, current)]
        sides = [[v for v in side if v is not None] for side in found]
        if not keys or any(len(side) < len(keys) for side in sides):  # a key without outcomes on either side
            continue
        lengths = {len(v) for side in sides for v in side}
        n = min(lengths)
        if len(lengths) > 1 and band != INTACT:
            warnings.append(
                f"{suite}/{band} {metric}: the runs scored different numbers of items under the "
                f"band's ablations ({sorted(lengths)}); the first {n} items are compared"
            )
        before, after = (np.array([v[:n] for v in side], dtype=float).T.reshape(n, len(keys)) for side in sides)
        identity = cell_identity(current, suite, metric, band, layers, keys)
        out.append(Paired(identity, tuple(info.item_ids[:n]), before, after))
    return out


def cell_identity(
    profile: DepthProfile, suite: str, metric: str, band: str, layers: tuple[int, ...], keys: Iterable[str]
) -> dict[str, Any]:
    """The CellComparison fields that name a cell of ``profile``'s ``suite``: a :attr:`Paired.identity`."""
    info = profile.suites[suite]
    return {
        "suite": suite,
        "capability": info.capability,
        "protocol": info.protocol,
        "metric": metric,
        "band": band,
        "layers": layers,
        "ablations": tuple(keys),
    }


def outcomes(profile: DepthProfile, suite: str, key: str, metric: str) -> tuple[float, ...] | None:
    """The per-item values of ``metric`` under the ablation ``key`` of ``suite``, or None when not evaluated."""
    ev = profile.evaluations.get((suite, profile.suites[suite].protocol, key))
    return None if ev is None else ev.outcomes.get(metric)
