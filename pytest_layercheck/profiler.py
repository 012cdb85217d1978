"""The depth-profile engine: score each suite intact and with layers removed, then aggregate by band.

Removing a whole band at once is too coarse for small models (every band's removal drives accuracy to
near zero), so the default removes one layer at a time and aggregates per band; whole-band removal and
sliding windows of k layers are options. Tokenisation happens once per suite; every evaluation is
cached on disk by model fingerprint, suite hash, protocol, ablation and settings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .ablation import Ablation, ablate
from .architecture import get_adapter
from .bands import DepthBands
from .devices import dtype_name
from .environment import collect_environment
from .errors import ConfigError
from .loading import LoadedModel
from .profile_data import INTACT, DepthProfile, Evaluation, SuiteInfo
from .result_cache import ResultCache
from .scoring.protocols import prepare, score, score_sweep
from .scoring.results import ProtocolResult
from .suites.builtin import BUILTIN_SUITES, resolve_suite
from .suites.schema import Suite

#: Items per suite in a default profile, sized so the whole default profile (three suites, every
#: layer of SmolLM2-135M removed in turn) stays under three minutes on a 2-core CPU. Retrieval
#: items carry contexts of 150-600 tokens with nothing shared, so they cost several times more.
DEFAULT_LIMITS: dict[str, int] = {"knowledge": 40, "reasoning": 40, "retrieval": 16}
#: Items for suites without an entry in DEFAULT_LIMITS (user suites).
DEFAULT_LIMIT = 40

#: A limit: items for every suite (None = all), or per suite name (missing names take the default).
Limit = int | None | dict[str, int | None]

ProgressHook = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ProfileSettings:
    """What a profile computes. Everything here is recorded in the baseline."""

    suites: tuple[str, ...] = BUILTIN_SUITES
    protocols: dict[str, str] = field(default_factory=dict)
    mode: str = "layers"
    bands: DepthBands = field(default_factory=DepthBands)
    limit: Limit = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    seed: int = 0
    batch_size: int | None = None

    def limit_for(self, suite: str) -> int | None:
        """Items of ``suite`` to score (None = all)."""
        if isinstance(self.limit, dict):
            return self.limit.get(suite, DEFAULT_LIMITS.get(suite, DEFAULT_LIMIT))
        return self.limit

    def describe(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "limit": {suite: self.limit_for(suite) for suite in self.suites},
            "seed": self.seed,
            "bands": self.bands.describe(),
            "protocols": dict(self.protocols),
            "deterministic_algorithms": True,
        }


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


def build_profile(
    loaded: LoadedModel,
    settings: ProfileSettings | None = None,
    *,
    cache: ResultCache | None = None,
    progress: ProgressHook | None = None,
) -> DepthProfile:
    """Profile ``loaded`` under ``settings``; deterministic for a given model, suite and settings."""
    settings = settings or ProfileSettings()
    cache = cache if cache is not None else ResultCache()
    num_layers = get_adapter(loaded.model).num_layers
    plan = plan_ablations(num_layers, settings.mode, settings.bands)
    suites = [resolve_suite(name) for name in settings.suites]
    infos: dict[str, SuiteInfo] = {}
    evaluations: dict[tuple[str, str, str], Evaluation] = {}
    total = len(suites) * (len(plan) + 1)
    done = 0
    with _deterministic(settings.seed):
        for suite in suites:
            protocol = settings.protocols.get(suite.name, suite.default_protocol)
            limited = suite.limited(settings.limit_for(suite.name))
            info = SuiteInfo(suite.name, suite.capability, suite.content_hash, protocol, tuple(i.id for i in limited.items))
            infos[suite.name] = info
            variants = [(INTACT, ())] + [(Ablation.skipping(removed).key, removed) for removed in plan]
            identities = {key: _identity(loaded, info, key, settings) for key, _ in variants}
            found = {key: cache.get(identity) for key, identity in identities.items()}
            missing = [(key, removed) for key, removed in variants if found[key] is None and removed]
            if found[INTACT] is None or missing:
                # Tokenised only when something must be computed: a fully cached profile never tokenises.
                prepared = prepare(limited, protocol, loaded.tokenizer)
                base = done

                def on_step(step: int, steps: int, base: int = base, name: str = suite.name) -> None:
                    if progress:
                        progress(f"{name} · sweep", base + step * len(variants) // steps, total)

                intact, ablated = score_sweep(
                    loaded.model, prepared, [Ablation.skipping(removed) for _, removed in missing],
                    batch_size=settings.batch_size, on_step=on_step,
                )
                computed = [(INTACT, (), intact), *((key, removed, r) for (key, removed), r in zip(missing, ablated))]
                for key, removed, result in computed:
                    if found[key] is None:
                        found[key] = to_evaluation(result, info, key, removed)
                        cache.put(identities[key], found[key])
            for key, _ in variants:
                evaluations[(suite.name, protocol, key)] = found[key]  # type: ignore[assignment]
            done += len(variants)
            if progress:
                progress(suite.name, done, total)
    if progress:
        progress("done", done, total)
    return DepthProfile(
        model=loaded.describe(),
        environment=collect_environment(loaded.device),
        settings=settings.describe(),
        suites=infos,
        bands=settings.bands.as_dict(num_layers),
        evaluations=evaluations,
    )


def to_evaluation(result: ProtocolResult, info: SuiteInfo, key: str, removed: Sequence[int]) -> Evaluation:
    """Per-item outcomes, re-ordered to the suite's item order (the scorer may batch by length)."""
    by_id = {o.item_id: o for o in result.outcomes}
    metrics = result.metrics
    return Evaluation(
        suite=info.name,
        protocol=info.protocol,
        ablation=key,
        removed_layers=tuple(removed),
        outcomes={m: tuple(float(by_id[i].scores[m]) for i in info.item_ids) for m in metrics},
    )


def _identity(loaded: LoadedModel, info: SuiteInfo, ablation_key: str, settings: ProfileSettings) -> dict[str, object]:
    import transformers

    from . import __version__

    return {
        "fingerprint": loaded.fingerprint,
        "suite_hash": info.content_hash,
        "protocol": info.protocol,
        "ablation": ablation_key,
        "items": list(info.item_ids),
        "dtype": dtype_name(loaded.dtype),
        "device": loaded.device.type,
        "seed": settings.seed,
        "versions": [__version__, torch.__version__, transformers.__version__],
    }


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seeded, deterministic kernels for the duration of a profile; the caller's state is restored."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def score_suite_under(loaded: LoadedModel, suite: Suite, protocol: str | None = None, ablation: Ablation | None = None,
                      limit: int | None = None) -> ProtocolResult:
    """Score one suite once, optionally under an ablation: the building block for ad-hoc tests."""
    limited = suite.limited(limit)
    prepared = prepare(limited, protocol or suite.default_protocol, loaded.tokenizer)
    with ablate(loaded.model, ablation or Ablation()):
        return score(loaded.model, prepared)
