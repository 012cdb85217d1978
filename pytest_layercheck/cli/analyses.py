"""The analyses' ``layercheck`` subcommands, built from the analysis registry: one per analysis with a
:class:`~pytest_layercheck.analysis.registry.Command` (``compare``, ``heads``, ``retrieval-heads``,
``redundancy``, ``thinking``, ``transfer``, and any a room from another distribution adds).

Each takes its models and their loading options, the option groups and arguments the command names and
the output files; it checks the settings, loads the models, runs the analysis's steps (each timed on
stderr, with a progress bar where it asks for one), prints the result and writes
``--json``/``--markdown``/``--html``. The room's command module does the computing and the rendering
(``run``, ``terminal``, ``to_json``, ``markdown``, ``html``) and may judge the result (``passed``).
"""

from __future__ import annotations

import argparse
import functools
import os
from typing import Any

from pytest_layercheck.analysis.registry import Analysis, Command, commands
from pytest_layercheck.cli import EXIT_PASSED, EXIT_REGRESSED
from pytest_layercheck.cli.common import (
    add_model_arguments,
    add_output_arguments,
    add_subcommand,
    console,
    load,
    stage,
    write_outputs,
)


def register_comparisons(subparsers: argparse._SubParsersAction) -> None:
    """The subcommands of the analyses that compare two models (``compare``), listed after ``profile``."""
    for analysis in commands():
        if analysis.compares:
            add_command(subparsers, analysis)


def register(subparsers: argparse._SubParsersAction) -> None:
    """The subcommands of the analyses of one model."""
    for analysis in commands():
        if not analysis.compares:
            add_command(subparsers, analysis)


def add_command(subparsers: argparse._SubParsersAction, analysis: Analysis) -> None:
    """The subcommand of ``analysis``: its models, option groups, arguments, the output files (and ``--no-cache``)."""
    from pytest_layercheck.evaluation import options

    command = analysis.command
    assert command is not None
    handler = functools.partial(run_command, analysis, command)
    parser = add_subcommand(
        subparsers, command.name, help=command.help, description=command.description, handler=handler
    )
    add_model_arguments(parser, command.models)
    groups = [getattr(options, name) for name in command.options]
    for group in groups:
        options.add_cli_arguments(parser, group)
    for argument in command.arguments:
        parser.add_argument(*argument.flags, **argument.options)
    outputs = command.outputs
    add_output_arguments(parser, outputs.json, outputs.markdown, summary=outputs.summary, html=outputs.html)
    if analysis.uses_cache and not any(option.key == "no_cache" for group in groups for option in group):
        parser.add_argument("--no-cache", action="store_true", help="recompute instead of reading the result cache")


def run_command(analysis: Analysis, command: Command, args: argparse.Namespace) -> int:
    """Load the models, run the analysis, print it, write the files asked for and judge it."""
    from pytest_layercheck.report.format import json_text

    parsed = vars(args)
    keywords: dict[str, Any] = {}
    view: dict[str, Any] = {}
    for argument in command.arguments:  # converted before the models load: a bad value costs no load
        (view if argument.view else keywords)[argument.key] = argument.value(parsed[argument.key])
    settings = command.hook("settings")
    if settings is not None:
        keywords = settings(keywords, parsed)
    models = [load(parsed[model.key], args) for model in command.models]
    if analysis.uses_cache:
        from pytest_layercheck.evaluation.result_cache import ResultCache

        keywords["cache"] = ResultCache(enabled=not args.no_cache)
    result = command.function("run")(*models, stage, **keywords)
    console.print(command.function("terminal")(result, view), highlight=False)
    write_outputs(
        args,
        lambda: json_text(command.function("to_json")(result)),
        functools.cache(lambda: command.function("markdown")(result, view)),  # rendered once for file and summary
        lambda: command.function("html")(result, view),
    )
    return _finish(command, result)


def _finish(command: Command, result: Any) -> int:
    """The GitHub workflow annotations (in GitHub Actions), then the exit status: 1 when the result did not pass."""
    workflow_commands = command.hook("workflow_commands")
    if workflow_commands is not None and os.environ.get("GITHUB_ACTIONS") == "true":
        for line in workflow_commands(result):
            print(line)  # plain stdout: rich would wrap or style a workflow command
    passed = command.hook("passed")
    return EXIT_PASSED if passed is None or passed(result) else EXIT_REGRESSED
