"""The analyses' ``layercheck`` subcommands, built from the analysis registry: one per analysis with a
:class:`~pytest_layercheck.analysis.registry.Command` (``heads``, ``retrieval-heads``, ``redundancy``,
``thinking``, ``transfer``, and any a room from another distribution adds).

Each takes the model and its loading options, the analysis's own arguments and the output files; it loads
the model, runs the analysis's steps (each timed on stderr, with a progress bar where it asks for one),
prints the result and writes ``--json``/``--markdown``/``--html``. The room's command module does the
computing and the rendering (``run``, ``terminal``, ``to_json``, ``markdown``, ``html``).
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

from pytest_layercheck.analysis.registry import Analysis, Command, commands
from pytest_layercheck.cli import EXIT_PASSED
from pytest_layercheck.cli.common import add_output_arguments, add_subcommand, console, load, stage, write_outputs


def register(subparsers: argparse._SubParsersAction) -> None:
    for analysis in commands():
        add_command(subparsers, analysis)


def add_command(subparsers: argparse._SubParsersAction, analysis: Analysis) -> None:
    """The subcommand of ``analysis``: model, its arguments, the output files (and ``--no-cache``)."""
    command = analysis.command
    assert command is not None
    handler = functools.partial(run_command, analysis, command)
    parser = add_subcommand(subparsers, command.name, help=command.help, handler=handler, model=True)
    for argument in command.arguments:
        parser.add_argument(*argument.flags, **argument.options)
    outputs = command.outputs
    add_output_arguments(parser, outputs.json, outputs.markdown, html=outputs.html or False)
    if analysis.uses_cache:
        parser.add_argument("--no-cache", action="store_true", help="recompute instead of reading the result cache")


def run_command(analysis: Analysis, command: Command, args: argparse.Namespace) -> int:
    """Load the model, run the analysis, print it and write the files asked for."""
    from pytest_layercheck.report.format import json_text

    parsed = vars(args)
    keywords: dict[str, Any] = {}
    view: dict[str, Any] = {}
    for argument in command.arguments:  # converted before the model loads: a bad value costs no load
        (view if argument.view else keywords)[argument.key] = argument.value(parsed[argument.key])
    loaded = load(args.model, args)
    if analysis.uses_cache:
        from pytest_layercheck.evaluation.result_cache import ResultCache

        keywords["cache"] = ResultCache(enabled=not args.no_cache)
    result = command.function("run")(loaded, stage, **keywords)
    console.print(command.function("terminal")(result, view), highlight=False)
    write_outputs(
        args,
        lambda: json_text(command.function("to_json")(result)),
        lambda: command.function("markdown")(result, view),
        lambda: command.function("html")(result, view),
    )
    return EXIT_PASSED
