"""Reading YAML safely, with line numbers: suite files (and check files) may come from anywhere.

PyYAML's *safe* loader only, through a subclass whose containers remember the line of every key and
element, so validation errors can name ``FILE:LINE``; sizes and alias expansion are capped before
anything is built, and a key given twice (which YAML silently resolves) is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from pytest_layercheck.core.errors import SuiteFormatError


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
            raise _YamlProblem(line, f"mapping key {key!r} is not a string", "write the key as a plain word")
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
        raise SuiteFormatError(
            f"{SIZE_ENV}={text!r} is not a positive number of bytes",
            f"set {SIZE_ENV} to a byte count, e.g. {MAX_SUITE_BYTES * 4}, or unset it",
        )
    return int(text)


def _check_size(size: int, source: Path, limit: int | None = None, what: str = "suite file") -> None:
    """Refuse ``size`` bytes over ``limit`` (default: the suite limit, which ``$LAYERCHECK_MAX_SUITE_BYTES`` raises)."""
    suite = limit is None
    limit = _size_limit() if limit is None else limit
    if size > limit:
        raise SuiteFormatError(
            f"{source}: {what} is {size / 1e6:.1f} MB, more than the limit of {limit / 1e6:.1f} MB",
            f"split it into several suites, or raise the limit with {SIZE_ENV}=<bytes> if it is meant to be this large"
            if suite
            else f"split it into several {what}s",
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
        raise SuiteFormatError(f"{path}: cannot read {what}: {exc}", "save it as UTF-8 text") from None


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
                raise _YamlProblem(
                    event.start_mark.line + 1,
                    f"more than {max_aliases} YAML aliases",
                    "write the repeated values out; these files need few aliases, if any",
                )
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
            raise _YamlProblem(
                event.start_mark.line + 1,
                f"YAML aliases expand the document to more than {max_nodes} nodes",
                "write the repeated values out instead of nesting aliases",
            )


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


def read_yaml_file(path: Path, what: str, *, max_bytes: int, max_aliases: int, max_nodes: int) -> Any:
    """A small YAML file other than a suite (a check file) through the suites' safe loader, with its own caps.

    The size is checked before reading and alias expansion before building (a few hundred bytes of
    nested aliases would otherwise expand to gigabytes); a key given twice in one mapping is refused
    (YAML keeps the last silently). Mappings and lists come back as dicts and lists that remember
    lines: ``.line`` and ``.line_of(key_or_index)``. Problems are SuiteFormatErrors naming file and line.
    """
    return _parse_yaml(_read_text(path, max_bytes, what), path, max_aliases, max_nodes)
