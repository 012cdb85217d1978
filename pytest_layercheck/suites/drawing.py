"""Deterministic drawing with hypothesis: the same examples on every run, spread over the whole range.

Each group of problems runs one ``@given`` test under ``@seed`` (derived from :data:`SEED` and the
group's label) with the database off, only the generate phase and no health checks or deadlines, so
nothing depends on timing or on earlier runs; literals of local modules are kept out of the draws (see
:func:`_without_local_constants`). Hypothesis promises the same examples only for the same seed and
hypothesis version, so generated suites record both.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import TypeVar

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st

T = TypeVar("T")

#: The generator seed (the arXiv id of "Demystifying the Roles of LLM Layers").
SEED = 2510_02091


def _settings(max_examples: int) -> settings:
    """Explicit values for everything a user profile could change (CI profiles, other backends)."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        print_blob=False,
        report_multiple_bugs=False,
        backend="hypothesis",
    )


@contextlib.contextmanager
def _without_local_constants() -> Iterator[None]:
    """Stop hypothesis from mixing literals of *local* modules into its draws while we generate.

    Since 6.131 hypothesis occasionally draws integer and string literals found in the non-installed
    modules that happen to be imported (this project, in an editable install). The suites would
    then change with unrelated edits anywhere in the package and differ between a plain run and a
    pytest run (which imports more modules). The hook is internal, so if it moves this is a no-op
    and ``tests/unit/test_suites.py`` (which imports an extra module full of constants) notices.
    """
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:  # pragma: no cover - older or newer hypothesis without the feature
        yield
        return
    original = getattr(providers, "_get_local_constants", None)
    cache = getattr(providers, "CONSTANTS_CACHE", None)
    if original is None or cache is None:  # pragma: no cover
        yield
        return
    providers._get_local_constants = lambda: Constants()
    cache.cache.clear()
    try:
        yield
    finally:
        providers._get_local_constants = original
        cache.cache.clear()


def group_seed(label: str) -> int:
    """A seed per group derived from :data:`SEED`: groups with the same strategy shape must not
    receive the same draws."""
    return int.from_bytes(hashlib.sha256(f"{SEED}/{label}".encode()).digest()[:8], "big")


def draw_distinct(
    label: str,
    strategy: st.SearchStrategy[T],
    count: int,
    key: Callable[[T], str],
    exclude: Collection[str] = frozenset(),
) -> list[T]:
    """``count`` distinct examples of ``strategy``, the same ones on every run.

    Hypothesis starts with its simplest examples and repeats values, so we over-draw, de-duplicate
    by ``key`` and keep the ``count`` examples whose keys hash lowest (a seed-free, stable shuffle).
    Keys in ``exclude`` (the few-shot examples) are never returned.
    """
    found: dict[str, T] = {}

    @seed(group_seed(label))
    @_settings(max_examples=count * 4)
    @given(strategy)
    def collect(example: T) -> None:
        if key(example) not in exclude:
            found.setdefault(key(example), example)

    with _without_local_constants():
        collect()
    if len(found) < count:
        raise RuntimeError(f"{label}: hypothesis produced only {len(found)} distinct examples, {count} needed")
    ordered = sorted(found, key=lambda k: hashlib.sha256(k.encode("utf-8")).hexdigest())
    return [found[k] for k in ordered[:count]]


def interleave(groups: Sequence[Sequence[T]]) -> list[T]:
    """Merge groups so that every prefix holds each group in proportion to its size.

    Users run quick profiles on the first N items, so the first N must be a balanced sample.
    """
    slots = [((index + 0.5) / len(group), g, index) for g, group in enumerate(groups) for index in range(len(group))]
    return [groups[g][index] for _, g, index in sorted(slots)]


def numbers(low: int, high: int) -> st.SearchStrategy[int]:
    """Integers in ``[low, high]`` without hypothesis's preference for small and boundary values.

    Hypothesis hunts bugs, so it draws the low end (and 0, 1, the maximum) far more often than a
    benchmark should: in a first version 9 of the first 100 reasoning answers were "2". Mapping its
    draw through a fixed permutation of the range (multiply by a prime coprime to the size, shift
    to the middle) keeps every value reachable and spreads the favoured ones out.
    """
    size = high - low + 1
    step = next(p for p in (7919, 7907, 7901) if math.gcd(p, size) == 1)
    return st.integers(0, size - 1).map(lambda i: low + (i * step + size // 2) % size)


def pick(options: Sequence[T]) -> st.SearchStrategy[T]:
    """One of ``options``, spread like :func:`numbers`."""
    return numbers(0, len(options) - 1).map(options.__getitem__)
