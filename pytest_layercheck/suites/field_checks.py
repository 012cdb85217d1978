"""Checks of one parsed YAML mapping that fail as ``FILE:LINE: where: field 'x' ...`` with a fix.

The suite builder validates every header, protocol and item through :class:`_Fields`, so every
message has the same shape and always says where and how to fix it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from pytest_layercheck.core.errors import SuiteFormatError
from pytest_layercheck.suites.yaml_reader import _Marked, _MarkedDict, _MarkedList


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
                self.fail(key, f"unknown field '{key}'", f"{hint}allowed fields: {', '.join(allowed)}")
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
                fix = _QUOTE_FIX if isinstance(element, (int, float, bool)) else "use a non-empty string"
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
