"""Fast vs slow thinking: the same items answered directly and with chain-of-thought, paired per item.

The room: the computation and its result (:mod:`.fast_slow`), the tables (:mod:`.render`), the HTML page
(:mod:`.html`), the ``layercheck thinking`` command (:mod:`.command`) and its registration here.
"""

from __future__ import annotations

from pytest_layercheck.analysis.arguments import all_if_zero, argument, count, names
from pytest_layercheck.analysis.registry import Analysis, Command, Outputs

ANALYSES = (
    Analysis(
        "thinking",
        "pytest_layercheck.analysis.thinking.fast_slow:compare_thinking",
        "fast (direct) against slow (step-by-step) answers",
        summary="pytest_layercheck.analysis.thinking.render:thinking_renderable",
        public=True,
        command=Command(
            "thinking",
            "fast (direct) vs slow (chain-of-thought) answers: corrections and overthinking per domain",
            "pytest_layercheck.analysis.thinking.command",
            arguments=(
                argument("--suites", default="knowledge,reasoning", help="comma-separated suites", convert=names),
                argument("--limit", type=count, default=40, help="items per suite (0 = all)", convert=all_if_zero),
                argument("--cot-tokens", type=count, default=96, help="most tokens of chain-of-thought per item"),
                argument("--fast-tokens", type=count, default=24, help="most tokens of a direct answer"),
                argument("--by-domain", action="store_true", help="also show every suite domain on its own", view=True),
                argument("--show", type=count, default=0, help="print N example generations per group", view=True),
            ),
            outputs=Outputs(
                json="the result (with every generation)",
                html="fast vs slow per group and domain, the items that changed",
            ),
        ),
    ),
)
