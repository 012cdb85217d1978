"""The imported suite as a reviewable file: validated by the loader, hashed, headed by its provenance.

Every importer ends here, so all imported files share one YAML style, one header and one round-trip check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pytest_layercheck.core.atomic import atomic_write_text
from pytest_layercheck.core.errors import SuiteFormatError
from pytest_layercheck.core.version import __version__
from pytest_layercheck.suites.loader import load_suite, load_suite_text
from pytest_layercheck.suites.schema import Suite
from pytest_layercheck.suites.yaml_style import SuiteDumper, flow_lists


@dataclass
class ImportedSuite:
    """An imported suite: the YAML document, the validated suite, its provenance and any warnings."""

    document: dict[str, Any]
    suite: Suite
    warnings: list[str] = field(default_factory=list)
    header: str = ""

    @property
    def text(self) -> str:
        return self.header + _dump(self.document)


def _build(
    name: str,
    capability: str | None,
    description: str,
    protocols: dict[str, Any],
    default: str,
    items: list[dict[str, Any]],
    fewshot: list[dict[str, Any]],
    provenance: dict[str, Any],
    warnings: list[str],
    command: str | None,
) -> ImportedSuite:
    document: dict[str, Any] = {
        "name": name,
        "capability": capability or name,
        "description": description,
        "default_protocol": default,
        "protocols": protocols,
    }
    if fewshot:
        document["fewshot"] = fewshot
    document["metadata"] = {
        "imported_from": provenance,
        "importer": f"pytest-layercheck {__version__}",
        **({"import_warnings": list(warnings)} if warnings else {}),
    }
    document["items"] = items
    text = _dump(document)
    try:
        suite = load_suite_text(text, f"<imported {name}>")
    except SuiteFormatError as exc:
        raise SuiteFormatError(
            f"the imported suite does not validate: {exc.problem}", exc.fix or "fix the source data or the options"
        ) from None
    _check_round_trip(suite, items)
    header = _header(suite, provenance, command)
    return ImportedSuite(document=document, suite=suite, warnings=list(warnings), header=header)


def _check_round_trip(suite: Suite, items: list[dict[str, Any]]) -> None:
    """The written YAML must read back as exactly the imported texts (block scalars, quoting)."""
    for written, original in zip(suite.items, items):
        if (
            written.context != original["context"]
            or written.target != original.get("target")
            or list(written.choices) != original.get("choices", [])
        ):
            raise SuiteFormatError(
                f"item {original['id']!r} does not survive the YAML round trip",
                "please report this with the record; as a workaround, edit its text",
            )


def _header(suite: Suite, provenance: Mapping[str, Any], command: str | None) -> str:
    source = provenance.get("path") or provenance.get("task")
    lines = [
        f"Suite '{suite.name}' imported by pytest-layercheck {__version__} from {source} ({provenance['format']}).",
        *([f"Made with: {command}"] if command else []),
        f"Content hash: {suite.content_hash}",
        "  (what baselines record: items, templates and protocol settings; comments and metadata do not count)",
        "Review this file like code and commit it. Re-run the import to refresh it; the hash says if scores may change.",
        "Format: the docstring of pytest_layercheck/suites/loader.py.",
    ]
    return "".join(f"# {line}\n" for line in lines)


def _dump(document: Mapping[str, Any]) -> str:
    """The built-in suites' YAML style; texts of only whitespace (delimiters) double-quoted, as ``"\\n\\n"``."""

    class Dumper(SuiteDumper):
        pass

    def represent(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = ('"' if value and not value.strip() else "|") if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, represent)
    return yaml.dump(flow_lists(document), Dumper=Dumper, sort_keys=False, allow_unicode=True, width=1_000_000)


def write_suite(imported: ImportedSuite, path: Path, *, force: bool = False) -> str:
    """Write the file: ``written``, ``unchanged`` (same text), or ``replaced`` (``force``); a different
    existing file is refused without ``force``, with the change of content hash in the message."""
    text = imported.text
    if path.exists():
        old = path.read_text(encoding="utf-8", errors="replace")
        if old == text:
            return "unchanged"
        if not force:
            try:
                old_hash = load_suite(path).content_hash
            except SuiteFormatError:
                old_hash = "an unreadable suite"
            what = (
                "only its comments or metadata differ"
                if old_hash == imported.suite.content_hash
                else f"content hash {old_hash} -> {imported.suite.content_hash}"
            )
            raise SuiteFormatError(
                f"{path} exists and differs from this import ({what})",
                "pass --force to replace it, or write elsewhere with --output",
            )
        atomic_write_text(path, text)
        return "replaced"
    atomic_write_text(path, text)
    return "written"
