"""One self-contained HTML page of a profile and its comparison, for a reviewer to open before reading logs.

The page holds everything inline (CSS, SVG charts, a few lines of script for the item search) and loads
nothing, so it opens offline and as a CI artifact. Per suite it draws the drop when each layer is
removed (baseline and this run overlaid, and their difference, band edges marked), the band cells and
their evidence in the terminal's words (:mod:`.format`, :mod:`..evaluation.describe`), and the items
that got worse or better. Colours are Okabe–Ito (colour-blind safe); every meaning colour carries is
also carried by a marker shape, a line style, a hatch or a word, so the page prints in black and white.
Long item lists are capped (the JSON report has them all), so a 5,000-item suite's page stays small.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_layercheck.core.atomic import atomic_write_text
from pytest_layercheck.data.bands import format_layers
from pytest_layercheck.data.metrics import metric_kind
from pytest_layercheck.data.profile_data import INTACT, DepthProfile
from pytest_layercheck.data.statistics import CI_LEVEL, mean
from pytest_layercheck.evaluation.comparison import CellComparison, ProfileComparison, sensitivity_warning
from pytest_layercheck.evaluation.describe import ItemTexts, answer_texts, item_text, suite_item_texts
from pytest_layercheck.report.depth_strip import layer_values, nice_scale, num_layers, suite_metric
from pytest_layercheck.report.format import (
    LEGEND,
    describe_change,
    describe_detail,
    fingerprint_text,
    fmt_delta,
    fmt_p,
    fmt_value,
    marker,
    status_line,
    title_text,
)
from pytest_layercheck.report.table import build_table

#: Items listed per cell and direction; the rest are counted (the JSON report lists every one).
MAX_ITEMS = 100
#: Characters of a prompt shown; a longer one is cut (the JSON report has it whole).
MAX_PROMPT = 400
#: Okabe–Ito colours: the baseline, this run, a rise and a fall.
BASELINE_COLOUR = "#0072B2"
RUN_COLOUR = "#D55E00"
RISE_COLOUR = "#56B4E9"
FALL_COLOUR = "#E69F00"
STATUS_WORDS = {
    "regressed": "regressed",
    "moved": "moved along depth",
    "changed": "changed (not significant)",
    "improved": "improved",
    "ok": "ok",
}

CSS = """
:root{--fail:#D55E00;--warn:#E69F00;--good:#009E73;--ink:#222;--muted:#666;--line:#ccc}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--ink);margin:0 auto;max-width:1180px;
padding:16px 24px}
h1{font-size:20px;margin:4px 0}h2{font-size:17px;margin:28px 0 6px;border-bottom:2px solid var(--ink)}
h3{font-size:14px;margin:16px 0 4px}
table{border-collapse:collapse;margin:6px 0 10px}th,td{border:1px solid var(--line);padding:3px 7px;text-align:right;
vertical-align:top}th{background:#f2f2f2}td.l,th.l{text-align:left}
.muted,caption{color:var(--muted);font-size:12px}caption{caption-side:bottom;text-align:left;padding-top:3px}
.verdict{border:3px solid var(--ink);padding:8px 12px;margin:10px 0;font-weight:600;white-space:pre-line}
.verdict.failed,.verdict.refused{border-color:var(--fail);border-style:double;border-width:5px}
.verdict.passed{border-color:var(--good)}
.status-regressed,.failed-cell{background:#fbe3d6;font-weight:700;outline:2px solid var(--fail);outline-offset:-2px}
.status-changed{background:#fdf0d2;outline:1px dashed var(--warn);outline-offset:-2px}
.status-improved{background:#d9eef9;font-style:italic}
ul.findings li.failed{font-weight:700}
.prompt{text-align:left;white-space:pre-wrap;max-width:560px;font-family:ui-monospace,monospace;font-size:12px}
svg.layer-chart{display:block;max-width:100%;height:auto}svg text{font:11px system-ui,sans-serif;fill:#222}
input.item-search{font:inherit;padding:3px 6px;width:320px;margin:4px 0}
details{margin:4px 0}summary{cursor:pointer}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:6px 0}dl.meta dt{color:var(--muted)}
dl.meta dd{margin:0;font-family:ui-monospace,monospace;font-size:12px;overflow-wrap:anywhere}
@media print{body{max-width:none}input.item-search{display:none}details{display:block}
.status-regressed,.failed-cell,.status-changed,.status-improved{background:none}}
"""

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


def esc(value: object) -> str:
    """Every string that reaches the page goes through here: prompts and names are user data."""
    return html.escape(str(value), quote=True)


@dataclass(frozen=True)
class Page:
    """What one page shows: the run, what it was compared with, and why a comparison may be missing."""

    profile: DepthProfile
    comparison: ProfileComparison | None = None
    baseline: DepthProfile | None = None
    refused: str | None = None
    failed_checks: Sequence[str] = ()
    notes: Sequence[str] = ()
    metrics: Sequence[str] | None = None
    item_texts: ItemTexts = suite_item_texts

    @property
    def passed(self) -> bool:
        """The run's verdict, as the JSON report gives it: a refusal or a failed check is no pass."""
        compared = self.comparison.passed if self.comparison is not None else True
        return self.refused is None and not self.failed_checks and compared


def render_html(
    profile: DepthProfile,
    comparison: ProfileComparison | None = None,
    *,
    baseline: DepthProfile | None = None,
    refused: str | None = None,
    failed_checks: Sequence[str] = (),
    notes: Sequence[str] = (),
    metrics: Sequence[str] | None = None,
    item_texts: ItemTexts | None = None,
) -> str:
    """The whole page. ``baseline`` (the stored profile) adds its per-layer curve and per-item shares;
    ``refused`` says why no comparison was made; ``notes`` are extra findings (localisation verdicts);
    ``item_texts(suite, content_hash)`` gives prompts and answers (default: the built-in suites)."""
    page = Page(
        profile,
        comparison,
        baseline,
        refused,
        tuple(failed_checks),
        tuple(notes),
        metrics,
        item_texts or suite_item_texts,
    )
    title = title_text(profile, comparison, metrics)
    body = [f"<h1>{esc(title)}</h1>", _verdict(page), _overview(page)]
    body += [_suite_section(page, index, suite) for index, suite in enumerate(profile.suites)]
    body += [_remarks(page), _run_details(page)]
    return page_shell(title, body, script=SCRIPT)


def page_shell(title: str, body: Iterable[str], *, css: str = "", script: str | None = None) -> str:
    """A whole self-contained page around ``body``: the report's CSS (plus ``css``), and a policy that lets
    the browser fetch nothing; inline script only when ``script`` is given."""
    scripts = "; script-src 'unsafe-inline'" if script is not None else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        f"style-src 'unsafe-inline'{scripts}\">"
        f"<title>{esc(title)}</title><style>{CSS}{css}</style></head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + (f"\n<script>{script}</script>" if script is not None else "")
        + "\n</body></html>\n"
    )


def write_html_report(
    path: Path | str, profile: DepthProfile, comparison: ProfileComparison | None = None, **options: Any
) -> Path:
    """Write :func:`render_html`'s page atomically (a CI upload never takes half a page); returns the path."""
    path = Path(path)
    atomic_write_text(path, render_html(profile, comparison, **options))
    return path


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


# ------------------------------------------------------------------------- parts for other pages
def summary_html(
    profile: DepthProfile,
    comparison: ProfileComparison | None = None,
    *,
    baseline: DepthProfile | None = None,
    refused: str | None = None,
    failed_checks: Sequence[str] = (),
    metrics: Sequence[str] | None = None,
) -> str:
    """The page's verdict, band-cell table, and per suite its findings and per-layer chart, without the
    page around them (no styles, script or item lists): for another report to embed (pytest-html's
    summary). Style it with :func:`scoped_css`."""
    page = Page(profile, comparison, baseline, refused, tuple(failed_checks), (), metrics)
    parts = [_verdict(page), _overview(page)]
    for index, suite in enumerate(profile.suites):
        cells = [c for c in comparison.cells if c.suite == suite] if comparison is not None else []
        metric = suite_metric(profile, suite, metrics)
        parts += [
            f'<h3 data-suite="{esc(suite)}">{esc(suite)}</h3>',
            _findings(cells),
            layer_chart(profile, suite, metric, baseline, index, cells),
        ]
    return "\n".join(part for part in parts if part)


def evidence_table(cells: Sequence[CellComparison]) -> str:
    """The evidence table of ``cells`` (values, Δ, CI, p, detectable drop, verdict), as the page shows it."""
    return _evidence(cells)


def findings_list(cells: Sequence[CellComparison]) -> str:
    """The sentence of each cell that is not ok, as the page, the terminal and failure messages word it."""
    return _findings(cells)


def scoped_css(scope: str) -> str:
    """:data:`CSS` limited to the elements under the selector ``scope``, so that the page's parts embedded
    in another page style themselves and nothing else; ``:root`` and ``body`` rules apply to the scope."""

    def within(selectors: str) -> str:
        return ",".join(
            scope if s.strip() in (":root", "body") else f"{scope} {s.strip()}" for s in selectors.split(",")
        )

    def rules(css: str) -> str:
        out = []
        for head, body in re.findall(r"\s*([^{}]+?)\s*\{((?:[^{}]|\{[^{}]*\})*)\}", css):
            out.append(f"{head}{{{rules(body)}}}" if head.startswith("@") else f"{within(head)}{{{body}}}")
        return "\n".join(out)

    return rules(CSS)


# ------------------------------------------------------------------------------------ sections
def _verdict(page: Page) -> str:
    """The run's verdict first: refused, failed or passed, in the terminal's words, with the criteria."""
    comparison = page.comparison
    if page.refused is not None:
        kind, lines = "refused", [f"comparison with the baseline refused: {page.refused}"]
    elif comparison is None:
        kind, lines = "profile", ["profile only: no baseline was compared"]
    else:
        kind, lines = ("passed" if comparison.passed else "failed"), [status_line(comparison)]
    if page.failed_checks:
        kind = "failed" if kind == "passed" else kind
        lines.append(f"{len(page.failed_checks)} layercheck check(s) failed: " + ", ".join(page.failed_checks))
    criteria = f'<div class="muted">{esc(comparison.criteria())}</div>' if comparison is not None else ""
    return (
        f'<div class="verdict {kind}" data-passed="{str(page.passed).lower()}">'
        + "<br>".join(esc(line) for line in lines)
        + f"</div>{criteria}"
    )


def _overview(page: Page) -> str:
    """The capability × band table every renderer shows, a compared cell marked by its status."""
    model = build_table(page.profile, page.comparison, page.metrics)
    head = "".join(
        f'<th class="{"l" if i < model.lead_columns else ""}">{esc(h)}</th>' for i, h in enumerate(model.headers)
    )
    rows = []
    for row in model.rows:
        cells = []
        for index, cell in enumerate(row):
            classes = ["l"] if index < model.lead_columns else []
            if cell.status:
                classes.append(f"status-{cell.status}")
            if cell.failed:
                classes.append("failed-cell")
            status = f' data-status="{cell.status}" data-failed="{str(cell.failed).lower()}"' if cell.status else ""
            cells.append(f'<td class="{" ".join(classes)}"{status}>{esc(cell.text)}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    caption = f"<caption>{esc(LEGEND)}</caption>" if page.comparison is not None else ""
    return f'<table class="bands">{caption}<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _suite_section(page: Page, index: int, suite: str) -> str:
    info = page.profile.suites[suite]
    metric = suite_metric(page.profile, suite, page.metrics)
    cells = [c for c in page.comparison.cells if c.suite == suite] if page.comparison is not None else []
    sweep = f", {len(info.swept_ids)} scored with layers removed" if info.sweep_items is not None else ""
    heading = (
        f'<section class="suite" id="suite-{index}" data-suite="{esc(suite)}"><h2>{esc(suite)}</h2>'
        f'<div class="muted">capability {esc(info.capability)} · protocol {esc(info.protocol)} · metric '
        f"{esc(metric)} · {len(info.item_ids)} items{esc(sweep)}</div>"
    )
    parts = [heading, layer_chart(page.profile, suite, metric, page.baseline, index, cells)]
    if cells:
        parts += [_evidence(cells), _findings(cells), _items(page, index, suite, cells)]
    return "\n".join(part for part in parts if part) + "</section>"


def _evidence(cells: Sequence[CellComparison]) -> str:
    """One row per compared cell: the numbers behind its verdict, as the terminal's evidence table."""
    headers = [
        "cell",
        "baseline",
        "this run",
        "Δ",
        f"{CI_LEVEL:.0%} CI",
        "test",
        "items",
        "p",
        "p adj",
        "detectable drop",
        "tolerance",
        "status",
    ]
    rows = []
    for c in cells:
        interval = f"[{fmt_delta(c.ci_low)}, {fmt_delta(c.ci_high)}]" if math.isfinite(c.ci_low) else ""
        detectable = (f"{c.detectable_drop:.3f}" if math.isfinite(c.detectable_drop) else "none") + (
            "*" if c.underpowered else ""
        )
        status = f"{marker(c)} {'fails: ' if c.failed else ''}{STATUS_WORDS[c.status]}".strip()
        values = [
            c.label,
            fmt_value(c.baseline),
            fmt_value(c.current),
            fmt_delta(c.delta),
            interval,
            c.test,
            str(c.items),
            fmt_p(c.p_value),
            fmt_p(c.p_adjusted),
            detectable,
            f"{c.allowed:.3g}",
            status,
        ]
        style = f"status-{c.status}" + (" failed-cell" if c.failed else "")
        row = "".join(f'<td class="{"l" if i == 0 else ""}">{esc(v)}</td>' for i, v in enumerate(values[:-1]))
        rows.append(
            f'<tr class="cell" data-status="{c.status}" data-failed="{str(c.failed).lower()}">{row}'
            f'<td class="{style}">{esc(values[-1])}</td></tr>'
        )
    head = "".join(f'<th class="{"l" if i == 0 else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    caption = (
        (
            "* the tolerance is below the smallest drop this test would catch: a drop of its size would "
            "likely go unnoticed"
        )
        if any(c.underpowered for c in cells)
        else ""
    )
    return (
        f'<table class="evidence"><caption>{esc(caption)}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _findings(cells: Sequence[CellComparison]) -> str:
    """Each cell that is not ok, in the sentence the terminal and failure messages print."""
    lines = [
        f'<li class="{"failed" if c.failed else c.status}">'
        f"{esc(f'{marker(c)} {describe_change(c)}: {describe_detail(c)}'.strip())}</li>"
        for c in cells
        if c.status != "ok"
    ]
    return f'<ul class="findings">{"".join(lines)}</ul>' if lines else ""


def _remarks(page: Page) -> str:
    """Sensitivity, warnings, notes and extra findings: what the terminal prints under the verdict."""
    comparison = page.comparison
    lines = [("finding", note) for note in page.notes]
    if comparison is not None:
        weak = sensitivity_warning(comparison)
        lines += [("sensitivity", weak)] if weak else []
        lines += [("warning", w) for w in comparison.warnings] + [("note", n) for n in comparison.notes]
        lines += [("missing suite", s) for s in comparison.missing_suites]
        lines += [("new suite", s) for s in comparison.new_suites]
    if not lines:
        return ""
    return "<h2>Remarks</h2><ul>" + "".join(f"<li><b>{esc(k)}:</b> {esc(v)}</li>" for k, v in lines) + "</ul>"


# -------------------------------------------------------------------------------------- chart
@dataclass(frozen=True)
class Frame:
    """Where the chart's layers and values land: ``x`` of a layer's centre, ``y`` of a value in a panel."""

    layers: int
    left: float = 64.0
    width: float = 860.0
    top: float = 34.0
    height: float = 170.0

    @property
    def step(self) -> float:
        return self.width / max(self.layers, 1)

    def x(self, layer: float) -> float:
        return self.left + self.step * (layer + 0.5)

    @staticmethod
    def y(value: float, low: float, high: float, top: float, height: float) -> float:
        share = (value - low) / (high - low) if high > low else 0.5
        return top + height * (1 - min(max(share, 0.0), 1.0))


def _drops(profile: DepthProfile | None, suite: str, metric: str) -> dict[int, tuple[float, float]]:
    """Layer -> (drop when it is removed, metric with it removed); empty when the profile lacks it."""
    if profile is None or suite not in profile.suites or metric not in profile.evaluation(suite).outcomes:
        return {}
    values, _ = layer_values(profile, suite, metric)
    return {layer: (ref - value, value) for layer, (value, ref) in values.items()}


def layer_chart(
    profile: DepthProfile,
    suite: str,
    metric: str,
    baseline: DepthProfile | None = None,
    index: int = 0,
    cells: Sequence[CellComparison] = (),
) -> str:
    """The suite's per-layer chart: one mark per layer (``class="mark"``, ``data-layer``) for this run,
    the baseline's curve, and below them the difference; failing bands are hatched and named ✗."""
    now, before = _drops(profile, suite, metric), _drops(baseline, suite, metric)
    if not now and not before:
        return '<p class="muted">intact only: no layer was removed, so there is no per-layer chart.</p>'
    frame = Frame(num_layers(profile))
    drops = [d for d, _ in (*now.values(), *before.values()) if math.isfinite(d)]
    high = nice_scale(max([0.0, *drops]))
    low = -nice_scale(-min(drops)) if drops and min(drops) < 0 else 0.0
    moved = {layer: now[layer][1] - before[layer][1] for layer in now.keys() & before.keys()}
    diff_top = frame.top + frame.height + 58
    bottom = diff_top + (90 if moved else 0) + 44
    failed = {c.band for c in cells if c.failed}
    parts = [
        _defs(index),
        _bands_svg(profile, frame, bottom - 44, failed, index),
        _axis_svg(frame, low, high, "drop when the layer is removed"),
        _series_svg(before, frame, low, high, "baseline"),
        _series_svg(now, frame, low, high, "run"),
    ]
    if moved:
        parts.append(_diff_svg(moved, frame, diff_top, index))
    parts.append(_legend_svg(frame, bottom - 14, bool(before), bool(moved), index))
    label = f"{suite}: drop in {metric} when each of {frame.layers} layers is removed" + (
        ", this run and baseline" if before else ""
    )
    total = frame.left + frame.width + 16
    return (
        f'<svg class="layer-chart" data-suite="{esc(suite)}" data-layers="{frame.layers}" role="img" '
        f'aria-label="{esc(label)}" viewBox="0 0 {total:.0f} {bottom:.0f}" width="{total:.0f}" '
        f'height="{bottom:.0f}">' + "".join(parts) + "</svg>"
    )


def _defs(index: int) -> str:
    """Hatches (ids unique per chart): a fall and a failing band read without colour."""
    return (
        f'<defs><pattern id="fall-{index}" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{FALL_COLOUR}" stroke-width="4"/></pattern>'
        f'<pattern id="failband-{index}" width="8" height="8" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(-45)"><line x1="0" y1="0" x2="0" y2="8" stroke="#f3c9b3" '
        f'stroke-width="2"/></pattern></defs>'
    )


def _bands_svg(profile: DepthProfile, frame: Frame, bottom: float, failed: set[str], index: int) -> str:
    """Band backgrounds, their names with layer ranges on top, and a dashed rule at each band edge."""
    parts = []
    for number, (band, layers) in enumerate(profile.bands.items()):
        if not layers:
            continue
        x0, x1 = frame.x(min(layers) - 0.5), frame.x(max(layers) + 0.5)
        fill = f"url(#failband-{index})" if band in failed else ("#f4f4f4" if number % 2 else "none")
        parts.append(
            f'<rect class="band" data-band="{esc(band)}" x="{x0:.1f}" y="{frame.top - 20:.1f}" '
            f'width="{x1 - x0:.1f}" height="{bottom - frame.top + 20:.1f}" fill="{fill}"/>'
        )
        name = f"{band} ({format_layers(layers, prefix='L')})" + (" ✗ fails" if band in failed else "")
        weight = ' font-weight="700"' if band in failed else ""
        parts.append(
            f'<text x="{(x0 + x1) / 2:.1f}" y="{frame.top - 8:.1f}" text-anchor="middle"{weight}>{esc(name)}</text>'
        )
        if number:
            parts.append(
                f'<line class="band-edge" x1="{x0:.1f}" x2="{x0:.1f}" y1="{frame.top - 20:.1f}" '
                f'y2="{bottom:.1f}" stroke="#444" stroke-dasharray="5 3"/>'
            )
    return "".join(parts)


def _axis_svg(frame: Frame, low: float, high: float, title: str) -> str:
    """Value ticks and gridlines of the top panel, and the layer numbers under it."""
    ticks: list[tuple[float, float]] = []
    for tick in (0.0, high, low, high / 2):  # a tick too close to one kept before it would overprint it
        y = frame.y(tick, low, high, frame.top, frame.height)
        if all(abs(y - other) >= 14 for _, other in ticks):
            ticks.append((tick, y))
    parts = []
    for tick, y in ticks:
        dash = "" if tick == 0 else ' stroke-dasharray="2 3"'
        parts.append(
            f'<line x1="{frame.left}" x2="{frame.left + frame.width}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#999"{dash}/><text x="{frame.left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{tick:.2f}</text>"
        )
    every = max(1, math.ceil(frame.layers / 40))
    base = frame.top + frame.height + 14
    parts += [
        f'<text x="{frame.x(layer):.1f}" y="{base:.1f}" text-anchor="middle">{layer}</text>'
        for layer in range(0, frame.layers, every)
    ]
    parts.append(
        f'<text x="{frame.left + frame.width / 2:.1f}" y="{base + 14:.1f}" text-anchor="middle">layer removed</text>'
    )
    middle = frame.top + frame.height / 2
    parts.append(f'<text transform="translate(14 {middle:.1f}) rotate(-90)" text-anchor="middle">{esc(title)}</text>')
    return "".join(parts)


def _series_svg(drops: Mapping[int, tuple[float, float]], frame: Frame, low: float, high: float, kind: str) -> str:
    """This run: filled circles on a solid line, one mark per layer (``·`` where not evaluated);
    the baseline: hollow squares on a dashed line."""
    if not drops and kind == "baseline":
        return ""
    colour = RUN_COLOUR if kind == "run" else BASELINE_COLOUR
    points = [
        (layer, frame.x(layer), frame.y(d, low, high, frame.top, frame.height))
        for layer, (d, _) in sorted(drops.items())
        if math.isfinite(d)
    ]
    dash = ' stroke-dasharray="6 4"' if kind == "baseline" else ""
    line = " ".join(f"{x:.1f},{y:.1f}" for _, x, y in points)
    parts = [f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>']
    shown = {layer: (x, y) for layer, x, y in points}
    who = "this run" if kind == "run" else "baseline"
    for layer in range(frame.layers) if kind == "run" else sorted(shown):
        if layer not in shown:
            parts.append(
                f'<text class="mark missing" data-layer="{layer}" x="{frame.x(layer):.1f}" '
                f'y="{frame.top + frame.height - 4:.1f}" text-anchor="middle">·<title>L{layer}: not '
                "evaluated</title></text>"
            )
            continue
        x, y = shown[layer]
        tip = f"<title>L{layer}, {who}: drop {drops[layer][0]:+.3f} (metric {drops[layer][1]:.3f})</title>"
        if kind == "run":
            parts.append(
                f'<circle class="mark" data-layer="{layer}" data-drop="{drops[layer][0]:.4f}" '
                f'cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}" stroke="#000" stroke-width="0.6">'
                f"{tip}</circle>"
            )
        else:
            parts.append(
                f'<rect class="mark-baseline" data-layer="{layer}" x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" '
                f'width="7" height="7" fill="#fff" stroke="{colour}" stroke-width="1.6">{tip}</rect>'
            )
    return "".join(parts)


def _diff_svg(moved: Mapping[int, float], frame: Frame, top: float, index: int) -> str:
    """Metric with each layer removed, this run − baseline (the terminal's delta strip): rises are solid
    bars up, falls hatched bars down, from a zero line."""
    finite = [abs(v) for v in moved.values() if math.isfinite(v)]
    scale = nice_scale(max(finite, default=0.0))
    height = 80.0
    zero = top + height / 2
    parts = [
        f'<line x1="{frame.left}" x2="{frame.left + frame.width}" y1="{zero:.1f}" y2="{zero:.1f}" stroke="#444"/>',
        f'<text x="{frame.left - 6}" y="{top + 4:.1f}" text-anchor="end">+{scale:.2f}</text>',
        f'<text x="{frame.left - 6}" y="{top + height + 4:.1f}" text-anchor="end">−{scale:.2f}</text>',
        f'<text x="{frame.left}" y="{top - 8:.1f}">metric with the layer removed, this run − baseline '
        "(▲ rose, ▼ fell)</text>",
    ]
    width = max(frame.step * 0.7, 1.0)
    for layer, delta in sorted(moved.items()):
        if not math.isfinite(delta):
            continue
        size = min(abs(delta) / scale, 1.0) * height / 2
        y = zero - size if delta >= 0 else zero
        fill = RISE_COLOUR if delta >= 0 else f"url(#fall-{index})"
        parts.append(
            f'<rect class="diff" data-layer="{layer}" data-delta="{delta:.4f}" '
            f'x="{frame.x(layer) - width / 2:.1f}" y="{y:.1f}" width="{width:.1f}" height="{size:.1f}" '
            f'fill="{fill}" stroke="#000" stroke-width="0.5"><title>L{layer}: {delta:+.3f}</title></rect>'
        )
    return "".join(parts)


def _legend_svg(frame: Frame, y: float, baseline: bool, moved: bool, index: int) -> str:
    """Each series' shape and line style with its name: the chart reads in black and white."""
    keys = [
        (
            f'<line x1="0" x2="22" y1="0" y2="0" stroke="{RUN_COLOUR}" stroke-width="2"/>'
            f'<circle cx="11" cy="0" r="4" fill="{RUN_COLOUR}" stroke="#000" stroke-width="0.6"/>',
            "this run",
        )
    ]
    if baseline:
        keys.append(
            (
                f'<line x1="0" x2="22" y1="0" y2="0" stroke="{BASELINE_COLOUR}" stroke-width="2" '
                f'stroke-dasharray="6 4"/><rect x="7.5" y="-3.5" width="7" height="7" fill="#fff" '
                f'stroke="{BASELINE_COLOUR}" stroke-width="1.6"/>',
                "baseline",
            )
        )
    if moved:
        keys += [
            (
                f'<rect x="4" y="-6" width="14" height="12" fill="{RISE_COLOUR}" stroke="#000" stroke-width="0.5"/>',
                "rose",
            ),
            (
                f'<rect x="4" y="-6" width="14" height="12" fill="url(#fall-{index})" stroke="#000" '
                'stroke-width="0.5"/>',
                "fell",
            ),
        ]
    keys.append(('<line x1="11" x2="11" y1="-7" y2="7" stroke="#444" stroke-dasharray="5 3"/>', "band edge"))
    parts, x = [], frame.left
    for shape, name in keys:
        parts.append(f'<g transform="translate({x:.1f} {y:.1f})">{shape}<text x="28" y="4">{esc(name)}</text></g>')
        x += 40 + 7 * len(name)
    return "".join(parts)


# -------------------------------------------------------------------------------------- items
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


def _items(page: Page, index: int, suite: str, cells: Sequence[CellComparison]) -> str:
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
    shown = list(ids[:MAX_ITEMS])
    chosen = answer_texts(page.profile, cell.suite, texts)
    intact = cell.band == INTACT
    binary = metric_kind(cell.metric).binary
    before, after = _shares(page.baseline, cell, shown), _shares(page.profile, cell, shown)
    rows = []
    for item in shown:
        entry = texts.get(item, {})
        prompt = entry.get("prompt", "")
        prompt = prompt if len(prompt) <= MAX_PROMPT else prompt[:MAX_PROMPT] + " …"
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
    if answer is None:
        return "—"
    return answer if len(answer) <= MAX_PROMPT else answer[:MAX_PROMPT] + " …"


# -------------------------------------------------------------------------------- run details
def flat_settings(prefix: str, value: object) -> list[tuple[str, str]]:
    """Nested settings as ``key.sub: value`` lines."""
    if isinstance(value, Mapping):
        return [
            line for key, sub in value.items() for line in flat_settings(f"{prefix}.{key}" if prefix else str(key), sub)
        ]
    return [(prefix, "" if value is None else str(value))]


def meta_list(title: str, pairs: Sequence[tuple[str, object]]) -> str:
    rows = "".join(f"<dt>{esc(key)}</dt><dd>{esc(value)}</dd>" for key, value in pairs)
    return f'<h3>{esc(title)}</h3><dl class="meta">{rows}</dl>'


def _run_details(page: Page) -> str:
    """Models, fingerprints, precision, settings and versions: what a reader needs to trust the numbers."""
    model = page.profile.model
    parts = ["<h2>Run details</h2>", meta_list("this run's model", [(k, v) for k, v in model.items()])]
    comparison = page.comparison
    if comparison is not None:
        base = comparison.baseline_model
        precision = (
            f"{base.get('dtype', '?')} on {base.get('device', '?')} vs {model.get('dtype', '?')} on "
            f"{model.get('device', '?')}"
            + (" (compared across precisions: verdicts carry precision noise)" if comparison.precision_mismatch else "")
        )
        parts.append(
            meta_list(
                "baseline",
                [
                    *base.items(),
                    ("precision", precision),
                    (
                        "fingerprints",
                        f"baseline {fingerprint_text(base.get('fingerprint'))}, "
                        f"this run {fingerprint_text(model.get('fingerprint'))}",
                    ),
                ],
            )
        )
        judged = [
            ("tolerance", str(comparison.tolerance)),
            ("alpha", comparison.alpha),
            ("correction", comparison.correction),
            ("hypotheses", comparison.family_size),
            ("power", comparison.power),
            ("fail on improvement", comparison.fail_on_improvement),
        ]
        parts.append(meta_list("how cells are judged", judged))
    if page.refused is not None:
        parts.append(meta_list("comparison", [("refused", page.refused)]))
    suites = [
        (name, f"{info.protocol}, {len(info.item_ids)} items, {len(info.swept_ids)} swept, content {info.content_hash}")
        for name, info in page.profile.suites.items()
    ]
    parts += [
        meta_list("suites", suites),
        meta_list("settings", flat_settings("", page.profile.settings)),
        meta_list("versions and environment", flat_settings("", page.profile.environment)),
    ]
    return "\n".join(parts)
