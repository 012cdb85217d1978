"""Head-level importance: mask one attention head at a time and measure what a capability loses.

Retrieval and recall rest on sparse sets of heads ("Demystifying the Roles of LLM Layers", arXiv
2510.02091; Wu et al., "Retrieval Head Mechanistically Explains Long-Context Factuality", arXiv
2404.15574), so a per-head map
says more than a per-layer one, and the *set* of critical heads is something a fine-tune can move.
:func:`head_importance` evaluates a suite intact and with each head of the chosen layers masked in
turn (zeroed by default: a pre-hook on the output projection removes exactly that head's
contribution). The result reports the sparse set of critical heads, how concentrated the effect is
and how much two models' critical sets overlap::

    result = head_importance(loaded, suite="knowledge", layers=range(4), limit=24)
    result.critical_heads(top_n=5)          # [(layer, head), ...] with the largest drops
    result.concentration()                  # share of the total drop from the top 5% of heads
    base.overlap(finetuned, top_n=10)       # Jaccard overlap of the two critical sets
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pytest_layercheck.analysis.heads import DEFAULT_HEAD_LIMIT
from pytest_layercheck.analysis.jsonable import attributes, json_float
from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.bands import format_layers
from pytest_layercheck.data.records import PRIMARY_METRIC, SuiteInfo
from pytest_layercheck.evaluation.result_cache import ResultCache
from pytest_layercheck.evaluation.service import cache_identity, deterministic, evaluate_ablations
from pytest_layercheck.model.ablation import Ablation
from pytest_layercheck.model.ablation_spec import GQA_MODES, HEAD_MODES, check_range
from pytest_layercheck.model.architecture import get_adapter
from pytest_layercheck.model.loading import LoadedModel
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.suites.builtin import resolve_suite
from pytest_layercheck.suites.schema import Suite

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from pytest_layercheck.data.records import Evaluation
    from pytest_layercheck.evaluation.profiler import ProgressHook

#: Share of heads whose drops :meth:`HeadImportance.concentration` sums ("the top 5% of heads").
TOP_FRACTION = 0.05

HeadKey = tuple[int, int]
OverlapMeasure = Literal["jaccard", "retained"]


# --------------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadImportance:
    """Accuracy of one suite with each head (or KV group) of ``layers`` masked in turn.

    ``accuracy[(layer, head)]`` is the suite's ``metric`` with that unit masked, ``intact`` the
    metric of the unablated model; ``drop = intact - accuracy`` (negative when masking helps). With
    ``gqa="group"`` the units are KV groups: ``head`` is then the KV-head index and masking it
    silences all query heads that share it (as in the layer-pruning paper's code).
    """

    model: str
    suite: str
    protocol: str
    metric: str
    mode: str
    gqa: str
    layers: tuple[int, ...]
    heads_per_layer: int
    item_ids: tuple[str, ...]
    intact: float
    accuracy: Mapping[HeadKey, float]
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def unit(self) -> str:
        """What one entry masks: ``"head"`` (a query head) or ``"group"`` (a KV group)."""
        return "group" if self.gqa == "group" else "head"

    @property
    def num_units(self) -> int:
        """Heads (or groups) evaluated."""
        return len(self.accuracy)

    @property
    def drops(self) -> dict[HeadKey, float]:
        """``intact - accuracy`` per head."""
        return {key: self.intact - value for key, value in self.accuracy.items()}

    def drop(self, layer: int, head: int) -> float:
        """The drop from masking one head (KeyError if that head was not evaluated)."""
        return self.intact - self.accuracy[(layer, head)]

    def ranked(self) -> list[tuple[HeadKey, float]]:
        """Every head with its drop, largest drop first (ties: lower layer, then lower head)."""
        return sorted(self.drops.items(), key=lambda entry: (-entry[1], entry[0]))

    def _top_count(self, top_fraction: float) -> int:
        if not 0 < top_fraction <= 1:
            raise ConfigError(
                f"top_fraction must be in (0, 1], got {top_fraction!r}",
                "pass a share of heads such as 0.05 (the top 5%)",
            )
        return max(1, math.ceil(top_fraction * self.num_units - 1e-9))

    def critical_heads(self, threshold: float | None = None, top_n: int | None = None) -> list[HeadKey]:
        """The sparse set of heads whose masking costs the capability, largest drop first.

        ``threshold``: every head whose drop is at least ``threshold`` (and positive).
        ``top_n``: the ``top_n`` heads with the largest positive drops (fewer if fewer are positive).
        Neither: the top 5% of heads (``ceil(0.05 * heads evaluated)``) with positive drops, the set
        :meth:`concentration` measures. A head whose masking does not lower the metric is never
        critical, so a model that loses nothing has no critical heads. Equal drops are ordered by
        layer, then head, so with few items (drops in steps of 1/items) the cut through a tie is by
        index: compare sets with ``threshold`` when that matters.
        """
        if threshold is not None and top_n is not None:
            raise ConfigError("critical_heads takes threshold or top_n, not both", "pass only one of them")
        positive = [(key, d) for key, d in self.ranked() if d > 0]
        if threshold is not None:
            return [key for key, d in positive if d >= threshold - 1e-12]
        if top_n is None:
            top_n = self._top_count(TOP_FRACTION)
        if top_n < 0:
            raise ConfigError(f"top_n must be >= 0, got {top_n}", "pass a number of heads such as 5")
        return [key for key, _ in positive[:top_n]]

    def concentration(self, top_fraction: float = TOP_FRACTION) -> float:
        """Share of the total drop that comes from the top ``top_fraction`` of heads.

        With ``H`` heads evaluated and ``n = ceil(top_fraction * H)``: the sum of the ``n`` largest
        positive drops divided by the sum of all positive drops. Heads whose masking raises the metric
        (negative drops) are left out of both sums: they are noise or compensation, not a share of
        the loss. 1.0 means a few heads carry the whole effect; ``n / H`` is what an effect spread
        evenly over the positive heads would give at most. NaN when no head lowers the metric.
        """
        n = self._top_count(top_fraction)
        positive = sorted((d for d in self.drops.values() if d > 0), reverse=True)
        total = sum(positive)
        if total <= 0:
            return float("nan")
        return sum(positive[:n]) / total

    def overlap(
        self,
        other: HeadImportance,
        *,
        top_n: int | None = None,
        threshold: float | None = None,
        measure: OverlapMeasure = "jaccard",
    ) -> float:
        """How far two results agree on which heads are critical (the same ``critical_heads`` rule).

        ``measure="jaccard"``: ``|A ∩ B| / |A ∪ B|``, symmetric. ``measure="retained"``:
        ``|A ∩ B| / |A|`` with ``A`` this result's set, the share of these critical heads that are
        still critical in ``other`` ("the fine-tune kept the base model's critical heads":
        ``base.overlap(finetuned, measure="retained")``). NaN when the denominator set is empty.
        Both results must have evaluated the same units (layers, heads, ``gqa``).
        """
        if measure not in ("jaccard", "retained"):
            raise ConfigError(f"unknown overlap measure {measure!r}", "use 'jaccard' or 'retained'")
        if set(self.accuracy) != set(other.accuracy) or self.unit != other.unit:
            raise ConfigError(
                f"cannot compare head maps over different units ({self.unit}s of layers "
                f"{_span(self.layers)} vs {other.unit}s of layers {_span(other.layers)})",
                "evaluate both models with the same layers and the same gqa setting",
            )
        mine = set(self.critical_heads(threshold=threshold, top_n=top_n))
        theirs = set(other.critical_heads(threshold=threshold, top_n=top_n))
        denominator = mine | theirs if measure == "jaccard" else mine
        if not denominator:
            return float("nan")
        return len(mine & theirs) / len(denominator)

    def layer_totals(self) -> dict[int, float]:
        """Sum of positive drops per layer: where in depth the critical heads sit."""
        totals = dict.fromkeys(self.layers, 0.0)
        for (layer, _), d in self.drops.items():
            totals[layer] += max(d, 0.0)
        return totals

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every head's accuracy and drop, plus the summary numbers."""
        ranked = self.ranked()
        return {
            "analysis": "head_importance",
            **attributes(self, "model", "suite", "protocol", "metric", "mode", "gqa", "unit", "layers"),
            "heads_per_layer": self.heads_per_layer,
            "items": list(self.item_ids),
            "intact": self.intact,
            "concentration_top5pct": json_float(self.concentration()),
            "critical_heads": [list(key) for key in self.critical_heads()],
            "heads": [
                {"layer": layer, "head": head, "accuracy": self.accuracy[(layer, head)], "drop": d}
                for (layer, head), d in ranked
            ],
            "settings": dict(self.settings),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeadImportance:
        """Inverse of :meth:`to_dict` (summary fields are recomputed, not read)."""
        return cls(
            model=str(data["model"]),
            suite=str(data["suite"]),
            protocol=str(data["protocol"]),
            metric=str(data["metric"]),
            mode=str(data["mode"]),
            gqa=str(data["gqa"]),
            layers=tuple(int(x) for x in data["layers"]),
            heads_per_layer=int(data["heads_per_layer"]),
            item_ids=tuple(str(x) for x in data["items"]),
            intact=float(data["intact"]),
            accuracy={(int(h["layer"]), int(h["head"])): float(h["accuracy"]) for h in data["heads"]},
            settings=dict(data.get("settings", {})),
        )


def _span(layers: Sequence[int]) -> str:
    return format_layers(layers) or "(none)"


# --------------------------------------------------------------------------------------------------
# Layer specs
# --------------------------------------------------------------------------------------------------


def parse_layers(text: str | int | Iterable[int] | None, num_layers: int | None = None) -> tuple[int, ...] | None:
    """``"0-3,29"`` -> ``(0, 1, 2, 3, 29)``; ``None``/``"all"``/``""`` -> None (every layer).

    Ints and iterables of ints pass through (sorted, de-duplicated). With ``num_layers``, indices are
    checked against the model.
    """
    if text is None:
        return None
    if isinstance(text, str):
        spec = text.strip()
        if spec.lower() in ("", "all"):
            return None
        layers: set[int] = set()
        for part in spec.split(","):
            part = part.strip()
            try:
                if "-" in part:
                    lo, hi = (int(x) for x in part.split("-", 1))
                    if lo > hi:
                        raise ValueError
                    layers.update(range(lo, hi + 1))
                else:
                    layers.add(int(part))
            except ValueError:
                raise ConfigError(
                    f"bad layer spec {text!r} (at {part!r})",
                    "use zero-based layer indices and ranges, e.g. 0-3,29",
                ) from None
        result = tuple(sorted(layers))
    elif isinstance(text, int):
        result = (text,)
    else:
        result = tuple(sorted(set(text)))
    bad = [i for i in result if isinstance(i, bool) or not isinstance(i, int) or i < 0]
    if bad:
        raise ConfigError(f"bad layer indices {bad}", "use zero-based, non-negative layer indices")
    if num_layers is not None:
        fix = f"choose layers between 0 and {num_layers - 1}, e.g. --layers 0-{min(3, num_layers - 1)}."
        check_range(result, num_layers, "layer", "model", fix)
    return result


# --------------------------------------------------------------------------------------------------
# Computation
# --------------------------------------------------------------------------------------------------


def model_and_tokenizer(
    model: LoadedModel | PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None
) -> tuple[ModelRuntime, PreTrainedTokenizerBase, str]:
    """(runtime, tokenizer, name) from a ``LoadedModel`` or a bare model plus tokenizer (the head analyses
    accept either)."""
    if isinstance(tokenizer, (str, os.PathLike, Suite)):
        raise ConfigError(
            f"the tokenizer argument is {tokenizer!r}, which looks like a suite",
            "pass the suite by keyword: head_importance(loaded, suite='knowledge', ...)",
        )
    if isinstance(model, LoadedModel):
        return model.runtime, tokenizer or model.tokenizer, model.name
    if tokenizer is None:
        raise ConfigError(
            "a bare model was given without a tokenizer",
            "pass the tokenizer (head_importance(model, tokenizer, ...)) or a LoadedModel from load_model()",
        )
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    return ModelRuntime.of(model), tokenizer, str(name)


def head_ablations(
    model: PreTrainedModel, layers: Sequence[int], mode: str = "zero", gqa: str = "query"
) -> dict[HeadKey, Ablation]:
    """One ablation per unit: each query head (``gqa="query"``) or KV group (``"group"``) of ``layers``."""
    if mode not in HEAD_MODES:
        raise ConfigError(f"unknown head mask mode {mode!r}", f"use one of {', '.join(HEAD_MODES)}")
    if gqa not in GQA_MODES:
        raise ConfigError(f"unknown gqa mode {gqa!r}", f"use one of {', '.join(GQA_MODES)}")
    adapter = get_adapter(model)
    plan: dict[HeadKey, Ablation] = {}
    for layer in layers:
        if gqa == "group":
            for group in range(adapter.num_kv_heads):
                plan[(layer, group)] = Ablation.masking(
                    {layer: adapter.query_heads_of(group)},
                    mode=mode,  # type: ignore[arg-type]
                    gqa="group",
                )
        else:
            for head in range(adapter.num_heads):
                plan[(layer, head)] = Ablation.masking({layer: [head]}, mode=mode)  # type: ignore[arg-type]
    return plan


def head_importance(
    model: LoadedModel | PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None = None,
    suite: str | os.PathLike[str] | Suite = "knowledge",
    protocol: str | None = None,
    *,
    layers: str | Iterable[int] | None = None,
    limit: int | None = DEFAULT_HEAD_LIMIT,
    mode: str = "zero",
    gqa: str = "query",
    metric: str | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    cache: ResultCache | None = None,
    progress: ProgressHook | None = None,
) -> HeadImportance:
    """Score ``suite`` intact and with each head of ``layers`` (default: all) masked in turn.

    ``model`` is a ``LoadedModel`` or a bare causal LM with its ``tokenizer``. The suite is tokenised
    once and scored once per head (``prepare`` then ``score`` under ``ablate``), so each entry equals
    ``score(model, prepared)`` under ``ablate(model, Ablation.masking({layer: [head]}, mode))``.
    ``mode="zero"`` removes the head's output; ``"uniform"`` is the retrieval-head paper's uniform
    attention. ``gqa="group"`` masks whole KV groups instead of single query heads. ``metric``
    defaults to the protocol's primary metric (``acc`` for multiple choice). ``cache`` (a
    ``ResultCache``, only with a ``LoadedModel``) reuses earlier evaluations, shared with depth
    profiles for the intact model.
    """
    runtime, tok, name = model_and_tokenizer(model, tokenizer)
    adapter = runtime.adapter
    chosen = _chosen_layers(layers, adapter.num_layers)
    suite_obj = resolve_suite(suite)
    protocol = protocol or suite_obj.default_protocol
    limited = suite_obj.limited(limit)
    if not limited.items:
        raise ConfigError(f"suite {suite_obj.name!r} has no items to score", "use a suite with items or a larger limit")
    plan = head_ablations(runtime.model, chosen, mode, gqa)
    item_ids = tuple(item.id for item in limited.items)
    info = SuiteInfo(limited.name, limited.capability, limited.content_hash, protocol, item_ids)
    hook = (lambda done, total: progress(limited.name, done, total)) if progress else None
    loaded = model if isinstance(model, LoadedModel) else None
    evaluations = _evaluate(runtime, tok, limited, info, list(plan.values()), loaded, seed, cache, batch_size, hook)
    metric = _checked_metric(metric or PRIMARY_METRIC.get(protocol), protocol, evaluations)
    return HeadImportance(
        model=name,
        suite=limited.name,
        protocol=protocol,
        metric=metric,
        mode=mode,
        gqa=gqa,
        layers=chosen,
        heads_per_layer=adapter.num_kv_heads if gqa == "group" else adapter.num_heads,
        item_ids=item_ids,
        intact=evaluations[0].mean(metric),
        accuracy={key: evaluation.mean(metric) for key, evaluation in zip(plan, evaluations[1:])},
        settings={"limit": limit, "seed": seed, "suite_hash": suite_obj.content_hash},
    )


def _evaluate(
    runtime: ModelRuntime,
    tok: PreTrainedTokenizerBase,
    suite: Suite,
    info: SuiteInfo,
    ablations: list[Ablation],
    loaded: LoadedModel | None,
    seed: int,
    cache: ResultCache | None,
    batch_size: int | None,
    progress: Callable[[int, int], None] | None,
) -> list[Evaluation]:
    """``suite`` intact, then under each ablation (seeded); with a ``LoadedModel`` (``loaded``), through ``cache``."""
    with deterministic(seed):
        return evaluate_ablations(
            runtime,
            tok,
            suite,
            info,
            ablations,
            cache=cache if loaded is not None else None,
            identity=(lambda key: cache_identity(loaded, info, key, seed)) if loaded is not None else None,
            batch_size=batch_size,
            max_length=runtime.max_length,
            progress=progress,
        )


def _chosen_layers(layers: str | Iterable[int] | None, num_layers: int) -> tuple[int, ...]:
    """The layers to scan (every layer when ``layers`` is None or "all"); none at all is refused."""
    chosen = parse_layers(layers, num_layers)
    chosen = tuple(range(num_layers)) if chosen is None else chosen
    if not chosen:
        raise ConfigError("no layers to evaluate", "pass at least one layer, e.g. layers=[0] or '0-3'")
    return chosen


def _checked_metric(metric: str | None, protocol: str, evaluations: Sequence[Evaluation]) -> str:
    """``metric`` when the protocol produced it (else a ConfigError naming the ones it did)."""
    if metric is None or metric not in evaluations[0].outcomes:
        raise ConfigError(
            f"metric {metric!r} is not produced by protocol {protocol!r}",
            f"use one of {', '.join(sorted(evaluations[0].outcomes))}",
        )
    return metric
