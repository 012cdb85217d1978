"""``layercheck profile`` and ``layercheck baseline``: compute a depth profile, print it or record it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_layercheck.cli.common import (
    Handler,
    add_output_arguments,
    add_subcommand,
    console,
    err_console,
    load,
    progress_bar,
    write_outputs,
)

if TYPE_CHECKING:
    from pytest_layercheck.data.profile_data import DepthProfile
    from pytest_layercheck.evaluation.comparison import Verdict
    from pytest_layercheck.evaluation.comparison_result import ProfileComparison
    from pytest_layercheck.evaluation.settings import ProfileSettings


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    """What a profile computes; shared by every command that profiles (and by the pytest plugin)."""
    from pytest_layercheck.evaluation.options import PROFILE, add_cli_arguments

    add_cli_arguments(parser, PROFILE)


def register(subparsers: argparse._SubParsersAction) -> None:
    profile = _add_profiling_command(
        subparsers,
        "profile",
        help="print the depth-sensitivity profile of a model",
        handler=run_profile,
        baseline_dir="compare with the baseline here if one exists",
    )
    profile.add_argument("--baseline", default=None, help="baseline name to compare with (default: the model name)")
    profile.add_argument(
        "--no-compare",
        action="store_true",
        help="only print the profile: compare with no baseline, even one found by the model name",
    )
    add_verdict_arguments(profile)
    add_output_arguments(profile, "the report", "the markdown table", html=True)
    profile.add_argument("--heatmap", default=None, help="write a per-layer heatmap PNG here (needs matplotlib)")

    baseline = _add_profiling_command(
        subparsers,
        "baseline",
        help="record or refresh a model's baseline",
        handler=run_baseline,
        baseline_dir="folder of baseline files",
    )
    baseline.add_argument("--name", default=None, help="baseline name (default: the model name)")
    baseline.add_argument(
        "--update",
        action="store_true",
        help="replace an existing baseline that differs (a missing one is always written)",
    )


def _add_profiling_command(
    subparsers: argparse._SubParsersAction, name: str, help: str, *, handler: Handler, baseline_dir: str
) -> argparse.ArgumentParser:
    """A command that profiles a model: the model, what to profile and the folder of baselines
    (``baseline_dir``: what the command does with it)."""
    parser = add_subcommand(subparsers, name, help=help, handler=handler, model=True)
    add_profile_arguments(parser)
    parser.add_argument("--baseline-dir", default="baselines", help=baseline_dir)
    return parser


def add_verdict_arguments(parser: argparse.ArgumentParser) -> None:
    """How a comparison with a baseline is judged; shared by every command that compares."""
    from pytest_layercheck.evaluation.options import VERDICT, add_cli_arguments

    add_cli_arguments(parser, VERDICT)


def verdict_from(args: argparse.Namespace) -> Verdict:
    """The judging options of a command, checked before any model is loaded."""
    from pytest_layercheck.evaluation.options import verdict

    return verdict(vars(args))


def settings_from(args: argparse.Namespace) -> ProfileSettings:
    """What to profile; every suite is read and checked here, before any model loads."""
    from pytest_layercheck.evaluation.options import checked_profile_settings

    return checked_profile_settings(vars(args))


def compute_profile(args: argparse.Namespace, spec: str | None = None) -> DepthProfile:
    """Load the model named by ``spec`` (default: ``args.model``) and profile it with a progress bar."""
    from pytest_layercheck.evaluation.profiler import build_profile
    from pytest_layercheck.evaluation.result_cache import ResultCache

    settings = settings_from(args)  # suites read and checked before the model loads
    loaded = load(spec or args.model, args)
    cache = ResultCache(enabled=not args.no_cache)
    started = time.perf_counter()
    with progress_bar() as hook:
        profile = build_profile(loaded, settings, cache=cache, progress=hook)
    seconds = time.perf_counter() - started
    err_console.print(f"profile: {seconds:.1f} s (evaluations: {cache.summary()})", highlight=False)
    return profile


def compare_with_baseline(
    args: argparse.Namespace, verdict: Verdict, profile: DepthProfile
) -> tuple[ProfileComparison | None, DepthProfile | None]:
    """The comparison with the named baseline, or with the one the model's name finds; (None, None) when
    there is none to compare with. A baseline found is a promise to compare: a corrupt one, or one recorded
    with other items, dtype, layers or suites, raises (exit 2), never a profile that silently passes."""
    from pytest_layercheck.core.errors import BaselineError
    from pytest_layercheck.evaluation.baseline import BaselineStore

    store = BaselineStore(Path(args.baseline_dir))
    name = args.baseline or str(profile.model["name"])
    if args.no_compare or not (args.baseline or store.exists(name)):
        return None, None
    try:
        stored = store.load(name)
        return verdict.compare(stored, profile), stored
    except BaselineError as exc:
        if args.baseline:
            raise BaselineError(exc.problem, cli_words(exc.fix)) from exc
        raise BaselineError(
            f"found the baseline {store.path_for(name)} by the model's name, but cannot compare with it: {exc.problem}",
            f"{cli_words(exc.fix) or 'record it again with `layercheck baseline`'}; or pass "
            "--no-compare to only print the profile",
        ) from exc


def cli_words(fix: str | None) -> str | None:
    """A fix worded for pytest, in the command's own words: the baseline is re-recorded with
    ``layercheck baseline --update``, and the shared settings drop pytest's prefix (``--dtype``)."""
    import re

    from pytest_layercheck.evaluation.baseline import UPDATE_FLAG

    if not fix:
        return fix
    command = "`layercheck baseline --update`"
    fix = fix.replace(f"`pytest {UPDATE_FLAG}`", command).replace(UPDATE_FLAG, command)
    return re.sub(r"--layercheck-([a-z][a-z-]*)", r"--\1", fix)


def run_profile(args: argparse.Namespace) -> int:
    from pytest_layercheck.core.errors import BaselineError, ConfigError
    from pytest_layercheck.report.html_items import run_item_texts
    from pytest_layercheck.report.html_page import render_html
    from pytest_layercheck.report.terminal import terminal_renderable

    verdict = verdict_from(args)  # before the model loads: a typo should not cost a profile
    if args.no_compare and args.baseline:
        raise ConfigError(
            "--no-compare and --baseline contradict each other",
            "drop --no-compare to compare with the named baseline, or --baseline to only profile",
        )
    profile = compute_profile(args)
    try:
        comparison, stored = compare_with_baseline(args, verdict, profile)
    except BaselineError as exc:
        # The page says that the comparison was refused, and why; the exit status stays 2.
        refused = str(exc)
        write_outputs(
            args,
            html=lambda: render_html(profile, refused=refused, item_texts=run_item_texts(settings_from(args).suites)),
        )
        raise
    console.print(
        terminal_renderable(profile, comparison, [verdict.metric] if verdict.metric else None, baseline=stored)
    )
    if comparison is not None:
        from pytest_layercheck.evaluation.comparison import sensitivity_warning

        warning = sensitivity_warning(comparison)
        if warning:
            err_console.print(warning, style="yellow", highlight=False, markup=False)
    from pytest_layercheck.report.format import json_text
    from pytest_layercheck.report.json_report import build_json_report
    from pytest_layercheck.report.markdown import render_markdown

    write_outputs(
        args,
        lambda: json_text(build_json_report(profile, comparison)),
        lambda: render_markdown(profile, comparison),
        lambda: render_html(
            profile, comparison, baseline=stored, item_texts=run_item_texts(settings_from(args).suites)
        ),
    )
    if args.heatmap:
        from pytest_layercheck.report.heatmap import plot_layer_heatmap

        plot_layer_heatmap(profile, Path(args.heatmap))
        err_console.print(f"heatmap: {args.heatmap}")
    return 1 if comparison is not None and not comparison.passed else 0


def run_baseline(args: argparse.Namespace) -> int:
    """Write a missing baseline; merge into an existing one, replacing it only with ``--update``."""
    from pytest_layercheck.evaluation.baseline import BaselineStore

    store = BaselineStore(Path(args.baseline_dir))
    profile = compute_profile(args)
    name = args.name or str(profile.model["name"])
    result = store.save(profile, name, update=args.update)
    console.print(f"baseline {result.status}: {result.path}", highlight=False)
    for line in result.changes[:40]:
        console.print(f"  {line}", highlight=False, markup=False)
    if len(result.changes) > 40:
        console.print(f"  ... and {len(result.changes) - 40} more", highlight=False)
    if result.status != "unchanged":
        console.print(f"Review it and commit {result.path}.", highlight=False)
    return 0
