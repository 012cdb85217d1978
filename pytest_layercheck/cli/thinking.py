"""``layercheck thinking``: the same items answered directly and with chain-of-thought, per domain."""

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
        "thinking", help="fast (direct) vs slow (chain-of-thought) answers: corrections and overthinking per domain"
    )
    add_model_arguments(parser)
    parser.add_argument("--suites", default="knowledge,reasoning", help="comma-separated suites")
    parser.add_argument("--limit", type=count, default=40, help="items per suite (0 = all)")
    parser.add_argument("--cot-tokens", type=count, default=96, help="most tokens of chain-of-thought per item")
    parser.add_argument("--fast-tokens", type=count, default=24, help="most tokens of a direct answer")
    parser.add_argument("--by-domain", action="store_true", help="also show every suite domain on its own")
    parser.add_argument("--show", type=count, default=0, help="print N example generations per group")
    add_output_arguments(
        parser, "the result (with every generation)", html="fast vs slow per group and domain, the items that changed"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pytest_layercheck.analysis.thinking import compare_thinking
    from pytest_layercheck.report.analyses import json_text, thinking_markdown, thinking_renderable
    from pytest_layercheck.report.analysis_html import render_thinking_html

    loaded = load(args.model, args)
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    started = time.perf_counter()
    with progress_bar("generating") as hook:
        result = compare_thinking(
            loaded,
            suites=suites,
            limit=args.limit or None,
            cot_tokens=args.cot_tokens,
            fast_tokens=args.fast_tokens,
            progress=hook,
        )
    err_console.print(f"thinking: {time.perf_counter() - started:.1f} s")
    console.print(thinking_renderable(result, fine=args.by_domain), highlight=False)
    if args.show:
        for group in result.groups():
            for pair in [p for p in result.items if p.group == group][: args.show]:
                console.print(
                    f"[bold]{pair.item_id}[/] target {pair.target!r}: fast {pair.fast.answer!r} "
                    f"({'right' if pair.fast.correct else 'wrong'}), slow {pair.slow.answer!r} "
                    f"({'right' if pair.slow.correct else 'wrong'})",
                    highlight=False,
                )
                console.print(f"  chain of thought: {pair.slow_text.strip()[:240]!r}", highlight=False)
    write_outputs(
        args,
        lambda: json_text(result.to_json()),
        lambda: thinking_markdown(result, fine=args.by_domain),
        lambda: render_thinking_html(result),
    )
    return 0
