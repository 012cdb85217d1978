"""The ``layercheck`` command line: its modules, registered in :data:`COMMANDS`, add the subcommands.

    layercheck profile [MODEL]              depth-sensitivity profile, printed as a table
    layercheck baseline [MODEL]             record (or refresh) the baseline in baselines/
    layercheck compare BASE CANDIDATE       profile shift, weight change and where it lives
    layercheck heads [MODEL]                head-level importance for a capability
    layercheck retrieval-heads [MODEL]      Wu et al. retrieval heads and their masking effect
    layercheck redundancy [MODEL]           angular distance / Block Influence vs measured drops
    layercheck thinking [MODEL]             fast (direct) vs slow (chain-of-thought) answers
    layercheck transfer [MODEL]             stability of correctness under new numbers
    layercheck info [MODEL]                 load a model and show what layercheck sees

    layercheck cache show|verify|prune      inspect, check and clean the result cache
    layercheck suite import|check SOURCE    turn JSONL/JSON/CSV, datasets or lm-eval tasks into a suite
    layercheck compare-samples A B          paired comparison of two lm-eval --log_samples runs

MODEL defaults to ``default`` (SmolLM2-135M-Instruct, fetched and cached on first use). Each
command module defines ``register(subparsers)``, which adds its parsers and sets ``handler``; the
analyses' subcommands (compare, heads, retrieval-heads, redundancy, thinking, transfer) come from the
analysis registry, through :mod:`.analyses`.

Exit status, the same for every command (and the README's "Reliability" section):

    0  passed (nothing regressed; the command did what was asked)
    1  a capability regressed (only commands that compare: profile with a baseline, compare)
    2  usage, configuration or input error: bad arguments, a model, suite, baseline or cache entry
       that cannot be used, a file that cannot be written. The message names the problem and the fix.
    3  internal error (a bug in pytest-layercheck): the traceback is printed; please report it
  130  interrupted
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pytest_layercheck.cli.common import err_console
from pytest_layercheck.core.errors import LayercheckError
from pytest_layercheck.core.version import __version__

#: Subcommand modules, in the order ``--help`` lists them: ``module`` adds its own with ``register``,
#: ``module:function`` with that function instead.
COMMANDS: tuple[str, ...] = (
    "profile",
    "analyses:register_comparisons",
    "compare_samples",
    "analyses",
    "info",
    "suite",
    "cache",
)

#: Exit statuses (see the module docstring).
EXIT_PASSED, EXIT_REGRESSED, EXIT_ERROR, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layercheck",
        description="Layer-level capability profiles of language models.",
        epilog="exit status: 0 passed, 1 a capability regressed, 2 usage, configuration "
        "or input error, 3 internal error (a bug)",
    )
    parser.add_argument("--version", action="version", version=f"layercheck (pytest-layercheck) {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for entry in COMMANDS:
        module, _, function = entry.partition(":")
        getattr(importlib.import_module(f"{__name__}.{module}"), function or "register")(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["help"]:  # ``layercheck help [COMMAND]``, as git and pip users type it
        words = [*words[1:2], "--help"]
    args = build_parser().parse_args(words)  # --help exits 0 here, before numpy or torch loads; usage errors exit 2
    from pytest_layercheck.model.threads import prepare_process

    prepare_process()  # before anything imports torch: OpenMP reads its wait policy once

    from pytest_layercheck.evaluation.result_cache import CacheEntryWarning
    from pytest_layercheck.suites.schema import SuiteWarning

    previous = warnings.formatwarning

    def one_line(
        message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
    ) -> str:
        """A warning meant for the user (a rejected cache entry, a suite at chance) as one line, not a source listing."""
        if issubclass(category, (CacheEntryWarning, SuiteWarning)):
            return f"layercheck: warning: {message}\n"
        return previous(message, category, filename, lineno, line)

    warnings.formatwarning = one_line
    try:
        return _run(args)
    finally:
        warnings.formatwarning = previous


def _run(args: argparse.Namespace) -> int:
    try:
        status = int(args.handler(args))
    except LayercheckError as exc:
        from rich.markup import escape

        err_console.print(f"[bold red]layercheck:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return EXIT_ERROR
    except OSError as exc:  # a file that cannot be read or written is an input problem, not a regression
        where = f" ({exc.filename})" if exc.filename else ""
        err_console.print(
            f"[bold red]layercheck:[/] {exc.strerror or exc}{where}\n"
            "  How to fix: check the path, its permissions and the free disk space",
            highlight=False,
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        err_console.print("[bold red]layercheck:[/] interrupted; files are written atomically, so none is half-written")
        return EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001 - never let a bug exit 1, which means "regressed"
        import traceback

        traceback.print_exc()
        err_console.print(
            "[bold red]layercheck: internal error[/] (a bug in pytest-layercheck; please report it "
            "with the traceback above)",
            highlight=False,
        )
        return EXIT_BUG
    if status not in (EXIT_PASSED, EXIT_REGRESSED, EXIT_ERROR):
        err_console.print(f"[bold red]layercheck: internal error[/]: command returned status {status}")
        return EXIT_BUG
    return status


if __name__ == "__main__":
    sys.exit(main())
