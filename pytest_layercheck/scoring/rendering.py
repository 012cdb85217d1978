"""Turn (suite, protocol, item) into prompt text and candidate continuations, lm-eval style.

A prompt is the few-shot examples (each rendered with the item template, then
``target_delimiter`` and its answer) joined by ``fewshot_delimiter``, then the item's own rendered
template. Candidates are the strings whose log-likelihood is scored after ``target_delimiter``:
the letters for ``mc_letters``, the choice texts for ``mc_text`` and the target for
``continuation``; ``generate_until`` has a single expected answer instead.

**Chat templates.** :func:`with_chat_template` returns the suite as rendered through a tokenizer's
chat template, with the semantics of lm-evaluation-harness's ``--apply_chat_template``
(``--fewshot_as_multiturn``, ``--system_instruction``; ``lm_eval/api/task.py``, ``fewshot_context``
and ``build_qa_turn``; lm-eval 0.4.13): an optional system message; the few-shot examples as
alternating user/assistant turns (lm-eval's default under a chat template), or collapsed with the item
into one user message holding the plain prompt text (``singleturn``, ``--fewshot_as_multiturn false``);
then ``apply_chat_template(..., add_generation_prompt=True)``. Log-likelihood candidates follow
the assistant header directly, so their ``target_delimiter`` becomes ``""`` (lm-eval does this for
multiple choice; few-shot turns keep the suite's delimiter). The rendered suite's ``content_hash``
covers the chat options, so results, caches and baselines never mix chat and plain prompts; the
template text itself belongs to the model (the result cache keys on its digest).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pytest_layercheck.core.errors import ConfigError, ProtocolError
from pytest_layercheck.suites.protocols import get_protocol
from pytest_layercheck.suites.schema import LETTERS, ProtocolSettings, Suite, SuiteItem

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

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
    return get_protocol(protocol).candidates(item)


def gold_answer(protocol: str, item: SuiteItem) -> str:
    """The answer a few-shot example shows under ``protocol``."""
    return get_protocol(protocol).gold_answer(item)


def render_prompt(suite: Suite, protocol: str, item: SuiteItem) -> str:
    """Few-shot block plus the item's rendered template (through the chat template for a chat suite)."""
    if isinstance(suite, ChatRenderedSuite):
        return suite.render_chat(protocol, item)
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
    spec = get_protocol(protocol)
    settings: ProtocolSettings = suite.settings(protocol)
    where = f"suite {suite.name!r}" + (f" ({suite.source})" if suite.source else "")
    if "choices_block" in spec.placeholders and "{choices_block}" not in settings.template:
        raise ProtocolError(
            f"{where}: the {protocol} template has no {{choices_block}}, so the model never sees the options",
            f"add '{{choices_block}}' to the template of the {protocol} protocol",
        )
    for role, item in [*(("few-shot example", s) for s in suite.fewshot), *(("item", i) for i in items)]:
        problem = spec.item_problem(item)
        if problem:
            line = f", line {item.line}" if item.line is not None else ""
            raise ProtocolError(
                f"{where}, {role} {item.id!r}{line}: {problem}",
                f"fix the item, or score the suite with a protocol it supports (declared: {sorted(suite.protocols)})",
            )


# --------------------------------------------------------------------------------------------------
# Chat templates (lm-eval's --apply_chat_template)

#: Bumped if the way chat options enter a suite's content hash changes.
CHAT_HASH_FORMAT = "pytest-layercheck-chat/1"
_CHAT_OFF = ("", "0", "false", "no", "off", "none")
_CHAT_ON = ("1", "true", "yes", "on", "chat", "multiturn")
_CHAT_SINGLETURN = ("singleturn", "single-turn")


@dataclass(frozen=True)
class ChatTemplate:
    """How prompts go through a tokenizer's chat template: lm-eval's ``--apply_chat_template`` options."""

    #: Few-shot examples as alternating user/assistant turns (``--fewshot_as_multiturn``, lm-eval's default
    #: with ``--apply_chat_template``); False: they and the item are one user message, the plain prompt text.
    fewshot_as_multiturn: bool = True
    #: A system message (``--system_instruction``); None leaves the template's own default, if any.
    system_instruction: str | None = None

    @classmethod
    def parse(cls, spec: str | bool | None, system_instruction: str | None = None) -> ChatTemplate | None:
        """An option value: off (``""``, ``off``, ``false``), on (``on``, ``true``, ``multiturn``: few-shot
        examples as turns, lm-eval's default) or ``singleturn`` (``--fewshot_as_multiturn false``)."""
        if isinstance(spec, bool) or spec is None:
            enabled, multiturn = bool(spec), True
        else:
            text = str(spec).strip().lower()
            if text in _CHAT_OFF:
                enabled, multiturn = False, False
            elif text in _CHAT_ON or text in _CHAT_SINGLETURN:
                enabled, multiturn = True, text not in _CHAT_SINGLETURN
            else:
                raise ConfigError(
                    f"cannot read chat-template option {spec!r}",
                    "use 'on' (lm-eval's --apply_chat_template, few-shot examples as turns), "
                    "'singleturn' (with --fewshot_as_multiturn false) or 'off'",
                )
        if not enabled:
            if system_instruction:
                raise ConfigError(
                    "a system instruction was given without a chat template",
                    "turn the chat template on, or drop the system instruction",
                )
            return None
        return cls(fewshot_as_multiturn=multiturn, system_instruction=system_instruction or None)

    def describe(self) -> dict[str, Any]:
        """What a baseline and a cache key record (JSON)."""
        return {
            "apply_chat_template": True,
            "fewshot_as_multiturn": self.fewshot_as_multiturn,
            "system_instruction": self.system_instruction,
        }


@dataclass(frozen=True)
class ChatRenderedSuite(Suite):
    """A suite whose prompts are rendered through ``tokenizer``'s chat template (see :func:`with_chat_template`).

    ``protocols`` hold the settings used for scoring (log-likelihood delimiters emptied);
    ``plain_protocols`` the suite's own, used to render few-shot turns as lm-eval does.
    """

    chat: ChatTemplate = field(default_factory=ChatTemplate)
    tokenizer: PreTrainedTokenizerBase | None = field(default=None, compare=False, repr=False)
    plain_protocols: Mapping[str, ProtocolSettings] = field(default_factory=dict)
    plain_hash: str = ""

    def chat_messages(self, protocol: str, item: SuiteItem) -> list[dict[str, str]]:
        """The messages lm-eval's ``fewshot_context`` builds for ``item`` (before the template)."""
        settings = self.plain_protocols[protocol]
        turns: list[tuple[str, str, str]] = []  # role, content, plain-text delimiter after it
        for shot in self.fewshot:
            turns.append(("user", fill_template(settings.template, shot), settings.target_delimiter))
            turns.append(("assistant", gold_answer(protocol, shot), settings.fewshot_delimiter))
        turns.append(("user", fill_template(settings.template, item), ""))
        system = [{"role": "system", "content": self.chat.system_instruction}] if self.chat.system_instruction else []
        if self.chat.fewshot_as_multiturn:
            return system + [{"role": role, "content": content} for role, content, _ in turns]
        # lm-eval's multiturn_to_singleturn: every turn's text and delimiter, the last delimiter dropped
        return system + [{"role": "user", "content": "".join(c + d for _, c, d in turns[:-1]) + turns[-1][1]}]

    def render_chat(self, protocol: str, item: SuiteItem) -> str:
        assert self.tokenizer is not None, "with_chat_template() sets the tokenizer"
        return apply_chat_template(self.tokenizer, self.chat_messages(protocol, item))


def apply_chat_template(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    """``tokenizer.apply_chat_template`` as lm-eval's HFLM calls it: text, generation prompt added; a template
    that rejects the system role is retried without it (lm-eval does the same, with a warning)."""
    import jinja2

    kwargs: dict[str, Any] = dict(tokenize=False, add_generation_prompt=True, continue_final_message=False)
    try:
        text = tokenizer.apply_chat_template(messages, **kwargs)
    except jinja2.exceptions.TemplateError:
        without_system = [m for m in messages if m["role"] != "system"]
        if len(without_system) == len(messages):
            raise
        text = tokenizer.apply_chat_template(without_system, **kwargs)
    if not isinstance(text, str):
        raise ProtocolError(
            f"the tokenizer's apply_chat_template returned {type(text).__name__}, not text",
            "use a tokenizer whose chat template renders to a string",
        )
    return text


def with_chat_template(suite: Suite, tokenizer: PreTrainedTokenizerBase, chat: ChatTemplate | None = None) -> Suite:
    """``suite`` with its prompts rendered through ``tokenizer``'s chat template (``chat`` None: unchanged).

    Log-likelihood protocols score candidates right after the assistant header (``target_delimiter`` "",
    as lm-eval does for multiple choice under a chat template); ``generate_until`` is unchanged apart from
    the prompt. The content hash covers the plain suite and the chat options.
    """
    if chat is None:
        return suite
    if isinstance(suite, ChatRenderedSuite):
        if suite.chat == chat and suite.tokenizer is tokenizer:
            return suite
        raise ProtocolError(
            f"suite {suite.name!r} is already rendered through a chat template",
            "apply the chat template to the plain suite",
        )
    if not getattr(tokenizer, "chat_template", None):
        raise ProtocolError(
            f"the tokenizer has no chat template, so suite {suite.name!r} cannot be rendered as chat",
            "turn the chat-template option off for this model (base models have none), or use its instruct variant",
        )
    scored = {
        name: replace(settings, target_delimiter="") if not get_protocol(name).generates else settings
        for name, settings in suite.protocols.items()
    }
    digest = hashlib.sha256(
        json.dumps(
            {"format": CHAT_HASH_FORMAT, "suite": suite.content_hash, "chat": chat.describe()},
            sort_keys=True,
            ensure_ascii=False,
        ).encode("utf-8")
    ).hexdigest()
    fields_ = {f: getattr(suite, f) for f in Suite.__dataclass_fields__}
    fields_.update(protocols=scored, content_hash="sha256:" + digest)
    return ChatRenderedSuite(
        **fields_, chat=chat, tokenizer=tokenizer, plain_protocols=dict(suite.protocols), plain_hash=suite.content_hash
    )
