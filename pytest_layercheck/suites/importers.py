"""Import outside evaluation data as a reviewable, hashed suite YAML (``layercheck suite import``).

Three sources, one result: a suite file in this project's format (see :mod:`.loader`), validated by the
loader, with a header comment naming its source, the command that made it and its content hash, and
per-item provenance in ``metadata`` (not hashed). Commit it and review changes to it like code.

* **Records** (``.jsonl``, ``.json``, ``.csv``; no extra needed): one item per record, fields picked by a
  field map such as ``context=prompt,target=answer`` or ``context=question,choices=options,gold=label``.
  A source field may be a dotted path (``choices.text``); ``choices`` may also join several fields
  (``choices=opa|opb|opc|opd``). ``gold`` is a 0-based index, a letter (``A``) or the text of the right
  choice. Fields already named like the suite's (``context``, ``choices``, ``gold``, ``target``, ``id``,
  ``domain``, ``kind``) need no map, and such a ``.jsonl`` file can be used as a suite directly
  (:func:`load_records_suite`).
* **Hugging Face datasets on disk** (a ``save_to_disk`` folder, or ``.parquet`` / ``.arrow`` files; the
  ``datasets`` extra): the same field map, over one split.
* **lm-evaluation-harness task YAML** (the ``lmeval`` extra): the task is built by lm-eval's own
  ``TaskManager`` (its YAML loader handles ``!function`` and ``include``), and every document goes through
  the task's ``doc_to_text``, ``doc_to_choice`` and ``doc_to_target``, so Jinja templates and Python
  functions mean exactly what they mean there. ``multiple_choice`` becomes ``mc_text``,
  ``generate_until`` becomes ``generate_until`` (stop strings, ``max_gen_toks`` and a regex filter
  carried over), ``loglikelihood`` becomes ``continuation``. Differences from lm-eval that remain (a
  randomly sampled few-shot set, scoring options of ``exact_match``, a task description under a chat
  template) are reported as warnings and recorded in the file. Importing runs the task's ``!function``
  code, as lm-eval itself does; data are read with the hub offline unless you allow otherwise.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_layercheck.core.errors import SuiteFormatError
from pytest_layercheck.core.hashing import file_sha256
from pytest_layercheck.core.version import __version__
from pytest_layercheck.suites.protocols import get_protocol
from pytest_layercheck.suites.schema import LETTERS, Suite, SuiteWarning

__all__ = [
    "FieldMap", "ImportOptions", "ImportedSuite", "RECORD_FORMATS", "detect_format", "import_source",
    "import_records", "import_dataset", "import_lm_eval_task", "load_records_suite", "read_records",
    "write_suite",
]  # fmt: skip

#: Suite item fields a source field can be mapped to.
MAPPABLE: tuple[str, ...] = ("id", "context", "choices", "gold", "target", "domain", "kind")
#: Formats read without extras, by suffix.
RECORD_FORMATS: dict[str, str] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}
DATASET_SUFFIXES: tuple[str, ...] = (".parquet", ".arrow")
FORMATS: tuple[str, ...] = ("auto", "jsonl", "json", "csv", "datasets", "lm-eval")
LMEVAL_REQUIREMENT = "lm-eval==0.4.13"
DATASETS_REQUIREMENT = "datasets>=2.16"
_ID_BAD = re.compile(r"[^A-Za-z0-9._:/-]+")
_MISSING = object()


# --------------------------------------------------------------------------------------------------
# Field maps


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
                raise SuiteFormatError(f"cannot read field map entry {part!r}",
                                       "write suite_field=source_field pairs, e.g. context=prompt,target=answer")
            if key not in MAPPABLE:
                raise SuiteFormatError(f"field map names unknown suite field {key!r}",
                                       f"map one of: {', '.join(MAPPABLE)}")
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


# --------------------------------------------------------------------------------------------------
# Options and result


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


def _slug(text: str, fallback: str = "suite") -> str:
    slug = _ID_BAD.sub("-", text.strip()).strip("-._:/")
    return slug or fallback


# --------------------------------------------------------------------------------------------------
# Reading records


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


def read_records(path: Path, fmt: str, split: str | None = None) -> tuple[list[tuple[int, Any]], str]:
    """``[(line or row number, record)]`` and what was read (for messages), from a JSONL/JSON/CSV file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SuiteFormatError(f"{path}: file not found", "check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteFormatError(f"{path}: cannot read: {exc}", "save it as UTF-8 text") from None
    if fmt == "jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise SuiteFormatError(f"{path}:{number}: not a JSON object: {exc.msg}",
                                       "write one JSON object per line (JSON Lines)") from None
        return records, f"{len(records)} lines"
    if fmt == "csv":
        reader = csv.DictReader(text.splitlines())
        return [(number, row) for number, row in enumerate(reader, start=2)], "CSV rows"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SuiteFormatError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}",
                               "fix the JSON, or save one object per line as .jsonl") from None
    if isinstance(data, Mapping):
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if split is not None:
            if split not in lists:
                raise SuiteFormatError(f"{path}: has no list {split!r}", f"use --split with one of: {', '.join(lists) or '(none)'}")
            data = lists[split]
        elif len(lists) == 1:
            data = next(iter(lists.values()))
        else:
            raise SuiteFormatError(f"{path}: a JSON object, not a list of records",
                                   f"pick the list with --split ({', '.join(lists) or 'it holds none'})")
    if not isinstance(data, list):
        raise SuiteFormatError(f"{path}: the JSON holds {type(data).__name__}, not a list of records",
                               "write a JSON list of objects, or one object per line as .jsonl")
    return list(enumerate(data, start=1)), "records"


# --------------------------------------------------------------------------------------------------
# Records -> items


def _text(value: Any, what: str, where: str) -> str:
    """A scalar as text: numbers become their decimal text; anything else is an error."""
    if isinstance(value, bool) or value is None or isinstance(value, (Mapping, list, tuple)):
        raise SuiteFormatError(f"{where}: {what} is {_kind(value)}, expected text",
                               "map a field holding text (a dotted path reaches nested fields)")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _gold_index(value: Any, choices: Sequence[str], where: str) -> int:
    """0-based index, a letter, or the text of a choice."""
    if isinstance(value, bool):
        raise SuiteFormatError(f"{where}: gold is a boolean", "give the 0-based index, a letter or the right choice's text")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        index = value
    elif isinstance(value, str) and value in choices:
        return list(choices).index(value)
    elif isinstance(value, str) and value.strip().isdigit():
        index = int(value.strip())
    elif isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS:
        index = LETTERS.index(value.strip().upper())
    else:
        raise SuiteFormatError(f"{where}: gold {value!r} is not an index, a letter or one of the choices",
                               "gold is the 0-based index of the right choice, its letter (A, B, ...) or its text")
    if not 0 <= index < len(choices):
        raise SuiteFormatError(f"{where}: gold {value!r} is outside the {len(choices)} choices",
                               "gold is 0-based: the first choice is 0")
    return index


def _record_item(record: Any, number: int, fmap: FieldMap, source: str, defaults: Mapping[str, str]) -> dict[str, Any]:
    where = f"{source}:{number}" if source else f"record {number}"
    if not isinstance(record, Mapping):
        raise SuiteFormatError(f"{where}: a record is {_kind(record)}, expected an object", "write one JSON object per record")
    context = fmap.get(record, "context")
    if context is _MISSING:
        fields = ", ".join(sorted(map(str, record))) or "(none)"
        raise SuiteFormatError(
            f"{where}: no field {fmap.source('context')!r} for the context (the record has: {fields})",
            "map the prompt field, e.g. --map context=prompt,target=answer",
        )
    item: dict[str, Any] = {}
    raw_id = fmap.get(record, "id")
    item["id"] = _slug(_text(raw_id, "id", where), f"item-{number}") if raw_id is not _MISSING else None
    item["domain"] = _text(v, "domain", where) if (v := fmap.get(record, "domain")) is not _MISSING else defaults["domain"]
    item["kind"] = _text(v, "kind", where) if (v := fmap.get(record, "kind")) is not _MISSING else defaults["kind"]
    item["context"] = _text(context, f"context ({fmap.source('context')!r})", where)
    if not item["context"].strip():
        raise SuiteFormatError(f"{where}: the context ({fmap.source('context')!r}) is empty", "drop the record or fill it")
    choices = fmap.get(record, "choices")
    if choices is not _MISSING and choices is not None:
        if not isinstance(choices, (list, tuple)):
            raise SuiteFormatError(f"{where}: choices ({fmap.source('choices')!r}) is {_kind(choices)}, expected a list",
                                   "map a list field, or several fields joined by | (choices=a|b|c|d)")
        item["choices"] = [_text(c, "a choice", where) for c in choices]
        gold = fmap.get(record, "gold")
        if gold is _MISSING:
            raise SuiteFormatError(f"{where}: the record has choices but no field {fmap.source('gold')!r} for the gold answer",
                                   "map it, e.g. --map gold=label")
        item["gold"] = _gold_index(gold, item["choices"], where)
    elif fmap.get(record, "gold") is not _MISSING and "gold" in fmap.fields:
        raise SuiteFormatError(f"{where}: gold is mapped but the record has no choices ({fmap.source('choices')!r})",
                               "map the choices too, or map the answer text as target")
    target = fmap.get(record, "target")
    if target is not _MISSING and target is not None:
        item["target"] = _text(target, f"target ({fmap.source('target')!r})", where)
    elif "choices" not in item:
        raise SuiteFormatError(
            f"{where}: no answer: neither {fmap.source('target')!r} (target) nor {fmap.source('choices')!r} (choices)",
            "map the answer, e.g. --map target=answer, or choices and gold",
        )
    item["metadata"] = {"source_line": number}
    return item


def _finish_items(items: list[dict[str, Any]], prefix: str, where: Callable[[dict[str, Any]], str]) -> list[dict[str, Any]]:
    """Default ids, unique ids, and every item of one kind (multiple choice or free answer)."""
    seen: dict[str, str] = {}
    for index, item in enumerate(items, start=1):
        if item["id"] is None:
            item["id"] = f"{prefix}-{index:05d}"
        if item["id"] in seen:
            raise SuiteFormatError(f"{where(item)}: id {item['id']!r} repeats the id of {seen[item['id']]}",
                                   "give every record a unique id, or leave ids unmapped to number them")
        seen[item["id"]] = where(item)
    kinds = {("choices" in item) for item in items}
    if len(kinds) > 1:
        first_mc = next(where(i) for i in items if "choices" in i)
        first_free = next(where(i) for i in items if "choices" not in i)
        raise SuiteFormatError(f"the records mix multiple-choice items ({first_mc}) and free-answer items ({first_free})",
                               "import them as two suites")
    return [{k: item[k] for k in ("id", "domain", "kind", "context", "choices", "gold", "target", "metadata") if k in item}
            for item in items]


def _protocols(items: Sequence[dict[str, Any]], options: ImportOptions,
               fewshot: Sequence[dict[str, Any]] = ()) -> tuple[dict[str, Any], str, list[str]]:
    """Protocols the items support (with the options' settings), the default protocol, and notes."""
    notes: list[str] = []
    base: dict[str, Any] = {"template": options.template}
    if options.target_delimiter is not None:
        base["target_delimiter"] = options.target_delimiter
    if options.fewshot_delimiter is not None:
        base["fewshot_delimiter"] = options.fewshot_delimiter
    generation = dict(base)
    if options.until is not None:
        generation["until"] = list(options.until)
    if options.max_gen_toks is not None:
        generation["max_gen_toks"] = options.max_gen_toks
    if options.answer_regex is not None:
        generation["answer_regex"] = options.answer_regex
    protocols: dict[str, Any] = {}
    multiple_choice = bool(items) and "choices" in items[0]
    if multiple_choice:
        protocols["mc_text"] = dict(base)
        if "{choices_block}" not in options.template:
            protocols["mc_letters"] = {**base, "template": options.template + "\n{choices_block}\nAnswer:"}
    protocols["continuation"] = dict(base)
    until = options.until if options.until is not None else ("\n",)
    blocked = [i["id"] for i in [*fewshot, *items]
               if any(stop in (i.get("target") or i["choices"][i["gold"]]) for stop in until)]
    if blocked:
        notes.append(f"generate_until not declared: the answers of {len(blocked)} item(s) (first: {blocked[0]}) contain "
                     f"a stop string {list(until)}; set --until to declare it")
    else:
        protocols["generate_until"] = generation
    if options.target_delimiter is None:
        notes.extend(_adapt_delimiter(protocols, items, fewshot))
    default = options.protocol or ("mc_text" if multiple_choice else "continuation")
    if default not in protocols:
        raise SuiteFormatError(f"protocol {default!r} cannot score these items (they support {', '.join(protocols)})",
                               "pick one of those with --protocol" + (f"; {notes[0]}" if notes else ""))
    return protocols, default, notes


#: How a note about answers that begin with whitespace starts (:func:`load_records_suite` repeats it as a warning).
DELIMITER_NOTE = "target delimiter: "


def _adapt_delimiter(protocols: dict[str, Any], items: Sequence[dict[str, Any]],
                     fewshot: Sequence[dict[str, Any]]) -> list[str]:
    """Answers written as continuations (``" Ottawa"``) already carry the space the default ``target_delimiter``
    adds: scored after two spaces, 48 facts a model knows 31 of scored 0. When every answer begins with
    whitespace the delimiter becomes ``""`` (what lm-eval users set for such data), except under ``mc_letters``,
    which scores letters; when only some do, the note says which, as no one delimiter fits both."""
    answers = [(item.get("id") or "few-shot example", text) for item in [*items, *fewshot]
               for text in ([item["target"]] if item.get("target") is not None else []) + list(item.get("choices", []))]
    spaced = [(ident, text) for ident, text in answers if text[:1].isspace()]
    if not spaced:
        return []
    ident, text = spaced[0]
    if len(spaced) < len(answers):
        return [f"{DELIMITER_NOTE}{len(spaced)} of {len(answers)} answers begin with whitespace (first: {ident}, "
                f"{text!r}); the default target delimiter (a space) puts two spaces before them, none fits all: "
                "strip the leading whitespace in the data, or pass --target-delimiter \"\" if most begin with it"]
    for name, settings in protocols.items():
        if name != "mc_letters":
            settings["target_delimiter"] = ""
    return [f"{DELIMITER_NOTE}every answer begins with whitespace (e.g. {text!r}), so the suite's target_delimiter "
            "is \"\", not the default space, which would put two spaces before each answer (mc_letters, which scores "
            "letters, keeps the space); to choose otherwise, import it with `layercheck suite import --target-delimiter`"]


# --------------------------------------------------------------------------------------------------
# Building and writing the suite file


def _build(name: str, capability: str | None, description: str, protocols: dict[str, Any], default: str,
           items: list[dict[str, Any]], fewshot: list[dict[str, Any]], provenance: dict[str, Any],
           warnings: list[str], command: str | None) -> ImportedSuite:
    from pytest_layercheck.suites.loader import load_suite_text

    document: dict[str, Any] = {
        "name": name,
        "capability": capability or name,
        "description": description,
        "default_protocol": default,
        "protocols": protocols,
    }
    if fewshot:
        document["fewshot"] = fewshot
    document["metadata"] = {"imported_from": provenance, "importer": f"pytest-layercheck {__version__}",
                            **({"import_warnings": list(warnings)} if warnings else {})}
    document["items"] = items
    text = _dump(document)
    try:
        suite = load_suite_text(text, f"<imported {name}>")
    except SuiteFormatError as exc:
        raise SuiteFormatError(f"the imported suite does not validate: {exc.problem}",
                               exc.fix or "fix the source data or the options") from None
    _check_round_trip(suite, items)
    header = _header(suite, provenance, command)
    return ImportedSuite(document=document, suite=suite, warnings=list(warnings), header=header)


def _check_round_trip(suite: Suite, items: list[dict[str, Any]]) -> None:
    """The written YAML must read back as exactly the imported texts (block scalars, quoting)."""
    for written, original in zip(suite.items, items):
        if written.context != original["context"] or written.target != original.get("target") or \
                list(written.choices) != original.get("choices", []):
            raise SuiteFormatError(f"item {original['id']!r} does not survive the YAML round trip",
                                   "please report this with the record; as a workaround, edit its text")


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
    import yaml

    from pytest_layercheck.suites.yaml_style import SuiteDumper, flow_lists

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
    from pytest_layercheck.core.atomic import atomic_write_text
    from pytest_layercheck.suites.loader import load_suite

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
            what = ("only its comments or metadata differ" if old_hash == imported.suite.content_hash
                    else f"content hash {old_hash} -> {imported.suite.content_hash}")
            raise SuiteFormatError(f"{path} exists and differs from this import ({what})",
                                   "pass --force to replace it, or write elsewhere with --output")
        atomic_write_text(path, text)
        return "replaced"
    atomic_write_text(path, text)
    return "written"


# --------------------------------------------------------------------------------------------------
# Sources


def _defaults(options: ImportOptions, name: str, kind: str) -> dict[str, str]:
    return {"domain": options.domain or name, "kind": options.kind or kind}


def import_records(path: Path, fmap: FieldMap | str | None = None, options: ImportOptions | None = None,
                   *, fmt: str | None = None, records: Iterable[tuple[int, Any]] | None = None,
                   provenance: dict[str, Any] | None = None) -> ImportedSuite:
    """A suite from a JSONL, JSON or CSV file (or ``records`` already read from ``path``)."""
    options = options or ImportOptions()
    fmap = fmap if isinstance(fmap, FieldMap) else FieldMap.parse(fmap)
    path = Path(path)
    fmt = fmt or detect_format(path)
    if records is None:
        records, _ = read_records(path, fmt, options.split)
    numbered = list(records)
    name = options.name or _slug(path.stem)
    if not numbered:
        raise SuiteFormatError(f"{path}: no records", "the file holds no items to import")
    fewshot_count = options.num_fewshot or 0
    if fewshot_count >= len(numbered):
        raise SuiteFormatError(f"{path}: {fewshot_count} few-shot examples leave no items ({len(numbered)} records)",
                               "use fewer few-shot examples")
    source = str(path)
    kind = "multiple_choice" if any(isinstance(r, Mapping) and fmap.get(r, "choices") not in (_MISSING, None)
                                     for _, r in numbered[:1]) else "answer"
    defaults = _defaults(options, name, kind)
    converted = [_record_item(record, number, fmap, source if fmt != "datasets" else "", defaults)
                 for number, record in numbered]
    lines = {id(item): number for item, (number, _) in zip(converted, numbered)}
    label = "row" if fmt == "datasets" else "line"

    def where(item: dict[str, Any]) -> str:
        return f"{path}:{lines[id(item)]}" if fmt != "datasets" else f"{path} {label} {lines[id(item)]}"

    shots = [{k: v for k, v in item.items() if k in ("context", "choices", "gold", "target")}
             for item in converted[:fewshot_count]]
    items = _finish_items(converted[fewshot_count:], name, where)
    if options.limit:
        items = items[: options.limit]
    protocols, default, notes = _protocols(items, options, shots)
    provenance = dict(provenance or {"format": fmt, "path": path.as_posix(), "sha256": file_sha256(path)})
    provenance.update(records=len(numbered), map=fmap.describe() or "identity")
    if fewshot_count:
        provenance["fewshot"] = f"the first {fewshot_count} records"
    description = options.description or f"Imported from {path.name} ({len(items)} items)."
    return _build(name, options.capability, description, protocols, default, items, shots, provenance, notes,
                  options.command)


def import_dataset(path: Path, fmap: FieldMap | str | None = None, options: ImportOptions | None = None) -> ImportedSuite:
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
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in DATASET_SUFFIXES)
            if not files:
                raise SuiteFormatError(f"{path}: no .parquet or .arrow files and no save_to_disk dataset",
                                       "pass the folder written by Dataset.save_to_disk, or parquet/arrow files")
            builder = "parquet" if files[0].suffix.lower() == ".parquet" else "arrow"
            loaded = datasets.load_dataset(builder, data_files={options.split or "train": [str(f) for f in files]})
    except SuiteFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds
        raise SuiteFormatError(f"{path}: the datasets library cannot read it: {_first_line(exc)}",
                               "pass a save_to_disk folder or parquet/arrow files") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        split = options.split or (splits[0] if len(splits) == 1 else None)
        if split not in loaded:
            raise SuiteFormatError(f"{path}: " + (f"has no split {options.split!r}" if options.split else
                                                  f"has {len(splits)} splits"), f"pick one with --split: {', '.join(splits)}")
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


_WARNED: set[tuple[Path, str]] = set()


def load_records_suite(path: str | os.PathLike[str]) -> Suite:
    """A ``.jsonl`` / ``.json`` / ``.csv`` file whose fields already have the suite's names, as a suite
    (name and capability: the file name). For ``--layercheck-suites`` and ``layercheck profile --suites``."""
    import warnings

    from pytest_layercheck.suites.loader import check_suite_size

    path = Path(path)
    check_suite_size(path)  # before reading: importing a file of gigabytes takes minutes and memory to match
    imported = import_records(path, FieldMap(), ImportOptions(), fmt=RECORD_FORMATS.get(path.suffix.lower()))
    for note in imported.warnings:
        if note.startswith(DELIMITER_NOTE) and (path, note) not in _WARNED:  # a run loads a suite several times
            _WARNED.add((path, note))
            warnings.warn(SuiteWarning(f"{path}: {note}"), stacklevel=2)
    return imported.suite


# --------------------------------------------------------------------------------------------------
# lm-evaluation-harness tasks


def _require(module: str, extra: str, requirement: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SuiteFormatError(f"this import needs the {module!r} package, which is not installed",
                               f"pip install 'pytest-layercheck[{extra}]' (or pip install '{requirement}')") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _lm_eval_task(spec: str, task_name: str | None) -> tuple[Any, str]:
    _require("lm_eval", "lmeval", LMEVAL_REQUIREMENT)
    import logging

    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its per-metric "using default aggregation" notes
    path = Path(spec).expanduser()
    try:
        if path.is_file():
            manager, load_spec, shown = TaskManager(include_defaults=False), str(path.resolve()), path.as_posix()
        elif path.suffix.lower() in (".yaml", ".yml"):
            raise SuiteFormatError(f"{spec}: task YAML not found", "check the path")
        else:
            manager, load_spec, shown = TaskManager(), spec, spec
        loaded = manager.load([load_spec])
    except SuiteFormatError:
        raise
    except (FileNotFoundError, ValueError) as exc:  # datasets: missing data_files; lm-eval: bad config
        cwd = os.getcwd()
        raise SuiteFormatError(
            f"lm-eval cannot build task {spec!r}: {_first_line(exc)}",
            f"lm-eval resolves relative data_files against the current directory ({cwd}); run the import from "
            "the folder lm-eval runs in, or give absolute paths. Offline, only local files and cached datasets load",
        ) from None
    except KeyError as exc:
        raise SuiteFormatError(f"lm-eval knows no task {spec!r} ({_first_line(exc)})",
                               "pass the path of the task YAML, or a task name lm-eval lists (lm-eval ls tasks)") from None
    except Exception as exc:  # noqa: BLE001 - user task code and datasets raise anything
        raise SuiteFormatError(f"lm-eval cannot build task {spec!r}: {_first_line(exc)}",
                               "check that `lm-eval run --tasks ... --limit 1` accepts the task") from None
    tasks = loaded["tasks"]
    if task_name is not None:
        if task_name not in tasks:
            raise SuiteFormatError(f"{shown} defines no task {task_name!r}", f"use --task with one of: {', '.join(tasks)}")
        return tasks[task_name], shown
    if len(tasks) != 1:
        raise SuiteFormatError(f"{shown} defines {len(tasks)} tasks ({', '.join(list(tasks)[:5])}...)",
                               "import one at a time with --task NAME")
    return next(iter(tasks.values())), shown


def _lm_eval_docs(task: Any, split: str | None) -> tuple[list[Any], str]:
    config = task.config
    if split is None:
        split = config.test_split if task.has_test_docs() else config.validation_split
        return list(task.eval_docs), str(split)
    for wanted, docs in ((config.test_split, task.test_docs), (config.validation_split, task.validation_docs),
                         (config.training_split, task.training_docs)):
        if wanted == split:
            return list(docs()), split
    if task.dataset is not None and split in task.dataset:
        return list(task.dataset[split]), split
    available = ", ".join(str(s) for s in (task.dataset or {}))
    raise SuiteFormatError(f"task {config.task!r} has no split {split!r}", f"use --split with one of: {available}")


def _lm_eval_item(task: Any, doc: Any, output_type: str, fewshot: bool = False) -> dict[str, Any]:
    cfg = task.fewshot_cfg if fewshot else None
    text = task.doc_to_text(doc, cfg.doc_to_text) if cfg is not None else task.doc_to_text(doc)
    target = task.doc_to_target(doc, cfg.doc_to_target) if cfg is not None else task.doc_to_target(doc)
    item: dict[str, Any] = {"context": text}
    if not isinstance(text, str):
        raise SuiteFormatError(f"task {task.config.task!r}: doc_to_text gives {_kind(text)}, not text",
                               "tasks whose doc_to_text is an index (multiple inputs, as Winogrande) are not supported")
    if output_type == "multiple_choice":
        choices = (task.doc_to_choice(doc, cfg.doc_to_choice) if cfg is not None and cfg.doc_to_choice
                   else task.doc_to_choice(doc))
        item["choices"] = [str(c) for c in choices]
        if isinstance(target, list):
            raise SuiteFormatError(f"task {task.config.task!r}: a document has several gold answers {target!r}",
                                   "tasks with multiple gold answers are not supported")
        item["gold"] = _gold_index(target, item["choices"], f"task {task.config.task!r}")
    else:
        if isinstance(target, list):
            target = target[0] if target else ""
        item["target"] = str(target)
    return item


def _regex_filter(task: Any, notes: list[str]) -> str | None:
    """The answer regex of the task's first filter pipeline, when it is a plain regex + take_first."""
    pipelines = getattr(task.config, "filter_list", None) or []
    if not pipelines:
        return None
    first = pipelines[0]
    if len(pipelines) > 1:
        notes.append(f"lm-eval filter pipelines {[p.get('name') for p in pipelines]}: only the first "
                     f"({first.get('name')!r}) is carried over")
    regex = None
    for step in first.get("filter", []):
        function = step.get("function")
        if function == "regex":
            regex = step.get("regex_pattern", r"#### (\-?[0-9\.\,]+)")
            if step.get("group_select", 0) != 0:
                notes.append(f"the regex filter selects match {step.get('group_select')}; layercheck takes the first match")
        elif function != "take_first":
            notes.append(f"lm-eval filter {function!r} is not carried over; layercheck's exact_match already ignores "
                         "case, surrounding whitespace and trailing punctuation")
    return regex


def _exact_match_notes(task: Any, notes: list[str]) -> None:
    for metric in getattr(task.config, "metric_list", None) or []:
        if metric.get("metric") != "exact_match":
            if metric.get("metric") not in (None, "acc", "acc_norm"):
                notes.append(f"lm-eval metric {metric.get('metric')!r} has no counterpart; scored with this protocol's metrics")
            continue
        if not (metric.get("ignore_case") and metric.get("ignore_punctuation")) or metric.get("regexes_to_ignore"):
            notes.append("layercheck's exact_match ignores case, surrounding whitespace and trailing punctuation; the "
                         "task's exact_match options differ, so single items can be scored differently")


def import_lm_eval_task(spec: str, options: ImportOptions | None = None) -> ImportedSuite:
    """A suite from an lm-eval task (a YAML path or a registered name), rendered by lm-eval itself."""
    options = options or ImportOptions()
    task, shown = _lm_eval_task(spec, options.task)
    config = task.config
    output_type = task.OUTPUT_TYPE
    notes: list[str] = []
    protocol = {"multiple_choice": "mc_text", "generate_until": "generate_until", "loglikelihood": "continuation"}.get(output_type)
    if protocol is None:
        raise SuiteFormatError(f"task {config.task!r} has output_type {output_type!r}",
                               "supported: multiple_choice, generate_until, loglikelihood")
    if getattr(task, "multiple_input", 0):
        raise SuiteFormatError(f"task {config.task!r} has several inputs per document (as Winogrande)",
                               "such tasks are not supported")
    if getattr(config, "gen_prefix", None):
        raise SuiteFormatError(f"task {config.task!r} uses gen_prefix, which a suite cannot express yet",
                               "drop gen_prefix from a copy of the task, or fold it into doc_to_text")
    docs, split = _lm_eval_docs(task, options.split)
    name = options.name or _slug(config.task)
    defaults = _defaults(options, name, output_type)
    n_shots = options.num_fewshot if options.num_fewshot is not None else (config.num_fewshot or 0)
    shots_docs: list[Any] = []
    if n_shots:
        sampler = getattr(task, "sampler", None)
        if sampler is None:
            raise SuiteFormatError(f"task {config.task!r} has no few-shot documents", "import with --num-fewshot 0")
        pool = sampler.fewshot_docs()
        if len(pool) < n_shots:
            raise SuiteFormatError(f"task {config.task!r} has {len(pool)} few-shot documents, fewer than {n_shots}",
                                   "use fewer with --num-fewshot")
        shots_docs = list(pool[:n_shots])
        if type(sampler).__name__ != "FirstNSampler":
            notes.append(f"lm-eval samples {n_shots} few-shot examples per document at random; this suite uses the "
                         "first ones for every item (lm-eval's `fewshot_config: {sampler: first_n}`), so prompts differ")
        if task.fewshot_cfg.target_delimiter not in (None, config.target_delimiter):
            notes.append("fewshot_config.target_delimiter differs from the task's; the task's is used for both")
    description = config.description or ""
    items: list[dict[str, Any]] = []
    limit = options.limit
    for doc_id, doc in enumerate(docs):
        if any(doc == shot for shot in shots_docs):
            notes.append(f"document {doc_id} is also a few-shot example; it is left out")
            continue
        item = {"id": _slug(f"{name}-{doc_id}"), "domain": defaults["domain"], "kind": defaults["kind"],
                **_lm_eval_item(task, doc, output_type), "metadata": {"doc_id": doc_id, "doc_hash": _doc_hash(doc)}}
        items.append(item)
        if limit and len(items) >= limit:
            break
    if not items:
        raise SuiteFormatError(f"task {config.task!r} has no documents in split {split!r}", "pick another --split")
    shots = [_lm_eval_item(task, doc, output_type, fewshot=True) for doc in shots_docs]
    if description:
        resolved = {task.resolve_field(doc, description) if hasattr(task, "resolve_field") else description for doc in docs[:50]}
        if len(resolved) > 1:
            raise SuiteFormatError(f"task {config.task!r} has a description that changes per document",
                                   "suites hold one fixed description; drop it from a copy of the task")
        text = resolved.pop()
        # lm-eval puts it in front of the whole prompt: before the first few-shot example, else the item
        for entry in shots[:1] if shots else items:
            entry["context"] = text + entry["context"]
        notes.append("the task description is folded into the prompt text; under a chat template lm-eval sends it "
                     "as a system message instead")
    gen = dict(config.generation_kwargs or {}) if output_type == "generate_until" else {}
    if gen.get("do_sample") or (gen.get("temperature") or 0) > 0:
        notes.append("the task samples (do_sample/temperature); layercheck generates greedily")
    until = gen.get("until", [config.fewshot_delimiter])
    until = tuple([until] if isinstance(until, str) else until)
    answer_regex = _regex_filter(task, notes) if output_type == "generate_until" else None
    if output_type == "generate_until":
        _exact_match_notes(task, notes)
    settings = ImportOptions(
        protocol=protocol, template="{context}",
        target_delimiter="" if output_type == "loglikelihood" else config.target_delimiter,
        fewshot_delimiter=config.fewshot_delimiter,
        until=until if output_type == "generate_until" else None,
        max_gen_toks=int(gen.get("max_gen_toks", 256)) if output_type == "generate_until" else None,
        answer_regex=answer_regex,
    )
    protocols, default, more = _protocols_for_lm_eval(items, settings, shots)
    notes += more
    import lm_eval

    provenance = {"format": "lm-eval", "task": config.task, "split": split, "output_type": output_type,
                  "num_fewshot": n_shots, "lm_eval": getattr(lm_eval, "__version__", "unknown"),
                  "documents": len(docs)}
    if Path(spec).is_file():
        provenance.update(path=shown, sha256=file_sha256(Path(spec)))
    description_text = options.description or f"lm-eval task {config.task} ({output_type}, {len(items)} documents of split {split})."
    return _build(name, options.capability, description_text, protocols, default, items, shots, provenance,
                  list(dict.fromkeys(notes)), options.command)


def _protocols_for_lm_eval(items: list[dict[str, Any]], settings: ImportOptions,
                           shots: list[dict[str, Any]]) -> tuple[dict[str, Any], str, list[str]]:
    """Only the protocol lm-eval scores the task with: the file says what lm-eval does, nothing more."""
    protocol = settings.protocol
    assert protocol is not None, "the lm-eval importer always sets the protocol it scores with"
    body: dict[str, Any] = {"template": settings.template, "target_delimiter": settings.target_delimiter,
                            "fewshot_delimiter": settings.fewshot_delimiter}
    if get_protocol(protocol).generates:
        body.update(until=list(settings.until or ()), max_gen_toks=settings.max_gen_toks)
        if settings.answer_regex:
            body["answer_regex"] = settings.answer_regex
        blocked = [i["id"] for i in [*shots, *items] if any(s in i["target"] for s in settings.until or ())]
        if blocked:
            raise SuiteFormatError(f"the target of {blocked[0]} contains a stop string of the task {list(settings.until or ())}",
                                   "generation could never produce it; fix the task's until or the data")
    return {protocol: body}, protocol, []


def _doc_hash(doc: Any) -> str:
    """lm-eval's ``doc_hash`` of a document (as in ``--log_samples`` output)."""
    from lm_eval.utils import handle_non_serializable, hash_string

    return hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))


# --------------------------------------------------------------------------------------------------
# One entry point


def import_source(source: str, fmt: str = "auto", fmap: FieldMap | str | None = None,
                  options: ImportOptions | None = None) -> ImportedSuite:
    """Import ``source`` in format ``fmt`` (``auto``: by suffix; see :func:`detect_format`)."""
    options = options or ImportOptions()
    kind = detect_format(source, fmt)
    if kind == "lm-eval":
        if fmap is not None and (fmap.fields if isinstance(fmap, FieldMap) else str(fmap).strip()):
            raise SuiteFormatError("--map does not apply to lm-eval tasks",
                                   "the task's doc_to_text, doc_to_choice and doc_to_target say what each field is")
        return import_lm_eval_task(source, options)
    if kind == "datasets":
        return import_dataset(Path(source), fmap, options)
    return import_records(Path(source), fmap, options, fmt=kind)
