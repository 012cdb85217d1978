"""Fast vs slow thinking in the terminal and as markdown: one row per group (or per domain), from one set
of string rows."""

from __future__ import annotations

from rich.console import Group, RenderableType

from pytest_layercheck.analysis.thinking.fast_slow import Shift, ThinkingResult
from pytest_layercheck.evaluation.describe import fmt_p, fmt_value
from pytest_layercheck.report.analyses import Rows, markdown_rows, rich_rows, signed

THINKING_HEADERS = ["domain", "items", "fast", "slow", "Δ", "corrections", "overthinking", "p"]
THINKING_CAPTION = (
    "fast / slow = accuracy answering directly / after a chain of thought, Δ = slow − fast; "
    "corrections = wrong→right, "
    "overthinking = right→wrong (paired per item); p: exact McNemar on those two counts"
)


def shift_row(shift: Shift) -> list[str]:
    return [
        shift.group,
        str(shift.items),
        fmt_value(shift.fast_accuracy),
        fmt_value(shift.slow_accuracy),
        signed(shift.difference),
        str(shift.corrections),
        str(shift.overthinking),
        fmt_p(shift.p_value),
    ]


def thinking_rows(result: ThinkingResult, fine: bool = False) -> Rows:
    """Per group (medicine, other knowledge, maths, all); ``fine``: per suite/domain instead."""
    shifts = result.by_domain() if fine else result.shifts()
    return THINKING_HEADERS, [shift_row(s) for s in shifts]


def thinking_title(result: ThinkingResult) -> str:
    s = result.settings
    return (
        f'layercheck thinking: {result.model} · slow = "{s.get("cot_trigger", "")}" '
        f"(greedy, ≤{s.get('cot_tokens')} tokens) · accuracy after answer extraction"
    )


def thinking_renderable(result: ThinkingResult, fine: bool = False) -> RenderableType:
    parts: list[RenderableType] = [rich_rows(thinking_title(result), thinking_rows(result), THINKING_CAPTION)]
    if fine:
        parts.append(rich_rows("per domain", thinking_rows(result, fine=True)))
    return Group(*parts)


def thinking_markdown(result: ThinkingResult, fine: bool = False) -> str:
    lines = [f"### {thinking_title(result)}", "", markdown_rows(thinking_rows(result)), "", f"_{THINKING_CAPTION}_"]
    if fine:
        lines += ["", markdown_rows(thinking_rows(result, fine=True))]
    return "\n".join(lines) + "\n"
