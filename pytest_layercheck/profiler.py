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
from .scoring.protocols import prepare, score
from .scoring.results import ProtocolResult
from .suites.builtin import BUILTIN_SUITES, resolve_suite
from .suites.schema import Suite

#: Items per suite in a default profile: sized so the whole default profile (three suites, every
#: layer of SmolLM2-135M removed in turn) stays under three minutes on a 2-core CPU.
DEFAULT_LIMIT = 40

ProgressHook = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ProfileSettings:
    """What a profile computes. Everything here is recorded in the baseline."""

    suites: tuple[str, ...] = BUILTIN_SUITES
    protocols: dict[str, str] = field(default_factory=dict)
    mode: str = "layers"
    bands: DepthBands = field(default_factory=DepthBands)
    limit: int | None = DEFAULT_LIMIT
    seed: int = 0
    batch_size: int | None = None

    def describe(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "limit": self.limit,
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
            limited = suite.limited(settings.limit)
            info = SuiteInfo(suite.name, suite.capability, suite.content_hash, protocol, tuple(i.id for i in limited.items))
            infos[suite.name] = info
            prepared = None  # tokenised lazily: a fully cached profile never tokenises
            for removed in [(), *plan]:
                ablation = Ablation.skipping(removed) if removed else Ablation()
                key = ablation.key if removed else INTACT
                if progress:
                    progress(f"{suite.name} · {key}", done, total)
                identity = _identity(loaded, info, key, settings)
                evaluation = cache.get(identity)
                if evaluation is None:
                    if prepared is None:
                        prepared = prepare(limited, protocol, loaded.tokenizer)
                    with ablate(loaded.model, ablation):
                        result = score(loaded.model, prepared, batch_size=settings.batch_size)
                    evaluation = to_evaluation(result, info, key, removed)
                    cache.put(identity, evaluation)
                evaluations[(suite.name, protocol, key)] = evaluation
                done += 1
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
