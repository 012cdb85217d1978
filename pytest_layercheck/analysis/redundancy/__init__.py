"""Layer redundancy: which block of layers a similarity metric calls prunable, and what removing it costs.

The room: the residual-stream statistics (:mod:`.states`), the metrics (:mod:`.metrics`), the comparison
with measured capability drops (:mod:`.capabilities`), the tables (:mod:`.render`), the HTML page
(:mod:`.html`), the ``layercheck redundancy`` command (:mod:`.command`) and its registration here.
"""

from __future__ import annotations

from pytest_layercheck.analysis.arguments import all_if_zero, argument, count, names
from pytest_layercheck.analysis.registry import Analysis, Command, Outputs
from pytest_layercheck.core.errors import ConfigError


def parse_views(text: str) -> list[tuple[str, str]]:
    """``knowledge=mc_text,reasoning=generate_until`` -> [(suite, protocol), ...]."""
    views = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        suite, sep, protocol = part.partition("=")
        if not sep or not suite.strip() or not protocol.strip():
            raise ConfigError(f"bad view {part!r}", "write SUITE=PROTOCOL, e.g. knowledge=mc_text")
        views.append((suite.strip(), protocol.strip()))
    return views


ARGUMENTS = (
    argument("--block", type=count, default=1, help="layers per block to drop (n; default 1)"),
    argument(
        "--suites",
        default="knowledge,reasoning",
        help="suites whose prompts are the metric's samples (comma-separated)",
        convert=names,
    ),
    argument(
        "--prompts", type=count, default=40, help="prompts per suite for the metrics (0 = all)", convert=all_if_zero
    ),
    argument(
        "--no-compare", action="store_true", help="only the metrics; skip removing blocks and scoring capabilities"
    ),
    argument(
        "--views",
        default="knowledge=mc_text,reasoning=mc_text,knowledge=generate_until,reasoning=generate_until",
        help="capability views to compare: SUITE=PROTOCOL,...",
        convert=parse_views,
    ),
    argument(
        "--limit",
        type=count,
        default=40,
        help="items per suite when scoring capabilities (0 = all)",
        convert=all_if_zero,
    ),
    argument(
        "--candidates",
        type=count,
        default=0,
        help="blocks evaluated under likelihood protocols (0 = every eligible block)",
        convert=all_if_zero,
    ),
    argument("--generation-blocks", type=count, default=6, help="blocks evaluated under generation"),
    argument(
        "--tolerance",
        type=float,
        default=0.05,
        help="accuracy a suggestion may lose beyond the least harmful block and still agree",
    ),
)

ANALYSES = (
    Analysis(
        "redundancy",
        "pytest_layercheck.analysis.redundancy.metrics:measure_redundancy",
        "angular distance and Block Influence per layer",
        summary="pytest_layercheck.analysis.redundancy.render:redundancy_renderable",
        public=True,
        command=Command(
            "redundancy",
            "angular distance and Block Influence per layer; the most prunable block vs measured drops",
            "pytest_layercheck.analysis.redundancy.command",
            arguments=ARGUMENTS,
            outputs=Outputs(html="BI and angular distance per layer, the capability views' drops"),
        ),
    ),
)
