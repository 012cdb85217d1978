"""The baseline store: one readable, diff-friendly JSON file per model profile under ``baselines/``.

Baselines are reviewed and committed like snapshots, so the store follows syrupy's rules: nothing is
written unless the user asked for it (``--layercheck-update``), a missing baseline is an error that
says how to record one, and every save reports whether it wrote, updated or left the file unchanged.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pytest_layercheck.core.atomic import atomic_write_text
from pytest_layercheck.core.errors import BaselineError, ConfigError
from pytest_layercheck.data.metrics import metric_kind
from pytest_layercheck.data.profile_data import INTACT, SCHEMA_VERSION, DepthProfile, merge_profiles
from pytest_layercheck.data.validation import loads_strict

UPDATE_FLAG = "--layercheck-update"
DEFAULT_FOLDER = "baselines"
#: Top-level keys whose change alone does not make a baseline "updated": they record where it was
#: measured, not what was measured. Rewriting a file for them would only churn the git history.
_PROVENANCE_KEYS = frozenset({"environment"})

SaveStatus = Literal["written", "updated", "unchanged"]


def slugify(name: str) -> str:
    """File-name form of a model name: ``SmolLM2-135M-Instruct`` -> ``smollm2-135m-instruct``."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.strip().lower()).strip("-.")
    if not slug:
        raise ConfigError(
            f"model name {name!r} gives an empty baseline file name", "give the model a name with letters or digits"
        )
    return slug


@dataclass(frozen=True)
class SaveResult:
    """What :meth:`BaselineStore.save` did, so the plugin can report "N baselines written/updated"."""

    name: str
    path: Path
    status: SaveStatus
    changes: list[str] = field(default_factory=list)


def summarise_saves(results: Iterable[SaveResult]) -> str:
    """``"1 baseline written, 2 updated, 3 unchanged"`` (empty string when nothing was saved)."""
    counts = Counter(r.status for r in results)
    statuses: tuple[SaveStatus, ...] = ("written", "updated", "unchanged")
    parts = [f"{counts[s]} {s}" for s in statuses if counts[s]]
    if parts:
        first = next(s for s in statuses if counts[s])
        parts[0] = f"{counts[first]} baseline{'' if counts[first] == 1 else 's'} {first}"
    return ", ".join(parts)


class BaselineStore:
    """Reads and writes baselines in ``folder`` (``baselines/`` relative to the rootdir by default)."""

    def __init__(self, folder: Path | str = DEFAULT_FOLDER) -> None:
        self.folder = Path(folder)

    def path_for(self, name: str) -> Path:
        return self.folder / f"{slugify(name)}.json"

    def exists(self, name: str) -> bool:
        """Whether anything is at ``name``'s path: a file, but also a directory or a dangling symlink, which
        :meth:`load` then refuses with the reason rather than a run treating the baseline as absent."""
        path = self.path_for(name)
        return path.exists() or path.is_symlink()

    def stored(self) -> list[Path]:
        """Every baseline file in the folder (to report baselines no run used, as syrupy does)."""
        return sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []

    # -------------------------------------------------------------------- read
    def load(self, name: str) -> DepthProfile:
        """The stored profile of ``name``; any problem is a BaselineError naming the file and the fix."""
        path = self.path_for(name)
        if path.is_symlink() and not path.exists():
            raise BaselineError(
                f"the baseline {path} is a symlink to {path.readlink()}, which does not exist",
                f"point the link at the baseline file, or remove {path} and record it again",
            )
        if path.exists() and not path.is_file():
            raise BaselineError(
                f"the baseline {path} is not a file (a directory or a device)",
                f"move it away and record the baseline again into {path}",
            )
        if not path.is_file():
            raise BaselineError(
                f"no baseline for model {name!r}: {path} does not exist",
                f"record it with `pytest {UPDATE_FLAG}`, review it, and commit {path}",
            )
        return read_baseline(path)

    # ------------------------------------------------------------------- write
    def save(self, profile: DepthProfile, name: str | None = None, *, update: bool = False) -> SaveResult:
        """Write ``profile`` as the baseline of ``name`` (default: its model name), atomically.

        A missing baseline is written. An existing one is merged with the profile (suites the profile
        does not hold are kept) and replaced only when ``update`` is true: a baseline is the reference
        every later run is judged against, so it changes only on the user's explicit request. The
        result lists what changed, cell by cell; "unchanged" (ignoring the recorded environment)
        leaves the file untouched.
        """
        name = name or str(profile.model.get("name") or "")
        path = self.path_for(name)
        if not path.exists():
            atomic_write_text(path, dumps_baseline(profile.to_json()))
            return SaveResult(name, path, "written", cell_changes(None, profile))
        try:
            old = read_baseline(path)
        except BaselineError as exc:
            if not update:
                raise
            atomic_write_text(path, dumps_baseline(profile.to_json()))
            return SaveResult(name, path, "updated", [f"replaced an unreadable baseline: {exc}"])
        merged = merge_profiles(old, profile)
        data = merged.to_json()
        if _substance(old.to_json()) == _substance(data) or same_measurement(old, merged):
            return SaveResult(name, path, "unchanged")
        changes = cell_changes(old, merged)
        if not update:
            shown = "\n".join(f"  {line}" for line in changes[:12])
            raise BaselineError(
                f"the baseline of {name!r} ({path}) exists and this run differs from it:\n{shown}",
                f"review the differences, then replace it with {UPDATE_FLAG} (pytest) or --update "
                "(layercheck baseline)",
            )
        atomic_write_text(path, dumps_baseline(data))
        return SaveResult(name, path, "updated", changes)


def cell_changes(old: DepthProfile | None, new: DepthProfile) -> list[str]:
    """What a write changes, one line per cell, like syrupy's report of an updated snapshot."""

    def values(profile: DepthProfile | None) -> dict[str, float]:
        if profile is None:
            return {}
        return {f"{c.suite}/{c.band} {c.metric}": c.value for c in profile.cells()}

    before, after = values(old), values(new)
    lines = []
    for label, value in after.items():
        if label not in before:
            lines.append(f"+ {label} = {value:.3f}")
        elif _differs(before[label], value, label.rsplit(" ", 1)[-1]):
            lines.append(f"~ {label}: {before[label]:.3f} -> {value:.3f}")
    lines += [f"- {label} (removed)" for label in before if label not in after]
    if old is not None:
        changed_items = _changed_outcomes(old, new)
        if changed_items:
            lines.append(f"~ per-item outcomes changed in {changed_items} evaluation(s)")
    return lines


def _differs(a: float, b: float, metric: str = "") -> bool:
    return not (metric_kind(metric).same(a, b) or (a != a and b != b))  # NaN equals NaN here


def _changed_outcomes(old: DepthProfile, new: DepthProfile) -> int:
    return sum(
        1
        for key, ev in new.evaluations.items()
        if key in old.evaluations and not _same_outcomes(old.evaluations[key].outcomes, ev.outcomes)
    )


def _same_outcomes(old: Mapping[str, Sequence[float]], new: Mapping[str, Sequence[float]]) -> bool:
    """Equal per-item outcomes: 0/1 exactly, continuous scores up to float rounding (``MetricKind.noise``)."""
    if set(old) != set(new):
        return False
    for metric, values in new.items():
        kind = metric_kind(metric)
        before = old[metric]
        if len(before) != len(values) or not all(kind.same(a, b) for a, b in zip(before, values, strict=True)):
            return False
    return True


def same_measurement(old: DepthProfile, new: DepthProfile) -> bool:
    """``new`` measured what ``old`` did, with the same results up to float rounding: the same model, settings,
    suites and ablations, and per-item outcomes equal as :func:`_same_outcomes` has it. A re-run on another
    thread count or batch size changes the last bits of continuous scores; that must not read as a change."""

    def frame(profile: DepthProfile) -> str:
        data = profile.to_json()
        data.pop("cells", None)  # derived from the outcomes
        data["evaluations"] = {
            suite: {key: {k: v for k, v in ev.items() if k not in ("means", "outcomes")} for key, ev in by_key.items()}
            for suite, by_key in data["evaluations"].items()
        }
        return _substance(data)

    return (
        frame(old) == frame(new)
        and old.evaluations.keys() == new.evaluations.keys()
        and all(_same_outcomes(old.evaluations[key].outcomes, ev.outcomes) for key, ev in new.evaluations.items())
    )


def dumps_baseline(data: dict[str, Any]) -> str:
    """Stable text of a baseline: indent=2, metadata keys sorted, suite/band order kept (it is meaningful)."""
    ordered = {
        key: (dict(sorted(value.items())) if key in ("model", "environment") and isinstance(value, dict) else value)
        for key, value in data.items()
    }
    return json.dumps(ordered, indent=2, ensure_ascii=False) + "\n"


def read_baseline(path: Path) -> DepthProfile:
    """Parse and check a baseline file; every failure is a BaselineError that says what to do."""
    redo = f"re-record it with `pytest {UPDATE_FLAG}` (or restore it from version control)"
    try:
        data = loads_strict(Path(path).read_text(encoding="utf-8"))  # a key given twice is refused
    except UnicodeDecodeError as exc:
        raise BaselineError(f"baseline {path} is not UTF-8 text ({exc.reason})", redo) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise BaselineError(
            f"baseline {path} is not valid JSON ({where})", f"fix the file (a merge conflict?) or {redo}"
        ) from None
    except OSError as exc:
        raise BaselineError(
            f"cannot read baseline {path}: {exc.strerror or exc}", "check that the file is readable"
        ) from None
    if not isinstance(data, dict):
        raise BaselineError(f"baseline {path} does not hold a profile (top level is {type(data).__name__})", redo)
    version = data.get("schema_version")
    if isinstance(version, bool):  # ``true`` equals 1 in Python: it must not read as a version
        raise BaselineError(f"baseline {path} is damaged: schema_version: expected an integer, found bool", redo)
    if version != SCHEMA_VERSION:
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise BaselineError(
                f"baseline {path} has schema_version {version}, "
                f"newer than this pytest-layercheck reads ({SCHEMA_VERSION})",
                "upgrade pytest-layercheck, or " + redo,
            )
        if version == 1:
            raise BaselineError(
                f"baseline {path} was recorded before per-item scores were kept (schema_version 1: 0/1 outcomes "
                f"only); this pytest-layercheck judges multiple-choice cells by p_correct, which it lacks, and never "
                "compares the two kinds",
                f"re-record it from the model you trust: `layercheck baseline MODEL --update`, or `pytest {UPDATE_FLAG}` "
                "(the old file stays in version control)",
            )
        raise BaselineError(
            f"baseline {path} has schema_version {version!r}; this pytest-layercheck reads version {SCHEMA_VERSION}",
            redo,
        )
    try:
        profile = DepthProfile.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise BaselineError(f"baseline {path} is malformed ({what})", redo) from None
    problems = consistency_problems(profile)
    if problems:
        raise BaselineError(f"baseline {path} is inconsistent: " + "; ".join(problems[:5]), redo)
    return profile


def consistency_problems(profile: DepthProfile) -> list[str]:
    """Internal contradictions that would make a loaded profile crash or mislead later."""
    problems = []
    for (suite, _, key), ev in profile.evaluations.items():
        info = profile.suites.get(suite)
        if info is None:
            problems.append(f"evaluation {suite}/{key} belongs to no listed suite")
            continue
        expected = len(info.ids_for(key))
        for metric, values in ev.outcomes.items():
            if len(values) != expected:
                problems.append(f"{suite}/{key} {metric} has {len(values)} outcomes for {expected} items")
    for suite, info in profile.suites.items():
        if (suite, info.protocol, INTACT) not in profile.evaluations:
            problems.append(f"suite {suite!r} has no intact evaluation")
    return problems


def _substance(data: Any) -> str:
    """Canonical text of what a baseline measured (provenance left out), for "unchanged" checks.

    Compared as text so that tuples vs lists and NaN (never equal to itself) do not matter.
    """
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in _PROVENANCE_KEYS}
    return json.dumps(data, sort_keys=True)


__all__ = [
    "BaselineStore",
    "SaveResult",
    "SaveStatus",
    "cell_changes",
    "consistency_problems",
    "dumps_baseline",
    "read_baseline",
    "slugify",
    "summarise_saves",
]
