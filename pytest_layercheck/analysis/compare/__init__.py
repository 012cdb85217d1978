"""Compare a candidate (a fine-tune, an adapter, a quantised file) with its base model, end to end.

The room: the comparison and its settings (:mod:`.models`), its terminal and markdown reports
(:mod:`.render`) and its registration here. ``layercheck compare`` (``cli/compare.py``) is written by hand:
it loads two models, reads the profile and verdict options both front ends share, and exits 1 on a
regression.
"""

from __future__ import annotations

from pytest_layercheck.analysis.registry import Analysis

ANALYSES = (
    Analysis(
        "compare",
        "pytest_layercheck.analysis.compare.models:compare_models",
        "the whole profile against the reference model's, the weight change and where a loss lives",
        uses_cache=True,
        compares=True,
        summary="pytest_layercheck.analysis.compare.render:compare_renderable",
        public=True,
    ),
)
