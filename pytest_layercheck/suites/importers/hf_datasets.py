"""Hugging Face datasets on disk (a ``save_to_disk`` folder, or ``.parquet`` / ``.arrow`` files; the ``datasets`` extra).

The rows of one split go through the records importer with the same field map; the provenance
hashes every file read, since a dataset folder has no single file to point to.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pytest_layercheck.core.errors import SuiteFormatError
from pytest_layercheck.core.hashing import file_sha256
from pytest_layercheck.suites.importers.extras import _first_line, _require
from pytest_layercheck.suites.importers.formats import DATASET_SUFFIXES
from pytest_layercheck.suites.importers.options import FieldMap, ImportOptions
from pytest_layercheck.suites.importers.records import import_records
from pytest_layercheck.suites.importers.suite_file import ImportedSuite

DATASETS_REQUIREMENT = "datasets>=2.16"


def import_dataset(
    path: Path, fmap: FieldMap | str | None = None, options: ImportOptions | None = None
) -> ImportedSuite:
    """A suite from a Hugging Face dataset on disk: a ``save_to_disk`` folder, or parquet/arrow files."""
    options = options or ImportOptions()
    datasets = _require("datasets", "datasets", DATASETS_REQUIREMENT)
    path = Path(path)
    if not path.exists():
        raise SuiteFormatError(f"{path}: not found", "check the path of the dataset folder or file")
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
        else:
            files = (
                [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in DATASET_SUFFIXES)
            )
            if not files:
                raise SuiteFormatError(
                    f"{path}: no .parquet or .arrow files and no save_to_disk dataset",
                    "pass the folder written by Dataset.save_to_disk, or parquet/arrow files",
                )
            builder = "parquet" if files[0].suffix.lower() == ".parquet" else "arrow"
            loaded = datasets.load_dataset(builder, data_files={options.split or "train": [str(f) for f in files]})
    except SuiteFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds
        raise SuiteFormatError(
            f"{path}: the datasets library cannot read it: {_first_line(exc)}",
            "pass a save_to_disk folder or parquet/arrow files",
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        split = options.split or (splits[0] if len(splits) == 1 else None)
        if split not in loaded:
            raise SuiteFormatError(
                f"{path}: " + (f"has no split {options.split!r}" if options.split else f"has {len(splits)} splits"),
                f"pick one with --split: {', '.join(splits)}",
            )
        data = loaded[split]
    else:
        split, data = options.split, loaded
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if file.is_file():
            digest.update(file.relative_to(path).as_posix().encode() if path.is_dir() else b"")
            digest.update(file_sha256(file).encode())
    provenance = {"format": "datasets", "path": path.as_posix(), "split": split, "sha256": digest.hexdigest()}
    limit = len(data) if options.limit is None else min(len(data), options.limit + (options.num_fewshot or 0))
    records = ((row, data[row]) for row in range(limit))
    return import_records(path, fmap, options, fmt="datasets", records=records, provenance=provenance)
