"""Retrieval heads and the masking comparison in the terminal and as markdown, from one set of string rows."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from pytest_layercheck.analysis.heads.render import heads_list
from pytest_layercheck.analysis.retrieval_heads.detection import RetrievalHeads
from pytest_layercheck.analysis.retrieval_heads.masking import MaskingComparison
from pytest_layercheck.report.analyses import Rows, markdown_rows, num, rich_rows, signed


def p_text(value: float) -> str:
    return f"{value:.3g}"


def retrieval_title(result: RetrievalHeads) -> str:
    return (
        f"Retrieval heads · {result.model} · {result.valid_tests} of {len(result.tests)} needle tests valid "
        f"(answer recovers > {result.min_recall:g} of the needle)"
    )


def retrieval_summary(result: RetrievalHeads) -> str:
    total = len(result.scores)
    return (
        f"{len(result.retrieval_heads)} of {total} heads ({num(100 * result.share, 1)}%) score above "
        f"{result.threshold:g}"
    )


def retrieval_rows(result: RetrievalHeads, top: int = 20) -> Rows:
    headers = ["rank", "layer", "head", "retrieval score", "retrieval head"]
    rows = [
        [str(rank), str(layer), str(head), num(s), "yes" if s > result.threshold else ""]
        for rank, ((layer, head), s) in enumerate(result.ranked()[:top], 1)
    ]
    return headers, rows


def masking_rows(comparison: MaskingComparison) -> Rows:
    headers = ["masking", "heads", comparison.metric, "Δ vs intact", "p vs intact"]
    rows = [
        ["none (intact)", "0", num(comparison.intact_accuracy), "", ""],
        [
            f"top-{comparison.k} retrieval heads",
            str(comparison.k),
            num(comparison.top_accuracy),
            signed(comparison.top_accuracy - comparison.intact_accuracy),
            p_text(comparison.p_top_vs_intact),
        ],
        [
            f"{comparison.k} random non-retrieval heads",
            str(comparison.k),
            num(comparison.random_accuracy),
            signed(comparison.random_accuracy - comparison.intact_accuracy),
            p_text(comparison.p_random_vs_intact),
        ],
    ]
    return headers, rows


def masking_title(comparison: MaskingComparison) -> str:
    when = "during decoding only" if comparison.decode_only else "at every position"
    return (
        f"Uniform-attention masking · {comparison.suite} ({comparison.protocol}, {len(comparison.item_ids)} items) "
        f"· masked {when}"
    )


def masking_summary(comparison: MaskingComparison) -> str:
    return (
        f"top-{comparison.k} minus random: {signed(-comparison.difference)} "
        f"(exact McNemar p = {p_text(comparison.p_value)}); {comparison.retrieval_heads_masked} of the top {comparison.k} "
        f"score above {comparison.threshold:g}. top: {heads_list(comparison.top_heads)}; "
        f"random (seed {comparison.seed}): {heads_list(comparison.random_heads)}"
    )


def retrieval_renderable(
    result: RetrievalHeads, comparison: MaskingComparison | None = None, top: int = 20
) -> RenderableType:
    parts: list[RenderableType] = [
        rich_rows(retrieval_title(result), retrieval_rows(result, top)),
        Text(retrieval_summary(result)),
    ]
    if comparison is not None:
        parts += [rich_rows(masking_title(comparison), masking_rows(comparison)), Text(masking_summary(comparison))]
    return Group(*parts)


def retrieval_markdown(result: RetrievalHeads, comparison: MaskingComparison | None = None, top: int = 20) -> str:
    headers, body = retrieval_rows(result, top)
    lines = [
        f"### {retrieval_title(result)}",
        "",
        retrieval_summary(result),
        "",
        markdown_rows((headers, body)),
    ]
    if comparison is not None:
        headers, body = masking_rows(comparison)
        lines += [
            "",
            f"### {masking_title(comparison)}",
            "",
            markdown_rows((headers, body)),
            "",
            masking_summary(comparison),
        ]
    return "\n".join(lines) + "\n"


def masking_renderable(comparison: MaskingComparison) -> RenderableType:
    """The masking comparison's title and summary, as pytest's summary shows it."""
    return Text(f"{masking_title(comparison)}\n{masking_summary(comparison)}")
