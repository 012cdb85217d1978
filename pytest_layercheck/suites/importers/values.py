"""Source values as suite fields: text, and the gold answer as an index, with messages that say where.

Records and lm-eval documents hold numbers, nested objects and labels in many shapes; each importer
turns them into the suite's strings and 0-based gold index through these checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_layercheck.core.errors import SuiteFormatError
from pytest_layercheck.suites.schema import LETTERS


def _text(value: Any, what: str, where: str) -> str:
    """A scalar as text: numbers become their decimal text; anything else is an error."""
    if isinstance(value, bool) or value is None or isinstance(value, (Mapping, list, tuple)):
        raise SuiteFormatError(
            f"{where}: {what} is {_kind(value)}, expected text",
            "map a field holding text (a dotted path reaches nested fields)",
        )
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _gold_index(value: Any, choices: Sequence[str], where: str) -> int:
    """0-based index, a letter, or the text of a choice."""
    if isinstance(value, bool):
        raise SuiteFormatError(
            f"{where}: gold is a boolean", "give the 0-based index, a letter or the right choice's text"
        )
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        index = value
    elif isinstance(value, str) and value in choices:
        return list(choices).index(value)
    elif isinstance(value, str) and value.strip().isdigit():
        index = int(value.strip())
    elif isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS:
        index = LETTERS.index(value.strip().upper())
    else:
        raise SuiteFormatError(
            f"{where}: gold {value!r} is not an index, a letter or one of the choices",
            "gold is the 0-based index of the right choice, its letter (A, B, ...) or its text",
        )
    if not 0 <= index < len(choices):
        raise SuiteFormatError(
            f"{where}: gold {value!r} is outside the {len(choices)} choices", "gold is 0-based: the first choice is 0"
        )
    return index
