"""The items each changed cell of the HTML report lost and gained: prompt, gold answer, this run's answer
and its score before and after, with a search box; and where a run's prompts and answers come from.
Each list stops at :data:`.html.MAX_ITEMS` (the JSON report has them all), so a large suite's page stays small.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_layercheck.data.metrics import metric_kind
from pytest_layercheck.data.profile_data import INTACT, DepthProfile
from pytest_layercheck.data.statistics import mean
from pytest_layercheck.evaluation.comparison_result import CellComparison
from pytest_layercheck.evaluation.describe import ItemTexts, answer_texts, item_text, suite_item_texts
from pytest_layercheck.report.format import marker
from pytest_layercheck.report.html import MAX_ITEMS, MAX_PROMPT, esc
from pytest_layercheck.report.html_verdict import Page

#: The item search: hides the rows of a suite's item tables that do not contain the typed text.
SCRIPT = """
document.querySelectorAll("input.item-search").forEach(function (box) {
  box.addEventListener("input", function () {
    var query = box.value.toLowerCase();
    document.querySelectorAll("#" + box.dataset.target + " tr.item").forEach(function (row) {
      row.hidden = query !== "" && row.textContent.toLowerCase().indexOf(query) < 0;
    });
  });
});
"""


def run_item_texts(specs: Iterable[str]) -> ItemTexts:
    """Prompts and answers of the suites a run named (user YAML files too, which the built-in lookup
    cannot find); a suite whose content hash differs from the profile's gives ids only."""
    from pytest_layercheck.core.errors import LayercheckError
    from pytest_layercheck.suites.builtin import resolve_suite

    loaded = {}
    for spec in specs:
        try:
            suite = resolve_suite(spec)
        except (LayercheckError, OSError, ValueError):
            continue
        loaded[suite.name] = suite

    def texts(suite: str, content_hash: str) -> dict[str, dict[str, Any]]:
        found = loaded.get(suite)
        if found is None:
            return suite_item_texts(suite, content_hash)
        if not content_hash or found.content_hash != content_hash:
            return {}
        return {item.id: item_text(item) for item in found.items}

    return texts


def _shares(profile: DepthProfile | None, cell: CellComparison, ids: Sequence[str]) -> dict[str, float]:
    """Each item's mean of the cell's metric over the cell's evaluations: its share of right answers for a 0/1
    metric (1 or 0 for the intact cell), its mean score for p_correct or a margin."""
    if profile is None or cell.suite not in profile.suites:
        return {}
    info = profile.suites[cell.suite]
    evaluations = [profile.evaluations.get((cell.suite, info.protocol, key)) for key in cell.ablations]
    outcomes = [ev.outcomes[cell.metric] for ev in evaluations if ev is not None and cell.metric in ev.outcomes]
    position = {item: i for i, item in enumerate(info.item_ids)}  # swept items lead, so positions agree
    shares = {}
    for item in ids:
        at = position.get(item)
        values = [values[at] for values in outcomes if at is not None and at < len(values)]
        if values:
            shares[item] = mean(values)
    return shares


def _share_text(share: float | None, intact: bool, binary: bool = True) -> str:
    """An item's value: right / wrong or the share right (0/1 metrics), or its mean score (p_correct, margin)."""
    if share is None:
        return "?"
    if not binary:
        return f"{share:.3f}"
    return ("right" if share >= 0.5 else "wrong") if intact else f"{share:.0%} right"


def items_section(page: Page, index: int, suite: str, cells: Sequence[CellComparison]) -> str:
    """The items each changed cell lost and gained, with prompt, gold answer and this run's answer, and a
    search box.

    Cells that fail or moved are open; ok cells' flips are folded away. Each list stops at MAX_ITEMS."""
    comparison = page.comparison
    assert comparison is not None
    texts = page.item_texts(suite, comparison.suite_hashes.get(suite, ""))
    blocks = []
    for cell in cells:
        for direction, ids in (("worse", cell.worse_items), ("better", cell.better_items)):
            if ids:
                blocks.append(_item_block(page, cell, direction, ids, texts))
    if not blocks:
        return ""
    return (
        f'<h3>Items that changed</h3><input class="item-search" type="search" data-target="items-{index}" '
        f'placeholder="search items: id, prompt or answer" aria-label="search the items of {esc(suite)}">'
        f'<div id="items-{index}">' + "".join(blocks) + "</div>"
    )


def _item_block(
    page: Page, cell: CellComparison, direction: str, ids: Sequence[str], texts: Mapping[str, Mapping[str, Any]]
) -> str:
    """One cell's items of one direction, folded away unless the cell is not ok: id, prompt, gold answer,
    this run's answer, and the item's score, baseline → this run."""
    shown = list(ids[:MAX_ITEMS])
    chosen = answer_texts(page.profile, cell.suite, texts)
    intact = cell.band == INTACT
    binary = metric_kind(cell.metric).binary
    before, after = _shares(page.baseline, cell, shown), _shares(page.profile, cell, shown)
    rows = []
    for item in shown:
        entry = texts.get(item, {})
        prompt = _clip(entry.get("prompt", ""))
        outcome = f"{_share_text(before.get(item), intact, binary)} → {_share_text(after.get(item), intact, binary)}"
        rows.append(
            f'<tr class="item {direction}"><td class="l">{esc(item)}</td><td class="prompt">{esc(prompt)}</td>'
            f'<td class="l">{esc(entry.get("answer", ""))}</td><td class="l chosen">{esc(_cut(chosen.get(item)))}'
            f"</td><td>{esc(outcome)}</td></tr>"
        )
    more = (
        (
            f'<p class="muted">and {len(ids) - len(shown)} more (the JSON report, --json or '
            "--layercheck-report, lists every one)</p>"
        )
        if len(ids) > len(shown)
        else ""
    )
    what = (
        ("right answers" if binary else cell.metric)
        + ", baseline → this run"
        + ("" if intact else " (over the band's ablations)")
    )
    summary = f"{marker(cell)} {cell.label}: {len(ids)} item(s) {'got worse' if direction == 'worse' else 'got better'}"
    open_attr = " open" if cell.status != "ok" else ""
    return (
        f'<details{open_attr}><summary>{esc(summary.strip())}</summary><table class="items"><thead><tr>'
        f'<th class="l">id</th><th class="l">prompt</th><th class="l">gold answer</th>'
        f'<th class="l">this run\'s answer</th><th>{esc(what)}</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}</details>"
    )


def _cut(answer: str | None) -> str:
    """This run's answer as the item table shows it: "—" where none was recorded, a long one cut."""
    return "—" if answer is None else _clip(answer)


def _clip(text: str) -> str:
    """A prompt or answer cut to MAX_PROMPT characters (the JSON report has it whole)."""
    return text if len(text) <= MAX_PROMPT else text[:MAX_PROMPT] + " …"
