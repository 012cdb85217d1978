"""Fast vs slow thinking as a self-contained HTML page: accuracy and corrections vs overthinking per group,
the tables, and the items that changed answer."""

from __future__ import annotations

import math

from pytest_layercheck.analysis.thinking.fast_slow import Shift, ThinkingResult
from pytest_layercheck.analysis.thinking.render import THINKING_CAPTION, thinking_rows, thinking_title
from pytest_layercheck.report.analyses import num
from pytest_layercheck.report.analysis_html import (
    Bar,
    Series,
    bar_chart,
    cut,
    page,
    settings_list,
    shown_items,
    table,
)
from pytest_layercheck.report.html import MAX_ITEMS, RUN_COLOUR


def render_thinking_html(result: ThinkingResult, fine: bool = True) -> str:
    """Fast vs slow: accuracy and corrections vs overthinking per group, the tables, the items that changed."""
    shifts = result.shifts()
    parts = [
        "<h2>Accuracy per group</h2>",
        _accuracy_chart(shifts),
        "<h2>Items that changed answer</h2>",
        _flips_chart(shifts),
        table(thinking_rows(result), THINKING_CAPTION, css="groups"),
    ]
    if fine:
        parts += ["<h3>Per domain</h3>", table(thinking_rows(result, fine=True), css="domains")]
    parts += _changed_items(result)
    parts.append(settings_list("settings", {"model": result.model, **result.settings}))
    return page(thinking_title(result), parts)


def _accuracy_chart(shifts: list[Shift]) -> str:
    fast, slow = Series("fast (direct)", "fast"), Series("slow (chain of thought)", "slow", RUN_COLOUR, hatched=True)
    accuracy = [
        (
            s.group,
            [
                Bar(s.fast_accuracy, f"{s.group}: fast {num(s.fast_accuracy)} of {s.items}", data={"group": s.group}),
                Bar(s.slow_accuracy, f"{s.group}: slow {num(s.slow_accuracy)} of {s.items}", data={"group": s.group}),
            ],
        )
        for s in shifts
    ]
    return bar_chart("accuracy", accuracy, [fast, slow], title="accuracy", x_title="group", low=0.0, high=1.0)


def _flips_chart(shifts: list[Shift]) -> str:
    wrong, right = (
        Series("corrections (wrong → right)", "corrections"),
        Series("overthinking (right → wrong)", "overthinking", RUN_COLOUR, hatched=True),
    )
    flips = [
        (
            s.group,
            [
                Bar(float(s.corrections), f"{s.group}: {s.corrections} corrections", data={"group": s.group}),
                Bar(float(s.overthinking), f"{s.group}: {s.overthinking} overthinking", data={"group": s.group}),
            ],
        )
        for s in shifts
    ]
    peak = max([float(s.corrections) for s in shifts] + [float(s.overthinking) for s in shifts] + [1.0])
    return bar_chart(
        "flips", flips, [wrong, right], title="items", x_title="group", low=0.0, high=math.ceil(peak), counts=True
    )


def _changed_items(result: ThinkingResult) -> list[str]:
    """The items answered right one way and wrong the other, with both answers and the chain of thought."""
    changed = [p for p in result.items if p.fast.correct != p.slow.correct]
    if not changed:
        return []
    shown = changed[:MAX_ITEMS]
    rows = [
        [
            p.item_id,
            f"{p.suite}/{p.domain}",
            "correction" if p.slow.correct else "overthinking",
            p.target,
            p.fast.answer or "(none)",
            p.slow.answer or "(none)",
            cut(p.slow_text),
        ]
        for p in shown
    ]
    return [
        "<h3>The items</h3>",
        table(
            (["item", "domain", "change", "gold", "fast answer", "slow answer", "chain of thought"], rows),
            "answers after extraction" + shown_items(len(shown), len(changed), " (--json has every one)"),
            lead=3,
            css="items",
            text=(3, 4, 5, 6),
        ),
    ]
