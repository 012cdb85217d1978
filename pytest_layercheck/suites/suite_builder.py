"""Turns a parsed suite document into a validated, hashed :class:`~pytest_layercheck.suites.schema.Suite`.

The rules themselves (the loader's docstring lists the format): required and unknown fields,
protocols and their templates, items scorable under every declared protocol, no few-shot leak.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from pytest_layercheck.suites.field_checks import _fail, _Fields
from pytest_layercheck.suites.protocols import GENERATION_FIELDS, get_protocol, protocol_names
from pytest_layercheck.suites.schema import CAPABILITIES, LETTERS, ProtocolSettings, Suite, SuiteItem
from pytest_layercheck.suites.suite_hash import content_hash
from pytest_layercheck.suites.yaml_reader import _MarkedDict

HEADER_FIELDS: tuple[str, ...] = (
    "name", "capability", "description", "version", "default_protocol", "protocols", "fewshot",
    "metadata", "items",
)  # fmt: skip
REQUIRED_HEADER_FIELDS: tuple[str, ...] = (
    "name", "capability", "description", "default_protocol", "protocols", "items",
)  # fmt: skip
ITEM_FIELDS: tuple[str, ...] = (
    "id", "context", "domain", "kind", "choices", "gold", "target", "metadata",
)  # fmt: skip
SETTINGS_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ProtocolSettings))

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")


#: What looks like a placeholder. Only {context} and {choices_block} are substituted (in one pass,
#: like the scorer's ``fill_template``); other braces stay literal, so JSON in a template is fine,
#: but an identifier in braces is almost always a misspelt placeholder.
_PLACEHOLDER_LIKE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
PLACEHOLDERS: tuple[str, ...] = ("context", "choices_block")


def _placeholders(names: Iterable[str]) -> str:
    return ", ".join("{" + name + "}" for name in sorted(names))


#: A capability label: the built-ins (CAPABILITIES) or any label of the user's own, e.g. ``safety``.
_LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _capability(doc: _Fields) -> str:
    """Any label is allowed, but one a letter or two from a built-in capability is almost always a typo."""
    label = doc.string("capability")
    if not _LABEL_PATTERN.match(label):
        doc.fail(
            "capability",
            f"field 'capability' is {label!r}",
            "use letters, digits and . _ - only, e.g. knowledge or safety",
        )
    if label not in CAPABILITIES:
        close = [
            c
            for c in difflib.get_close_matches(label, CAPABILITIES, n=1, cutoff=0.85)
            if not (label.startswith(c) or c.startswith(label))
        ]
        if close:
            doc.fail(
                "capability",
                f"field 'capability' is {label!r}",
                f"did you mean '{close[0]}'? (labels of your own are allowed, e.g. safety)",
            )
    return label


class _SuiteBuilder:
    """Turns one parsed document into a validated :class:`Suite`."""

    def __init__(self, path: Path, document: _MarkedDict) -> None:
        self.path = path
        self.doc = _Fields(path, document, 1, "", "the document")

    def build(self) -> Suite:
        doc = self.doc
        doc.check_keys(HEADER_FIELDS, REQUIRED_HEADER_FIELDS)
        name = doc.string("name")
        capability = _capability(doc)
        description = doc.string("description")
        if "version" in doc:
            doc.integer("version", minimum=1)
        if "metadata" in doc:
            doc.json_like("metadata")
        protocols = self._protocols()
        default = doc.string("default_protocol")
        if default not in protocols:
            problem = f"field 'default_protocol' is {default!r}, which is not declared under 'protocols'"
            doc.fail("default_protocol", problem, f"use one of: {', '.join(protocols)}")
        fewshot = self._items("fewshot", protocols) if "fewshot" in doc else ()
        items = self._items("items", protocols)
        if not items:
            doc.fail("items", "field 'items' is empty", "add at least one item")
        self._check_no_leak(fewshot, items)
        suite = Suite(
            name=name, capability=capability, description=description, items=items,
            protocols=protocols, default_protocol=default, fewshot=fewshot, source=self.path,
        )  # fmt: skip
        return replace(suite, content_hash=content_hash(suite))

    def _protocols(self) -> dict[str, ProtocolSettings]:
        declared = self.doc.mapping("protocols", "")
        if not declared.raw:
            declared.fail(
                None,
                "field 'protocols' is empty",
                f"declare at least one of: {', '.join(protocol_names())}",
            )
        result: dict[str, ProtocolSettings] = {}
        for name in declared.raw:
            if name not in protocol_names():
                declared.fail(
                    name,
                    f"unknown protocol '{name}' under 'protocols'",
                    f"use one of: {', '.join(protocol_names())}",
                )
            body = declared.mapping(name, f"protocol '{name}'")
            generation = get_protocol(name).generates
            body.check_keys([f for f in SETTINGS_FIELDS if generation or f not in GENERATION_FIELDS])
            values: dict[str, Any] = {}
            if "template" in body:
                values["template"] = body.string("template")
            for key in ("target_delimiter", "fewshot_delimiter"):
                if key in body:
                    values[key] = body.string(key, empty=True)
            if "until" in body:
                values["until"] = body.strings("until", allow_scalar=True)
            if "max_gen_toks" in body:
                values["max_gen_toks"] = body.integer("max_gen_toks", minimum=1)
            if "answer_regex" in body:
                values["answer_regex"] = body.string("answer_regex")
                try:
                    re.compile(values["answer_regex"])
                except re.error as exc:
                    body.fail(
                        "answer_regex",
                        f"field 'answer_regex' does not compile: {exc}",
                        "fix the expression; single-quote it in YAML to keep backslashes as typed",
                    )
            result[name] = ProtocolSettings(**values)
            self._check_template(body, result[name].template, name)
        return result

    def _check_template(self, body: _Fields, template: str, protocol: str) -> None:
        names = set(_PLACEHOLDER_LIKE.findall(template))
        for unknown in sorted(names - set(PLACEHOLDERS)):
            body.fail(
                "template",
                f"field 'template' uses unknown placeholder '{{{unknown}}}'",
                f"use {_placeholders(PLACEHOLDERS)}; other text in braces is kept literally",
            )
        if missing := set(get_protocol(protocol).placeholders) - names:
            body.fail(
                "template",
                f"field 'template' lacks {_placeholders(missing)}",
                f"every {protocol} prompt needs {_placeholders(get_protocol(protocol).placeholders)}",
            )

    def _items(self, key: str, protocols: Mapping[str, ProtocolSettings]) -> tuple[SuiteItem, ...]:
        entries = self.doc.items(key)
        fewshot = key == "fewshot"
        items: list[SuiteItem] = []
        seen: dict[str, int] = {}
        for index, entry in enumerate(entries):
            ident = entry.get("id") if isinstance(entry, dict) else None
            label = "fewshot example" if fewshot else "item"
            where = f"{label} '{ident}'" if isinstance(ident, str) else f"{label} {index}"
            fields = _Fields(self.path, entry, entries.line_of(index), where, "the entry")
            item = self._item(fields, index, fewshot=fewshot)
            if item.id in seen:
                fields.fail(
                    "id",
                    f"field 'id' duplicates the {key} entry on line {seen[item.id]}",
                    "give every item a unique id",
                )
            seen[item.id] = fields.line
            self._check_protocol_needs(fields, item, protocols)
            items.append(item)
        return tuple(items)

    def _item(self, fields: _Fields, index: int, *, fewshot: bool) -> SuiteItem:
        """Few-shot examples need only a context and an answer; ids and domains default."""
        fields.check_keys(ITEM_FIELDS, ("context",) if fewshot else ("id", "context", "domain", "kind"))
        item_id = fields.string("id") if "id" in fields else f"fewshot-{index}"
        if not _ID_PATTERN.match(item_id):
            fields.fail(
                "id",
                f"field 'id' is {item_id!r}",
                "use letters, digits and . _ : / - only, starting with a letter or digit",
            )
        choices = fields.strings("choices") if "choices" in fields else ()
        gold = fields.integer("gold", minimum=0) if "gold" in fields else None
        if choices or gold is not None:
            self._check_choices(fields, choices, gold)
        return SuiteItem(
            id=item_id,
            context=fields.string("context"),
            domain=fields.string("domain") if "domain" in fields else "fewshot",
            kind=fields.string("kind") if "kind" in fields else "fewshot",
            choices=choices,
            gold=gold,
            target=fields.string("target") if "target" in fields else None,
            metadata=fields.json_like("metadata") if "metadata" in fields else {},
            line=fields.line,
        )

    @staticmethod
    def _check_choices(fields: _Fields, choices: tuple[str, ...], gold: int | None) -> None:
        if gold is None:
            fields.fail(
                "choices",
                "field 'gold' is missing although the item has 'choices'",
                "add 'gold: N', the 0-based index of the right choice",
            )
        if len(choices) < 2:
            problem = f"field 'choices' has only {len(choices)}, a multiple-choice item needs at least 2"
            fields.fail("choices" if choices else "gold", problem, "add plausible wrong answers")
        if len(choices) > len(LETTERS):
            fields.fail(
                "choices",
                f"field 'choices' has {len(choices)} entries, only {len(LETTERS)} can be lettered",
                "remove choices",
            )
        if repeated := sorted({c for c in choices if choices.count(c) > 1}):
            fields.fail(
                "choices",
                f"field 'choices' repeats {repeated[0]!r}",
                "make every choice distinct, or the argmax is ambiguous",
            )
        if gold >= len(choices):
            n = len(choices)
            problem = f"field 'gold' is {gold} but the item has {n} choices (valid: 0..{n - 1})"
            fields.fail("gold", problem, "gold is the 0-based index of the right choice")

    @staticmethod
    def _check_protocol_needs(fields: _Fields, item: SuiteItem, protocols: Mapping[str, ProtocolSettings]) -> None:
        """Every item must be scorable under every declared protocol."""
        for protocol, settings in protocols.items():
            spec = get_protocol(protocol)
            shows_choices = "{choices_block}" in settings.template
            if (spec.multiple_choice or shows_choices) and not item.is_multiple_choice:
                fields.fail(
                    None,
                    f"fields 'choices' and 'gold' are missing but protocol '{protocol}' needs them",
                    f"add choices and gold, or remove '{protocol}' from 'protocols'",
                )
            answer = item.answer_text
            if not spec.multiple_choice and answer is None:
                fields.fail(
                    None,
                    f"field 'target' is missing but protocol '{protocol}' needs an answer",
                    f"add 'target: ...', or remove '{protocol}' from 'protocols'",
                )
            if spec.generates and answer is not None and (stops := [s for s in settings.until if s in answer]):
                problem = (
                    f"the answer {answer!r} contains the stop string {stops[0]!r} of "
                    f"{protocol}, so generation can never produce it"
                )
                fields.fail(
                    "target" if "target" in fields else "choices",
                    problem,
                    "change the answer or the protocol's 'until'",
                )

    def _check_no_leak(self, fewshot: tuple[SuiteItem, ...], items: tuple[SuiteItem, ...]) -> None:
        """A few-shot example that is also an item would hand the model the answer."""
        shots = {example.context: example for example in fewshot}
        for item in items:
            if item.context in shots:
                problem = f"field 'context' is the same as few-shot example '{shots[item.context].id}'"
                _fail(
                    self.path,
                    item.line or 0,
                    f"item '{item.id}'",
                    problem,
                    "drop the item or change the few-shot example",
                )
