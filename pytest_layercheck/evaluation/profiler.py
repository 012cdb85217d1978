"""The depth-profile engine: score each suite intact and with layers removed, then aggregate by band.

Removing a whole band at once is too coarse for small models (every band's removal drives accuracy to
near zero), so the default removes one layer at a time and aggregates per band; whole-band removal and
sliding windows of k layers are options. Tokenisation happens once per suite; every evaluation is
cached on disk by model fingerprint, suite hash, protocol, ablation and settings.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.bands import DepthBands
from pytest_layercheck.data.profile_data import INTACT, DepthProfile, Evaluation, SuiteInfo
from pytest_layercheck.evaluation.result_cache import ResultCache
from pytest_layercheck.evaluation.service import (
    cache_identity,
    deterministic,
    evaluate_ablations,
)
from pytest_layercheck.evaluation.settings import ProfileSettings
from pytest_layercheck.evaluation.sharding import Shard, SweepJob, run_sharded
from pytest_layercheck.model.ablation import Ablation
from pytest_layercheck.model.environment import collect_environment
from pytest_layercheck.model.loading import LoadedModel
from pytest_layercheck.scoring.flops import ModelShape, TokenWork, evaluation_flops
from pytest_layercheck.scoring.protocols import PreparedSuite, prepare
from pytest_layercheck.scoring.rendering import with_chat_template
from pytest_layercheck.suites.builtin import resolve_suites
from pytest_layercheck.suites.protocols import get_protocol
from pytest_layercheck.suites.schema import Suite, SuiteWarning

ProgressHook = Callable[[str, int, int], None]

#: What a partial profile needs: per suite name, the bands whose ablations to compute (the intact
#: evaluation is always computed). A suite absent from the mapping is not computed at all.
Needs = Mapping[str, frozenset[str]]
ALL_BANDS: frozenset[str] = frozenset({"*"})


def plan_ablations(num_layers: int, mode: str, bands: DepthBands) -> list[tuple[int, ...]]:
    """The sets of layers removed, one evaluation each: per layer, per band or per window of k."""
    if mode == "layers":
        return [(i,) for i in range(num_layers)]
    if mode == "bands":
        return [layers for layers in bands.as_dict(num_layers).values() if layers]
    if mode.startswith("window:"):
        try:
            width = int(mode.split(":", 1)[1])
        except ValueError:
            width = 0
        if not 1 <= width <= num_layers:
            raise ConfigError(f"bad window mode {mode!r}", f"use window:K with 1 <= K <= {num_layers}")
        return [tuple(range(start, start + width)) for start in range(num_layers - width + 1)]
    raise ConfigError(f"unknown profile mode {mode!r}", "use 'layers' (default), 'bands' or 'window:K'")


def plan_for(
    plan: Sequence[tuple[int, ...]], bands: Mapping[str, Sequence[int]], wanted: frozenset[str]
) -> list[tuple[int, ...]]:
    """The ablations of ``plan`` that the bands in ``wanted`` aggregate (all of them for ALL_BANDS)."""
    if wanted == ALL_BANDS:
        return list(plan)
    members = [set(bands[band]) for band in wanted if band in bands]
    return [removed for removed in plan if any(set(removed) <= band for band in members)]


def build_profile(
    loaded: LoadedModel,
    settings: ProfileSettings | None = None,
    *,
    cache: ResultCache | None = None,
    progress: ProgressHook | None = None,
    needs: Needs | None = None,
    shard: Shard | None = None,
    log: Callable[[str], None] | None = None,
) -> DepthProfile:
    """Profile ``loaded`` under ``settings``; deterministic for a given model, suite and settings.

    Each suite is scored intact on its ``limit`` items and, under every ablation of the plan, on its
    first ``sweep_limit`` items. ``needs`` restricts the work to some suites and bands (what a pytest
    session's checks ask for); the result is then a partial profile with the same cells' values.
    With a ``shard`` (a pytest-xdist worker's place in its run) the evaluations are shared out among
    the run's workers (:mod:`.sharding`; ``log`` hears of claims taken over); the profile is the same.
    """
    settings = settings or ProfileSettings()
    cache = cache if cache is not None else ResultCache()
    num_layers = loaded.num_layers
    plan = plan_ablations(num_layers, settings.mode, settings.bands)
    band_layers = settings.bands.as_dict(num_layers)
    suites = _suites_to_profile(loaded, settings, needs)
    work = {
        suite.name: plan_for(plan, band_layers, needs[suite.name] if needs is not None else ALL_BANDS)
        for suite in suites
    }
    infos, scored, calls = _plan_calls(suites, settings, work)
    total = sum(len(call.ablations) + call.counts_intact for call in calls)
    with deterministic(settings.seed):
        if shard is None:
            outputs = _run_calls(loaded, settings, calls, cache, progress, total)
        else:
            outputs = _run_sharded(loaded, settings, calls, cache, shard, log)
    evaluations, intact_parts = _gathered(calls, outputs)
    for (name, protocol), parts in intact_parts.items():
        evaluations[(name, protocol, INTACT)] = _joined(parts)
        # Here, not in a helper: the warning's stacklevel names build_profile's caller.
        warn_if_at_chance(scored[name], infos[name], evaluations[(name, protocol, INTACT)])
    if progress:
        progress("done", total, total)
    return DepthProfile(
        model=loaded.describe(),
        environment=collect_environment(loaded.device),
        settings=settings.describe(),
        suites=infos,
        bands=band_layers,
        evaluations=evaluations,
    )


def _suites_to_profile(loaded: LoadedModel, settings: ProfileSettings, needs: Needs | None) -> list[Suite]:
    """The suites the profile scores, with the chat template applied when asked for.

    Every suite is loaded and checked first, also those this run skips: bad input fails early.
    """
    return [
        with_chat_template(suite, loaded.tokenizer, settings.chat_template)
        for suite in resolve_suites(settings.suites)
        if needs is None or suite.name in needs
    ]


def _plan_calls(
    suites: Sequence[Suite], settings: ProfileSettings, work: Mapping[str, Sequence[tuple[int, ...]]]
) -> tuple[dict[str, SuiteInfo], dict[str, Suite], list[_Call]]:
    """Per suite its info and the items it is scored on intact, and the service calls of every suite,
    in suite order; ``work`` names the layer sets each suite's ablations remove."""
    infos: dict[str, SuiteInfo] = {}
    scored: dict[str, Suite] = {}
    calls: list[_Call] = []
    for suite in suites:
        protocol = settings.protocols.get(suite.name, suite.default_protocol)
        limited = scored[suite.name] = suite.limited(settings.limit_for(suite.name))
        swept = limited.limited(settings.sweep_limit_for(suite.name))
        ids = tuple(i.id for i in limited.items)
        info = SuiteInfo(
            suite.name,
            suite.capability,
            suite.content_hash,
            protocol,
            ids,
            sweep_items=len(swept.items) if len(swept.items) < len(ids) else None,
        )
        infos[suite.name] = info
        ablations = [Ablation.skipping(removed) for removed in work[suite.name]]
        calls.extend(_suite_calls(limited, swept, info, ablations))
    return infos, scored, calls


def _suite_calls(limited: Suite, swept: Suite, info: SuiteInfo, ablations: list[Ablation]) -> list[_Call]:
    """One suite's service calls: one call when the sweep scores every item, else two (see below)."""
    if info.sweep_items is None:
        return [_Call(info.name, info.protocol, limited, info, ablations, intact_part=0, counts_intact=True)]
    # The intact cell is the sweep's own intact run on the leading items, then the other items
    # scored intact on their own: no item is scored intact twice. A profile that needs no
    # ablation of the suite splits the same way, so every profile has the same cell values.
    rest = replace(limited, items=limited.items[info.sweep_items :])
    return [
        _Call(
            info.name,
            info.protocol,
            swept,
            replace(info, item_ids=info.swept_ids, sweep_items=None),
            ablations,
            intact_part=0,
            counts_intact=False,
        ),
        _Call(
            info.name,
            info.protocol,
            rest,
            replace(info, item_ids=info.item_ids[info.sweep_items :], sweep_items=None),
            [],
            intact_part=1,
            counts_intact=True,
        ),
    ]


def _gathered(
    calls: Sequence[_Call], outputs: Sequence[Sequence[Evaluation]]
) -> tuple[dict[tuple[str, str, str], Evaluation], dict[tuple[str, str], list[Evaluation]]]:
    """The calls' ablated evaluations by (suite, protocol, ablation), and the parts of each suite's
    intact cell by (suite, protocol), in item order."""
    evaluations: dict[tuple[str, str, str], Evaluation] = {}
    intact_parts: dict[tuple[str, str], list[Evaluation]] = {}
    for call, output in zip(calls, outputs):
        intact, *ablated = output
        intact_parts.setdefault((call.suite, call.protocol), []).insert(call.intact_part, intact)
        for evaluation in ablated:
            evaluations[(call.suite, call.protocol, evaluation.ablation)] = evaluation
    return evaluations, intact_parts


def chance_level(suite: Suite, protocol: str) -> float:
    """The primary metric of a model that guesses: 1/choices averaged over the items for multiple choice, else 0."""
    if not get_protocol(protocol).multiple_choice:
        return 0.0
    return sum(1 / len(item.choices) for item in suite.items) / max(len(suite.items), 1)


def warn_if_at_chance(suite: Suite, info: SuiteInfo, intact: Evaluation) -> None:
    """A suite the intact model scores 0 or chance on measures nothing: a guard on it can never fail,
    since there is no score to lose. It is almost always an input mistake (an answer scored after two
    spaces, the wrong protocol or template), so it is said as a :class:`SuiteWarning`, which the CLI
    prints as ``layercheck: warning:`` and pytest lists in its warnings summary."""
    metric = info.primary_metric
    value = intact.mean(metric)
    chance = chance_level(suite, info.protocol)
    if not value <= chance + 1e-9:
        return
    level = f"no better than chance ({chance:.3f})" if chance > 0 else "the lowest score there is"
    warnings.warn(
        SuiteWarning(
            f"suite {info.name!r} scores {value:.3f} ({metric} under {info.protocol}, {len(intact.outcomes[metric])} items) "
            f"on the intact model, {level}: if this is the model you record baselines from, a guard on this suite can "
            "never fail, as there is no score to lose. Check the suite's target_delimiter (answers that already begin "
            "with a space are scored after two), its protocol (--protocols) and template, and that the model is the one "
            "you meant"
        ),
        stacklevel=3,
    )


@dataclass(frozen=True)
class _Call:
    """One call of the evaluation service: ``subset`` of a suite intact and under ``ablations``."""

    suite: str
    protocol: str
    subset: Suite
    info: SuiteInfo
    ablations: list[Ablation]
    #: Which part of the suite's intact cell this call's intact evaluation is, in item order: 0 for
    #: the leading items (all of them when the call scores every item), 1 for the items after them.
    intact_part: int
    #: Whether the call counts as the suite's intact evaluation in progress counts (one call per suite).
    counts_intact: bool

    @property
    def keys(self) -> tuple[str, ...]:
        return (INTACT, *(a.key for a in self.ablations))


def _run_calls(
    loaded: LoadedModel,
    settings: ProfileSettings,
    calls: Sequence[_Call],
    cache: ResultCache,
    progress: ProgressHook | None,
    total: int,
) -> list[list[Evaluation]]:
    """Each call through the cached service, one after the other: [intact, *ablations] per call."""
    outputs = []
    done = 0
    for call in calls:

        def on_step(done_here: int, _total: int, base: int = done, call: _Call = call) -> None:
            if progress:  # the call's evaluations, scaled to those it counts for
                units = len(call.ablations) + call.counts_intact
                progress(call.suite, base + done_here * units // (len(call.ablations) + 1), total)

        outputs.append(
            evaluate_ablations(
                loaded.runtime,
                loaded.tokenizer,
                call.subset,
                call.info,
                call.ablations,
                cache=cache,
                identity=_identity(loaded, call.info, settings.seed),
                batch_size=settings.batch_size,
                progress=on_step,
            )
        )
        done += len(call.ablations) + call.counts_intact
    return outputs


def _joined(parts: Sequence[Evaluation]) -> Evaluation:
    """One evaluation of the items of ``parts`` in turn (the parts of an intact cell, in item order)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    answers = [part.answers for part in parts]
    return replace(
        first,
        outcomes={metric: tuple(v for part in parts for v in part.outcomes[metric]) for metric in first.outcomes},
        answers=None if any(a is None for a in answers) else tuple(v for a in answers for v in a or ()),
    )


def _identity(loaded: LoadedModel, info: SuiteInfo, seed: int) -> Callable[[str], dict[str, object]]:
    return lambda key: cache_identity(loaded, info, key, seed)


def _tokenised(loaded: LoadedModel, call: _Call) -> Callable[[], PreparedSuite]:
    """The call's suite, tokenised on first use and once (the units of a sweep share it)."""
    return functools.cache(lambda: prepare(call.subset, call.info.protocol, loaded.tokenizer))


def _estimate(
    shape: Callable[[], ModelShape], call: _Call, tokenised: Callable[[], PreparedSuite]
) -> Callable[[], tuple[float, dict[str, float]]]:
    """The FLOPs of a call's intact pass and of each ablation in its sweep (:mod:`scoring.flops`), for
    sharing the work out by cost: tokens per item differ tenfold between suites."""

    def estimate() -> tuple[float, dict[str, float]]:
        prepared = tokenised()
        if prepared.loglikelihood is not None:
            work, reuse = TokenWork.of(prepared.loglikelihood), True
        elif prepared.generation is not None:
            work, reuse = TokenWork.of_generation(prepared.generation), False  # generation runs each model whole
        else:
            return 1.0, {}
        base = float(evaluation_flops(work, shape()))
        return base, {a.key: float(evaluation_flops(work, shape(), a, reuse=reuse)) for a in call.ablations}

    return estimate


def _run_sharded(
    loaded: LoadedModel,
    settings: ProfileSettings,
    calls: Sequence[_Call],
    cache: ResultCache,
    shard: Shard,
    log: Callable[[str], None] | None,
) -> list[list[Evaluation]]:
    """The calls' evaluations shared out among the run's xdist workers (:func:`sharding.run_sharded`)."""
    jobs = []
    shape = functools.cache(lambda: ModelShape.of(loaded.runtime))
    for call in calls:
        tokenised = _tokenised(loaded, call)
        by_key = {a.key: a for a in call.ablations}

        def compute(
            keys: Sequence[str],
            beat: Callable[[], None],
            call: _Call = call,
            by_key: dict[str, Ablation] = by_key,
            tokenised: Callable[[], PreparedSuite] = tokenised,
        ) -> dict[str, Evaluation]:
            wanted = [by_key[k] for k in keys if k != INTACT]
            computed = evaluate_ablations(
                loaded.runtime,
                loaded.tokenizer,
                call.subset,
                call.info,
                wanted,
                batch_size=settings.batch_size,
                prepared=tokenised,
                progress=lambda _done, _total: beat(),
            )
            found = dict(zip((INTACT, *(a.key for a in wanted)), computed))
            return {k: found[k] for k in keys}

        jobs.append(
            SweepJob(
                label=call.suite if call.ablations else f"{call.suite} (intact, {len(call.subset.items)} items)",
                keys=call.keys,
                identity=_identity(loaded, call.info, settings.seed),
                compute=compute,
                estimate=_estimate(shape, call, tokenised),
            )
        )
    results = run_sharded(jobs, shard, cache, log)
    return [[found[key] for key in call.keys] for call, found in zip(calls, results)]
