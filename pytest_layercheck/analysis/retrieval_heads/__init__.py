"""Retrieval heads (Wu et al., arXiv 2404.15574): the sparse heads that copy from the context.

The room: the needle tests and the score (:mod:`.needles`), greedy decoding with attention recorded
(:mod:`.decoding`), the retrieval score of every head (:mod:`.detection`), the masking comparison
(:mod:`.masking`), the tables (:mod:`.render`), the HTML page (:mod:`.html`), the
``layercheck retrieval-heads`` command (:mod:`.command`) and the registrations here.
"""

from __future__ import annotations

from pytest_layercheck.analysis.arguments import all_if_zero, argument, count
from pytest_layercheck.analysis.registry import Analysis, Command, Outputs

ARGUMENTS = (
    argument("--tests", type=count, default=20, help="needle-in-a-haystack tests (default: 20)"),
    argument("--seed", type=int, default=0, help="seed of the needle tests and the random heads"),
    argument("--threshold", type=float, default=0.1, help="retrieval-head threshold (paper: 0.1)"),
    argument(
        "--k",
        type=count,
        default=None,
        help="heads to mask in the comparison (default: 5%% of all heads; 0 = no comparison)",
    ),
    argument("--suite", default="retrieval", help="suite for the masking comparison"),
    argument(
        "--protocol",
        default="generate_until",
        help="protocol of the comparison (generate_until masks during decoding only)",
    ),
    argument("--limit", type=count, default=40, help="suite items in the comparison (0 = all)", convert=all_if_zero),
    argument("--top", type=count, default=20, help="heads listed in the ranking", view=True),
)

ANALYSES = (
    Analysis(
        "retrieval_heads",
        "pytest_layercheck.analysis.retrieval_heads.detection:find_retrieval_heads",
        "retrieval score of every head on needle-in-a-haystack tests",
        summary="pytest_layercheck.analysis.retrieval_heads.render:retrieval_renderable",
        public=True,
        command=Command(
            "retrieval-heads",
            "find retrieval heads on needle tests and compare masking them with random heads",
            "pytest_layercheck.analysis.retrieval_heads.command",
            arguments=ARGUMENTS,
            outputs=Outputs(
                "the results",
                "the tables as markdown",
                html="the layer x head grid of retrieval scores, the masking comparison, the needle tests",
            ),
        ),
    ),
    Analysis(
        "masking",
        "pytest_layercheck.analysis.retrieval_heads.masking:compare_masking",
        "top-k retrieval heads against k random heads, masked",
        summary="pytest_layercheck.analysis.retrieval_heads.render:masking_renderable",
        public=True,
    ),
)
