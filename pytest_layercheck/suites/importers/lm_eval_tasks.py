"""lm-evaluation-harness tasks (the ``lmeval`` extra) as suites, rendered by lm-eval itself.

The task is built by lm-eval's own ``TaskManager`` (its YAML loader handles ``!function`` and ``include``),
and every document goes through the task's ``doc_to_text``, ``doc_to_choice`` and ``doc_to_target``, so
Jinja templates and Python functions mean exactly what they mean there. ``multiple_choice`` becomes
``mc_text``, ``generate_until`` becomes ``generate_until`` (stop strings, ``max_gen_toks`` and a regex
filter carried over), ``loglikelihood`` becomes ``continuation``. Differences from lm-eval that remain (a
randomly sampled few-shot set, scoring options of ``exact_match``, a task description under a chat
template) are reported as warnings and recorded in the file. Importing runs the task's ``!function``
code, as lm-eval itself does; data are read with the hub offline unless you allow otherwise.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_layercheck.core.errors import SuiteFormatError
from pytest_layercheck.core.hashing import file_sha256
from pytest_layercheck.suites.importers.extras import _first_line, _require
from pytest_layercheck.suites.importers.options import ImportOptions, _defaults, _slug
from pytest_layercheck.suites.importers.suite_file import ImportedSuite, _build
from pytest_layercheck.suites.importers.values import _gold_index, _kind
from pytest_layercheck.suites.protocols import get_protocol

LMEVAL_REQUIREMENT = "lm-eval==0.4.13"


def _lm_eval_task(spec: str, task_name: str | None) -> tuple[Any, str]:
    _require("lm_eval", "lmeval", LMEVAL_REQUIREMENT)
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
        raise SuiteFormatError(
            f"lm-eval knows no task {spec!r} ({_first_line(exc)})",
            "pass the path of the task YAML, or a task name lm-eval lists (lm-eval ls tasks)",
        ) from None
    except Exception as exc:  # noqa: BLE001 - user task code and datasets raise anything
        raise SuiteFormatError(
            f"lm-eval cannot build task {spec!r}: {_first_line(exc)}",
            "check that `lm-eval run --tasks ... --limit 1` accepts the task",
        ) from None
    tasks = loaded["tasks"]
    if task_name is not None:
        if task_name not in tasks:
            raise SuiteFormatError(
                f"{shown} defines no task {task_name!r}", f"use --task with one of: {', '.join(tasks)}"
            )
        return tasks[task_name], shown
    if len(tasks) != 1:
        raise SuiteFormatError(
            f"{shown} defines {len(tasks)} tasks ({', '.join(list(tasks)[:5])}...)",
            "import one at a time with --task NAME",
        )
    return next(iter(tasks.values())), shown


def _lm_eval_docs(task: Any, split: str | None) -> tuple[list[Any], str]:
    config = task.config
    if split is None:
        split = config.test_split if task.has_test_docs() else config.validation_split
        return list(task.eval_docs), str(split)
    for wanted, docs in (
        (config.test_split, task.test_docs),
        (config.validation_split, task.validation_docs),
        (config.training_split, task.training_docs),
    ):
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
        raise SuiteFormatError(
            f"task {task.config.task!r}: doc_to_text gives {_kind(text)}, not text",
            "tasks whose doc_to_text is an index (multiple inputs, as Winogrande) are not supported",
        )
    if output_type == "multiple_choice":
        choices = (
            task.doc_to_choice(doc, cfg.doc_to_choice)
            if cfg is not None and cfg.doc_to_choice
            else task.doc_to_choice(doc)
        )
        item["choices"] = [str(c) for c in choices]
        if isinstance(target, list):
            raise SuiteFormatError(
                f"task {task.config.task!r}: a document has several gold answers {target!r}",
                "tasks with multiple gold answers are not supported",
            )
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
        notes.append(
            f"lm-eval filter pipelines {[p.get('name') for p in pipelines]}: only the first "
            f"({first.get('name')!r}) is carried over"
        )
    regex = None
    for step in first.get("filter", []):
        function = step.get("function")
        if function == "regex":
            regex = step.get("regex_pattern", r"#### (\-?[0-9\.\,]+)")
            if step.get("group_select", 0) != 0:
                notes.append(
                    f"the regex filter selects match {step.get('group_select')}; layercheck takes the first match"
                )
        elif function != "take_first":
            notes.append(
                f"lm-eval filter {function!r} is not carried over; layercheck's exact_match already ignores "
                "case, surrounding whitespace and trailing punctuation"
            )
    return regex


def _exact_match_notes(task: Any, notes: list[str]) -> None:
    for metric in getattr(task.config, "metric_list", None) or []:
        if metric.get("metric") != "exact_match":
            if metric.get("metric") not in (None, "acc", "acc_norm"):
                notes.append(
                    f"lm-eval metric {metric.get('metric')!r} has no counterpart; scored with this protocol's metrics"
                )
            continue
        if not (metric.get("ignore_case") and metric.get("ignore_punctuation")) or metric.get("regexes_to_ignore"):
            notes.append(
                "layercheck's exact_match ignores case, surrounding whitespace and trailing punctuation; the "
                "task's exact_match options differ, so single items can be scored differently"
            )


#: lm-eval output type -> the protocol that scores a task the way lm-eval does.
_PROTOCOL_OF: dict[str, str] = {
    "multiple_choice": "mc_text", "generate_until": "generate_until", "loglikelihood": "continuation",
}  # fmt: skip


def _check_supported(task: Any) -> str:
    """The protocol for ``task``; tasks a suite cannot express are refused."""
    config = task.config
    output_type = task.OUTPUT_TYPE
    protocol = _PROTOCOL_OF.get(output_type)
    if protocol is None:
        raise SuiteFormatError(
            f"task {config.task!r} has output_type {output_type!r}",
            "supported: multiple_choice, generate_until, loglikelihood",
        )
    if getattr(task, "multiple_input", 0):
        raise SuiteFormatError(
            f"task {config.task!r} has several inputs per document (as Winogrande)", "such tasks are not supported"
        )
    if getattr(config, "gen_prefix", None):
        raise SuiteFormatError(
            f"task {config.task!r} uses gen_prefix, which a suite cannot express yet",
            "drop gen_prefix from a copy of the task, or fold it into doc_to_text",
        )
    return protocol


def _fewshot_docs(task: Any, n_shots: int, notes: list[str]) -> list[Any]:
    """The first ``n_shots`` few-shot documents, the same for every item."""
    if not n_shots:
        return []
    config = task.config
    sampler = getattr(task, "sampler", None)
    if sampler is None:
        raise SuiteFormatError(f"task {config.task!r} has no few-shot documents", "import with --num-fewshot 0")
    pool = sampler.fewshot_docs()
    if len(pool) < n_shots:
        raise SuiteFormatError(
            f"task {config.task!r} has {len(pool)} few-shot documents, fewer than {n_shots}",
            "use fewer with --num-fewshot",
        )
    if type(sampler).__name__ != "FirstNSampler":
        notes.append(
            f"lm-eval samples {n_shots} few-shot examples per document at random; this suite uses the "
            "first ones for every item (lm-eval's `fewshot_config: {sampler: first_n}`), so prompts differ"
        )
    if task.fewshot_cfg.target_delimiter not in (None, config.target_delimiter):
        notes.append("fewshot_config.target_delimiter differs from the task's; the task's is used for both")
    return list(pool[:n_shots])


def _document_items(
    task: Any,
    docs: list[Any],
    name: str,
    defaults: Mapping[str, str],
    shots_docs: list[Any],
    limit: int | None,
    notes: list[str],
) -> list[dict[str, Any]]:
    """One item per document (up to ``limit``), rendered by the task; few-shot documents are left out."""
    items: list[dict[str, Any]] = []
    for doc_id, doc in enumerate(docs):
        if any(doc == shot for shot in shots_docs):
            notes.append(f"document {doc_id} is also a few-shot example; it is left out")
            continue
        item = {
            "id": _slug(f"{name}-{doc_id}"),
            "domain": defaults["domain"],
            "kind": defaults["kind"],
            **_lm_eval_item(task, doc, task.OUTPUT_TYPE),
            "metadata": {"doc_id": doc_id, "doc_hash": _doc_hash(doc)},
        }
        items.append(item)
        if limit and len(items) >= limit:
            break
    return items


def _fold_description(
    task: Any, docs: list[Any], shots: list[dict[str, Any]], items: list[dict[str, Any]], notes: list[str]
) -> None:
    """Put the task description in front of the whole prompt, as lm-eval does: before the first few-shot
    example, else before each item."""
    config = task.config
    description = config.description or ""
    if not description:
        return
    resolved = {
        task.resolve_field(doc, description) if hasattr(task, "resolve_field") else description for doc in docs[:50]
    }
    if len(resolved) > 1:
        raise SuiteFormatError(
            f"task {config.task!r} has a description that changes per document",
            "suites hold one fixed description; drop it from a copy of the task",
        )
    text = resolved.pop()
    for entry in shots[:1] if shots else items:
        entry["context"] = text + entry["context"]
    notes.append(
        "the task description is folded into the prompt text; under a chat template lm-eval sends it "
        "as a system message instead"
    )


def _scoring_settings(task: Any, protocol: str, notes: list[str]) -> ImportOptions:
    """The protocol settings lm-eval scores ``task`` with: delimiters, and for generation its stop strings,
    token limit and answer regex."""
    config, output_type = task.config, task.OUTPUT_TYPE
    generates = output_type == "generate_until"
    gen = dict(config.generation_kwargs or {}) if generates else {}
    if gen.get("do_sample") or (gen.get("temperature") or 0) > 0:
        notes.append("the task samples (do_sample/temperature); layercheck generates greedily")
    until = gen.get("until", [config.fewshot_delimiter])
    until = tuple([until] if isinstance(until, str) else until)
    answer_regex = _regex_filter(task, notes) if generates else None
    if generates:
        _exact_match_notes(task, notes)
    return ImportOptions(
        protocol=protocol,
        template="{context}",
        target_delimiter="" if output_type == "loglikelihood" else config.target_delimiter,
        fewshot_delimiter=config.fewshot_delimiter,
        until=until if generates else None,
        max_gen_toks=int(gen.get("max_gen_toks", 256)) if generates else None,
        answer_regex=answer_regex,
    )


def _provenance(spec: str, shown: str, task: Any, split: str, n_shots: int, documents: int) -> dict[str, Any]:
    """Where the suite came from: the task, its split, lm-eval's version, and the task file's hash."""
    import lm_eval

    config = task.config
    provenance = {
        "format": "lm-eval",
        "task": config.task,
        "split": split,
        "output_type": task.OUTPUT_TYPE,
        "num_fewshot": n_shots,
        "lm_eval": getattr(lm_eval, "__version__", "unknown"),
        "documents": documents,
    }
    if Path(spec).is_file():
        provenance.update(path=shown, sha256=file_sha256(Path(spec)))
    return provenance


def import_lm_eval_task(spec: str, options: ImportOptions | None = None) -> ImportedSuite:
    """A suite from an lm-eval task (a YAML path or a registered name), rendered by lm-eval itself."""
    options = options or ImportOptions()
    task, shown = _lm_eval_task(spec, options.task)
    config, output_type = task.config, task.OUTPUT_TYPE
    protocol = _check_supported(task)
    docs, split = _lm_eval_docs(task, options.split)
    name = options.name or _slug(config.task)
    n_shots = options.num_fewshot if options.num_fewshot is not None else (config.num_fewshot or 0)
    notes: list[str] = []
    shots_docs = _fewshot_docs(task, n_shots, notes)
    defaults = _defaults(options, name, output_type)
    items = _document_items(task, docs, name, defaults, shots_docs, options.limit, notes)
    if not items:
        raise SuiteFormatError(f"task {config.task!r} has no documents in split {split!r}", "pick another --split")
    shots = [_lm_eval_item(task, doc, output_type, fewshot=True) for doc in shots_docs]
    _fold_description(task, docs, shots, items, notes)
    settings = _scoring_settings(task, protocol, notes)
    protocols, default, more = _protocols_for_lm_eval(items, settings, shots)
    notes += more
    provenance = _provenance(spec, shown, task, split, n_shots, len(docs))
    description_text = (
        options.description or f"lm-eval task {config.task} ({output_type}, {len(items)} documents of split {split})."
    )
    return _build(
        name,
        options.capability,
        description_text,
        protocols,
        default,
        items,
        shots,
        provenance,
        list(dict.fromkeys(notes)),
        options.command,
    )


def _protocols_for_lm_eval(
    items: list[dict[str, Any]], settings: ImportOptions, shots: list[dict[str, Any]]
) -> tuple[dict[str, Any], str, list[str]]:
    """Only the protocol lm-eval scores the task with: the file says what lm-eval does, nothing more."""
    protocol = settings.protocol
    assert protocol is not None, "the lm-eval importer always sets the protocol it scores with"
    body: dict[str, Any] = {
        "template": settings.template,
        "target_delimiter": settings.target_delimiter,
        "fewshot_delimiter": settings.fewshot_delimiter,
    }
    if get_protocol(protocol).generates:
        body.update(until=list(settings.until or ()), max_gen_toks=settings.max_gen_toks)
        if settings.answer_regex:
            body["answer_regex"] = settings.answer_regex
        blocked = [i["id"] for i in [*shots, *items] if any(s in i["target"] for s in settings.until or ())]
        if blocked:
            raise SuiteFormatError(
                f"the target of {blocked[0]} contains a stop string of the task {list(settings.until or ())}",
                "generation could never produce it; fix the task's until or the data",
            )
    return {protocol: body}, protocol, []


def _doc_hash(doc: Any) -> str:
    """lm-eval's ``doc_hash`` of a document (as in ``--log_samples`` output)."""
    from lm_eval.utils import handle_non_serializable, hash_string

    return hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))
