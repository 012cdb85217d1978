"""YAML check files: capability guards declared without Python, collected by pytest as tests.

A file named like ``layercheck_guards.yaml`` holds::

    checks:
      - name: facts survive in the shallow layers
        capability: knowledge
        band: shallow
        max_drop: 0.05
      - name: reasoning stays above chance
        capability: reasoning
        band: intact
        min: 0.4

Each entry becomes one test item; its fields are those of the ``layercheck`` marker.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_layercheck.core.errors import ConfigError, LayercheckError
from pytest_layercheck.evaluation.checks import CellCheck
from pytest_layercheck.pytest_plugin.checking import SESSION_KEY, assert_check
from pytest_layercheck.suites.yaml_reader import read_yaml_file

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr  # pytest does not export it; Item.repr_failure returns it


def is_check_file(path: Path, patterns: Iterable[str]) -> bool:
    return path.suffix in (".yaml", ".yml") and any(fnmatch.fnmatch(path.name, p) for p in patterns)


def collect_yaml_checks(path: Path, parent: pytest.Collector) -> pytest.Collector:
    return YamlCheckFile.from_parent(parent, path=path)


#: Caps of a check file (a few checks): its size, and the YAML aliases and expanded nodes it may hold.
MAX_CHECK_FILE_BYTES = 1 << 20
MAX_CHECK_ALIASES = 100
MAX_CHECK_NODES = 10_000


def _load_entries(path: Path) -> list[tuple[str, dict[str, Any], int]]:
    """(name, fields, line) per check; errors name the file and line.

    Read with the suites' safe, capped loader: a 500-byte alias bomb would otherwise expand into a test
    id of gigabytes, and a key given twice (``max_drop: 0.05`` then ``max_drop: 100%``) would silently
    keep the last.
    """
    data = read_yaml_file(
        path, "check file", max_bytes=MAX_CHECK_FILE_BYTES, max_aliases=MAX_CHECK_ALIASES, max_nodes=MAX_CHECK_NODES
    )
    if not isinstance(data, dict) or not isinstance(data.get("checks"), list):
        raise ConfigError(f"{path}: expected a mapping with a 'checks:' list", "see the example in the README")
    unknown = sorted(set(data) - {"checks"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level field(s) {unknown}", "only 'checks:' is allowed")
    checks = data["checks"]
    entries = []
    for index, entry in enumerate(checks):
        line = checks.line_of(index)
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}:{line}: check #{index + 1} must be a mapping", "e.g. '- capability: knowledge'")
        fields = dict(entry)
        name = fields.pop("name", f"{fields.get('capability', 'check')}-{fields.get('band', 'intact')}-{index + 1}")
        if not isinstance(name, (str, int)) or isinstance(name, bool):
            raise ConfigError(
                f"{path}:{line}: check #{index + 1}: 'name' must be text",
                "e.g. name: facts survive in the shallow layers",
            )
        entries.append((str(name), fields, line))
    return entries


class YamlCheckFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        try:
            entries = _load_entries(self.path)
        except LayercheckError as exc:
            raise self.CollectError(str(exc)) from None
        for name, fields, line in entries:
            try:
                check = CellCheck.from_mapping(fields, where=f"{self.path}:{line}")
            except LayercheckError as exc:
                raise self.CollectError(str(exc)) from None
            yield YamlCheckItem.from_parent(self, name=name, check=check, line=line)


class YamlCheckItem(pytest.Item):
    def __init__(self, *, check: CellCheck, line: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.line = line

    def runtest(self) -> None:
        assert_check(self.config.stash[SESSION_KEY], self.check, self)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.line - 1, f"layercheck: {self.name} ({self.check.label})"

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, LayercheckError):
            return str(excinfo.value)
        return str(excinfo.value) if excinfo.errisinstance(pytest.fail.Exception) else super().repr_failure(excinfo)
