"""Per-item scoring results. Every number carries its metric name (``acc`` vs ``acc_norm``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_layercheck.data.statistics import mean


@dataclass(frozen=True)
class ItemOutcome:
    """The outcome of one item under one protocol: metric name -> value (0/1 for accuracy-type)."""

    item_id: str
    scores: Mapping[str, float]
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProtocolResult:
    """All item outcomes of one suite under one protocol, with summary statistics."""

    suite: str
    suite_hash: str
    protocol: str
    outcomes: tuple[ItemOutcome, ...]

    @property
    def metrics(self) -> list[str]:
        return sorted(self.outcomes[0].scores) if self.outcomes else []

    def values(self, metric: str) -> list[float]:
        return [float(o.scores[metric]) for o in self.outcomes]

    def mean(self, metric: str) -> float:
        return mean(self.values(metric))

    def stderr(self, metric: str) -> float:
        return standard_error(self.values(metric))


def standard_error(values: Sequence[float]) -> float:
    """lm-eval's standard error of a mean: sample standard deviation / sqrt(n)."""
    n = len(values)
    if n < 2:
        return float("nan")
    mu = mean(values)
    var = sum((v - mu) ** 2 for v in values) / (n - 1)
    return math.sqrt(var / n)
