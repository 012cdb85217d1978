"""On-disk cache of evaluations, so re-running an unchanged profile costs almost nothing.

The key covers everything that can change a number: model fingerprint, suite content hash, protocol,
ablation, the item ids scored, dtype, device type and the library versions. (lm-eval's response cache
ignores the model, a known source of wrong results; this one cannot.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .cache_dirs import results_dir
from .profile_data import Evaluation


class ResultCache:
    """Evaluations stored as small JSON files under ``<cache>/results/ab/abcdef….json``."""

    def __init__(self, folder: Path | None = None, enabled: bool = True) -> None:
        self.folder = Path(folder) if folder is not None else results_dir()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(identity: Mapping[str, Any]) -> str:
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, identity: Mapping[str, Any]) -> Evaluation | None:
        if not self.enabled:
            self.misses += 1
            return None
        path = self._path(self.key(identity))
        try:
            data = json.loads(path.read_text())
            evaluation = Evaluation(
                suite=data["suite"], protocol=data["protocol"], ablation=data["ablation"],
                removed_layers=tuple(data["removed_layers"]),
                outcomes={m: tuple(float(x) for x in v) for m, v in data["outcomes"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError):
            self.misses += 1
            return None  # absent or unreadable entries are simply recomputed
        self.hits += 1
        return evaluation

    def put(self, identity: Mapping[str, Any], evaluation: Evaluation) -> None:
        if not self.enabled:
            return
        payload = {
            "identity": dict(identity),
            "suite": evaluation.suite,
            "protocol": evaluation.protocol,
            "ablation": evaluation.ablation,
            "removed_layers": list(evaluation.removed_layers),
            "outcomes": {m: list(v) for m, v in evaluation.outcomes.items()},
        }
        atomic_write_text(self._path(self.key(identity)), json.dumps(payload, default=str))
