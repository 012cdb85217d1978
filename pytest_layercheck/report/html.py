"""What every self-contained HTML page of layercheck shares: the escaping of user data, the page shell
with its CSS and a policy that lets the browser fetch nothing, the Okabe–Ito palette, and the caps on
listed items. The depth report (:mod:`.html_page`) and the analyses' pages (:mod:`.analysis_html`) are
built from these.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence

#: Items listed per cell and direction; the rest are counted (the JSON report lists every one).
MAX_ITEMS = 100
#: Characters of a prompt shown; a longer one is cut (the JSON report has it whole).
MAX_PROMPT = 400
#: Okabe–Ito colours: the baseline, this run, a rise and a fall.
BASELINE_COLOUR = "#0072B2"
RUN_COLOUR = "#D55E00"
RISE_COLOUR = "#56B4E9"
FALL_COLOUR = "#E69F00"

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


def esc(value: object) -> str:
    """Every string that reaches the page goes through here: prompts and names are user data."""
    return html.escape(str(value), quote=True)


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


def flat_settings(prefix: str, value: object) -> list[tuple[str, str]]:
    """Nested settings as ``key.sub: value`` lines."""
    if isinstance(value, Mapping):
        return [
            line for key, sub in value.items() for line in flat_settings(f"{prefix}.{key}" if prefix else str(key), sub)
        ]
    return [(prefix, "" if value is None else str(value))]


def meta_list(title: str, pairs: Sequence[tuple[str, object]]) -> str:
    """A titled list of ``key: value`` pairs, as a page's run details show them."""
    rows = "".join(f"<dt>{esc(key)}</dt><dd>{esc(value)}</dd>" for key, value in pairs)
    return f'<h3>{esc(title)}</h3><dl class="meta">{rows}</dl>'
