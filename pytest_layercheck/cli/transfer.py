"""``layercheck transfer``: does correctness survive new numbers (reasoning) vs another fact (knowledge)?"""

from __future__ import annotations

import argparse
import time

from pytest_layercheck.cli import count
from pytest_layercheck.cli.common import (
    add_model_arguments,
    add_output_arguments,
    console,
    err_console,
    load,
    progress_bar,
    write_outputs,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "transfer", help="stability of correctness under new numbers (reasoning) vs other facts (knowledge)"
    )
    add_model_arguments(parser)
    parser.add_argument("--suites", default="reasoning,knowledge", help="comma-separated suites")
    parser.add_argument("--limit", type=count, default=40, help="original items per suite (0 = all)")
    parser.add_argument("--variants", type=count, default=3, help="variants per original item")
    parser.add_argument("--protocol", default=None, help="scoring protocol (default: each suite's own)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the variant draws and the bootstrap")
    parser.add_argument("--by-domain", action="store_true", help="also show every domain")
    add_output_arguments(parser, html="stability and kappa with CIs per suite and domain, items that flipped")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pytest_layercheck.analysis.transfer import contrast
    from pytest_layercheck.report.analyses import json_text, transfer_markdown, transfer_renderable
    from pytest_layercheck.report.analysis_html import render_transfer_html

    loaded = load(args.model, args)
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    started = time.perf_counter()
    with progress_bar("scoring variants") as hook:
        results = contrast(
            loaded,
            suites,
            progress=hook,
            limit=args.limit or None,
            variants=args.variants,
            protocol=args.protocol,
            seed=args.seed,
        )
    err_console.print(f"transfer: {time.perf_counter() - started:.1f} s")
    console.print(transfer_renderable(results, by_domain=args.by_domain), highlight=False)
    write_outputs(
        args,
        lambda: json_text([r.to_json() for r in results]),
        lambda: transfer_markdown(results, by_domain=args.by_domain),
        lambda: render_transfer_html(results),
    )
    return 0
