"""Synthetic depth-sensitivity profiles for tests: no model, deterministic 0/1 outcomes.

``make_profile()`` gives a plausible profile (removing shallow layers hurts most). Two calls with the
same arguments give identical profiles, so a "current" run is the baseline call plus ``flip``:

    baseline = make_profile()
    current = make_profile(flip={("knowledge", "shallow"): 30})  # 30 more items wrong per shallow ablation

``flip[(suite, band)] = k`` turns the first ``k`` correct items wrong in every evaluation of that cell
(``band="intact"`` for the unablated model); a negative ``k`` turns ``-k`` wrong items right. Flipped
pairs are therefore exactly ``abs(k) × number of ablations in the band``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from pytest_layercheck.data.profile_data import CELL_METRIC, INTACT, PRIMARY_METRIC, DepthProfile, Evaluation, SuiteInfo

#: name -> (protocol, number of items)
DEFAULT_SUITES: dict[str, tuple[str, int]] = {
    "knowledge": ("mc_letters", 200),
    "reasoning": ("mc_text", 200),
    "retrieval": ("generate_until", 200),
}
#: Fraction of the intact model's correct items that removing one layer of the band gets wrong.
DEFAULT_BAND_DAMAGE: dict[str, float] = {"shallow": 0.4, "middle": 0.15, "deep": 0.05}
BAND_FRACTIONS: dict[str, tuple[float, float]] = {
    "shallow": (0.0, 1 / 3),
    "middle": (1 / 3, 2 / 3),
    "deep": (2 / 3, 1.0),
}


def default_bands(num_layers: int) -> dict[str, tuple[int, ...]]:
    """Thirds of the layer stack, as the plugin's default band definition."""
    return {
        band: tuple(i for i in range(num_layers) if lo <= i / num_layers < hi)
        for band, (lo, hi) in BAND_FRACTIONS.items()
    }


def make_profile(
    num_layers: int = 6,
    suites: Mapping[str, tuple[str, int]] | None = None,
    *,
    flip: Mapping[tuple[str, str], int] | None = None,
    accuracy: float = 0.7,
    band_damage: Mapping[str, float] | None = None,
    bands: Mapping[str, tuple[int, ...]] | None = None,
    mode: str = "layers",
    seed: int = 0,
    name: str = "tiny-model",
    fingerprint: str = "f" * 64,
    model: Mapping[str, Any] | None = None,
    content_hashes: Mapping[str, str] | None = None,
    item_prefix: str = "item",
    limit: int | None = None,
    extra_metrics: bool = True,
) -> DepthProfile:
    """A DepthProfile with controllable per-cell drops; see the module docstring."""
    suites = dict(DEFAULT_SUITES if suites is None else suites)
    bands = dict(default_bands(num_layers) if bands is None else bands)
    damage = {**DEFAULT_BAND_DAMAGE, **(band_damage or {})}
    flip = dict(flip or {})
    ablations = _ablations(bands, mode)

    infos: dict[str, SuiteInfo] = {}
    evaluations: dict[tuple[str, str, str], Evaluation] = {}
    for suite, (protocol, n_items) in suites.items():
        infos[suite] = SuiteInfo(
            name=suite,
            capability=suite,
            protocol=protocol,
            content_hash=(content_hashes or {}).get(suite, f"hash-{suite}"),
            item_ids=tuple(f"{suite}-{item_prefix}-{i:04d}" for i in range(n_items)),
        )
        rng = random.Random(f"{seed}/{suite}")
        intact = [1.0 if rng.random() < accuracy else 0.0 for _ in range(n_items)]
        for key, (band, removed) in {INTACT: (INTACT, ()), **ablations}.items():
            values = list(intact)
            if band != INTACT:
                _damage(values, damage.get(band, 0.0), random.Random(f"{seed}/{suite}/{key}"))
            _flip(values, flip.get((suite, band), 0))
            evaluations[(suite, protocol, key)] = Evaluation(
                suite=suite,
                protocol=protocol,
                ablation=key,
                removed_layers=removed,
                outcomes=_metrics(protocol, tuple(values), extra_metrics),
            )
    return DepthProfile(
        model={
            "name": name,
            "spec": f"tiny:{name}",
            "kind": "tiny",
            "model_type": "llama",
            "num_layers": num_layers,
            "fingerprint": fingerprint,
            "device": "cpu",
            "dtype": "float32",
            **(model or {}),
        },
        environment={
            "versions": {
                "python": "3.11",
                "torch": "2.5.0",
                "transformers": "5.0.0",
                "pytest_layercheck": "0.1.0",
                "platform": "linux",
            }
        },
        settings={
            "mode": mode,
            "limit": limit,
            "seed": seed,
            "bands": {b: list(f) for b, f in BAND_FRACTIONS.items()},
            "protocols": sorted({p for p, _ in suites.values()}),
        },
        suites=infos,
        bands=bands,
        evaluations=evaluations,
    )


def _ablations(bands: Mapping[str, tuple[int, ...]], mode: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Ablation key -> (band, removed layers): one per layer ("layers") or one per band ("bands")."""
    if mode == "bands":
        return {f"band:{band}": (band, tuple(layers)) for band, layers in bands.items() if layers}
    return {f"layer:{layer:02d}": (band, (layer,)) for band, layers in bands.items() for layer in layers}


def _damage(values: list[float], fraction: float, rng: random.Random) -> None:
    correct = [i for i, v in enumerate(values) if v == 1.0]
    for i in rng.sample(correct, round(fraction * len(correct))):
        values[i] = 0.0


def _flip(values: list[float], k: int) -> None:
    source, target = (1.0, 0.0) if k > 0 else (0.0, 1.0)
    candidates = [i for i, v in enumerate(values) if v == source]
    if abs(k) > len(candidates):
        raise ValueError(f"cannot flip {abs(k)} items, only {len(candidates)} have value {source}")
    for i in candidates[: abs(k)]:
        values[i] = target


def _metrics(protocol: str, values: tuple[float, ...], extra: bool) -> dict[str, tuple[float, ...]]:
    """The primary metric and the one cells are judged by (for multiple choice ``p_correct``, here equal to the
    0/1 outcome: a model sure of every answer), plus (``extra``) an ``acc_norm`` and a non-binary score."""
    outcomes = {PRIMARY_METRIC[protocol]: values, CELL_METRIC[protocol]: values}
    if extra and protocol.startswith("mc_"):
        outcomes["acc_norm"] = values
        outcomes["logprob"] = tuple(-1.5 + 0.5 * v for v in values)
    return outcomes
