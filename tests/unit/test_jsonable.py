"""The analyses' one rule for writing a result's attributes as JSON-ready data."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from types import MappingProxyType

from pytest_layercheck.analysis.jsonable import attributes, json_float, plain


@dataclass(frozen=True)
class _Result:
    name: str = "m"
    heads: tuple[tuple[int, int], ...] = ((0, 1), (2, 3))
    answers: object = field(default_factory=lambda: MappingProxyType({"top": ("a", "b")}))
    ratio: float = 0.5


def test_plain_turns_tuples_into_lists_and_mappings_into_dicts_at_any_depth() -> None:
    value = plain({"x": ((1, 2), [3, (4,)]), "y": MappingProxyType({"z": (5,)})})
    assert value == {"x": [[1, 2], [3, [4]]], "y": {"z": [5]}}
    assert type(value["x"][0]) is list and type(value["y"]) is dict


def test_attributes_keep_the_order_they_are_named_in() -> None:
    data = attributes(_Result(), "ratio", "name", "heads", "answers")
    assert list(data) == ["ratio", "name", "heads", "answers"]
    assert data == {"ratio": 0.5, "name": "m", "heads": [[0, 1], [2, 3]], "answers": {"top": ["a", "b"]}}
    assert json.loads(json.dumps(data)) == data  # JSON-ready: nothing json cannot write


def test_json_float_writes_nan_as_null() -> None:
    assert json_float(math.nan) is None
    assert json_float(0.25) == 0.25
