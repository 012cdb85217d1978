"""Which importer reads a source: by suffix, a ``save_to_disk`` folder, or an lm-eval task (YAML or name)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pytest_layercheck.core.errors import SuiteFormatError

#: Formats read without extras, by suffix.
RECORD_FORMATS: dict[str, str] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}
DATASET_SUFFIXES: tuple[str, ...] = (".parquet", ".arrow")
FORMATS: tuple[str, ...] = ("auto", "jsonl", "json", "csv", "datasets", "lm-eval")


def detect_format(source: str | os.PathLike[str], fmt: str = "auto") -> str:
    """The format of ``source``: by suffix, a ``save_to_disk`` folder, or an lm-eval task (YAML or name)."""
    if fmt != "auto":
        if fmt not in FORMATS:
            raise SuiteFormatError(f"unknown format {fmt!r}", f"use one of: {', '.join(FORMATS)}")
        return fmt
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in RECORD_FORMATS:
        return RECORD_FORMATS[suffix]
    if suffix in DATASET_SUFFIXES or path.is_dir():
        return "datasets"
    if suffix in (".yaml", ".yml"):
        return "lm-eval"
    if not path.exists() and re.fullmatch(r"[A-Za-z0-9_.-]+", str(source)):
        return "lm-eval"  # a registered lm-eval task name
    raise SuiteFormatError(
        f"cannot tell the format of {os.fspath(source)!r}",
        "pass a .jsonl, .json, .csv, .parquet or .arrow file, a datasets folder, an lm-eval task YAML or task "
        "name, or name the format with --format",
    )
