"""``layercheck heads`` and ``layercheck retrieval-heads``: head-level analyses in the terminal.

layercheck heads [MODEL] --suite knowledge --layers 0-5 --limit 24
layercheck retrieval-heads [MODEL] --tests 20 --k 14 --limit 40
"""

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
    heads = subparsers.add_parser("heads", help="mask each attention head in turn and show which ones a suite needs")
    add_model_arguments(heads)
    heads.add_argument("--suite", default="knowledge", help="built-in suite name or suite YAML path")
    heads.add_argument("--protocol", default=None, help="scoring protocol (default: the suite's)")
    heads.add_argument("--layers", default="all", help="layers to scan, e.g. 0-3,29 (default: all)")
    heads.add_argument("--limit", type=count, default=None, help="items (default: 24; 0 = all)")
    heads.add_argument("--mode", default="zero", choices=("zero", "uniform"), help="head masking (default: zero)")
    heads.add_argument(
        "--gqa",
        default="query",
        choices=("query", "group"),
        help="mask single query heads (default) or whole KV groups",
    )
    heads.add_argument("--top", type=count, default=15, help="heads listed in the ranking")
    heads.add_argument("--no-grid", action="store_true", help="omit the layers x heads grid")
    add_output_arguments(
        heads,
        "the full result",
        "the tables as markdown",
        html="the layer x head grid of drops, the drop per layer, the ranking",
    )
    heads.add_argument("--no-cache", action="store_true", help="recompute instead of reading the result cache")
    heads.set_defaults(handler=run_heads)

    retrieval = subparsers.add_parser(
        "retrieval-heads", help="find retrieval heads on needle tests and compare masking them with random heads"
    )
    add_model_arguments(retrieval)
    retrieval.add_argument("--tests", type=count, default=20, help="needle-in-a-haystack tests (default: 20)")
    retrieval.add_argument("--seed", type=int, default=0, help="seed of the needle tests and the random heads")
    retrieval.add_argument("--threshold", type=float, default=0.1, help="retrieval-head threshold (paper: 0.1)")
    retrieval.add_argument(
        "--k",
        type=count,
        default=None,
        help="heads to mask in the comparison (default: 5%% of all heads; 0 = no comparison)",
    )
    retrieval.add_argument("--suite", default="retrieval", help="suite for the masking comparison")
    retrieval.add_argument(
        "--protocol",
        default="generate_until",
        help="protocol of the comparison (generate_until masks during decoding only)",
    )
    retrieval.add_argument("--limit", type=count, default=40, help="suite items in the comparison (0 = all)")
    retrieval.add_argument("--top", type=count, default=20, help="heads listed in the ranking")
    add_output_arguments(
        retrieval,
        "the results",
        "the tables as markdown",
        html="the layer x head grid of retrieval scores, the masking comparison, the needle tests",
    )
    retrieval.set_defaults(handler=run_retrieval_heads)


def _limit(value: int | None, default: int) -> int | None:
    if value is None:
        return default
    return None if value == 0 else value


def run_heads(args: argparse.Namespace) -> int:
    import torch

    from pytest_layercheck.analysis.heads import DEFAULT_HEAD_LIMIT, head_importance
    from pytest_layercheck.evaluation.result_cache import ResultCache
    from pytest_layercheck.report.analysis_html import render_heads_html
    from pytest_layercheck.report.format import json_text
    from pytest_layercheck.report.heads import importance_markdown, importance_renderable

    loaded = load(args.model, args)
    cache = ResultCache(enabled=not args.no_cache)
    started = time.perf_counter()
    with progress_bar("heads") as hook:
        result = head_importance(
            loaded,
            suite=args.suite,
            protocol=args.protocol,
            layers=args.layers,
            limit=_limit(args.limit, DEFAULT_HEAD_LIMIT),
            mode=args.mode,
            gqa=args.gqa,
            cache=cache,
            progress=hook,
        )
    seconds = time.perf_counter() - started
    err_console.print(f"heads: {seconds:.1f} s ({cache.summary()}, {torch.get_num_threads()} CPU threads)")
    console.print(importance_renderable(result, top=args.top, grid=not args.no_grid), highlight=False)
    write_outputs(
        args,
        lambda: json_text(result.to_dict()),
        lambda: importance_markdown(result, top=args.top, grid=not args.no_grid),
        lambda: render_heads_html(result, top=args.top),
    )
    return 0


def run_retrieval_heads(args: argparse.Namespace) -> int:
    import math

    from pytest_layercheck.analysis.retrieval_heads import compare_masking, find_retrieval_heads
    from pytest_layercheck.report.analysis_html import render_retrieval_html
    from pytest_layercheck.report.format import json_text
    from pytest_layercheck.report.heads import retrieval_markdown, retrieval_renderable

    loaded = load(args.model, args)
    started = time.perf_counter()
    with progress_bar("needle tests") as hook:
        heads = find_retrieval_heads(loaded, tests=args.tests, seed=args.seed, threshold=args.threshold, progress=hook)
    err_console.print(f"retrieval scores: {time.perf_counter() - started:.1f} s")
    k = args.k if args.k is not None else max(1, math.ceil(0.05 * len(heads.scores)))
    comparison = None
    if k:
        started = time.perf_counter()
        with progress_bar("masking") as hook:
            comparison = compare_masking(
                loaded,
                heads=heads,
                k=k,
                suite=args.suite,
                protocol=args.protocol,
                limit=_limit(args.limit, 40),
                seed=args.seed,
                progress=hook,
            )
        err_console.print(f"masking comparison: {time.perf_counter() - started:.1f} s")
    console.print(retrieval_renderable(heads, comparison, top=args.top), highlight=False)
    payload = {"retrieval_heads": heads.to_dict(), "masking": comparison.to_dict() if comparison else None}
    write_outputs(
        args,
        lambda: json_text(payload),
        lambda: retrieval_markdown(heads, comparison, top=args.top),
        lambda: render_retrieval_html(heads, comparison, top=args.top),
    )
    return 0
