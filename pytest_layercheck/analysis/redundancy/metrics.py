"""Layer redundancy: which block of layers a similarity metric calls prunable.

Two metrics from the pruning literature (Gromov et al., "The Unreasonable Ineffectiveness of the Deeper
Layers", arXiv 2403.17887; ShortGPT, arXiv 2403.03853), both computed from the residual
stream of the model as it is now (an active ablation is measured as installed; :mod:`.states`):

* **Angular distance** (Gromov et al., arXiv 2403.17887). For a block of ``n`` layers starting at ``l``::

      d(l, n) = mean over prompts of arccos(cos(x_T^l, x_T^{l+n})) / pi

  where ``T`` is the prompt's last real (non-padding) token. Removing layers ``l .. l+n-1`` feeds
  ``x^l`` to layer ``l+n``, so a small ``d`` means the block barely turns its input. The suggested
  block is ``l* = argmin d`` over the **eligible** starts ``0 <= l <= N-n-1``: the block must end
  before the last layer (``l+n <= N-1``), so the final layer is never dropped and ``x^N`` is never
  needed for a candidate. (The start ``N-n``, whose block contains the last layer, is still
  computed and shown, marked ineligible.) Ties go to the shallowest start.
* **Block Influence** (ShortGPT, arXiv 2403.03853). ``BI_i = 1 - mean over tokens of
  cos(x^i, x^{i+1})``, pooled over every real token of every prompt (a few-shot prefix that all
  of a suite's prompts share is run once and counts once). ShortGPT removes the ``n``
  lowest-BI layers (not necessarily contiguous; the last layer is not excluded, as in ShortGPT).

Fixture one-liner::

    measure = lambda block=1, **kw: measure_redundancy(layercheck_model, block=block, **kw)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.nn import functional as F

from pytest_layercheck.analysis.redundancy.states import LayerStates, collect_layer_states, merge_states
from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.scoring.rendering import render
from pytest_layercheck.suites.builtin import resolve_suite
from pytest_layercheck.suites.schema import Suite

if TYPE_CHECKING:
    from pytest_layercheck.model.loading import LoadedModel

#: Suites whose rendered prompts are the default samples of the metrics.
DEFAULT_SUITES: tuple[str, ...] = ("knowledge", "reasoning")
#: Prompts per suite by default: enough for a stable mean, a few seconds on a CPU.
DEFAULT_PROMPTS = 40


# --------------------------------------------------------------------------------------------------
# The metrics


def check_block_size(num_layers: int, block: int) -> None:
    """A block of ``n`` layers that ends before the last layer needs ``1 <= n <= N-1``."""
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ConfigError(
            f"block size {block!r} is not a positive whole number",
            "pass the number of consecutive layers to drop, e.g. block=1 or --block 3",
        )
    if block >= num_layers:
        raise ConfigError(
            f"a block of {block} layers cannot be dropped from a model of {num_layers} layers without "
            "dropping the final layer",
            f"use a block size between 1 and {num_layers - 1}",
        )


def eligible_starts(num_layers: int, block: int) -> range:
    """Starts ``l`` whose block ``l .. l+n-1`` ends before the last layer: ``0 .. N-n-1``."""
    check_block_size(num_layers, block)
    return range(0, num_layers - block)


def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``arccos(cos(a, b)) / pi`` along the last axis, in [0, 1] (float64; cosine clamped to [-1, 1])."""
    cos = F.cosine_similarity(a.double(), b.double(), dim=-1)
    return torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi


def angular_distances(states: LayerStates, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error over prompts of ``d(l, n)`` for every start ``l = 0 .. N-n``.

    The last entry (``l = N-n``) is the block containing the final layer: computed, never suggested.
    """
    check_block_size(states.num_layers, block)
    starts = states.num_layers - block + 1
    per_prompt = angle(states.last[:, :starts], states.last[:, block : block + starts])  # [P, starts]
    mean = per_prompt.mean(0)
    if states.num_prompts > 1:
        stderr = per_prompt.std(0, unbiased=True) / math.sqrt(states.num_prompts)
    else:
        stderr = torch.full_like(mean, float("nan"))
    return mean, stderr


def block_influence(states: LayerStates) -> torch.Tensor:
    """ShortGPT's ``BI_i = 1 - mean over real tokens of cos(x^i, x^{i+1})`` for every layer."""
    return 1.0 - states.cos_sum / states.tokens


def best_start(distances: Sequence[float], num_layers: int, block: int) -> int:
    """``argmin d`` over the eligible starts (never a block containing the last layer); ties: shallowest."""
    starts = eligible_starts(num_layers, block)
    return min(starts, key=lambda s: (distances[s], s))


def lowest_influence(influence: Sequence[float], count: int) -> tuple[int, ...]:
    """ShortGPT's pick: the ``count`` layers of lowest BI (ties: shallowest), in layer order."""
    ranked = sorted(range(len(influence)), key=lambda i: (influence[i], i))
    return tuple(sorted(ranked[:count]))


@dataclass(frozen=True)
class RedundancyResult:
    """Both metrics for one block size, and the blocks they suggest dropping."""

    model: str
    num_layers: int
    block: int
    prompts: int
    tokens: int
    sources: tuple[str, ...]
    #: ``d(l, n)`` for ``l = 0 .. N-n`` (the last start contains the final layer: ineligible).
    distances: tuple[float, ...]
    distance_stderr: tuple[float, ...]
    #: ``BI_i`` for every layer.
    influence: tuple[float, ...]

    @property
    def eligible(self) -> range:
        return eligible_starts(self.num_layers, self.block)

    @property
    def best_start(self) -> int:
        return best_start(self.distances, self.num_layers, self.block)

    @property
    def suggested(self) -> tuple[int, ...]:
        """The block the angular distance calls most prunable: layers ``l* .. l*+n-1``."""
        return tuple(range(self.best_start, self.best_start + self.block))

    @property
    def best_distance(self) -> float:
        return self.distances[self.best_start]

    @property
    def bi_suggested(self) -> tuple[int, ...]:
        """The ``n`` lowest-BI layers (ShortGPT)."""
        return lowest_influence(self.influence, self.block)

    def ranked_starts(self) -> list[int]:
        """Eligible starts from most to least prunable by angular distance."""
        return sorted(self.eligible, key=lambda s: (self.distances[s], s))

    def block_layers(self, start: int) -> tuple[int, ...]:
        return tuple(range(start, start + self.block))

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "num_layers": self.num_layers, "block": self.block,
            "prompts": self.prompts, "tokens": self.tokens, "sources": list(self.sources),
            "distances": list(self.distances), "distance_stderr": list(self.distance_stderr),
            "eligible_starts": [self.eligible.start, self.eligible.stop - 1],
            "influence": list(self.influence), "suggested": list(self.suggested),
            "best_distance": self.best_distance, "bi_suggested": list(self.bi_suggested),
        }  # fmt: skip


def redundancy_from_states(
    states: LayerStates, block: int, model: str = "model", sources: Sequence[str] = ()
) -> RedundancyResult:
    """Both metrics for ``block`` from gathered states (one pass serves every block size)."""
    mean, stderr = angular_distances(states, block)
    return RedundancyResult(
        model=model, num_layers=states.num_layers, block=block, prompts=states.num_prompts,
        tokens=states.tokens, sources=tuple(sources), distances=tuple(mean.tolist()),
        distance_stderr=tuple(stderr.tolist()), influence=tuple(block_influence(states).tolist()),
    )  # fmt: skip


def suite_prompts(suites: Sequence[str | Suite], limit: int | None) -> list[tuple[str, list[str]]]:
    """Per suite: a label and the rendered prompts (few-shot block included) of its default protocol."""
    groups: list[tuple[str, list[str]]] = []
    for spec in suites:
        suite = resolve_suite(spec)
        rendered = render(suite.limited(limit), suite.default_protocol)
        groups.append(
            (f"{suite.name} ({len(rendered)} {suite.default_protocol} prompts)", [r.prompt for r in rendered])
        )
    return groups


def measure_redundancy(
    loaded: LoadedModel,
    block: int = 1,
    *,
    suites: Sequence[str | Suite] = DEFAULT_SUITES,
    limit: int | None = DEFAULT_PROMPTS,
    prompts: Sequence[str] | None = None,
    token_budget: int | None = None,
) -> RedundancyResult:
    """Angular distance and Block Influence of ``loaded`` (a ``LoadedModel``) for blocks of ``block``.

    Samples are the rendered prompts of ``suites`` (first ``limit`` items each; each suite's
    few-shot prefix is run, and counted in Block Influence, once), or the given ``prompts``.
    """
    check_block_size(loaded.num_layers, block)
    groups = suite_prompts(suites, limit) if prompts is None else [(f"{len(prompts)} given prompts", list(prompts))]
    states = merge_states(
        [collect_layer_states(loaded.runtime, loaded.tokenizer, texts, token_budget) for _, texts in groups]
    )
    model = loaded.name or type(loaded.model).__name__
    return redundancy_from_states(states, block, model, [label for label, _ in groups])
