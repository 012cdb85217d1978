"""Load and validate capability-suite YAML files.

A suite file is parsed with PyYAML's *safe* loader only (a project rule: suite files may come from
anywhere), through a subclass that remembers the line of every mapping, key and list element so that
every validation error can say ``FILE:LINE: where: field 'x' ...`` and how to fix it.

File format (every built-in suite repeats this in a comment at its top)::

    name: knowledge                # required, string
    capability: knowledge          # required: a built-in capability or any label of your own (safety, my-evals)
    description: ...               # required, string
    version: 1                     # optional integer; documentation only
    default_protocol: mc_text      # required, must be declared under protocols
    protocols:                     # required, protocol name -> settings (null = all defaults)
      mc_letters: {template: "{context}\\n{choices_block}\\nAnswer:"}
      mc_text: {template: ..., target_delimiter: " ", fewshot_delimiter: "\\n\\n"}
      continuation: {template: ...}
      generate_until: {template: ..., until: ["\\n"], max_gen_toks: 32, answer_regex: "(-?\\d+)"}
    fewshot: [item, ...]           # optional examples before every prompt (id/domain/kind optional)
    metadata: {...}                # optional, JSON-like; e.g. generator seed and version
    items:                         # required, non-empty
      - id: geo-001                # required, unique, no whitespace
        context: The capital of France is
        domain: geography          # required (per-domain breakdowns)
        kind: capital              # required (finer breakdowns)
        choices: [Paris, Lyon, Nice, Lille]   # multiple choice: >= 2 distinct strings ...
        gold: 0                    # ... and the 0-based index of the right one
        target: Paris              # the answer for continuation / generate_until
        metadata: {...}            # optional, JSON-like; provenance, never scored

Templates must use ``{context}``; ``{choices_block}`` (the ``A. text`` lines) is required in
``mc_letters`` and allowed elsewhere for multiple-choice items. Other braces are kept literally
(the scorer substitutes only these two), but ``{word}`` is rejected as a misspelt placeholder.
``until``, ``max_gen_toks`` and ``answer_regex`` only apply to ``generate_until``.
Answers must be YAML strings: quote numbers (``target: "42"``) so YAML 1.1 cannot silently turn
``010`` into 8 or ``1:20`` into 80.

``content_hash`` covers what can change a score or its per-domain breakdown: name, capability,
default protocol, protocol settings (defaults filled in), few-shot examples and items without their
``metadata``. Comments, formatting, ``description``, ``version`` and ``metadata`` do not change it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, NoReturn

import yaml

from pytest_layercheck.core.errors import SuiteFormatError
from pytest_layercheck.suites.protocols import GENERATION_FIELDS, get_protocol, protocol_names
from pytest_layercheck.suites.schema import CAPABILITIES, LETTERS, ProtocolSettings, Suite, SuiteItem

__all__ = [
    "FORMAT_SUMMARY", "load_suite", "load_suite_text", "load_suites", "load_suite_metadata",
    "canonical_content", "content_hash", "check_suite_size", "read_yaml_file",
]  # fmt: skip

#: The file format in brief; written at the top of every built-in suite file.
FORMAT_SUMMARY = """\
Format (checked by pytest_layercheck/suites/loader.py, whose docstring has the details):
  name, capability (knowledge|reasoning|retrieval), description   required strings
  version                 optional integer, documentation only
  default_protocol        one of the declared protocols
  protocols               {mc_letters|mc_text|continuation|generate_until: settings or null}
     settings             template ({context}; mc_letters also {choices_block}), target_delimiter,
                          fewshot_delimiter; generate_until also until, max_gen_toks, answer_regex
  fewshot                 examples in item format, rendered before every prompt (not scored)
  metadata                free-form provenance, not scored and not hashed
  items                   list of {id, domain, kind, context, choices, gold (0-based), target,
                          metadata}
Unknown fields are errors. Quote numeric answers ("42") so YAML keeps them as text."""

#: Bumped if the canonical form (and therefore every hash) changes meaning.
HASH_FORMAT = "pytest-layercheck-suite/1"

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
_PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------------------------------
# YAML with line numbers


class _Marked:
    """Mixin for the loader's containers: 1-based start line plus one line per key or element."""

    line: int
    lines: dict[Any, int]

    def line_of(self, key: Any) -> int:
        return self.lines.get(key, self.line)


class _MarkedDict(dict[Any, Any], _Marked):
    pass


class _MarkedList(list[Any], _Marked):
    pass


class _YamlProblem(Exception):
    """Raised inside the constructor (which does not know the file name); re-raised with it."""

    def __init__(self, line: int, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.line, self.problem, self.fix = line, problem, fix


class _LineLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe loader whose mappings and sequences remember line numbers and reject duplicate keys."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _MarkedDict:
    loader.flatten_mapping(node)  # resolves "<<" merge keys like the stock safe loader
    result = _MarkedDict()
    result.line, result.lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise _YamlProblem(
                line, f"mapping key {key!r} is not a string", "write the key as a plain word"
            )
        if key in result:
            raise _YamlProblem(
                line,
                f"key '{key}' appears twice in one mapping (first on line {result.lines[key]})",
                "delete one of the two; YAML would silently keep only the last",
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = line
    return result


def _construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> _MarkedList:
    result = _MarkedList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.lines = {i: child.start_mark.line + 1 for i, child in enumerate(node.value)}
    return result


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


#: Largest suite file read (the biggest built-in suite is under 300 kB); ``$LAYERCHECK_MAX_SUITE_BYTES`` raises it.
MAX_SUITE_BYTES = 8 << 20
SIZE_ENV = "LAYERCHECK_MAX_SUITE_BYTES"
#: YAML aliases (``*name``) a suite may use, and the nodes the document may hold once they are expanded:
#: a few hundred bytes of nested aliases (a "billion laughs") would otherwise expand to billions.
MAX_ALIASES = 1000
MAX_EXPANDED_NODES = 2_000_000


def _size_limit() -> int:
    text = os.environ.get(SIZE_ENV, "").strip()
    if not text:
        return MAX_SUITE_BYTES
    if not text.isdigit() or int(text) < 1:
        raise SuiteFormatError(f"{SIZE_ENV}={text!r} is not a positive number of bytes",
                               f"set {SIZE_ENV} to a byte count, e.g. {MAX_SUITE_BYTES * 4}, or unset it")
    return int(text)


def _check_size(size: int, source: Path, limit: int | None = None, what: str = "suite file") -> None:
    """Refuse ``size`` bytes over ``limit`` (default: the suite limit, which ``$LAYERCHECK_MAX_SUITE_BYTES`` raises)."""
    suite = limit is None
    limit = _size_limit() if limit is None else limit
    if size > limit:
        raise SuiteFormatError(
            f"{source}: {what} is {size / 1e6:.1f} MB, more than the limit of {limit / 1e6:.1f} MB",
            f"split it into several suites, or raise the limit with {SIZE_ENV}=<bytes> if it is meant to be this large"
            if suite else f"split it into several {what}s",
        )


def check_suite_size(path: Path) -> None:
    """Refuse a suite file over the size limit before anything reads it (an importer reads it whole)."""
    try:
        size = path.stat().st_size
    except OSError:
        return  # the reader says what is wrong with the path
    _check_size(size, path)


def _read_text(path: Path, limit: int | None = None, what: str = "suite file") -> str:
    try:
        _check_size(path.stat().st_size, path, limit, what)
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteFormatError(f"{path}: {what} not found", "check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteFormatError(
            f"{path}: cannot read {what}: {exc}", "save it as UTF-8 text"
        ) from None


def _check_aliases(text: str, max_aliases: int = MAX_ALIASES, max_nodes: int = MAX_EXPANDED_NODES) -> None:
    """Count aliases and the nodes they expand to, from the event stream, before anything is built."""
    sizes: dict[str, int] = {}  # anchor -> nodes of the anchored subtree, aliases expanded
    open_nodes: list[tuple[str | None, int]] = []  # (anchor, expanded node count so far) per open collection
    aliases = expanded = 0
    for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            count = sizes.get(event.anchor or "", 1)
            if aliases > max_aliases:
                raise _YamlProblem(event.start_mark.line + 1, f"more than {max_aliases} YAML aliases",
                                   "write the repeated values out; these files need few aliases, if any")
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            open_nodes.append((event.anchor, 1))
            continue
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, count = open_nodes.pop()
            if anchor:
                sizes[anchor] = count
        elif isinstance(event, yaml.ScalarEvent):
            count = 1
            if event.anchor:
                sizes[event.anchor] = 1
        else:
            continue
        expanded += count
        if open_nodes:
            anchor, inner = open_nodes[-1]
            open_nodes[-1] = (anchor, inner + count)
        if expanded > max_nodes:
            raise _YamlProblem(event.start_mark.line + 1,
                               f"YAML aliases expand the document to more than {max_nodes} nodes",
                               "write the repeated values out instead of nesting aliases")


def _parse_yaml(text: str, source: Path, max_aliases: int = MAX_ALIASES, max_nodes: int = MAX_EXPANDED_NODES) -> Any:
    """Parse safely into marked containers; syntax problems become SuiteFormatErrors with a line."""
    try:
        _check_aliases(text, max_aliases, max_nodes)
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except _YamlProblem as exc:
        raise SuiteFormatError(f"{source}:{exc.line}: {exc.problem}", exc.fix) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else str(source)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteFormatError(
            f"{where}: invalid YAML: {problem}",
            "fix the YAML syntax (indentation, quoting of strings containing ': ' or ' #')",
        ) from None


def _parse(text: str, source: Path) -> _MarkedDict:
    """A suite document: size and aliases capped, duplicate keys refused, a mapping at the top."""
    _check_size(len(text.encode("utf-8")), source)
    document = _parse_yaml(text, source)
    if not isinstance(document, _MarkedDict):
        raise SuiteFormatError(
            f"{source}:1: a suite file must be a YAML mapping of 'name', 'capability', ... 'items'",
            "start from one of the built-in suites (the format is described at the top of each)",
        )
    return document


def read_yaml_file(path: Path, what: str, *, max_bytes: int, max_aliases: int, max_nodes: int) -> Any:
    """A small YAML file other than a suite (a check file) through the suites' safe loader, with its own caps.

    The size is checked before reading and alias expansion before building (a few hundred bytes of
    nested aliases would otherwise expand to gigabytes); a key given twice in one mapping is refused
    (YAML keeps the last silently). Mappings and lists come back as dicts and lists that remember
    lines: ``.line`` and ``.line_of(key_or_index)``. Problems are SuiteFormatErrors naming file and line.
    """
    return _parse_yaml(_read_text(path, max_bytes, what), path, max_aliases, max_nodes)


# --------------------------------------------------------------------------------------------------
# Validation


def _describe(value: Any) -> str:
    """A value with its YAML-level type, for messages such as "is an integer (42)"."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if value is None:
        return "empty"
    kind = kinds.get(type(value), f"a {type(value).__name__}")
    return f"{kind} ({value!r})"


def _plain(value: Any) -> Any:
    """Strip the line-number containers so items carry ordinary dicts and lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _fail(path: Path, line: int, where: str, problem: str, fix: str) -> NoReturn:
    raise SuiteFormatError(f"{path}:{line}: " + (f"{where}: " if where else "") + problem, fix)


_QUOTE_FIX = 'quote it, e.g. "42", so YAML keeps it as text'


class _Fields:
    """One YAML mapping under validation; its errors read ``FILE:LINE: where: field 'x' ...``."""

    def __init__(self, path: Path, raw: Any, line: int, where: str, what: str) -> None:
        self.path, self.where = path, where
        if raw is None:  # "mc_text:" with nothing after it: all defaults
            raw = _MarkedDict()
            raw.line, raw.lines = line, {}
        if not isinstance(raw, _MarkedDict):
            _fail(
                path,
                line,
                where,
                f"{what} is {_describe(raw)}, expected a mapping",
                "write 'key: value' lines",
            )
        self.raw = raw

    @property
    def line(self) -> int:
        return self.raw.line

    def __contains__(self, key: str) -> bool:
        return key in self.raw

    def fail(self, key: str | None, problem: str, fix: str) -> NoReturn:
        _fail(
            self.path,
            self.raw.line if key is None else self.raw.line_of(key),
            self.where,
            problem,
            fix,
        )

    def check_keys(self, allowed: Sequence[str], required: Iterable[str] = ()) -> None:
        """Unknown keys are errors: they are almost always typos (``choises``, ``tempalte``)."""
        for key in self.raw:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                self.fail(
                    key, f"unknown field '{key}'", f"{hint}allowed fields: {', '.join(allowed)}"
                )
        for key in required:
            if key not in self.raw:
                self.fail(None, f"required field '{key}' is missing", f"add '{key}: ...'")

    def string(self, key: str, *, empty: bool = False) -> str:
        value = self.raw[key]
        if not isinstance(value, str):
            fix = _QUOTE_FIX if isinstance(value, (int, float, bool)) else "write a string"
            self.fail(key, f"field '{key}' is {_describe(value)}, expected a string", fix)
        if not empty and not value.strip():
            self.fail(key, f"field '{key}' is empty", f"give '{key}' a value")
        return value

    def choice(self, key: str, allowed: Sequence[str]) -> str:
        value = self.string(key)
        if value not in allowed:
            self.fail(key, f"field '{key}' is {value!r}", f"use one of: {', '.join(allowed)}")
        return value

    def integer(self, key: str, *, minimum: int) -> int:
        value = self.raw[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(
                key,
                f"field '{key}' is {_describe(value)}, expected an integer >= {minimum}",
                f"write a whole number >= {minimum}",
            )
        return value

    def strings(self, key: str, *, allow_scalar: bool = False) -> tuple[str, ...]:
        value = self.raw[key]
        if allow_scalar and isinstance(value, str):
            return (value,)
        if not isinstance(value, _MarkedList):
            self.fail(
                key,
                f"field '{key}' is {_describe(value)}, expected a list of strings",
                f"write '{key}: [a, b]'",
            )
        for i, element in enumerate(value):
            if not isinstance(element, str) or not element:
                fix = (
                    _QUOTE_FIX
                    if isinstance(element, (int, float, bool))
                    else "use a non-empty string"
                )
                problem = f"field '{key}' element {i} is {_describe(element)}, expected text"
                _fail(self.path, value.line_of(i), self.where, problem, fix)
        return tuple(value)

    def mapping(self, key: str, where: str) -> _Fields:
        return _Fields(self.path, self.raw[key], self.raw.line_of(key), where, f"field '{key}'")

    def items(self, key: str) -> _MarkedList:
        value = self.raw[key]
        if not isinstance(value, _MarkedList):
            self.fail(
                key,
                f"field '{key}' is {_describe(value)}, expected a list of items",
                f"write '{key}:' followed by '- id: ...' entries",
            )
        return value

    def json_like(self, key: str) -> dict[str, Any]:
        """Metadata must survive JSON (it is written into reports): no dates, binary data or NaN."""
        self.mapping(key, self.where)

        def check(node: Any, line: int, trail: str) -> None:
            if isinstance(node, (dict, list)):
                pairs = node.items() if isinstance(node, dict) else enumerate(node)
                for k, v in pairs:
                    check(
                        v,
                        node.line_of(k) if isinstance(node, _Marked) else line,
                        f"{trail}.{k}" if isinstance(node, dict) else f"{trail}[{k}]",
                    )
            elif (node is not None and not isinstance(node, (str, int, float, bool))) or (
                isinstance(node, float) and not math.isfinite(node)
            ):
                _fail(
                    self.path,
                    line,
                    self.where,
                    f"field '{trail}' is {_describe(node)}, which JSON cannot hold",
                    _QUOTE_FIX,
                )

        check(self.raw[key], self.raw.line_of(key), key)
        return _plain(self.raw[key]) or {}


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
        doc.fail("capability", f"field 'capability' is {label!r}",
                 "use letters, digits and . _ - only, e.g. knowledge or safety")
    if label not in CAPABILITIES:
        close = [c for c in difflib.get_close_matches(label, CAPABILITIES, n=1, cutoff=0.85)
                 if not (label.startswith(c) or c.startswith(label))]
        if close:
            doc.fail("capability", f"field 'capability' is {label!r}",
                     f"did you mean '{close[0]}'? (labels of your own are allowed, e.g. safety)")
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
            problem = (
                f"field 'default_protocol' is {default!r}, which is not declared under 'protocols'"
            )
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
            body.check_keys(
                [f for f in SETTINGS_FIELDS if generation or f not in GENERATION_FIELDS]
            )
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
        fields.check_keys(
            ITEM_FIELDS, ("context",) if fewshot else ("id", "context", "domain", "kind")
        )
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
            problem = (
                f"field 'choices' has only {len(choices)}, a multiple-choice item needs at least 2"
            )
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
    def _check_protocol_needs(
        fields: _Fields, item: SuiteItem, protocols: Mapping[str, ProtocolSettings]
    ) -> None:
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
                problem = (
                    f"field 'context' is the same as few-shot example '{shots[item.context].id}'"
                )
                _fail(
                    self.path,
                    item.line or 0,
                    f"item '{item.id}'",
                    problem,
                    "drop the item or change the few-shot example",
                )


# --------------------------------------------------------------------------------------------------
# Hashing


def _item_record(item: SuiteItem) -> dict[str, Any]:
    return {
        "id": item.id, "context": item.context, "domain": item.domain, "kind": item.kind,
        "choices": list(item.choices), "gold": item.gold, "target": item.target,
    }  # fmt: skip


def canonical_content(suite: Suite) -> dict[str, Any]:
    """The parsed content the hash covers (the module docstring says what is left out, and why)."""
    return {
        "format": HASH_FORMAT,
        "name": suite.name,
        "capability": suite.capability,
        "default_protocol": suite.default_protocol,
        "protocols": {
            name: {f: (list(v) if isinstance(v, tuple) else v) for f, v in vars(s).items()}
            for name, s in sorted(suite.protocols.items())
        },
        "fewshot": [_item_record(example) for example in suite.fewshot],
        "items": [_item_record(item) for item in suite.items],
    }


def content_hash(suite: Suite) -> str:
    """``sha256:<64 hex>`` of the canonical JSON of :func:`canonical_content`."""
    text = json.dumps(
        canonical_content(suite), sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------------
# Public API


def load_suite(path: _PathLike) -> Suite:
    """Load, validate and hash one suite file; problems raise :class:`SuiteFormatError`."""
    path = Path(path)
    return _SuiteBuilder(path, _parse(_read_text(path), path)).build()


def load_suite_text(text: str, source: _PathLike = "<string>") -> Suite:
    """Like :func:`load_suite` for YAML text; ``source`` names it in error messages."""
    source = Path(source)
    suite = _SuiteBuilder(source, _parse(text, source)).build()
    return replace(suite, source=None)


def load_suites(paths: Iterable[_PathLike]) -> list[Suite]:
    """Load several suites; two suites with one name would mix up results, so that is an error."""
    suites: list[Suite] = []
    by_name: dict[str, Suite] = {}
    for path in paths:
        suite = load_suite(path)
        if suite.name in by_name:
            raise SuiteFormatError(
                f"{suite.source}: suite name {suite.name!r} is also used by "
                f"{by_name[suite.name].source}",
                "give each suite a distinct 'name'",
            )
        by_name[suite.name] = suite
        suites.append(suite)
    return suites


def load_suite_metadata(path: _PathLike) -> dict[str, Any]:
    """The header ``metadata`` of a suite file (e.g. generator seed), after full validation."""
    path = Path(path)
    document = _parse(_read_text(path), path)
    _SuiteBuilder(path, document).build()
    return _plain(document.get("metadata") or {})
