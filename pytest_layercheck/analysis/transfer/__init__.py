"""Transfer across numbers: does an item's correctness survive a change of its numbers (or its fact)?

The room: the variants, the score and the run (:mod:`.stability`), the tables (:mod:`.render`), the HTML
page (:mod:`.html`), the ``layercheck transfer`` command (:mod:`.command`) and its registration here.
"""

from __future__ import annotations

from pytest_layercheck.analysis.arguments import all_if_zero, argument, count, names
from pytest_layercheck.analysis.registry import Analysis, Command, Outputs

ANALYSES = (
    Analysis(
        "transfer",
        "pytest_layercheck.analysis.transfer.stability:transfer_stability",
        "stability of correctness under new numbers or sibling facts",
        summary="pytest_layercheck.analysis.transfer.render:stability_renderable",
        public=True,
        command=Command(
            "transfer",
            "stability of correctness under new numbers (reasoning) vs other facts (knowledge)",
            "pytest_layercheck.analysis.transfer.command",
            arguments=(
                argument("--suites", default="reasoning,knowledge", help="comma-separated suites", convert=names),
                argument(
                    "--limit", type=count, default=40, help="original items per suite (0 = all)", convert=all_if_zero
                ),
                argument("--variants", type=count, default=3, help="variants per original item"),
                argument("--protocol", default=None, help="scoring protocol (default: each suite's own)"),
                argument("--seed", type=int, default=0, help="seed of the variant draws and the bootstrap"),
                argument("--by-domain", action="store_true", help="also show every domain", view=True),
            ),
            outputs=Outputs(html="stability and kappa with CIs per suite and domain, items that flipped"),
        ),
    ),
)
