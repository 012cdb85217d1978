"""What every ``layercheck`` command shares: how its parser is made, the model and output arguments, consoles,
loading, timed steps and the progress bar."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from pytest_layercheck.analysis.arguments import MODEL_ARGUMENT, Argument

if TYPE_CHECKING:
    from rich.console import Console

    from pytest_layercheck.evaluation.profiler import ProgressHook
    from pytest_layercheck.model.loading import LoadedModel


class _LazyConsole:
    """A rich ``Console`` made on first use: ``--help`` then imports no rich, and answers even where a
    dependency is missing or broken (help is how a user finds out what is wrong)."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._made: Console | None = None

    def made(self) -> Console:
        if self._made is None:
            from rich.console import Console

            self._made = Console(stderr=self._stderr)
        return self._made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.made(), name)


console = cast("Console", _LazyConsole(stderr=False))
err_console = cast("Console", _LazyConsole(stderr=True))


#: What a subcommand runs: its parsed arguments -> the exit status.
Handler = Callable[[argparse.Namespace], int]


def add_subcommand(
    subparsers: argparse._SubParsersAction,
    name: str,
    help: str,
    description: str | None = None,
    *,
    handler: Handler | None = None,
    model: bool = False,
) -> argparse.ArgumentParser:
    """A subcommand's parser, made the same way for every command: its line in the listing (``help``), its
    own ``--help`` text (``description``), the ``handler`` it runs (a group of actions sets it on the group
    or on each action) and, with ``model``, the model to load and its loading flags, first."""
    parser = subparsers.add_parser(name, help=help, description=description)
    if model:
        add_model_arguments(parser)
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def add_model_arguments(parser: argparse.ArgumentParser, models: Iterable[Argument] = (MODEL_ARGUMENT,)) -> None:
    """The models to load (positional) and where: the same flags for every command."""
    for model in models:
        parser.add_argument(*model.flags, **model.options)
    from pytest_layercheck.evaluation.options import MODEL, add_cli_arguments

    add_cli_arguments(parser, MODEL)


def load(spec: str, args: argparse.Namespace) -> LoadedModel:
    """Load ``spec`` with the command's device, dtype and adapter flags, showing progress on stderr."""
    from pytest_layercheck.evaluation.options import model_arguments
    from pytest_layercheck.model.loading import load_model
    from pytest_layercheck.model.threads import configure_threads

    threads = configure_threads()  # before the first matmul: busy cores make extra threads spin-wait
    with err_console.status(f"loading model {spec!r}") as status:
        loaded = load_model(spec, **model_arguments(vars(args)), progress=lambda message: status.update(message))
    err_console.print(
        f"loaded {loaded.name} on {loaded.device} ({loaded.load_seconds:.1f} s; {threads.describe()})", highlight=False
    )
    return loaded


@contextmanager
def progress_bar(what: str = "profiling") -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar on stderr, driven by ``hook(description, done, total)``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description:<32}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=cast(_LazyConsole, err_console).made(),
        transient=False,
    ) as progress:
        task = progress.add_task(what, total=None)

        def hook(description: str, done: int, total: int) -> None:
            progress.update(task, description=description, completed=done, total=total)

        yield hook


@contextmanager
def stage(label: str, bar: str | None = None, note: Callable[[], str] | None = None) -> Iterator[ProgressHook | None]:
    """One step of a command (see :class:`~pytest_layercheck.analysis.registry.Stage`): timed on stderr."""
    started = time.perf_counter()
    if bar is None:
        yield None
    else:
        with progress_bar(bar) as hook:
            yield hook
    err_console.print(f"{label}: {time.perf_counter() - started:.1f} s" + (f" ({note()})" if note else ""))


def add_output_arguments(
    parser: argparse.ArgumentParser,
    what: str = "the result",
    markdown: str = "the markdown report",
    summary: bool = False,
    html: bool | str = False,
) -> None:
    """``--json`` and ``--markdown`` report files (and ``--summary``, ``--html``), the same for every command.

    ``html``: True for the depth report's ``--html``; a string says what the command's page shows instead."""
    parser.add_argument("--json", dest="json_path", default=None, help=f"write {what} as JSON here")
    parser.add_argument("--markdown", default=None, help=f"write {markdown} here")
    if html:
        shows = html if isinstance(html, str) else "per-layer charts, cells, items"
        parser.add_argument(
            "--html",
            dest="html_path",
            default=None,
            help=f"write a self-contained HTML report here ({shows}; opens offline)",
        )
    if summary:
        parser.add_argument("--summary", action="store_true", help="also append the markdown to $GITHUB_STEP_SUMMARY")


def write_outputs(
    args: argparse.Namespace,
    json_text: Callable[[], str] | None = None,
    markdown: Callable[[], str] | None = None,
    html: Callable[[], str] | None = None,
) -> None:
    """Write the files asked for with ``--json``/``--markdown``/``--html`` (atomically) and append
    ``--summary``, rendering only what was asked for."""
    from pathlib import Path

    from pytest_layercheck.core.atomic import atomic_write_text

    outputs = (
        (args.json_path, json_text, "JSON"),
        (args.markdown, markdown, "markdown"),
        (getattr(args, "html_path", None), html, "HTML"),
    )
    for path, render, label in outputs:
        if path and render is not None:
            atomic_write_text(Path(path), render())
            err_console.print(f"{label}: {path}", highlight=False)
    if getattr(args, "summary", False) and markdown is not None:
        from pytest_layercheck.report.markdown import append_step_summary

        if append_step_summary(markdown()) is None:
            err_console.print("[yellow]--summary: $GITHUB_STEP_SUMMARY is not set; nothing appended[/]")
