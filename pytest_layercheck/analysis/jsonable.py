"""The analyses' results as JSON-ready data: one rule for writing a result's attributes.

Tuples become lists and mappings dicts (recursively), so a result's ``to_json``/``to_dict`` names the
attributes it writes instead of converting each by hand; NaN becomes JSON's null where asked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def json_float(value: float) -> float | None:
    """NaN as JSON's null."""
    return None if math.isnan(value) else value


def plain(value: Any) -> Any:
    """``value`` with its tuples as lists and its mappings as dicts, at any depth."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


def attributes(obj: object, *names: str) -> dict[str, Any]:
    """``{name: obj.name}`` for each of ``names``, in that order, as plain JSON-ready values."""
    return {name: plain(getattr(obj, name)) for name in names}
