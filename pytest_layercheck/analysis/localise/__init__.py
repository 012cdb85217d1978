"""Delta replacement: which of a candidate's layers, put back to the base's, restore a lost capability.

The room: the computation and its result (:mod:`.replacement`), the tables (:mod:`.render`) and its
registration here. It has no subcommand of its own: ``layercheck compare`` shows it.
"""

from __future__ import annotations

from pytest_layercheck.analysis.registry import Analysis

ANALYSES = (
    Analysis(
        "localise",
        "pytest_layercheck.analysis.localise.replacement:localise",
        "which layers, reverted to the reference model's, restore a lost capability",
        uses_cache=True,
        compares=True,
        summary="pytest_layercheck.analysis.localise.render:localisation_renderable",
    ),
)
