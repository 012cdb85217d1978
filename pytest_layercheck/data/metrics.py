"""What each per-item metric is: its range, and which paired test compares it.

A profile keeps every metric a protocol produces, item by item. Binary metrics (``acc``,
``acc_norm``, ``exact_match``) are compared with the exact McNemar / sign-flip test of
:mod:`.statistics`; continuous ones carry more information per item (a confident right answer and a
lucky one differ), and are compared with paired tests that suit their range:

* ``p_correct``: the probability of the gold choice normalised over the item's choices, in [0, 1]:
  the accuracy a model would have if it sampled its answer, in the same units as ``acc``. Bounded, so
  the sign-flip permutation test of the mean difference is valid and robust.
* ``margin``: log-likelihood of the gold choice minus the best other choice, in nats; heavy-tailed,
  so it is compared by ranks (the Wilcoxon signed-rank test) and its effect is the median change.
* ``loglikelihood``: the continuation target's log-likelihood (<= 0), compared by ranks as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

TestKind = Literal["exact", "sign-flip", "signed-rank"]


@dataclass(frozen=True)
class MetricKind:
    """How a metric's per-item values are validated and compared."""

    name: str
    #: Every value is 0 or 1.
    binary: bool
    low: float
    high: float
    #: exact: McNemar / sign-flip of 0/1 outcomes; sign-flip: of bounded continuous differences;
    #: signed-rank: Wilcoxon, for unbounded, heavy-tailed scores.
    test: TestKind
    #: What a cell's effect is: the mean per-item change, or the median (rank tests).
    effect: Literal["mean", "median"] = "mean"
    description: str = ""
    #: The largest difference float rounding makes between two runs of one model (other batch composition or
    #: thread count; measured up to 4e-6 for p_correct and 3e-5 nats for margins): within it, the same result.
    noise: float = 0.0

    def same(self, a: float, b: float) -> bool:
        """Whether two values of this metric are one result, up to float rounding."""
        return a == b or abs(a - b) <= self.noise

    def problem(self, value: float) -> str | None:
        """Why ``value`` cannot be an outcome of this metric, or None."""
        if self.binary and (isinstance(value, bool) or value not in (0, 1)):
            return "is not a 0/1 outcome"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return "is not a finite number"
        if not self.low <= value <= self.high:
            return f"is outside [{self.low:g}, {self.high:g}], the range of {self.name}"
        return None


_BINARY = ("acc", "acc_norm", "exact_match")
METRICS: dict[str, MetricKind] = {
    **{name: MetricKind(name, True, 0.0, 1.0, "exact", description="1 when the answer is right") for name in _BINARY},
    "p_correct": MetricKind(
        "p_correct",
        False,
        0.0,
        1.0,
        "sign-flip",
        description="probability of the gold choice, normalised over the choices",
        noise=1e-4,
    ),
    "margin": MetricKind(
        "margin",
        False,
        -math.inf,
        math.inf,
        "signed-rank",
        "median",
        "log-likelihood of the gold choice minus the best other choice (nats)",
        noise=1e-3,
    ),
    "loglikelihood": MetricKind(
        "loglikelihood",
        False,
        -math.inf,
        0.0,
        "signed-rank",
        "median",
        "log-likelihood of the continuation target (nats)",
        noise=1e-3,
    ),
}
#: Metrics a check, marker or CLI option can name.
METRIC_NAMES: tuple[str, ...] = tuple(METRICS)
#: For metrics no protocol here defines (a user-registered protocol's): any finite number, by ranks.
_OTHER = MetricKind("other", False, -math.inf, math.inf, "signed-rank", "median", "a user metric", noise=1e-3)


def metric_kind(name: str) -> MetricKind:
    """The kind of metric ``name``; an unknown metric is any finite number, compared by ranks."""
    return METRICS.get(name, _OTHER)


__all__ = ["METRICS", "METRIC_NAMES", "MetricKind", "TestKind", "metric_kind"]
