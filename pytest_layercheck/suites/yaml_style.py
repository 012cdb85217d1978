"""The YAML style of suite files, one definition for the generated built-ins and imported suites:
multi-line strings as literal blocks, lists of scalars (choices, stop strings) inline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml


class Flow(list):
    """A list written inline (``[a, b, c]``): choices and stop strings read better that way."""


class SuiteDumper(yaml.SafeDumper):
    """Safe dumper: multi-line strings as literal blocks, ``Flow`` lists inline."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


def _represent_flow(dumper: yaml.SafeDumper, value: Flow) -> yaml.SequenceNode:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)


SuiteDumper.add_representer(str, _represent_str)
SuiteDumper.add_representer(Flow, _represent_flow)


def flow_lists(value: Any) -> Any:
    """Lists of scalars become inline lists; lists of mappings (items) stay block lists."""
    if isinstance(value, Mapping):
        return {k: flow_lists(v) for k, v in value.items()}
    if isinstance(value, list):
        if all(isinstance(v, (str, int, float)) for v in value):
            return Flow(value)
        return [flow_lists(v) for v in value]
    return value
