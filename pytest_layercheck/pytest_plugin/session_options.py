"""The plugin's options for one session, as given (command line over ini), before they are parsed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_layercheck.evaluation.options import MODEL, PROFILE, VERDICT
from pytest_layercheck.evaluation.sharding import DEFAULT_TIMEOUT


@dataclass(frozen=True)
class SessionOptions:
    """Raw option values (command line over ini); parsed and validated by ``LayercheckSession``.

    ``shared`` holds the settings the ``layercheck`` command has too (:mod:`..evaluation.options`),
    keyed by option name; the fields are the plugin's own.
    """

    model: str = "default"
    reference: str | None = None
    baseline_dir: Path = Path("baselines")
    baseline_name: str | None = None
    report: str | None = None
    html: str | None = None
    heatmap: str | None = None
    update: bool = False
    allow_model_change: bool = False
    is_xdist_worker: bool = False
    #: Under pytest-xdist: this worker's id ("gw1"), how many workers the run has, and the folder the
    #: controller made for them (None: nothing to share through; every worker computes everything).
    worker: str | None = None
    workers: int = 1
    exchange: Path | None = None
    #: Seconds without a sign of life from a worker whose claimed evaluations another worker awaits.
    shard_timeout: float = DEFAULT_TIMEOUT
    shared: Mapping[str, Any] = field(default_factory=dict)

    def setting(self, key: str) -> Any:
        """A shared setting's value, or its default."""
        option = next(o for o in (*MODEL, *PROFILE, *VERDICT) if o.key == key)
        value = self.shared.get(key)
        return option.default if value is None else value
