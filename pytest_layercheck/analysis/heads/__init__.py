"""Head-level importance: mask one attention head at a time and measure what a capability loses.

The room: the computation and its result (:mod:`.importance`), the tables (:mod:`.render`), the HTML page
(:mod:`.html`), the ``layercheck heads`` command (:mod:`.command`) and its registration here.
"""

from __future__ import annotations

from pytest_layercheck.analysis.arguments import argument, count
from pytest_layercheck.analysis.registry import Analysis, Command, Outputs

#: Items per head evaluation by default. Each head costs one suite evaluation: on a 2-core CPU,
#: single-threaded, SmolLM2-135M scores 24 knowledge items (mc_text) in about 2.5 s, so all
#: 270 heads take about 11 minutes and a few chosen layers well under two.
DEFAULT_HEAD_LIMIT = 24


def head_limit(value: int | None) -> int | None:
    """``--limit``: unset is the default, 0 every item."""
    return DEFAULT_HEAD_LIMIT if value is None else value or None


ARGUMENTS = (
    argument("--suite", default="knowledge", help="built-in suite name or suite YAML path"),
    argument("--protocol", default=None, help="scoring protocol (default: the suite's)"),
    argument("--layers", default="all", help="layers to scan, e.g. 0-3,29 (default: all)"),
    argument("--limit", type=count, default=None, help="items (default: 24; 0 = all)", convert=head_limit),
    argument("--mode", default="zero", choices=("zero", "uniform"), help="head masking (default: zero)"),
    argument(
        "--gqa",
        default="query",
        choices=("query", "group"),
        help="mask single query heads (default) or whole KV groups",
    ),
    argument("--top", type=count, default=15, help="heads listed in the ranking", view=True),
    argument("--no-grid", action="store_true", help="omit the layers x heads grid", view=True),
)

ANALYSES = (
    Analysis(
        "heads",
        "pytest_layercheck.analysis.heads.importance:head_importance",
        "accuracy drop when each attention head is masked",
        uses_cache=True,
        summary="pytest_layercheck.analysis.heads.render:summary_renderable",
        public=True,
        command=Command(
            "heads",
            "mask each attention head in turn and show which ones a suite needs",
            "pytest_layercheck.analysis.heads.command",
            arguments=ARGUMENTS,
            outputs=Outputs(
                "the full result",
                "the tables as markdown",
                html="the layer x head grid of drops, the drop per layer, the ranking",
            ),
        ),
    ),
)
