"""``layercheck redundancy``: the block a similarity metric calls prunable, beside what removing it costs."""

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
        "redundancy", help="angular distance and Block Influence per layer; the most prunable block vs measured drops"
    )
    add_model_arguments(parser)
    parser.add_argument("--block", type=count, default=1, help="layers per block to drop (n; default 1)")
    parser.add_argument(
        "--suites",
        default="knowledge,reasoning",
        help="suites whose prompts are the metric's samples (comma-separated)",
    )
    parser.add_argument("--prompts", type=count, default=40, help="prompts per suite for the metrics (0 = all)")
    parser.add_argument(
        "--no-compare", action="store_true", help="only the metrics; skip removing blocks and scoring capabilities"
    )
    parser.add_argument(
        "--views",
        default="knowledge=mc_text,reasoning=mc_text,knowledge=generate_until,reasoning=generate_until",
        help="capability views to compare: SUITE=PROTOCOL,...",
    )
    parser.add_argument("--limit", type=count, default=40, help="items per suite when scoring capabilities (0 = all)")
    parser.add_argument(
        "--candidates",
        type=count,
        default=0,
        help="blocks evaluated under likelihood protocols (0 = every eligible block)",
    )
    parser.add_argument("--generation-blocks", type=count, default=6, help="blocks evaluated under generation")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        help="accuracy a suggestion may lose beyond the least harmful block and still agree",
    )
    add_output_arguments(parser, html="BI and angular distance per layer, the capability views' drops")
    parser.set_defaults(handler=run)


def parse_views(text: str) -> list[tuple[str, str]]:
    """``knowledge=mc_text,reasoning=generate_until`` -> [(suite, protocol), ...]."""
    from pytest_layercheck.core.errors import ConfigError

    views = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        suite, sep, protocol = part.partition("=")
        if not sep or not suite.strip() or not protocol.strip():
            raise ConfigError(f"bad view {part!r}", "write SUITE=PROTOCOL, e.g. knowledge=mc_text")
        views.append((suite.strip(), protocol.strip()))
    return views


def run(args: argparse.Namespace) -> int:
    from pytest_layercheck.analysis.redundancy import compare_with_capabilities, measure_redundancy
    from pytest_layercheck.report.analyses import json_text, redundancy_markdown, redundancy_renderable
    from pytest_layercheck.report.analysis_html import render_redundancy_html

    views = parse_views(args.views)
    loaded = load(args.model, args)
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    started = time.perf_counter()
    result = measure_redundancy(loaded, args.block, suites=suites, limit=args.prompts or None)
    err_console.print(f"metrics: {time.perf_counter() - started:.1f} s")
    comparison = None
    if not args.no_compare and views:
        started = time.perf_counter()
        with progress_bar("removing blocks") as hook:
            comparison = compare_with_capabilities(
                loaded,
                result,
                views=views,
                limit=args.limit or None,
                candidates=args.candidates or None,
                generation_blocks=args.generation_blocks,
                tolerance=args.tolerance,
                progress=hook,
            )
        err_console.print(f"comparison: {time.perf_counter() - started:.1f} s")
    console.print(redundancy_renderable(result, comparison), highlight=False)
    payload = comparison.to_json() if comparison is not None else {"result": result.to_json()}
    write_outputs(
        args,
        lambda: json_text(payload),
        lambda: redundancy_markdown(result, comparison),
        lambda: render_redundancy_html(result, comparison),
    )
    return 0
