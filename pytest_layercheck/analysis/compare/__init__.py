"""Compare a candidate (a fine-tune, an adapter, a quantised file) with its base model, end to end.

The room: the comparison and its settings (:mod:`.models`), its terminal and markdown reports
(:mod:`.render`), the ``layercheck compare`` command (:mod:`.command`) and its registration here. The
command loads two models, reads the profile and verdict options both front ends share, and exits 1 on a
regression.
"""

from __future__ import annotations

from pytest_layercheck.analysis.arguments import argument
from pytest_layercheck.analysis.registry import Analysis, Command, Outputs

ANALYSES = (
    Analysis(
        "compare",
        "pytest_layercheck.analysis.compare.models:compare_models",
        "the whole profile against the reference model's, the weight change and where a loss lives",
        uses_cache=True,
        compares=True,
        summary="pytest_layercheck.analysis.compare.render:compare_renderable",
        public=True,
        command=Command(
            "compare",
            "compare a candidate (fine-tune, PEFT adapter, GGUF) with its base model",
            "pytest_layercheck.analysis.compare.command",
            description="Profile BASE and CANDIDATE, show the shift of every cell with its significance, the "
            "relative weight change per layer, and which layers, reverted to the base, restore a lost capability.",
            models=(
                argument("base", help="the trusted model: 'default', a transformers folder or a .gguf file"),
                argument(
                    "candidate",
                    help="the model to check: a transformers folder, a .gguf file or a PEFT adapter folder",
                ),
            ),
            options=("PROFILE", "VERDICT"),
            arguments=(
                argument(
                    "--localise",
                    default="bands,changed",
                    help="layer groups to revert: bands, layers (each single layer), changed (runs of the "
                    "most-changed layers), comma-combined, or none (default: bands,changed)",
                ),
                argument(
                    "--threshold",
                    type=float,
                    default=0.8,
                    help="share of the loss a reverted group must recover to be named (default 0.8)",
                ),
                argument("--no-weights", action="store_true", help="skip the per-layer weight deltas"),
            ),
            outputs=Outputs(json="the full comparison", html=True, summary=True),
        ),
    ),
)
