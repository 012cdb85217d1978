"""``layercheck compare BASE CANDIDATE``: profile both, show the shift per cell, weight deltas, localisation.

Exit status: 0 when no cell regressed, 1 when the candidate regressed (a drop beyond the tolerance that
the paired test calls significant), 2 for usage or loading errors (printed by ``cli.main``).
"""

from __future__ import annotations

import argparse
import functools
import os
from typing import TYPE_CHECKING

from pytest_layercheck.cli.common import add_output_arguments, add_subcommand, console, load, stage, write_outputs
from pytest_layercheck.cli.profile import add_profile_arguments, add_verdict_arguments, settings_from, verdict_from
from pytest_layercheck.evaluation.options import MODEL, add_cli_arguments

if TYPE_CHECKING:
    from pytest_layercheck.analysis.compare.models import CompareSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_subcommand(
        subparsers,
        "compare",
        help="compare a candidate (fine-tune, PEFT adapter, GGUF) with its base model",
        description="Profile BASE and CANDIDATE, show the shift of every cell with its significance, the "
        "relative weight change per layer, and which layers, reverted to the base, restore a lost capability.",
        handler=run_compare,
    )
    parser.add_argument("base", help="the trusted model: 'default', a transformers folder or a .gguf file")
    parser.add_argument(
        "candidate", help="the model to check: a transformers folder, a .gguf file or a PEFT adapter folder"
    )
    add_cli_arguments(parser, MODEL)
    add_profile_arguments(parser)
    add_verdict_arguments(parser)
    parser.add_argument(
        "--localise",
        default="bands,changed",
        help="layer groups to revert: bands, layers (each single layer), changed (runs of the "
        "most-changed layers), comma-combined, or none (default: bands,changed)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.8,
        help="share of the loss a reverted group must recover to be named (default 0.8)",
    )
    parser.add_argument("--no-weights", action="store_true", help="skip the per-layer weight deltas")
    add_output_arguments(parser, "the full comparison", summary=True, html=True)


def compare_settings_from(args: argparse.Namespace) -> CompareSettings:
    from pytest_layercheck.analysis.compare.models import CompareSettings

    localise = args.localise
    if args.no_weights and "changed" in localise:
        localise = ",".join(s for s in localise.split(",") if s.strip() != "changed") or "none"
    verdict = verdict_from(args)
    return CompareSettings(
        profile=settings_from(args),
        tolerance=verdict.tolerance,
        alpha=verdict.alpha,
        correction=verdict.correction,
        allow_precision_mismatch=verdict.allow_precision_mismatch,
        localise=localise,
        threshold=args.threshold,
        weights=not args.no_weights,
    )


def run_compare(args: argparse.Namespace) -> int:
    from pytest_layercheck.analysis.compare.models import compare_models
    from pytest_layercheck.analysis.compare.render import render_compare_markdown, render_compare_terminal
    from pytest_layercheck.evaluation.result_cache import ResultCache
    from pytest_layercheck.report.format import json_text
    from pytest_layercheck.report.html_items import run_item_texts
    from pytest_layercheck.report.html_page import render_html

    settings = compare_settings_from(args)  # before loading: a typo should not cost two model loads
    base = load(args.base, args)
    candidate = load(args.candidate, args)
    cache = ResultCache(enabled=not args.no_cache)
    with stage("compare", "comparing", note=lambda: f"evaluations: {cache.summary()}") as hook:
        result = compare_models(base, candidate, settings, cache=cache, progress=hook)
    console.print(render_compare_terminal(result, width=console.width), highlight=False)
    markdown = functools.cache(lambda: render_compare_markdown(result))  # rendered once for file and summary
    write_outputs(
        args,
        lambda: json_text(result.to_dict()),
        markdown,
        lambda: render_html(
            result.candidate,
            result.comparison,
            baseline=result.base,
            notes=result.verdicts,
            item_texts=run_item_texts(settings.profile.suites),
        ),
    )
    if os.environ.get("GITHUB_ACTIONS") == "true":
        from pytest_layercheck.report.markdown import github_annotations

        for command in github_annotations(result.comparison):
            print(command)  # plain stdout: rich would wrap or style a workflow command
    return 0 if result.passed else 1
