"""The content hash baselines record: what can change a score or its per-domain breakdown, and nothing else.

The loader's docstring says what is left out (comments, description, version, metadata) and why.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pytest_layercheck.suites.schema import Suite, SuiteItem

#: Bumped if the canonical form (and therefore every hash) changes meaning.
HASH_FORMAT = "pytest-layercheck-suite/1"


def _item_record(item: SuiteItem) -> dict[str, Any]:
    return {
        "id": item.id, "context": item.context, "domain": item.domain, "kind": item.kind,
        "choices": list(item.choices), "gold": item.gold, "target": item.target,
    }  # fmt: skip


def canonical_content(suite: Suite) -> dict[str, Any]:
    """The parsed content the hash covers (the loader's docstring says what is left out, and why)."""
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
    text = json.dumps(canonical_content(suite), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
