"""Whether two profiles can be compared cell by cell, and what differs between them that does not prevent it.

Profiles measured differently (layer count, suite version, bands, mode, items, ablated layers) are
refused outright, and so are profiles computed in another dtype or device type unless
``allow_precision_mismatch`` (then a warning says the verdicts carry precision noise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pytest_layercheck.core.errors import BaselineError
from pytest_layercheck.data.profile_data import DepthProfile
from pytest_layercheck.evaluation.baseline import UPDATE_FLAG

ALLOW_PRECISION_FLAG = "--layercheck-allow-precision-mismatch"


@dataclass(frozen=True)
class ComparisonContext:
    """What a comparison reports besides its cells: the differences between the profiles it allows."""

    warnings: list[str]  # may shift numbers; worth a look
    notes: list[str]  # expected differences, reported for the record
    missing_suites: list[str]  # in the baseline, not in this run
    new_suites: list[str]  # in this run, not in the baseline
    precision_mismatch: bool  # compared across dtype/device type (allowed explicitly)


def comparison_context(
    baseline: DepthProfile, current: DepthProfile, *, allow_precision_mismatch: bool = False
) -> ComparisonContext:
    """Refuse (BaselineError) profiles measured differently, or in another precision unless
    ``allow_precision_mismatch``; else the differences that leave them comparable."""
    name = current.model.get("name") or baseline.model.get("name") or "this model"
    problems = compatibility_problems(baseline, current)
    if problems:
        raise BaselineError(
            f"the baseline of {name} was measured differently from this run, so the two cannot be compared:\n"
            + "\n".join(f"  - {p}" for p in problems),
            f"if the change was intended, re-record the baseline with {UPDATE_FLAG}; "
            "otherwise run with the settings the baseline was recorded with",
        )
    warnings, notes = _context_differences(baseline, current)
    precision, unknown = precision_problems(baseline, current)
    if precision and not allow_precision_mismatch:
        raise BaselineError(
            f"the baseline of {name} was computed in another precision ({'; '.join(precision)}). Precision alone "
            "flips items (the default model scored knowledge 0.845 in float32 and 0.837 in bfloat16), so the "
            "verdicts would mix that noise with real change",
            "run with the baseline's --layercheck-dtype / --layercheck-device, record a baseline for this "
            f"precision with {UPDATE_FLAG}, or accept the noise with {ALLOW_PRECISION_FLAG}",
        )
    if precision:
        warnings.append(
            f"compared across precision ({'; '.join(precision)}), as allowed: precision noise is part of these verdicts"
        )
    if unknown:
        warnings.append(f"{' and '.join(unknown)} not recorded by both profiles; precision could not be checked")
    missing = [s for s in baseline.suites if s not in current.suites]
    new = [s for s in current.suites if s not in baseline.suites]
    if missing:
        warnings.append(f"suites in the baseline but not in this run (not compared): {', '.join(missing)}")
    if new:
        warnings.append(
            f"suites in this run but not in the baseline (not compared; record them with "
            f"{UPDATE_FLAG}): {', '.join(new)}"
        )
    return ComparisonContext(warnings, notes, missing, new, bool(precision))


def compatibility_problems(baseline: DepthProfile, current: DepthProfile) -> list[str]:
    """Every reason the two profiles cannot be compared cell by cell (empty when they can)."""
    problems: list[str] = []
    b_layers, c_layers = baseline.model.get("num_layers"), current.model.get("num_layers")
    if b_layers != c_layers:
        problems.append(f"layer count: baseline has {b_layers} layers, this model has {c_layers}")
    b_mode, c_mode = baseline.settings.get("mode"), current.settings.get("mode")
    if b_mode != c_mode:
        problems.append(f"ablation mode: baseline used {b_mode!r}, this run uses {c_mode!r}")
    if dict(baseline.bands) != dict(current.bands):
        problems.append(
            f"bands map to different layers: baseline {_bands_text(baseline)}, this run {_bands_text(current)}"
        )
    for name in baseline.suites.keys() & current.suites.keys():
        problems.extend(_suite_problems(name, baseline, current))
    return problems


def _bands_text(profile: DepthProfile) -> str:
    return ", ".join(f"{band}={list(layers)}" for band, layers in profile.bands.items()) or "(none)"


def _suite_problems(name: str, baseline: DepthProfile, current: DepthProfile) -> list[str]:
    old, new = baseline.suites[name], current.suites[name]
    problems = []
    if old.content_hash != new.content_hash:
        problems.append(
            f"suite {name!r} changed since the baseline was recorded "
            f"(content hash {old.content_hash[:12]} -> {new.content_hash[:12]})"
        )
    if old.protocol != new.protocol:
        problems.append(f"suite {name!r} is scored with protocol {new.protocol!r}, the baseline used {old.protocol!r}")
    if old.item_ids != new.item_ids:
        limits = f"limit: baseline {baseline.settings.get('limit')}, this run {current.settings.get('limit')}"
        problems.append(
            f"suite {name!r} has different items: {_item_difference(old.item_ids, new.item_ids)} ({limits})"
        )
    old_ablations, new_ablations = ablation_layers(baseline, name), ablation_layers(current, name)
    moved = sorted(k for k in old_ablations.keys() & new_ablations.keys() if old_ablations[k] != new_ablations[k])
    if old.protocol == new.protocol and moved:
        # Evaluations only one side has are fine (a partial profile): only cells both have are compared.
        problems.append(
            f"suite {name!r} was evaluated under different ablations (different layers removed: {_preview(moved)})"
        )
    return problems


def ablation_layers(profile: DepthProfile, suite: str) -> dict[str, tuple[int, ...]]:
    protocol = profile.suites[suite].protocol
    return {
        key: ev.removed_layers
        for (name, proto, key), ev in profile.evaluations.items()
        if name == suite and proto == protocol
    }


def _item_difference(old: Sequence[str], new: Sequence[str]) -> str:
    sizes = f"baseline {len(old)} items, this run {len(new)}"
    for index, (a, b) in enumerate(zip(old, new)):  # noqa: B905 - lengths may differ on purpose
        if a != b:
            return f"{sizes}; first difference at position {index}: {a!r} vs {b!r}"
    return sizes


def _preview(keys: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def precision_problems(baseline: DepthProfile, current: DepthProfile) -> tuple[list[str], list[str]]:
    """(differences in dtype or device type, fields one side does not record)."""
    problems, unknown = [], []
    for key, what in (("dtype", "dtype"), ("device", "device type")):
        old, new = _precision_field(baseline, key), _precision_field(current, key)
        if old is None or new is None:
            unknown.append(what)
        elif old != new:
            problems.append(f"{what}: baseline {old}, this run {new}")
    return problems, unknown


def _precision_field(profile: DepthProfile, key: str) -> str | None:
    value = profile.model.get(key) or profile.settings.get(key)
    if value is None:
        return None
    return str(value).split(":")[0] if key == "device" else str(value)


def _context_differences(baseline: DepthProfile, current: DepthProfile) -> tuple[list[str], list[str]]:
    """Differences that do not prevent a comparison: (warnings, notes)."""
    warnings: list[str] = []
    notes: list[str] = []
    b_fp, c_fp = baseline.model.get("fingerprint"), current.model.get("fingerprint")
    if b_fp != c_fp:
        notes.append(
            f"weights differ from the baseline (fingerprint {str(b_fp)[:12]} -> {str(c_fp)[:12]}), "
            "as expected when checking a fine-tune or a new checkpoint against its base"
        )
    old_versions = baseline.environment.get("versions", baseline.environment)
    new_versions = current.environment.get("versions", current.environment)
    for key in ("torch", "transformers"):
        old, new = old_versions.get(key), new_versions.get(key)
        if old is not None and new is not None and old != new:
            warnings.append(f"{key} version differs from the baseline ({old} -> {new}); numbers can shift slightly")
    return warnings, notes
