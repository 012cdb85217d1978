"""The data of a depth-sensitivity profile: evaluations with per-item outcomes, and cells.

An *evaluation* is one suite scored under one protocol with one ablation applied ("intact", or
layers removed). A *cell* is capability × band × protocol × metric: the accuracy with the band's
layers removed, aggregated over the evaluations that belong to the band (in the default per-layer
mode, the mean over removing each of the band's layers in turn). Per-item outcomes are kept so that
a later run can be compared with a paired test instead of by means alone.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_layercheck.data.records import (  # noqa: F401 - re-exported: the profile's vocabulary
    CELL_METRIC,
    INTACT,
    PRIMARY_METRIC,
    SCHEMA_VERSION,
    Cell,
    Evaluation,
    SuiteInfo,
)
from pytest_layercheck.data.statistics import mean
from pytest_layercheck.data.validation import check_derived, check_profile_json, decode_outcomes


@dataclass
class DepthProfile:
    """A complete profile of one model; serialisable to and from the baseline JSON format."""

    model: dict[str, Any]
    environment: dict[str, Any]
    settings: dict[str, Any]
    suites: dict[str, SuiteInfo]
    bands: dict[str, tuple[int, ...]]
    evaluations: dict[tuple[str, str, str], Evaluation] = field(default_factory=dict)

    # ----------------------------------------------------------------- lookup
    def evaluation(self, suite: str, ablation: str = INTACT) -> Evaluation:
        return self.evaluations[(suite, self.suites[suite].protocol, ablation)]

    def per_layer(self, suite: str, metric: str | None = None) -> dict[int, float]:
        """Accuracy with each single layer removed (only the single-layer evaluations present)."""
        info = self.suites[suite]
        metric = metric or info.cell_metric
        return {
            ev.removed_layers[0]: ev.mean(metric)
            for (name, protocol, _), ev in self.evaluations.items()
            if name == suite and protocol == info.protocol and len(ev.removed_layers) == 1
        }

    def band_ablations(self, suite: str, band: str) -> list[Evaluation]:
        """Evaluations whose removed layers all lie in ``band`` (per-layer, window or whole-band)."""
        info = self.suites[suite]
        members = set(self.bands[band])
        return [
            ev
            for (name, protocol, key), ev in sorted(self.evaluations.items())
            if name == suite
            and protocol == info.protocol
            and key != INTACT
            and ev.removed_layers
            and set(ev.removed_layers) <= members
        ]

    # ------------------------------------------------------------ aggregation
    def cells(self, metrics: Iterable[str] | None = None) -> list[Cell]:
        """Every cell of the profile: per suite, the intact cell then one per non-empty band."""
        out: list[Cell] = []
        for name, info in self.suites.items():
            intact = self.evaluation(name)
            for metric in metrics or [info.cell_metric]:
                if metric not in intact.outcomes:
                    continue
                intact_value = intact.mean(metric)
                cell = functools.partial(Cell, name, info.capability, info.protocol, metric)
                out.append(cell(INTACT, (), (INTACT,), intact_value, intact_value, intact_value, INTACT))
                # A band's drop is measured on the items the sweep scored, against the intact model's
                # outcomes on those same items.
                swept = intact.outcomes[metric][: len(info.swept_ids)]
                swept_intact = mean(swept)
                for band, layers in self.bands.items():
                    group = self.band_ablations(name, band)
                    if not group:
                        continue
                    means = [ev.mean(metric) for ev in group]
                    worst_index = min(range(len(means)), key=means.__getitem__)
                    out.append(
                        cell(
                            band,
                            tuple(layers),
                            tuple(ev.ablation for ev in group),
                            mean(means),
                            swept_intact,
                            means[worst_index],
                            group[worst_index].ablation,
                        )
                    )
        return out

    def cell(self, suite_or_capability: str, band: str, metric: str | None = None) -> Cell:
        """Look a cell up by suite name or capability, band and metric (default: the one cells are judged by)."""
        for candidate in self.cells(None if metric is None else [metric]):
            if suite_or_capability in (candidate.suite, candidate.capability) and candidate.band == band:
                return candidate
        raise KeyError(f"no cell for {suite_or_capability!r} / {band!r} / {metric or 'primary metric'}")

    # ---------------------------------------------------------- serialisation
    def to_json(self) -> dict[str, Any]:
        evaluations: dict[str, dict[str, Any]] = {}
        for (suite, protocol, key), ev in sorted(self.evaluations.items()):
            evaluations.setdefault(suite, {})[key] = {
                "protocol": protocol,
                "removed_layers": list(ev.removed_layers),
                "means": {m: ev.mean(m) for m in sorted(ev.outcomes)},
                "outcomes": {m: _encode_outcomes(v) for m, v in sorted(ev.outcomes.items())},
            }
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "environment": self.environment,
            "settings": self.settings,
            "bands": {name: list(layers) for name, layers in self.bands.items()},
            "suites": {name: {**asdict(info), "item_ids": list(info.item_ids)} for name, info in self.suites.items()},
            "cells": [
                {**asdict(c), "layers": list(c.layers), "ablations": list(c.ablations), "drop": c.drop}
                for c in self.cells()
            ],
            "evaluations": evaluations,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DepthProfile:
        """Decode a profile document strictly: a malformed, non-finite or hand-edited one raises SchemaError."""
        check_profile_json(data)
        suites = {
            name: SuiteInfo(
                name=name,
                capability=s["capability"],
                content_hash=s["content_hash"],
                protocol=s["protocol"],
                item_ids=tuple(s["item_ids"]),
                sweep_items=s.get("sweep_items"),
            )
            for name, s in data["suites"].items()
        }
        evaluations = {}
        for suite, by_key in data["evaluations"].items():
            for key, ev in by_key.items():
                expected = len(suites[suite].ids_for(key))
                evaluations[(suite, ev["protocol"], key)] = Evaluation(
                    suite=suite,
                    protocol=ev["protocol"],
                    ablation=key,
                    removed_layers=tuple(ev["removed_layers"]),
                    outcomes={
                        m: decode_outcomes(v, f"evaluations.{suite}.{key}.outcomes.{m}", expected, m)
                        for m, v in ev["outcomes"].items()
                    },
                )
        profile = cls(
            model=dict(data["model"]),
            environment=dict(data["environment"]),
            settings=dict(data["settings"]),
            suites=suites,
            bands={k: tuple(v) for k, v in data["bands"].items()},
            evaluations=evaluations,
        )
        check_derived(data, profile.to_json())
        return profile


def _encode_outcomes(values: tuple[float, ...]) -> str | list[float]:
    """Binary outcomes become a compact, diff-friendly "0110…" string; other metrics stay numbers."""
    if all(v in (0.0, 1.0) for v in values):
        return "".join("1" if v else "0" for v in values)
    return [float(v) for v in values]  # full precision: the stored means must be what these values give


def merge_profiles(old: DepthProfile, new: DepthProfile) -> DepthProfile:
    """``old`` with ``new``'s suites added or replacing its own: a partial re-record keeps the rest.

    Both must be measured the same way (same model weights, dtype, mode and bands); otherwise the kept
    suites would describe another model or another measurement, so the merge is refused with the fix.
    """
    from pytest_layercheck.core.errors import BaselineError

    kept = [name for name in old.suites if name not in new.suites]
    if kept:
        differences = [
            what
            for what, a, b in (
                ("model fingerprint", old.model.get("fingerprint"), new.model.get("fingerprint")),
                ("dtype", old.model.get("dtype"), new.model.get("dtype")),
                ("ablation mode", old.settings.get("mode"), new.settings.get("mode")),
                ("bands", old.bands, new.bands),
            )
            if a != b
        ]
        if differences:
            raise BaselineError(
                f"cannot merge suites {sorted(new.suites)} into a baseline that also holds {kept}: "
                f"its {', '.join(differences)} differ from this run's",
                f"re-record every suite in one run (add {','.join(kept)} to the suites), or delete the old file",
            )
    # The stored order first (it orders tables and cells), new suites after it.
    suites = {name: new.suites.get(name, info) for name, info in old.suites.items()}
    suites.update(new.suites)
    settings = dict(new.settings)
    for key in ("limit", "sweep_limit"):
        before, after = old.settings.get(key), new.settings.get(key)
        if kept and isinstance(before, dict) and isinstance(after, dict):
            settings[key] = {
                name: after.get(name, before.get(name)) for name in suites if name in after or name in before
            }
    evaluations = {key: ev for key, ev in old.evaluations.items() if key[0] in kept}
    evaluations.update(new.evaluations)
    return DepthProfile(
        model=dict(new.model),
        environment=dict(new.environment),
        settings=settings,
        suites=suites,
        bands=dict(new.bands),
        evaluations=evaluations,
    )
