"""The ``layercheck`` command line: one module per subcommand, registered in :data:`COMMANDS`.

    layercheck profile [MODEL]              depth-sensitivity profile, printed as a table
    layercheck baseline [MODEL]             record (or refresh) the baseline in baselines/
    layercheck compare BASE CANDIDATE       profile shift, weight change and where it lives
    layercheck heads [MODEL]                head-level importance for a capability
    layercheck retrieval-heads [MODEL]      Wu et al. retrieval heads and their masking effect
    layercheck redundancy [MODEL]           angular distance / Block Influence vs measured drops
    layercheck thinking [MODEL]             fast (direct) vs slow (chain-of-thought) answers
    layercheck transfer [MODEL]             stability of correctness under new numbers
    layercheck info [MODEL]                 load a model and show what layercheck sees

MODEL defaults to ``default`` (SmolLM2-135M-Instruct, fetched and cached on first use). Each
command module defines ``register(subparsers)``, which adds its parser and sets ``handler``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import LayercheckError
from .common import err_console

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("profile", "compare", "heads", "redundancy", "thinking", "transfer", "info")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layercheck", description="Layer-level capability profiles of language models.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except LayercheckError as exc:
        err_console.print(f"[bold red]layercheck:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("[bold red]layercheck:[/] interrupted; nothing was written")
        return 130


if __name__ == "__main__":
    sys.exit(main())
