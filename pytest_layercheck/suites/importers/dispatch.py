"""``import_source``: the one entry point of ``layercheck suite import``, which picks the importer by format."""

from __future__ import annotations

from pathlib import Path

from pytest_layercheck.core.errors import SuiteFormatError
from pytest_layercheck.suites.importers.formats import detect_format
from pytest_layercheck.suites.importers.hf_datasets import import_dataset
from pytest_layercheck.suites.importers.lm_eval_tasks import import_lm_eval_task
from pytest_layercheck.suites.importers.options import FieldMap, ImportOptions
from pytest_layercheck.suites.importers.records import import_records
from pytest_layercheck.suites.importers.suite_file import ImportedSuite


def import_source(
    source: str, fmt: str = "auto", fmap: FieldMap | str | None = None, options: ImportOptions | None = None
) -> ImportedSuite:
    """Import ``source`` in format ``fmt`` (``auto``: by suffix; see :func:`detect_format`)."""
    options = options or ImportOptions()
    kind = detect_format(source, fmt)
    if kind == "lm-eval":
        if fmap is not None and (fmap.fields if isinstance(fmap, FieldMap) else str(fmap).strip()):
            raise SuiteFormatError(
                "--map does not apply to lm-eval tasks",
                "the task's doc_to_text, doc_to_choice and doc_to_target say what each field is",
            )
        return import_lm_eval_task(source, options)
    if kind == "datasets":
        return import_dataset(Path(source), fmap, options)
    return import_records(Path(source), fmap, options, fmt=kind)
