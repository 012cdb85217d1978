"""Import outside evaluation data as a reviewable, hashed suite YAML (``layercheck suite import``).

Three sources, one result: a suite file in this project's format (see :mod:`..loader`), validated by the
loader, with a header comment naming its source, the command that made it and its content hash, and
per-item provenance in ``metadata`` (not hashed). Commit it and review changes to it like code. One module
per source: :mod:`.records` (``.jsonl``, ``.json``, ``.csv``), :mod:`.hf_datasets` (Hugging Face datasets on
disk) and :mod:`.lm_eval_tasks` (lm-evaluation-harness tasks); :func:`import_source` picks one by format.
"""

from __future__ import annotations

from pytest_layercheck.suites.importers.dispatch import import_source
from pytest_layercheck.suites.importers.formats import RECORD_FORMATS, detect_format
from pytest_layercheck.suites.importers.hf_datasets import import_dataset
from pytest_layercheck.suites.importers.lm_eval_tasks import import_lm_eval_task
from pytest_layercheck.suites.importers.options import FieldMap, ImportOptions
from pytest_layercheck.suites.importers.records import import_records, load_records_suite, read_records
from pytest_layercheck.suites.importers.suite_file import ImportedSuite, write_suite

__all__ = [
    "FieldMap", "ImportOptions", "ImportedSuite", "RECORD_FORMATS", "detect_format", "import_source",
    "import_records", "import_dataset", "import_lm_eval_task", "load_records_suite", "read_records",
    "write_suite",
]  # fmt: skip
