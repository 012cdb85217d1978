"""Transfer across numbers as a self-contained HTML page: stability and kappa with their CIs per suite and
domain, the table, and the items whose variants went the other way."""

from __future__ import annotations

from collections.abc import Sequence

from pytest_layercheck.analysis.transfer.render import TRANSFER_CAPTION, transfer_rows, transfer_title
from pytest_layercheck.analysis.transfer.stability import StabilityScore, TransferStability
from pytest_layercheck.report.analyses import num
from pytest_layercheck.report.analysis_html import Bar, BarGroups, Series, bar_chart, page, shown_items, table
from pytest_layercheck.report.html import MAX_ITEMS, RUN_COLOUR, esc


def render_transfer_html(results: Sequence[TransferStability], by_domain: bool = True) -> str:
    """Transfer: stability and kappa with their CIs per suite (and domain), the table, the unstable items."""
    stability, kappa = Series("stability", "stability"), Series("kappa", "kappa", RUN_COLOUR, hatched=True)
    parts = [
        "<h2>Stability and agreement</h2>",
        '<p class="muted">stability = P(variant right | original right); kappa = chance-corrected agreement of '
        "original and variant outcomes (0 = no transfer). Whiskers: seeded bootstrap 95% CIs over original "
        "items.</p>",
        bar_chart(
            "transfer", _groups(results, by_domain), [stability, kappa], title="stability, kappa",
            x_title="suite / domain", high=1.0,
        ),
        table(transfer_rows(results, by_domain), TRANSFER_CAPTION, css="transfer"),
    ]  # fmt: skip
    for r in results:
        parts += _unstable_items(r)
    return page(transfer_title(results), parts)


def _bars(label: str, suite: str, s: StabilityScore) -> list[Bar | None]:
    """Stability and kappa of one suite or domain, with their intervals."""
    return [
        Bar(
            s.stability,
            f"{label}: stability {num(s.stability)} [{num(s.stability_ci[0], 2)}, {num(s.stability_ci[1], 2)}]",
            *s.stability_ci,
            data={"suite": suite},
        ),
        Bar(
            s.kappa,
            f"{label}: kappa {num(s.kappa)} [{num(s.kappa_ci[0], 2)}, {num(s.kappa_ci[1], 2)}]",
            *s.kappa_ci,
            data={"suite": suite},
        ),
    ]


def _groups(results: Sequence[TransferStability], by_domain: bool) -> BarGroups:
    groups = []
    for r in results:
        scores = [(r.suite, r.score)] + ([(f"{r.suite}/{d}", s) for d, s in r.by_domain.items()] if by_domain else [])
        groups += [(label, _bars(label, r.suite, s)) for label, s in scores]
    return groups


def _unstable_items(result: TransferStability) -> list[str]:
    """The originals whose variants went the other way (a table; nothing when every pair agrees)."""
    mixed = [p for p in result.pairs if any(v != p.correct for v in p.variant_correct)]
    if not mixed:
        return []
    shown = mixed[:MAX_ITEMS]
    rows = [
        [
            p.item_id,
            p.domain,
            "right" if p.correct else "wrong",
            f"{sum(p.variant_correct)} of {len(p.variant_correct)} right",
            ", ".join(p.variant_ids),
        ]
        for p in shown
    ]
    return [
        f"<h3>{esc(result.suite)}: items whose variants went the other way</h3>",
        table(
            (["item", "domain", "original", "variants", "variant ids"], rows),
            "an original and a variant disagree" + shown_items(len(shown), len(mixed)),
            lead=2,
            css="items",
            text=(4,),
        ),
    ]
