"""Transfer across numbers in the terminal and as markdown: stability and kappa with their CIs, one row per
suite (and per domain), from one set of string rows."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import RenderableType

from pytest_layercheck.analysis.transfer.stability import StabilityScore, TransferStability
from pytest_layercheck.evaluation.describe import fmt_value
from pytest_layercheck.report.analyses import Rows, interval, markdown_rows, rich_rows, signed

TRANSFER_HEADERS = [
    "suite",
    "variants",
    "items",
    "pairs",
    "base acc",
    "variant acc",
    "stability [95% CI]",
    "agreement",
    "kappa [95% CI]",
]
TRANSFER_CAPTION = "CIs: seeded bootstrap over original items (with all their variants)."


def _with_interval(text: str, bounds: tuple[float, float]) -> str:
    shown = interval(*bounds)
    return f"{text} {shown}" if shown else text


def score_row(label: str, method: str, s: StabilityScore) -> list[str]:
    return [
        label,
        method,
        str(s.originals),
        str(s.pairs),
        fmt_value(s.base_accuracy),
        fmt_value(s.variant_accuracy),
        _with_interval(fmt_value(s.stability), s.stability_ci),
        fmt_value(s.agreement),
        _with_interval(signed(s.kappa), s.kappa_ci),
    ]


def transfer_rows(results: Sequence[TransferStability], by_domain: bool = False) -> Rows:
    """One row per suite (and, with ``by_domain``, one per domain below it)."""
    body = []
    for r in results:
        method = "new numbers" if r.method == "numbers" else "same-kind items"
        body.append(score_row(f"{r.suite} · {r.metric} ({r.protocol})", method, r.score))
        if by_domain:
            body += [score_row(f"  {r.suite}/{d}", method, s) for d, s in r.by_domain.items()]
    return TRANSFER_HEADERS, body


def transfer_title(results: Sequence[TransferStability]) -> str:
    counts = sorted({r.variants_per_item for r in results})
    variants = str(counts[0]) if len(counts) == 1 else "/".join(map(str, counts))
    return (
        f"layercheck transfer: {variants} variants per item · "
        "stability = P(variant right | original right) · "
        "kappa = chance-corrected agreement of original and variant outcomes (0 = no transfer)"
    )


def transfer_renderable(results: Sequence[TransferStability], by_domain: bool = False) -> RenderableType:
    return rich_rows(transfer_title(results), transfer_rows(results, by_domain), TRANSFER_CAPTION)


def stability_renderable(result: TransferStability) -> RenderableType:
    """One suite's stability, as pytest's summary shows it."""
    return transfer_renderable([result])


def transfer_markdown(results: Sequence[TransferStability], by_domain: bool = False) -> str:
    return f"### {transfer_title(results)}\n\n{markdown_rows(transfer_rows(results, by_domain))}\n"
