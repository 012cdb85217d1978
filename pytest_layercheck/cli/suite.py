"""``layercheck suite import SOURCE`` and ``layercheck suite check FILE``: bring your own evaluations.

    layercheck suite import evals.jsonl --map context=prompt,target=answer --capability my-label
    layercheck suite import mcq.json --map context=question,choices=options,gold=label -o suites/mcq.yaml
    layercheck suite import data/ --split test --map context=question,target=answer   # datasets on disk
    layercheck suite import my_task.yaml                                              # an lm-eval task
    layercheck suite check suites/my-evals.yaml

``import`` writes a suite YAML (default ``<name>.yaml``) and prints its content hash; a different existing
file is replaced only with ``--force``. Hugging Face data are read offline (``HF_HUB_OFFLINE``,
``HF_DATASETS_OFFLINE``) unless those variables are set otherwise. Exit status 0, or 2 for any problem
with the source or the options (the message names the record and the fix).
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from pytest_layercheck.cli.common import add_subcommand, console, err_console


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``suite`` with its ``import`` and ``check`` subcommands."""
    parser = add_subcommand(
        subparsers,
        "suite",
        help="import your own evaluations as a suite; check a suite file",
        description="Turn JSONL/JSON/CSV records, a Hugging Face dataset on disk or an "
        "lm-eval task into a reviewable, hashed suite YAML; check a suite file.",
    )
    actions = parser.add_subparsers(dest="suite_command", required=True)
    _register_import(actions)
    check = add_subcommand(
        actions, "check", help="validate a suite file and print its name, items and content hash", handler=run_check
    )
    check.add_argument("path", nargs="+", help="suite YAML file(s), or .jsonl files with suite field names")


def _register_import(actions: argparse._SubParsersAction) -> None:
    """Add ``suite import``: the source, where it goes, how its fields map, then the suite's defaults."""
    imp = add_subcommand(
        actions,
        "import",
        help="write a suite YAML from records, a dataset or an lm-eval task",
        description="Write a suite YAML from a .jsonl/.json/.csv file, a datasets folder or "
        ".parquet/.arrow file, or an lm-eval task YAML (or registered task name).",
        handler=run_import,
    )
    imp.add_argument(
        "source",
        help="a .jsonl, .json, .csv, .parquet or .arrow file, a datasets folder, an lm-eval "
        "task YAML, or an lm-eval task name",
    )
    imp.add_argument("-o", "--output", default=None, help="the suite file to write (default: <name>.yaml)")
    imp.add_argument("--format", default="auto", help="auto (by suffix), jsonl, json, csv, datasets or lm-eval")
    imp.add_argument(
        "--map",
        dest="field_map",
        default="",
        help="suite field=source field, e.g. context=prompt,target=answer or "
        "context=question,choices=options,gold=label (dotted paths; choices=a|b|c joins fields)",
    )
    imp.add_argument("--name", default=None, help="suite name (default: the file or task name)")
    imp.add_argument(
        "--capability", default=None, help="capability label that checks name, any word (default: the suite name)"
    )
    imp.add_argument("--description", default=None, help="one sentence on what the suite measures")
    imp.add_argument(
        "--protocol",
        default=None,
        help="default protocol: mc_text, mc_letters, continuation or generate_until (default: mc_text "
        "for multiple choice, continuation for prompt/answer pairs)",
    )
    imp.add_argument("--template", default="{context}", help="prompt template with {context} (records only)")
    imp.add_argument("--target-delimiter", default=None, help="text between prompt and answer (default: a space)")
    imp.add_argument("--fewshot-delimiter", default=None, help="text between few-shot examples (default: a blank line)")
    imp.add_argument("--until", default=None, help="generate_until stop strings, comma-separated (\\n for newline)")
    imp.add_argument("--max-gen-toks", type=int, default=None, help="generate_until token limit (default 32)")
    imp.add_argument("--answer-regex", default=None, help="generate_until: regex whose first group is the answer")
    imp.add_argument("--domain", default=None, help="domain of every item (default: the suite name) unless mapped")
    imp.add_argument("--kind", default=None, help="kind of every item unless mapped")
    imp.add_argument("--split", default=None, help="split to import (datasets, JSON objects of lists, lm-eval)")
    imp.add_argument("--task", default=None, help="lm-eval: the task to import from a group YAML")
    imp.add_argument(
        "--num-fewshot",
        type=int,
        default=None,
        help="few-shot examples before every prompt (records: the first N records; lm-eval: the first N "
        "of the task's few-shot split; default: the task's num_fewshot, or 0)",
    )
    imp.add_argument("--limit", type=int, default=None, help="import at most N items")
    imp.add_argument("--force", action="store_true", help="replace an existing suite file that differs")


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\t", "\t")


def _offline() -> None:
    """Hugging Face libraries read these at import: nothing is fetched unless the user set them otherwise."""
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(key, "1")


def _command(args: argparse.Namespace) -> str:
    """The import as a command line (from the parsed options, so it reads the same however it was run)."""
    words = ["layercheck", "suite", "import", args.source]
    for option in (
        "output",
        "format",
        "field_map",
        "name",
        "capability",
        "description",
        "protocol",
        "template",
        "target_delimiter",
        "fewshot_delimiter",
        "until",
        "max_gen_toks",
        "answer_regex",
        "domain",
        "kind",
        "split",
        "task",
        "num_fewshot",
        "limit",
    ):
        value = getattr(args, option)
        if value not in (None, "") and (option, value) not in (("format", "auto"), ("template", "{context}")):
            words += ["--map" if option == "field_map" else "--" + option.replace("_", "-"), str(value)]
    return " ".join(shlex.quote(w) for w in words)


def run_import(args: argparse.Namespace) -> int:
    from pytest_layercheck.core.errors import ConfigError
    from pytest_layercheck.suites.importers import FieldMap, ImportOptions, import_source, write_suite

    for flag, value in (
        ("--limit", args.limit),
        ("--max-gen-toks", args.max_gen_toks),
        ("--num-fewshot", args.num_fewshot),
    ):
        if value is not None and value < (0 if flag == "--num-fewshot" else 1):
            raise ConfigError(
                f"{flag} {value} is out of range",
                f"give {flag} a whole number >= {0 if flag == '--num-fewshot' else 1}",
            )
    _offline()
    options = ImportOptions(
        name=args.name,
        capability=args.capability,
        description=args.description,
        protocol=args.protocol,
        template=_unescape(args.template),
        target_delimiter=None if args.target_delimiter is None else _unescape(args.target_delimiter),
        fewshot_delimiter=None if args.fewshot_delimiter is None else _unescape(args.fewshot_delimiter),
        until=None if args.until is None else tuple(_unescape(s) for s in args.until.split(",") if s),
        max_gen_toks=args.max_gen_toks,
        answer_regex=args.answer_regex,
        domain=args.domain,
        kind=args.kind,
        limit=args.limit,
        num_fewshot=args.num_fewshot,
        split=args.split,
        task=args.task,
        command=_command(args),
    )
    imported = import_source(args.source, args.format, FieldMap.parse(args.field_map), options)
    output = Path(args.output) if args.output else Path(f"{imported.suite.name}.yaml")
    status = write_suite(imported, output, force=args.force)
    suite = imported.suite
    for warning in imported.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    console.print(f"suite {status}: {output}", highlight=False, soft_wrap=True)
    console.print(
        f"  {suite.name!r} (capability {suite.capability!r}): {len(suite.items)} items, "
        f"{len(suite.fewshot)} few-shot, protocols {', '.join(suite.protocols)} (default "
        f"{suite.default_protocol})",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"  content hash {suite.content_hash}", highlight=False, soft_wrap=True)
    if status != "unchanged":
        console.print(
            f"Review it and commit it. Profile it with `layercheck profile MODEL --suites {output}` and "
            f"guard it with @pytest.mark.layercheck({suite.capability!r}, 'intact').",
            highlight=False,
            soft_wrap=True,
        )
    return 0


def run_check(args: argparse.Namespace) -> int:
    from pytest_layercheck.suites.builtin import resolve_suite
    from pytest_layercheck.suites.importers import RECORD_FORMATS, load_records_suite

    for spec in args.path:
        suite = load_records_suite(spec) if Path(spec).suffix.lower() in RECORD_FORMATS else resolve_suite(spec)
        console.print(
            f"{spec}: ok: {suite.name!r} (capability {suite.capability!r}), {len(suite.items)} items, "
            f"{len(suite.fewshot)} few-shot, protocols {', '.join(suite.protocols)} (default "
            f"{suite.default_protocol}), content hash {suite.content_hash}",
            highlight=False,
            soft_wrap=True,
        )
    return 0
