"""Turn (suite, protocol, item) into prompt text and candidate continuations, lm-eval style.

A prompt is the few-shot examples (each rendered with the item template, then
``target_delimiter`` and its answer) joined by ``fewshot_delimiter``, then the item's own rendered
template. Candidates are the strings whose log-likelihood is scored after ``target_delimiter``:
the letters for ``mc_letters``, the choice texts for ``mc_text`` and the target for
``continuation``; ``generate_until`` has a single expected answer instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ProtocolError
from ..suites.schema import LETTERS, PROTOCOLS, ProtocolSettings, Suite, SuiteItem

MULTIPLE_CHOICE: frozenset[str] = frozenset({"mc_letters", "mc_text"})

_PLACEHOLDER = re.compile(r"\{(context|choices_block)\}")


@dataclass(frozen=True)
class RenderedItem:
    """One item ready for tokenisation: the prompt and what is scored or expected after it."""

    item: SuiteItem
    prompt: str
    #: Strings scored after ``target_delimiter`` (letters, choice texts or the target); for
    #: ``generate_until`` the single expected answer.
    candidates: tuple[str, ...]


def choices_block(item: SuiteItem) -> str:
    """The ``A. text`` lines that ``{choices_block}`` expands to."""
    return "\n".join(f"{LETTERS[i]}. {choice}" for i, choice in enumerate(item.choices))


def fill_template(template: str, item: SuiteItem) -> str:
    """Substitute ``{context}`` and ``{choices_block}`` in one pass.

    Other braces stay literal, and braces inside the substituted text are never re-read, which
    ``str.format`` would not guarantee for templates containing JSON or code.
    """
    values = {"context": item.context}
    if "{choices_block}" in template:
        values["choices_block"] = choices_block(item)
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def candidates(protocol: str, item: SuiteItem) -> tuple[str, ...]:
    """What is scored (or expected) after the prompt under ``protocol``."""
    if protocol == "mc_letters":
        return tuple(LETTERS[: len(item.choices)])
    if protocol == "mc_text":
        return tuple(item.choices)
    return (item.answer_text or "",)


def gold_answer(protocol: str, item: SuiteItem) -> str:
    """The answer a few-shot example shows under ``protocol``."""
    if protocol in MULTIPLE_CHOICE:
        return candidates(protocol, item)[item.gold]  # type: ignore[index]
    return item.answer_text or ""


def render_prompt(suite: Suite, protocol: str, item: SuiteItem) -> str:
    """Few-shot block plus the item's rendered template."""
    settings = suite.settings(protocol)
    shots = [
        fill_template(settings.template, shot) + settings.target_delimiter + gold_answer(protocol, shot)
        for shot in suite.fewshot
    ]
    return settings.fewshot_delimiter.join([*shots, fill_template(settings.template, item)])


def render(suite: Suite, protocol: str, items: Sequence[SuiteItem] | None = None) -> list[RenderedItem]:
    """Validate that ``suite`` supports ``protocol`` and render its items (default: all)."""
    items = suite.items if items is None else items
    validate(suite, protocol, items)
    return [RenderedItem(item, render_prompt(suite, protocol, item), candidates(protocol, item)) for item in items]


def validate(suite: Suite, protocol: str, items: Sequence[SuiteItem]) -> None:
    """Raise ``ProtocolError`` naming the first item that ``protocol`` cannot score."""
    if protocol not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {protocol!r}", f"use one of {list(PROTOCOLS)}")
    settings: ProtocolSettings = suite.settings(protocol)
    where = f"suite {suite.name!r}" + (f" ({suite.source})" if suite.source else "")
    if protocol == "mc_letters" and "{choices_block}" not in settings.template:
        raise ProtocolError(
            f"{where}: the mc_letters template has no {{choices_block}}, so the model never sees the options",
            "add '{choices_block}' to the template of the mc_letters protocol",
        )
    for role, item in [*(("few-shot example", s) for s in suite.fewshot), *(("item", i) for i in items)]:
        problem = _item_problem(protocol, item)
        if problem:
            line = f", line {item.line}" if item.line is not None else ""
            raise ProtocolError(
                f"{where}, {role} {item.id!r}{line}: {problem}",
                f"fix the item, or score the suite with a protocol it supports (declared: {sorted(suite.protocols)})",
            )


def _item_problem(protocol: str, item: SuiteItem) -> str | None:
    if protocol in MULTIPLE_CHOICE:
        if not item.is_multiple_choice:
            return f"protocol {protocol!r} needs 'choices' and 'gold', but the item has none"
        if not 0 <= item.gold < len(item.choices):  # type: ignore[operator]
            return f"gold={item.gold} is outside the {len(item.choices)} choices"
        if protocol == "mc_letters" and len(item.choices) > len(LETTERS):
            return f"mc_letters supports at most {len(LETTERS)} choices, the item has {len(item.choices)}"
        if protocol == "mc_text" and not all(item.choices):
            return "an empty choice cannot be scored (acc_norm divides by the choice length)"
        return None
    if not item.answer_text:
        return f"protocol {protocol!r} needs a non-empty 'target' (or choices with 'gold')"
    return None
