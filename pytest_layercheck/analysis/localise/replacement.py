"""Delta replacement: find which of a candidate's layers carry a lost capability by putting the base's back.

For each group of layers (depth bands by default; optionally every single layer, or the runs of layers
the fine-tune moved most), the candidate is evaluated with the base model's blocks swapped in at those
indices ("delta model replacement", "Demystifying the Roles of LLM Layers" (arXiv 2510.02091)). If reverting a group brings the lost accuracy
back, the harmful part of the change lives there. Each restoration is reported as the fraction of the
loss it recovers, ``(acc_restored − acc_candidate) / (acc_base − acc_candidate)``, with a paired exact
McNemar test of the restored model against the candidate on the same items.

The verdict names the smallest group that recovers at least ``threshold`` (default 80%) of the loss, or
says that none does. Reverting every decoder layer is evaluated as a reference: if even that does not
recover the loss, the change sits outside the decoder layers (embeddings, final norm, LM head), which
swapping cannot revert.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_layercheck.core.errors import ConfigError, LayercheckError
from pytest_layercheck.data.bands import DepthBands, layer_runs
from pytest_layercheck.data.profile_data import INTACT, PRIMARY_METRIC, SuiteInfo
from pytest_layercheck.data.statistics import exact_mcnemar, mean
from pytest_layercheck.evaluation.comparison_result import Tolerance
from pytest_layercheck.evaluation.profiler import ProgressHook
from pytest_layercheck.evaluation.result_cache import ResultCache
from pytest_layercheck.evaluation.service import cache_identity, deterministic, evaluate_ablations
from pytest_layercheck.evaluation.settings import ProfileSettings
from pytest_layercheck.model.ablation import Ablation
from pytest_layercheck.scoring.protocols import PreparedSuite, prepare
from pytest_layercheck.suites.builtin import resolve_suite
from pytest_layercheck.suites.schema import Suite

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from pytest_layercheck.analysis.weight_delta.deltas import WeightDelta
    from pytest_layercheck.data.profile_data import DepthProfile
    from pytest_layercheck.model.loading import LoadedModel

#: Fraction of the loss a group must bring back to be named in the verdict.
DEFAULT_THRESHOLD = 0.8
#: Group strategies understood by :func:`layer_groups` (combine with commas: ``bands,changed``).
STRATEGIES: tuple[str, ...] = ("bands", "layers", "changed")


# --------------------------------------------------------------------------------------------------
# Layer groups
# --------------------------------------------------------------------------------------------------


def layer_span(layers: Sequence[int]) -> str:
    """``layer 5``, ``layers 3–8``, or runs joined: ``layers 3–8, 22–29`` and ``layers 1, 4, 7``."""
    ordered = sorted(set(layers))
    if len(ordered) == 1:
        return f"layer {ordered[0]}"
    runs = layer_runs(ordered)
    return "layers " + ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


@dataclass(frozen=True)
class LayerGroup:
    """Layers reverted together; ``kind`` says where the group came from (band, layer, changed, all)."""

    name: str
    layers: tuple[int, ...]
    kind: str = "custom"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(sorted(set(self.layers))))
        if not self.layers:
            raise ConfigError(f"layer group {self.name!r} is empty", "give every group at least one layer")

    @property
    def label(self) -> str:
        """``layers 0–8 (shallow band)``: how the group reads in verdicts."""
        span = layer_span(self.layers)
        if self.kind == "band":
            return f"{span} ({self.name} band)"
        if self.kind == "all":
            return f"all decoder {span}"
        return span

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layers": list(self.layers), "kind": self.kind}


def parse_strategies(spec: str | Iterable[str]) -> tuple[str, ...]:
    """``"bands,changed"`` -> ``("bands", "changed")``; ``none``/empty -> ``()``; unknown names fail."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if names in (["none"], []):
        return ()
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise ConfigError(
            f"unknown localisation strategy {', '.join(map(repr, unknown))}",
            f"use {', '.join(STRATEGIES)} (comma-separated to combine) or none",
        )
    return tuple(dict.fromkeys(names))


def layer_groups(
    num_layers: int,
    strategies: str | Iterable[str] = "bands",
    *,
    bands: DepthBands | None = None,
    weights: WeightDelta | None = None,
    changed_fraction: float = 0.5,
    include_all: bool = True,
) -> list[LayerGroup]:
    """The groups to revert, de-duplicated by layer set (first name wins), plus "all" at the end.

    ``bands``: the depth bands; ``layers``: every single layer; ``changed``: each contiguous run of the
    layers whose relative weight change is at least ``changed_fraction`` of the largest (needs
    ``weights``), and their union when there is more than one run.
    """
    groups: list[LayerGroup] = []
    for strategy in parse_strategies(strategies):
        if strategy == "bands":
            groups += [
                LayerGroup(name, layers, "band")
                for name, layers in (bands or DepthBands()).as_dict(num_layers).items()
                if layers
            ]
        elif strategy == "layers":
            groups += [LayerGroup(f"L{i}", (i,), "layer") for i in range(num_layers)]
        else:
            if weights is None:
                raise ConfigError(
                    "the 'changed' localisation strategy needs the weight deltas",
                    "pass weights=measure_weight_delta(base, candidate), or use bands/layers",
                )
            runs = layer_runs(weights.changed_layers(changed_fraction))
            groups += [LayerGroup(f"changed {layer_span(r)}", r, "changed") for r in runs]
            if len(runs) > 1:
                union = tuple(i for r in runs for i in r)
                groups.append(LayerGroup("all changed layers", union, "changed"))
    if include_all:
        groups.append(LayerGroup("all", tuple(range(num_layers)), "all"))
    unique: dict[tuple[int, ...], LayerGroup] = {}
    for group in groups:
        unique.setdefault(group.layers, group)
    return list(unique.values())


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Restoration:
    """The candidate with one group's layers reverted to the base, scored on one suite."""

    group: LayerGroup
    accuracy: float
    recovered: float | None  # fraction of the loss brought back; None when there was no loss
    fixed: int  # items wrong in the candidate, right after reverting
    broken: int  # items right in the candidate, wrong after reverting
    p_value: float  # exact McNemar, restored vs candidate
    outcomes: tuple[float, ...] = field(repr=False, default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group.to_dict(),
            "accuracy": self.accuracy,
            "recovered": self.recovered,
            "fixed": self.fixed,
            "broken": self.broken,
            "p_value": self.p_value,
        }


@dataclass
class SuiteLocalisation:
    """Where one suite's loss lives: base vs candidate, and every restoration tried."""

    suite: str
    capability: str
    protocol: str
    metric: str
    items: int
    base: float
    candidate: float
    loss_p_value: float  # exact McNemar, candidate vs base
    allowed: float  # losses up to this are not localised (the tolerance)
    threshold: float
    alpha: float
    restorations: list[Restoration] = field(default_factory=list)

    @property
    def loss(self) -> float:
        return self.base - self.candidate

    @property
    def localised(self) -> bool:
        """True when the loss exceeded the tolerance and restorations were evaluated."""
        return bool(self.restorations)

    @property
    def restored_by(self) -> Restoration | None:
        """The smallest group recovering >= threshold of the loss (ties: more recovered, shallower)."""
        good = [r for r in self.restorations if r.recovered is not None and r.recovered >= self.threshold - 1e-9]
        if not good:
            return None
        return min(good, key=lambda r: (len(r.group.layers), -(r.recovered or 0.0), r.group.layers))

    @property
    def best(self) -> Restoration | None:
        """The group (other than "all") recovering the most, for the verdict when none suffices."""
        partial = [r for r in self.restorations if r.group.kind != "all" and r.recovered is not None]
        return max(partial, key=lambda r: (r.recovered or 0.0, -len(r.group.layers)), default=None)

    def parts_of(self, winner: Restoration, count: int = 3) -> list[Restoration]:
        """Groups strictly inside ``winner`` that were tried too, most recovering first: how the loss splits."""
        inside = set(winner.group.layers)
        parts = [r for r in self.restorations if r.recovered is not None and set(r.group.layers) < inside]
        return sorted(parts, key=lambda r: (-(r.recovered or 0.0), r.group.layers))[:count]

    @property
    def verdict(self) -> str:
        """One line: which reversion restores the loss, or that none does."""
        name = self.capability if self.capability == self.suite else f"{self.capability} ({self.suite})"
        change = f"{self.metric} {self.base:.3f} -> {self.candidate:.3f}"
        if not self.localised:
            return f"{name}: no loss beyond the tolerance to localise ({change})"
        what = f"{name} loss ({change}, p={_fmt_p(self.loss_p_value)})"
        winner = self.restored_by
        if winner is not None:
            significance = "" if winner.p_value < self.alpha else ", not significant"
            only = " only" if winner.group.kind == "all" else ""
            text = (
                f"{what} is{only} restored by reverting {winner.group.label}: {self.metric} "
                f"{winner.accuracy:.3f}, {_pct(winner.recovered)} of the loss recovered "
                f"(p={_fmt_p(winner.p_value)}{significance})"
            )
            parts = self.parts_of(winner)
            if parts:
                text += "; alone: " + ", ".join(f"{r.group.label} {_pct(r.recovered)}" for r in parts)
            return text
        text = f"{what} is not restored by reverting any single group of layers tried (>= {_pct(self.threshold)})"
        best = self.best
        if best is not None:
            text += f"; best: {best.group.label} recovers {_pct(best.recovered)}"
        every = next((r for r in self.restorations if r.group.kind == "all"), None)
        if every is not None and (every.recovered or 0.0) < self.threshold:
            text += (
                f"; reverting every decoder layer recovers only {_pct(every.recovered)}, so the change "
                "also sits outside the decoder layers (embeddings, final norm, LM head)"
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        winner = self.restored_by
        return {
            "suite": self.suite,
            "capability": self.capability,
            "protocol": self.protocol,
            "metric": self.metric,
            "items": self.items,
            "base": self.base,
            "candidate": self.candidate,
            "loss": self.loss,
            "loss_p_value": self.loss_p_value,
            "allowed": self.allowed,
            "localised": self.localised,
            "restored_by": winner.group.to_dict() if winner else None,
            "verdict": self.verdict,
            "restorations": [r.to_dict() for r in self.restorations],
        }


@dataclass
class Localisation:
    """Delta replacement over every suite: per-suite losses, restorations and verdicts."""

    groups: list[LayerGroup]
    suites: list[SuiteLocalisation]
    threshold: float
    alpha: float

    @property
    def verdicts(self) -> list[str]:
        return [s.verdict for s in self.suites]

    def suite(self, name_or_capability: str) -> SuiteLocalisation:
        for entry in self.suites:
            if name_or_capability in (entry.suite, entry.capability):
                return entry
        raise KeyError(f"no localisation for {name_or_capability!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "alpha": self.alpha,
            "groups": [g.to_dict() for g in self.groups],
            "suites": [s.to_dict() for s in self.suites],
        }


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.0f}%"


def _fmt_p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _paired(before: Sequence[float], after: Sequence[float]) -> tuple[int, int, float]:
    """(fixed, broken, p): items that went wrong->right and right->wrong, exact McNemar p."""
    fixed = sum(1 for x, y in zip(before, after, strict=True) if y > x)
    broken = sum(1 for x, y in zip(before, after, strict=True) if x > y)
    return fixed, broken, exact_mcnemar(broken, fixed)


# --------------------------------------------------------------------------------------------------
# The measurement
# --------------------------------------------------------------------------------------------------


@dataclass
class _SuiteJob:
    suite: Suite
    info: SuiteInfo
    metric: str
    prepared: PreparedSuite | None = None

    def prepared_for(self, tokenizer: PreTrainedTokenizerBase) -> PreparedSuite:
        if self.prepared is None:  # tokenised lazily: fully cached runs never tokenise
            self.prepared = prepare(self.suite, self.info.protocol, tokenizer)
        return self.prepared


def _jobs(settings: ProfileSettings, only: Iterable[str] | None) -> list[_SuiteJob]:
    wanted = None if only is None else set(only)
    jobs = []
    for name in settings.suites:
        suite = resolve_suite(name)
        if wanted is not None and name not in wanted and suite.name not in wanted:
            continue
        protocol = settings.protocols.get(suite.name, suite.default_protocol)
        limited = suite.limited(settings.limit_for(suite.name))
        info = SuiteInfo(suite.name, suite.capability, suite.content_hash, protocol, tuple(i.id for i in limited.items))
        jobs.append(_SuiteJob(limited, info, PRIMARY_METRIC[protocol]))
    return jobs


def _from_profile(profile: DepthProfile | None, info: SuiteInfo, metric: str) -> tuple[float, ...] | None:
    """The intact outcomes of ``info``'s suite from a profile measured the same way, else None."""
    if profile is None or info.name not in profile.suites:
        return None
    recorded = profile.suites[info.name]
    same = (recorded.content_hash, recorded.protocol, recorded.item_ids) == (
        info.content_hash,
        info.protocol,
        info.item_ids,
    )
    if not same:
        return None
    evaluation = profile.evaluations.get((info.name, info.protocol, INTACT))
    return None if evaluation is None else tuple(evaluation.outcomes[metric])


def _intact(model: LoadedModel, job: _SuiteJob, cache: ResultCache, settings: ProfileSettings) -> tuple[float, ...]:
    """Intact outcomes through the profiler's own cached path, so a profile's entries are reused."""
    evaluation = evaluate_ablations(
        model.runtime,
        model.tokenizer,
        job.suite,
        job.info,
        [],
        cache=cache,
        identity=lambda key: cache_identity(model, job.info, key, settings.seed),
        batch_size=settings.batch_size,
        prepared=lambda: job.prepared_for(model.tokenizer),
    )[0]
    return tuple(evaluation.outcomes[job.metric])


def _restored(
    candidate: LoadedModel,
    base: LoadedModel,
    job: _SuiteJob,
    ablations: Sequence[Ablation],
    cache: ResultCache,
    settings: ProfileSettings,
) -> dict[str, tuple[float, ...]]:
    """Outcomes of the candidate under each swap-back, cached under the candidate's key plus the donor's
    (its intact outcomes, which the sweep also yields, under the candidate's key alone).

    Missing ones are computed in one sweep that reuses the candidate's activations below each group's
    first reverted layer (the layers below it are the candidate's own, so nothing changes there).
    """

    def identity(key: str) -> dict[str, object]:
        plain = cache_identity(candidate, job.info, key, settings.seed)
        return plain if key == INTACT else {**plain, "donor": base.fingerprint}  # intact needs no donor

    evaluations = evaluate_ablations(
        candidate.runtime,
        candidate.tokenizer,
        job.suite,
        job.info,
        ablations,
        cache=cache,
        identity=identity,
        donor=base.model,
        batch_size=settings.batch_size,
        prepared=lambda: job.prepared_for(candidate.tokenizer),
    )
    return {ablation.key: tuple(ev.outcomes[job.metric]) for ablation, ev in zip(ablations, evaluations[1:])}


def localise(
    base: LoadedModel,
    candidate: LoadedModel,
    settings: ProfileSettings | None = None,
    groups: Sequence[LayerGroup] | str = "bands",
    *,
    weights: WeightDelta | None = None,
    suites: Iterable[str] | None = None,
    tolerance: Tolerance | str | float | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = 0.05,
    include_all: bool = True,
    cache: ResultCache | None = None,
    profiles: tuple[DepthProfile | None, DepthProfile | None] = (None, None),
    progress: ProgressHook | None = None,
) -> Localisation:
    """Revert each group of ``candidate``'s layers to ``base``'s and measure how much lost accuracy returns.

    ``settings`` gives the suites, protocols, item limits and seed (as for a profile); ``suites`` limits
    the work to some of them. Only suites whose intact accuracy dropped by more than ``tolerance``
    (default 0.05) are localised; the others get a "no loss" verdict at the cost of two evaluations.
    ``groups`` is a list of :class:`LayerGroup` or a strategy string for :func:`layer_groups`
    (``bands``, ``layers``, ``changed``, comma-combined). ``profiles`` (base, candidate) lend their
    intact evaluations when measured with the same suite, protocol and items. Evaluations are cached
    like a profile's, the swap-backs keyed additionally by the donor's fingerprint.
    """
    settings = settings or ProfileSettings()
    tol = Tolerance() if tolerance is None else Tolerance.parse(tolerance)
    _check_pair(base, candidate, threshold)
    group_list = _group_list(candidate.num_layers, groups, settings.bands, weights, include_all)
    cache = cache if cache is not None else ResultCache()
    jobs = _jobs(settings, suites)
    ticks = _Ticks(progress, 2 * len(jobs))
    entries: list[SuiteLocalisation] = []
    candidate_outcomes: dict[str, tuple[float, ...]] = {}
    with deterministic(settings.seed):
        for job in jobs:
            pair = []
            for side, model, profile in (("base", base, profiles[0]), ("candidate", candidate, profiles[1])):
                ticks.tick(f"{job.info.name} · {side}")
                outcomes = _from_profile(profile, job.info, job.metric)
                pair.append(outcomes if outcomes is not None else _intact(model, job, cache, settings))
                ticks.done += 1
            candidate_outcomes[job.info.name] = pair[1]
            entries.append(_suite_loss(job, pair[0], pair[1], tol.allowed(mean(pair[0])), threshold, alpha))
        dropped = [(job, entry) for job, entry in zip(jobs, entries, strict=True) if entry.loss > entry.allowed + 1e-9]
        ticks.total += len(dropped)
        ablations = [Ablation.swapping(group.layers) for group in group_list]
        for job, entry in dropped:
            ticks.tick(f"{job.info.name} · reverting {len(group_list)} layer groups")
            restored = _restored(candidate, base, job, ablations, cache, settings)
            before = candidate_outcomes[job.info.name]
            for group, ablation in zip(group_list, ablations, strict=True):
                entry.restorations.append(_restoration(group, entry, before, restored[ablation.key]))
            ticks.done += 1
    ticks.tick("done")
    return Localisation(groups=group_list, suites=entries, threshold=threshold, alpha=alpha)


@dataclass
class _Ticks:
    """Progress over a total that grows once the dropped suites are known."""

    progress: ProgressHook | None
    total: int
    done: int = 0

    def tick(self, message: str) -> None:
        if self.progress:
            self.progress(message, self.done, self.total)


def _check_pair(base: LoadedModel, candidate: LoadedModel, threshold: float) -> None:
    """Refuse a threshold outside (0, 1], one model object twice, or models of different depth."""
    if not 0 < threshold <= 1:
        raise ConfigError(f"restoration threshold must be in (0, 1], got {threshold!r}", "use e.g. 0.8 for 80%")
    if base.model is candidate.model:
        raise LayercheckError(
            "the base and the candidate are the same model object",
            "load the base and the candidate separately (two load_model calls)",
        )
    if base.num_layers != candidate.num_layers:
        raise LayercheckError(
            f"the base has {base.num_layers} layers and the candidate {candidate.num_layers}, so layers "
            "cannot be swapped back",
            "localise a fine-tune against the model it was fine-tuned from (same architecture and depth)",
        )


def _group_list(
    num_layers: int,
    groups: Sequence[LayerGroup] | str,
    bands: DepthBands,
    weights: WeightDelta | None,
    include_all: bool,
) -> list[LayerGroup]:
    """The groups to revert: from a strategy string, or the given ones (plus "all" unless present)."""
    if isinstance(groups, str):
        return layer_groups(num_layers, groups, bands=bands, weights=weights, include_all=include_all)
    group_list = list(groups)
    if include_all and all(g.layers != tuple(range(num_layers)) for g in group_list):
        group_list.append(LayerGroup("all", tuple(range(num_layers)), "all"))
    return group_list


def _suite_loss(
    job: _SuiteJob,
    base: tuple[float, ...],
    candidate: tuple[float, ...],
    allowed: float,
    threshold: float,
    alpha: float,
) -> SuiteLocalisation:
    """One suite's base and candidate intact outcomes, before any restoration."""
    return SuiteLocalisation(
        suite=job.info.name,
        capability=job.info.capability,
        protocol=job.info.protocol,
        metric=job.metric,
        items=len(base),
        base=mean(base),
        candidate=mean(candidate),
        loss_p_value=_paired(base, candidate)[2],
        allowed=allowed,
        threshold=threshold,
        alpha=alpha,
    )


def _restoration(
    group: LayerGroup, entry: SuiteLocalisation, before: tuple[float, ...], outcomes: tuple[float, ...]
) -> Restoration:
    """The candidate with ``group`` reverted: its accuracy, the share of the loss it recovers, its paired test."""
    fixed, broken, p_value = _paired(before, outcomes)
    accuracy = mean(outcomes)
    recovered = (accuracy - entry.candidate) / entry.loss if entry.loss > 0 else None
    return Restoration(group, accuracy, recovered, fixed, broken, p_value, outcomes)
