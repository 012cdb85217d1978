"""Item-level paired tests, multiplicity correction, confidence intervals and power (numpy + stdlib).

The unit of every test is an *item*. A cell compares, per item ``i``, the share of the cell's ``m``
evaluations the item was right in, before (``a_i``) and after (``a'_i``); ``d_i = a'_i - a_i`` is a
multiple of ``1/m``, so ``t_i = m·d_i`` is an integer in ``[-m, m]``.

*Test.* Under "no change", each item's difference is as likely to point up as down: the exact
paired sign-flip permutation test. Its null distribution is that of ``Σ s_i·|t_i|`` with independent
fair signs ``s_i``, computed exactly by convolving integer sums (``sign_flip_test``). For an intact
cell (``m = 1``, ``t_i ∈ {-1, 0, 1}``) this *is* the exact McNemar test: ``b`` items went 1→0,
``c`` went 0→1, and the null is ``Bin(b + c, 1/2)``.

*Interval.* ``mean_difference_ci``: an Agresti–Min adjusted Wald interval for the mean of the
``d_i``. Agresti & Min (2005) add 1/2 to each cell of the paired 2×2 table; here that is two pseudo
items (weight 1/2 at ``d = +1`` and at ``d = -1``, weight 1 at ``d = 0``), which reduces to their
interval for intact cells and applies unchanged to the averaged outcomes of band cells.

*Multiplicity.* ``adjust_p_values``: Holm's step-down (default), Bonferroni, or none; each controls
the family-wise error over every hypothesis given to it, under any dependence between them.

*Power.* ``detection_power`` and ``detectable_drop`` under this alternative (``ALTERNATIVE``):

- **harm**: each item independently, with probability ``q``, loses all its correct outcomes in the
  cell (``d_i = -a_i``; in a band, the loss is perfectly correlated across the band's ablations,
  which is the hardest case for an item-level test). The expected drop is ``q·ā``.
- **background**: every other item, independently, is an unstable item with symmetric flips: it goes
  all wrong with probability ``f/(2ā)`` or all right with probability ``f/(2(1-ā))``, so the
  background moves nothing on average and changes a share ``f`` of the items (``f`` =
  ``flip_rate``; intact cells: the expected discordant share of items, ``(b + c)/n``).

Intact cells get exact power (the exact McNemar rejection region summed over both binomials); band
cells a normal approximation of the sign-flip test (mean, null variance and alternative variance of
``Σ t_i``), which the simulation tests check against the exact test.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # numpy loads in the functions that compute: `layercheck --help` and pytest's option
    # parsing read this module's constants and must not need numpy's compiled core
    import numpy as np
    import numpy.typing as npt

    #: Per-item values: a sequence of floats or a float array.
    ItemValues = Sequence[float] | npt.NDArray[np.floating[Any]]

Correction = Literal["holm", "bonferroni", "none"]
CORRECTIONS: tuple[str, ...] = ("holm", "bonferroni", "none")
DEFAULT_CORRECTION: Correction = "holm"
#: Power at which ``detectable_drop`` is quoted.
DEFAULT_POWER = 0.8
#: Background share of items that flip by chance (symmetrically) between two runs of a benign change:
#: what the detectable drop assumes. A float32 vs bfloat16 run of the default model, or a gentle
#: fine-tune, moves one or two items in a hundred.
DEFAULT_FLIP_RATE = 0.02
#: Two-sided level of the per-cell confidence interval (not corrected for multiplicity).
CI_LEVEL = 0.95

ALTERNATIVE = (
    "harm: each item loses all its correct outcomes in the cell with probability q (correlated across a "
    "band's ablations); background: other items flip symmetrically, a share flip_rate of them"
)


# --------------------------------------------------------------------------- exact tests
def exact_mcnemar(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of ``b`` vs ``c`` discordant pairs at p=1/2.

    Exact integer arithmetic, so it is correct for small counts (where the chi-square version is not)
    and does not overflow for large ones.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return min(1.0, 2 * _binomial_half_lower_tail(b + c, min(b, c)))


def _binomial_half_lower_tail(n: int, k: int) -> float:
    """``P(X <= k)`` for ``X ~ Bin(n, 1/2)``, with exact integers."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    term, tail = 1, 1  # C(n, 0)
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return tail / 2**n


@dataclass(frozen=True)
class PairedTest:
    """An exact paired test of ``steps`` (the ``t_i``): one-sided p-values in both directions and two-sided.

    ``p_less`` tests "the cell dropped" (small when the sum is very negative), ``p_greater`` "it rose".
    """

    test: str  # "McNemar" (every |t_i| <= 1) or "sign-flip"
    items: int
    total: int  # Σ t_i
    p_less: float
    p_greater: float

    @property
    def p_two_sided(self) -> float:
        return min(1.0, 2 * min(self.p_less, self.p_greater))


def sign_flip_test(steps: Sequence[int]) -> PairedTest:
    """Exact paired sign-flip permutation test of integer per-item differences ``t_i``.

    The null distribution of ``T = Σ s_i·|t_i|`` (fair independent signs) is built by convolving one
    magnitude group at a time over integer sums: exact, and fast for hundreds of items. When every
    ``|t_i| <= 1`` this is the exact McNemar test, computed with exact integers.
    """
    values = [int(t) for t in steps]
    if any(t != s for t, s in zip(values, steps, strict=True)):
        raise ValueError("sign_flip_test needs integer differences (multiples of 1/m, scaled by m)")
    total = sum(values)
    magnitudes = Counter(abs(t) for t in values if t)
    if set(magnitudes) <= {1}:
        worse, better = values.count(-1), values.count(1)
        test = "McNemar"
        p_less = _binomial_half_lower_tail(worse + better, better)
        p_greater = _binomial_half_lower_tail(worse + better, worse)
    else:
        test = "sign-flip"
        pmf, offset = sign_flip_null(magnitudes)
        index = total + offset
        p_less = float(min(1.0, pmf[: index + 1].sum()))
        p_greater = float(min(1.0, pmf[index:].sum()))
    return PairedTest(test=test, items=len(values), total=total, p_less=p_less, p_greater=p_greater)


def sign_flip_null(magnitudes: Counter[int] | dict[int, int]) -> tuple[np.ndarray, int]:
    """Null pmf of ``Σ s_i·a_i`` over the integer sums ``-A..A``; returns ``(pmf, A)`` (index = sum + A).

    ``magnitudes`` maps a magnitude ``a > 0`` to how many items have it. A group of ``c`` items of
    magnitude ``a`` contributes ``a·(2j - c)`` with probability ``C(c, j)/2^c``.
    """
    import numpy as np

    pmf = np.ones(1)
    for a, count in sorted(magnitudes.items()):
        weights = binomial_pmf(count, 0.5)
        out = np.zeros(len(pmf) + 2 * a * count)
        for j, w in enumerate(weights):
            if w:
                out[2 * a * j : 2 * a * j + len(pmf)] += w * pmf
        pmf = out
    return pmf, (len(pmf) - 1) // 2


def binomial_pmf(n: int, p: float) -> np.ndarray:
    """``P(X = k)`` for ``k = 0..n``, ``X ~ Bin(n, p)``, through log-factorials (no overflow)."""
    import numpy as np

    k = np.arange(n + 1)
    if p <= 0 or p >= 1:
        out = np.zeros(n + 1)
        out[0 if p <= 0 else n] = 1.0
        return out
    log_fact = _log_factorials(n)
    logs = log_fact[n] - log_fact[k] - log_fact[n - k] + k * math.log(p) + (n - k) * math.log1p(-p)
    return np.exp(logs)


@lru_cache(maxsize=64)
def _log_factorials(n: int) -> np.ndarray:
    import numpy as np

    table = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=float)))])
    table.flags.writeable = False  # shared by the cache
    return table


# --------------------------------------------------------------------------- differences and interval
def item_steps(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``t_i = Σ_j (after_ij - before_ij)`` for 0/1 outcome matrices (items × evaluations)."""
    import numpy as np

    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if before.shape != after.shape:
        raise ValueError(f"outcome matrices differ in shape: {before.shape} vs {after.shape}")
    return np.rint(after.sum(axis=1) - before.sum(axis=1)).astype(int)


def mean_difference_ci(differences: ItemValues, level: float = CI_LEVEL) -> tuple[float, float]:
    """Agresti–Min adjusted Wald interval for the mean per-item difference ``d_i`` in ``[-1, 1]``.

    Two pseudo items are added (weight 1/2 at +1 and at -1, weight 1 at 0): for intact cells this is
    Agresti & Min's (2005) interval for the difference of paired proportions (1/2 added to each cell
    of the 2×2 table), which keeps its coverage when no or few items changed.
    """
    import numpy as np

    d = np.asarray(differences, dtype=float)
    n = len(d) + 2
    mean = d.sum() / n
    variance = max(0.0, (float((d * d).sum()) + 1.0) / n - mean * mean)
    half = NormalDist().inv_cdf(0.5 + level / 2) * math.sqrt(variance / n)
    return max(-1.0, mean - half), min(1.0, mean + half)


# --------------------------------------------------------------------------- multiplicity
def check_correction(correction: str) -> Correction:
    from pytest_layercheck.core.errors import ConfigError

    if correction not in CORRECTIONS:
        raise ConfigError(
            f"unknown multiplicity correction {correction!r}",
            f"use one of {', '.join(CORRECTIONS)} (holm is the default)",
        )
    return correction  # type: ignore[return-value]


def adjust_p_values(p_values: Sequence[float], correction: str = DEFAULT_CORRECTION) -> list[float]:
    """Adjusted p-values: reject hypothesis ``i`` at family-wise level α when ``adjusted[i] <= α``.

    Holm: sort ascending, ``max_{j <= i} min(1, (K - j)·p_(j))``; Bonferroni: ``min(1, K·p)``; none: ``p``.
    """
    method = check_correction(correction)
    k = len(p_values)
    if method == "none":
        return [float(p) for p in p_values]
    if method == "bonferroni":
        return [min(1.0, k * float(p)) for p in p_values]
    order = sorted(range(k), key=lambda i: p_values[i])
    adjusted = [0.0] * k
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


def per_test_alpha(alpha: float, family: int, correction: str = DEFAULT_CORRECTION) -> float:
    """The raw p a hypothesis must reach to be rejected when it is the only real effect in the family.

    Holm's first step and Bonferroni: ``α/K``; none: ``α``. Power is quoted at this level.
    """
    return alpha if check_correction(correction) == "none" else alpha / max(1, family)


# --------------------------------------------------------------------------- power
def detection_power(
    item_means: ItemValues, ablations: int, drop: float, alpha: float, flip_rate: float = DEFAULT_FLIP_RATE
) -> float:
    """Power of the one-sided item-level test at level ``alpha`` against a true mean ``drop``.

    ``item_means`` are the baseline's per-item shares ``a_i`` (0/1 for intact cells), ``ablations`` is
    ``m``. The alternative is the module's ``ALTERNATIVE``; ``drop`` above ``ā`` is impossible (0 power).
    """
    import numpy as np

    a = np.asarray(item_means, dtype=float)
    mean = float(a.mean()) if len(a) else 0.0
    if mean <= 0 or drop > mean + 1e-12:
        return 0.0
    q = min(1.0, max(0.0, drop / mean))
    down, up = _background_rates(mean, flip_rate)
    if ablations == 1 and np.all((a == 0) | (a == 1)):
        return _mcnemar_power(int(a.sum()), len(a) - int(a.sum()), q, down, up, alpha)
    return _sign_flip_power(np.rint(a * ablations).astype(int), ablations, q, down, up, alpha)


def _background_rates(mean: float, flip_rate: float) -> tuple[float, float]:
    """Per-item probabilities of a background move all-wrong / all-right (zero mean, share ``flip_rate``)."""
    if not 0 <= flip_rate <= 1:
        raise ValueError(f"flip_rate must be in [0, 1], got {flip_rate!r}")
    down = flip_rate / (2 * mean) if mean > 0 else 0.0
    up = flip_rate / (2 * (1 - mean)) if mean < 1 else 0.0
    return min(1.0, down), min(1.0, up)


def _mcnemar_power(right: int, wrong: int, q: float, down: float, up: float, alpha: float) -> float:
    """Exact: ``b ~ Bin(right, q + (1-q)·down)``, ``c ~ Bin(wrong, (1-q)·up)``, rejection region of the
    one-sided exact McNemar test at ``alpha``."""
    import numpy as np

    need = _mcnemar_critical(right, wrong, alpha)  # need[c]: smallest b rejecting, right + 1 if none
    pb = binomial_pmf(right, min(1.0, q + (1 - q) * down))
    pc = binomial_pmf(wrong, (1 - q) * up)
    survival = np.concatenate([np.cumsum(pb[::-1])[::-1], [0.0]])  # survival[k] = P(b >= k)
    return float(min(1.0, (pc * survival[need]).sum()))


@lru_cache(maxsize=256)
def _mcnemar_critical(right: int, wrong: int, alpha: float) -> np.ndarray:
    import numpy as np

    need = np.full(wrong + 1, right + 1)
    b = 0
    for c in range(wrong + 1):  # the smallest rejecting b grows with c
        while b <= right and _binomial_half_lower_tail(b + c, c) > alpha:
            b += 1
        if b > right:
            break
        need[c] = b
    return need


def _sign_flip_power(k: np.ndarray, m: int, q: float, down: float, up: float, alpha: float) -> float:
    """Power of the one-sided sign-flip test of the ``t_i`` under the alternative.

    Without background flips every changed item went down, so ``T`` is the smallest sum the null
    allows and ``p = 2^-N`` for ``N`` changed items: exact, ``N ~ Bin(items with k_i > 0, q)``.
    Otherwise a normal approximation: reject when ``T <= -z·sqrt(E[Σ t_i²])``, with ``T``'s mean and
    variance under the alternative. It errs on the safe side (the simulation tests check it against
    the exact test): the power it reports is never above the true one by more than simulation error.
    """
    if down == 0 and up == 0:
        needed = math.ceil(math.log2(1 / alpha) - 1e-12)
        at_risk = int((k > 0).sum())
        if needed > at_risk:
            return 0.0
        return float(binomial_pmf(at_risk, q)[needed:].sum())
    p_down = q + (1 - q) * down
    p_up = (1 - q) * up
    lo, hi = -k.astype(float), (m - k).astype(float)
    first = p_down * lo + p_up * hi
    second = p_down * lo**2 + p_up * hi**2
    mu = float(first.sum())
    null_sd = math.sqrt(float(second.sum()))
    alt_sd = math.sqrt(max(0.0, float((second - first**2).sum())))
    margin = -mu - NormalDist().inv_cdf(1 - alpha) * null_sd
    if alt_sd == 0:
        return 1.0 if margin >= 0 and null_sd > 0 else 0.0
    return NormalDist().cdf(margin / alt_sd)


def detectable_drop(
    item_means: ItemValues,
    ablations: int,
    alpha: float,
    power: float = DEFAULT_POWER,
    flip_rate: float = DEFAULT_FLIP_RATE,
) -> float:
    """The smallest true drop the one-sided test at ``alpha`` detects with ``power``; ``inf`` if none can
    be (the whole baseline accuracy ``ā`` lost is the largest drop there is)."""
    import numpy as np

    a = np.asarray(item_means, dtype=float)
    mean = float(a.mean()) if len(a) else 0.0
    if mean <= 0 or detection_power(a, ablations, mean, alpha, flip_rate) < power:
        return math.inf
    low, high = 0.0, mean
    while high - low > 1e-4:
        mid = (low + high) / 2
        if detection_power(a, ablations, mid, alpha, flip_rate) >= power:
            high = mid
        else:
            low = mid
    return high


# --------------------------------------------------------------------------- continuous scores
#: Per-item score differences are tested on a grid of this many steps per unit: a difference below
#: half a step (float noise) counts as no change, and the sign-flip null stays exact on integers.
SCORE_GRID = 400
#: The power model's assumption for continuous scores: a candidate's per-item changes spread as if its
#: scores correlated this much with the baseline's (``score_spread``). Fine-tunes of the default model that
#: cost a cell 0.01-0.09 of p_correct showed 0.85-0.99 (docs/statistics.md); the lowest is assumed. An
#: assumption of the power model only, never of the test.
DEFAULT_SCORE_CORRELATION = 0.85
SCORE_ALTERNATIVE = (
    "shift: per-item scores fall by the drop on average, with per-item differences of standard deviation "
    "max(observed, sqrt(2(1-rho)) x the baseline's across-item sd), rho = DEFAULT_SCORE_CORRELATION"
)


def score_sign_flip_test(differences: ItemValues, grid: int = SCORE_GRID) -> PairedTest:
    """Exact paired sign-flip test of continuous per-item differences in ``[-1, 1]``, on a ``1/grid`` lattice.

    Rounding ``|d_i|`` to the lattice is a fixed function of the magnitudes, so under the null (each
    difference as likely positive as negative) the test stays exact; differences under half a step are
    ties and drop out, as zeros do in McNemar's test.
    """
    import numpy as np

    d = np.asarray(differences, dtype=float)
    steps = np.rint(d * grid).astype(int)
    result = sign_flip_test(steps.tolist())
    return PairedTest(
        test="sign-flip", items=len(d), total=result.total, p_less=result.p_less, p_greater=result.p_greater
    )


def signed_rank_test(differences: ItemValues, zero: float = 1e-9) -> PairedTest:
    """Exact Wilcoxon signed-rank test: the sign-flip test of the ranks of ``|d_i|`` (ties share their mean
    rank, doubled to stay integer; ``|d_i| <= zero`` drop out). Ranks make it robust to heavy tails."""
    import numpy as np

    d = np.asarray(differences, dtype=float)
    d = d[np.abs(d) > zero]
    if not len(d):
        return PairedTest(test="signed-rank", items=0, total=0, p_less=1.0, p_greater=1.0)
    order = np.argsort(np.abs(d), kind="stable")
    ranks = np.empty(len(d))
    ranks[order] = np.arange(1, len(d) + 1)
    magnitudes = np.abs(d)
    for value in np.unique(magnitudes):  # mean rank within ties
        tied = magnitudes == value
        ranks[tied] = ranks[tied].mean()
    doubled = np.rint(2 * ranks).astype(int) * np.sign(d).astype(int)
    result = sign_flip_test(doubled.tolist())
    return PairedTest(
        test="signed-rank", items=len(d), total=result.total, p_less=result.p_less, p_greater=result.p_greater
    )


def score_spread(before: ItemValues, differences: ItemValues, correlation: float = DEFAULT_SCORE_CORRELATION) -> float:
    """The per-item standard deviation of differences the power model assumes: the observed one, but never
    below what a candidate whose scores correlate ``correlation`` with the baseline's would show."""
    import numpy as np

    a, d = np.asarray(before, dtype=float), np.asarray(differences, dtype=float)
    if not len(a):
        return math.nan
    floor = math.sqrt(max(0.0, 2 * (1 - correlation))) * float(a.std())
    return max(float(d.std()) if len(d) else 0.0, floor)


def score_detectable_drop(spread: float, items: int, alpha: float, power: float = DEFAULT_POWER) -> float:
    """The smallest mean drop a one-sided paired test at ``alpha`` detects with ``power`` when per-item
    differences have standard deviation ``spread`` (the normal approximation of the sign-flip test)."""
    if items <= 0 or not math.isfinite(spread):
        return math.inf
    z = NormalDist().inv_cdf(1 - alpha) + NormalDist().inv_cdf(power)
    return z * spread / math.sqrt(items)


def score_mean_ci(differences: ItemValues, level: float = CI_LEVEL) -> tuple[float, float]:
    """Wald interval of the mean per-item difference of a continuous score."""
    import numpy as np

    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        return -math.inf, math.inf
    half = NormalDist().inv_cdf(0.5 + level / 2) * float(d.std(ddof=1)) / math.sqrt(len(d))
    return float(d.mean()) - half, float(d.mean()) + half


__all__ = [
    "ALTERNATIVE",
    "CI_LEVEL",
    "CORRECTIONS",
    "DEFAULT_CORRECTION",
    "DEFAULT_FLIP_RATE",
    "DEFAULT_POWER",
    "Correction",
    "PairedTest",
    "adjust_p_values",
    "binomial_pmf",
    "check_correction",
    "detectable_drop",
    "detection_power",
    "exact_mcnemar",
    "item_steps",
    "mean_difference_ci",
    "per_test_alpha",
    "sign_flip_null",
    "sign_flip_test",
    "DEFAULT_SCORE_CORRELATION",
    "SCORE_ALTERNATIVE",
    "SCORE_GRID",
    "score_detectable_drop",
    "score_mean_ci",
    "score_sign_flip_test",
    "score_spread",
    "signed_rank_test",
]


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean; NaN for no values (a cell with no items has no accuracy)."""
    return sum(values) / len(values) if values else float("nan")
