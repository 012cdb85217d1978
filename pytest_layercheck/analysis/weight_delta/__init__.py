"""Weight deltas: how much a candidate's weights moved from its base, per decoder layer and module.

The room: the computation and its result (:mod:`.deltas`), the tables (:mod:`.render`) and its
registration here. It has no subcommand of its own: ``layercheck compare`` shows it.
"""

from __future__ import annotations

from pytest_layercheck.analysis.registry import Analysis

ANALYSES = (
    Analysis(
        "weight_delta",
        "pytest_layercheck.analysis.weight_delta.deltas:measure_weight_delta",
        "relative weight change per layer and module against the reference model",
        compares=True,
        summary="pytest_layercheck.analysis.weight_delta.render:weights_renderable",
        public=True,
    ),
)
