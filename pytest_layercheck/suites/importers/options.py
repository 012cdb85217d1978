"""What an import is asked for: which source field becomes which suite field, and how the suite is named and scored.

Model- and source-independent values, shared by every importer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_layercheck.core.errors import SuiteFormatError

#: Suite item fields a source field can be mapped to.
MAPPABLE: tuple[str, ...] = ("id", "context", "choices", "gold", "target", "domain", "kind")
_ID_BAD = re.compile(r"[^A-Za-z0-9._:/-]+")
_MISSING = object()


@dataclass(frozen=True)
class FieldMap:
    """Suite field -> source field (a dotted path; for ``choices``, several joined by ``|``)."""

    fields: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> FieldMap:
        """``context=prompt,target=answer``; an empty text maps every field to its own name."""
        fields: dict[str, str] = {}
        for part in (p.strip() for p in (text or "").split(",")):
            if not part:
                continue
            key, sep, source = (s.strip() for s in part.partition("="))
            if not sep or not key or not source:
                raise SuiteFormatError(
                    f"cannot read field map entry {part!r}",
                    "write suite_field=source_field pairs, e.g. context=prompt,target=answer",
                )
            if key not in MAPPABLE:
                raise SuiteFormatError(
                    f"field map names unknown suite field {key!r}", f"map one of: {', '.join(MAPPABLE)}"
                )
            if key in fields:
                raise SuiteFormatError(f"field map gives {key!r} twice", "map each suite field once")
            fields[key] = source
        return cls(fields)

    def source(self, key: str) -> str:
        return self.fields.get(key, key)

    def get(self, record: Mapping[str, Any], key: str) -> Any:
        """The record's value for suite field ``key`` (``_MISSING`` when absent)."""
        source = self.source(key)
        if key == "choices" and "|" in source:
            values = [_lookup(record, part) for part in source.split("|")]
            return _MISSING if any(v is _MISSING for v in values) else values
        return _lookup(record, source)

    def describe(self) -> dict[str, str]:
        return dict(self.fields)


def _lookup(record: Any, path: str) -> Any:
    if isinstance(record, Mapping) and path in record:
        return record[path]
    node = record
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, Sequence) and not isinstance(node, str) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


@dataclass(frozen=True)
class ImportOptions:
    """What the imported suite is called and how it is scored (None: chosen from the data)."""

    name: str | None = None
    capability: str | None = None
    description: str | None = None
    protocol: str | None = None
    template: str = "{context}"
    target_delimiter: str | None = None
    fewshot_delimiter: str | None = None
    until: tuple[str, ...] | None = None
    max_gen_toks: int | None = None
    answer_regex: str | None = None
    domain: str | None = None
    kind: str | None = None
    limit: int | None = None
    num_fewshot: int | None = None
    split: str | None = None
    task: str | None = None
    #: The command line that made the file, written into its header (None: not written).
    command: str | None = None


def _slug(text: str, fallback: str = "suite") -> str:
    slug = _ID_BAD.sub("-", text.strip()).strip("-._:/")
    return slug or fallback


def _defaults(options: ImportOptions, name: str, kind: str) -> dict[str, str]:
    return {"domain": options.domain or name, "kind": options.kind or kind}
