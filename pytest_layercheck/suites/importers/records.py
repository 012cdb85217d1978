"""Records (``.jsonl``, ``.json``, ``.csv``; no extra needed) as a suite, one item per record.

Fields are picked by a field map such as ``context=prompt,target=answer`` or
``context=question,choices=options,gold=label``. A source field may be a dotted path (``choices.text``);
``choices`` may also join several fields (``choices=opa|opb|opc|opd``). ``gold`` is a 0-based index, a
letter (``A``) or the text of the right choice. Fields already named like the suite's (``context``,
``choices``, ``gold``, ``target``, ``id``, ``domain``, ``kind``) need no map, and such a ``.jsonl`` file
can be used as a suite directly (:func:`load_records_suite`). The datasets importer reads its rows
through :func:`import_records` too.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_layercheck.core.errors import SuiteFormatError
from pytest_layercheck.core.hashing import file_sha256
from pytest_layercheck.suites.importers.formats import RECORD_FORMATS, detect_format
from pytest_layercheck.suites.importers.options import _MISSING, FieldMap, ImportOptions, _defaults, _slug
from pytest_layercheck.suites.importers.suite_file import ImportedSuite, _build
from pytest_layercheck.suites.importers.values import _gold_index, _kind, _text
from pytest_layercheck.suites.schema import Suite, SuiteWarning
from pytest_layercheck.suites.yaml_reader import check_suite_size


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
                raise SuiteFormatError(
                    f"{path}:{number}: not a JSON object: {exc.msg}", "write one JSON object per line (JSON Lines)"
                ) from None
        return records, f"{len(records)} lines"
    if fmt == "csv":
        reader = csv.DictReader(text.splitlines())
        return [(number, row) for number, row in enumerate(reader, start=2)], "CSV rows"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SuiteFormatError(
            f"{path}:{exc.lineno}: invalid JSON: {exc.msg}", "fix the JSON, or save one object per line as .jsonl"
        ) from None
    if isinstance(data, Mapping):
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if split is not None:
            if split not in lists:
                raise SuiteFormatError(
                    f"{path}: has no list {split!r}", f"use --split with one of: {', '.join(lists) or '(none)'}"
                )
            data = lists[split]
        elif len(lists) == 1:
            data = next(iter(lists.values()))
        else:
            raise SuiteFormatError(
                f"{path}: a JSON object, not a list of records",
                f"pick the list with --split ({', '.join(lists) or 'it holds none'})",
            )
    if not isinstance(data, list):
        raise SuiteFormatError(
            f"{path}: the JSON holds {type(data).__name__}, not a list of records",
            "write a JSON list of objects, or one object per line as .jsonl",
        )
    return list(enumerate(data, start=1)), "records"


def _record_item(record: Any, number: int, fmap: FieldMap, source: str, defaults: Mapping[str, str]) -> dict[str, Any]:
    where = f"{source}:{number}" if source else f"record {number}"
    if not isinstance(record, Mapping):
        raise SuiteFormatError(
            f"{where}: a record is {_kind(record)}, expected an object", "write one JSON object per record"
        )
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
    item["domain"] = (
        _text(v, "domain", where) if (v := fmap.get(record, "domain")) is not _MISSING else defaults["domain"]
    )
    item["kind"] = _text(v, "kind", where) if (v := fmap.get(record, "kind")) is not _MISSING else defaults["kind"]
    item["context"] = _text(context, f"context ({fmap.source('context')!r})", where)
    if not item["context"].strip():
        raise SuiteFormatError(
            f"{where}: the context ({fmap.source('context')!r}) is empty", "drop the record or fill it"
        )
    choices = fmap.get(record, "choices")
    if choices is not _MISSING and choices is not None:
        if not isinstance(choices, (list, tuple)):
            raise SuiteFormatError(
                f"{where}: choices ({fmap.source('choices')!r}) is {_kind(choices)}, expected a list",
                "map a list field, or several fields joined by | (choices=a|b|c|d)",
            )
        item["choices"] = [_text(c, "a choice", where) for c in choices]
        gold = fmap.get(record, "gold")
        if gold is _MISSING:
            raise SuiteFormatError(
                f"{where}: the record has choices but no field {fmap.source('gold')!r} for the gold answer",
                "map it, e.g. --map gold=label",
            )
        item["gold"] = _gold_index(gold, item["choices"], where)
    elif fmap.get(record, "gold") is not _MISSING and "gold" in fmap.fields:
        raise SuiteFormatError(
            f"{where}: gold is mapped but the record has no choices ({fmap.source('choices')!r})",
            "map the choices too, or map the answer text as target",
        )
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


def _finish_items(
    items: list[dict[str, Any]], prefix: str, where: Callable[[dict[str, Any]], str]
) -> list[dict[str, Any]]:
    """Default ids, unique ids, and every item of one kind (multiple choice or free answer)."""
    seen: dict[str, str] = {}
    for index, item in enumerate(items, start=1):
        if item["id"] is None:
            item["id"] = f"{prefix}-{index:05d}"
        if item["id"] in seen:
            raise SuiteFormatError(
                f"{where(item)}: id {item['id']!r} repeats the id of {seen[item['id']]}",
                "give every record a unique id, or leave ids unmapped to number them",
            )
        seen[item["id"]] = where(item)
    kinds = {("choices" in item) for item in items}
    if len(kinds) > 1:
        first_mc = next(where(i) for i in items if "choices" in i)
        first_free = next(where(i) for i in items if "choices" not in i)
        raise SuiteFormatError(
            f"the records mix multiple-choice items ({first_mc}) and free-answer items ({first_free})",
            "import them as two suites",
        )
    return [
        {k: item[k] for k in ("id", "domain", "kind", "context", "choices", "gold", "target", "metadata") if k in item}
        for item in items
    ]


def _protocols(
    items: Sequence[dict[str, Any]], options: ImportOptions, fewshot: Sequence[dict[str, Any]] = ()
) -> tuple[dict[str, Any], str, list[str]]:
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
    blocked = [
        i["id"]
        for i in [*fewshot, *items]
        if any(stop in (i.get("target") or i["choices"][i["gold"]]) for stop in until)
    ]
    if blocked:
        notes.append(
            f"generate_until not declared: the answers of {len(blocked)} item(s) (first: {blocked[0]}) contain "
            f"a stop string {list(until)}; set --until to declare it"
        )
    else:
        protocols["generate_until"] = generation
    if options.target_delimiter is None:
        notes.extend(_adapt_delimiter(protocols, items, fewshot))
    default = options.protocol or ("mc_text" if multiple_choice else "continuation")
    if default not in protocols:
        raise SuiteFormatError(
            f"protocol {default!r} cannot score these items (they support {', '.join(protocols)})",
            "pick one of those with --protocol" + (f"; {notes[0]}" if notes else ""),
        )
    return protocols, default, notes


#: How a note about answers that begin with whitespace starts (:func:`load_records_suite` repeats it as a warning).
DELIMITER_NOTE = "target delimiter: "


def _adapt_delimiter(
    protocols: dict[str, Any], items: Sequence[dict[str, Any]], fewshot: Sequence[dict[str, Any]]
) -> list[str]:
    """Answers written as continuations (``" Ottawa"``) already carry the space the default ``target_delimiter``
    adds: scored after two spaces, 48 facts a model knows 31 of scored 0. When every answer begins with
    whitespace the delimiter becomes ``""`` (what lm-eval users set for such data), except under ``mc_letters``,
    which scores letters; when only some do, the note says which, as no one delimiter fits both."""
    answers = [
        (item.get("id") or "few-shot example", text)
        for item in [*items, *fewshot]
        for text in ([item["target"]] if item.get("target") is not None else []) + list(item.get("choices", []))
    ]
    spaced = [(ident, text) for ident, text in answers if text[:1].isspace()]
    if not spaced:
        return []
    ident, text = spaced[0]
    if len(spaced) < len(answers):
        return [
            f"{DELIMITER_NOTE}{len(spaced)} of {len(answers)} answers begin with whitespace (first: {ident}, "
            f"{text!r}); the default target delimiter (a space) puts two spaces before them, none fits all: "
            'strip the leading whitespace in the data, or pass --target-delimiter "" if most begin with it'
        ]
    for name, settings in protocols.items():
        if name != "mc_letters":
            settings["target_delimiter"] = ""
    return [
        f"{DELIMITER_NOTE}every answer begins with whitespace (e.g. {text!r}), so the suite's target_delimiter "
        'is "", not the default space, which would put two spaces before each answer (mc_letters, which scores '
        "letters, keeps the space); to choose otherwise, import it with `layercheck suite import --target-delimiter`"
    ]


def import_records(
    path: Path,
    fmap: FieldMap | str | None = None,
    options: ImportOptions | None = None,
    *,
    fmt: str | None = None,
    records: Iterable[tuple[int, Any]] | None = None,
    provenance: dict[str, Any] | None = None,
) -> ImportedSuite:
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
        raise SuiteFormatError(
            f"{path}: {fewshot_count} few-shot examples leave no items ({len(numbered)} records)",
            "use fewer few-shot examples",
        )
    source = str(path)
    kind = (
        "multiple_choice"
        if any(isinstance(r, Mapping) and fmap.get(r, "choices") not in (_MISSING, None) for _, r in numbered[:1])
        else "answer"
    )
    defaults = _defaults(options, name, kind)
    converted = [
        _record_item(record, number, fmap, source if fmt != "datasets" else "", defaults) for number, record in numbered
    ]
    lines = {id(item): number for item, (number, _) in zip(converted, numbered)}
    label = "row" if fmt == "datasets" else "line"

    def where(item: dict[str, Any]) -> str:
        return f"{path}:{lines[id(item)]}" if fmt != "datasets" else f"{path} {label} {lines[id(item)]}"

    shots = [
        {k: v for k, v in item.items() if k in ("context", "choices", "gold", "target")}
        for item in converted[:fewshot_count]
    ]
    items = _finish_items(converted[fewshot_count:], name, where)
    if options.limit:
        items = items[: options.limit]
    protocols, default, notes = _protocols(items, options, shots)
    provenance = dict(provenance or {"format": fmt, "path": path.as_posix(), "sha256": file_sha256(path)})
    provenance.update(records=len(numbered), map=fmap.describe() or "identity")
    if fewshot_count:
        provenance["fewshot"] = f"the first {fewshot_count} records"
    description = options.description or f"Imported from {path.name} ({len(items)} items)."
    return _build(
        name, options.capability, description, protocols, default, items, shots, provenance, notes, options.command
    )


_WARNED: set[tuple[Path, str]] = set()


def load_records_suite(path: str | os.PathLike[str]) -> Suite:
    """A ``.jsonl`` / ``.json`` / ``.csv`` file whose fields already have the suite's names, as a suite
    (name and capability: the file name). For ``--layercheck-suites`` and ``layercheck profile --suites``."""
    path = Path(path)
    check_suite_size(path)  # before reading: importing a file of gigabytes takes minutes and memory to match
    imported = import_records(path, FieldMap(), ImportOptions(), fmt=RECORD_FORMATS.get(path.suffix.lower()))
    for note in imported.warnings:
        if note.startswith(DELIMITER_NOTE) and (path, note) not in _WARNED:  # a run loads a suite several times
            _WARNED.add((path, note))
            warnings.warn(SuiteWarning(f"{path}: {note}"), stacklevel=2)
    return imported.suite
