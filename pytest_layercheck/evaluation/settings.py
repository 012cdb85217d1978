"""What a depth profile computes: the suites, the ablation mode, the item counts, the chat template.

Kept apart from the engine (:mod:`pytest_layercheck.evaluation.profiler`) so that options can be read
and checked, and baselines described, without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pytest_layercheck.data.bands import DepthBands
from pytest_layercheck.scoring.rendering import ChatTemplate
from pytest_layercheck.suites.builtin import BUILTIN_SUITES

#: Items per suite scored on the intact model (None = every item). Intact scoring is cheap, and the
#: intact cells are the ones a guard leans on, so knowledge and reasoning use every item. Retrieval items
#: carry 150-600-token contexts, so their intact count is capped.
DEFAULT_LIMITS: dict[str, int | None] = {"knowledge": None, "reasoning": None, "retrieval": 40}
#: Items for suites without an entry in DEFAULT_LIMITS (user suites): all of them.
DEFAULT_LIMIT: int | None = None
#: Leading items scored under each ablation of a layer sweep. A sweep costs one evaluation per layer, so it
#: uses a subset: sized so that, judged by p_correct against the default model's baseline, every knowledge
#: and reasoning band cell detects a drop of 0.05 and every retrieval band cell one of 0.10 (docs/statistics.md),
#: at the least cost on a CPU.
DEFAULT_SWEEP_LIMITS: dict[str, int | None] = {"knowledge": 140, "reasoning": 110, "retrieval": 28}
#: Sweep items for suites without an entry in DEFAULT_SWEEP_LIMITS (a profile reports whether they suffice).
DEFAULT_SWEEP_LIMIT: int | None = 40

#: A limit: items for every suite (None = all), or per suite name (missing names take the default).
Limit = int | None | dict[str, int | None]


def _limit_of(limit: Limit, suite: str, defaults: Mapping[str, int | None], fallback: int | None) -> int | None:
    if isinstance(limit, dict):
        return limit.get(suite, defaults.get(suite, fallback))
    return limit


def _smaller(a: int | None, b: int | None) -> int | None:
    """The smaller of two item counts, None meaning unlimited."""
    if a is None:
        return b
    return a if b is None else min(a, b)


@dataclass(frozen=True)
class ProfileSettings:
    """What a profile computes. Everything here is recorded in the baseline."""

    suites: tuple[str, ...] = BUILTIN_SUITES
    protocols: dict[str, str] = field(default_factory=dict)
    mode: str = "layers"
    bands: DepthBands = field(default_factory=DepthBands)
    limit: Limit = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    sweep_limit: Limit = field(default_factory=lambda: dict(DEFAULT_SWEEP_LIMITS))
    seed: int = 0
    batch_size: int | None = None
    #: Prompts through the tokenizer's chat template (lm-eval's --apply_chat_template); None: plain text.
    chat_template: ChatTemplate | None = None

    def limit_for(self, suite: str) -> int | None:
        """Items of ``suite`` scored intact (None = all)."""
        return _limit_of(self.limit, suite, DEFAULT_LIMITS, DEFAULT_LIMIT)

    def sweep_limit_for(self, suite: str) -> int | None:
        """Leading items of ``suite`` scored under ablations: never more than are scored intact."""
        return _smaller(
            _limit_of(self.sweep_limit, suite, DEFAULT_SWEEP_LIMITS, DEFAULT_SWEEP_LIMIT), self.limit_for(suite)
        )

    def describe(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "limit": {suite: self.limit_for(suite) for suite in self.suites},
            "sweep_limit": {suite: self.sweep_limit_for(suite) for suite in self.suites},
            "seed": self.seed,
            "bands": self.bands.describe(),
            "protocols": dict(self.protocols),
            "deterministic_algorithms": True,
            # Only when set, so that baselines recorded without it keep their keys.
            **({"chat_template": self.chat_template.describe()} if self.chat_template is not None else {}),
        }
