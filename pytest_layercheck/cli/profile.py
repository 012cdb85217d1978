"""``layercheck profile`` and ``layercheck baseline``: compute a depth profile, print it or record it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .common import add_model_arguments, console, err_console, load, progress_bar

if TYPE_CHECKING:
    from ..comparison import Verdict
    from ..profile_data import DepthProfile
    from ..profiler import ProfileSettings


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    """What a profile computes; shared by every command that profiles."""
    parser.add_argument("--suites", default="knowledge,reasoning,retrieval", help="comma-separated suites")
    parser.add_argument("--protocols", default="", help="overrides, e.g. knowledge=mc_text,reasoning=continuation")
    parser.add_argument("--limit", default=None,
                        help="items per suite scored intact: N, or suite=N,... (0 = all; default: all knowledge "
                             "and reasoning items, 40 retrieval)")
    parser.add_argument("--sweep-limit", default=None,
                        help="leading items per suite scored with layers removed: N, or suite=N,... (0 = all; "
                             "default: knowledge 40, reasoning 40, retrieval 10)")
    parser.add_argument("--mode", default="layers", help="layers (default), bands or window:K")
    parser.add_argument("--bands", default="", help="e.g. shallow=0:0.3,middle=0.3:0.7,deep=0.7:1")
    parser.add_argument("--no-cache", action="store_true", help="recompute instead of reading the result cache")


def register(subparsers: argparse._SubParsersAction) -> None:
    profile = subparsers.add_parser("profile", help="print the depth-sensitivity profile of a model")
    add_model_arguments(profile)
    add_profile_arguments(profile)
    profile.add_argument("--baseline-dir", default="baselines", help="compare with the baseline here if one exists")
    profile.add_argument("--baseline", default=None, help="baseline name to compare with (default: the model name)")
    add_verdict_arguments(profile)
    profile.add_argument("--json", dest="json_path", default=None, help="write a JSON report here")
    profile.add_argument("--markdown", default=None, help="write the markdown table here")
    profile.add_argument("--heatmap", default=None, help="write a per-layer heatmap PNG here (needs matplotlib)")
    profile.set_defaults(handler=run_profile)

    baseline = subparsers.add_parser("baseline", help="record or refresh a model's baseline")
    add_model_arguments(baseline)
    add_profile_arguments(baseline)
    baseline.add_argument("--baseline-dir", default="baselines", help="folder of baseline files")
    baseline.add_argument("--name", default=None, help="baseline name (default: the model name)")
    baseline.add_argument("--update", action="store_true",
                          help="replace an existing baseline that differs (a missing one is always written)")
    baseline.set_defaults(handler=run_baseline)


def add_verdict_arguments(parser: argparse.ArgumentParser) -> None:
    """How a comparison with a baseline is judged; shared by every command that compares."""
    parser.add_argument("--max-drop", default="0.05",
                        help="tolerated drop: absolute (0.05), relative (5%%) or both (0.02,5%%)")
    parser.add_argument("--alpha", default="0.05", help="family-wise significance level of the paired tests")
    parser.add_argument("--correction", default="holm", choices=("holm", "bonferroni", "none"),
                        help="multiplicity correction over the compared cells (default: holm)")
    parser.add_argument("--allow-precision-mismatch", action="store_true",
                        help="compare with a baseline measured in another dtype or device type")
    parser.add_argument("--strict-power", action="store_true",
                        help="an error when a cell cannot detect a drop of the tolerance's size with 80%% power")


def verdict_from(args: argparse.Namespace) -> Verdict:
    """The judging options of a command, checked before any model is loaded."""
    from ..comparison import Tolerance, Verdict
    from ..session import parse_alpha

    return Verdict(tolerance=Tolerance.parse(args.max_drop), alpha=parse_alpha(args.alpha),
                   correction=args.correction, allow_precision_mismatch=args.allow_precision_mismatch,
                   strict_power=args.strict_power)


def settings_from(args: argparse.Namespace) -> ProfileSettings:
    from ..bands import DepthBands
    from ..profiler import ProfileSettings
    from ..profiler import DEFAULT_SWEEP_LIMITS
    from ..session import parse_limit, parse_protocols

    from ..suites.builtin import resolve_suites

    suites = tuple(s.strip() for s in args.suites.split(",") if s.strip())
    resolve_suites(suites)  # every suite is read and checked before any model loads
    return ProfileSettings(
        suites=suites,
        protocols=parse_protocols(args.protocols),
        mode=args.mode,
        bands=DepthBands.parse(args.bands) if args.bands else DepthBands(),
        limit=parse_limit(args.limit),
        sweep_limit=parse_limit(args.sweep_limit, DEFAULT_SWEEP_LIMITS),
    )


def compute_profile(args: argparse.Namespace, spec: str | None = None) -> DepthProfile:
    """Load the model named by ``spec`` (default: ``args.model``) and profile it with a progress bar."""
    from ..profiler import build_profile
    from ..result_cache import ResultCache

    settings = settings_from(args)  # suites read and checked before the model loads
    loaded = load(spec or args.model, args)
    cache = ResultCache(enabled=not args.no_cache)
    started = time.perf_counter()
    with progress_bar() as hook:
        profile = build_profile(loaded, settings, cache=cache, progress=hook)
    seconds = time.perf_counter() - started
    err_console.print(f"profile: {seconds:.1f} s (evaluations: {cache.summary()})", highlight=False)
    return profile


def run_profile(args: argparse.Namespace) -> int:
    from ..baseline import BaselineStore
    from ..errors import BaselineError
    from ..report.terminal import terminal_renderable

    verdict = verdict_from(args)  # before the model loads: a typo should not cost a profile
    profile = compute_profile(args)
    comparison = stored = None
    store = BaselineStore(Path(args.baseline_dir))
    name = args.baseline or str(profile.model["name"])
    if store.exists(name):
        stored = store.load(name)  # a corrupt baseline is an error (exit 2), never silently skipped
        try:
            comparison = verdict.compare(stored, profile)
        except BaselineError as exc:
            if args.baseline:
                raise  # asked for by name: a comparison that cannot be made is an error (exit 2)
            err_console.print(f"[yellow]not compared with baseline {name!r} (found by model name):[/] {exc}",
                              highlight=False)
            stored = None
    elif args.baseline:
        store.load(name)  # raises: the named baseline does not exist
    console.print(terminal_renderable(profile, comparison, baseline=stored))
    if comparison is not None:
        from ..comparison import sensitivity_warning

        warning = sensitivity_warning(comparison)
        if warning:
            err_console.print(warning, style="yellow", highlight=False, markup=False)
    if args.json_path:
        from ..report.json_report import write_json_report

        write_json_report(Path(args.json_path), profile, comparison)
        err_console.print(f"JSON report: {args.json_path}")
    if args.markdown:
        from ..atomic import atomic_write_text
        from ..report.markdown import render_markdown

        atomic_write_text(Path(args.markdown), render_markdown(profile, comparison))
        err_console.print(f"markdown: {args.markdown}")
    if args.heatmap:
        from ..report.heatmap import plot_layer_heatmap

        plot_layer_heatmap(profile, Path(args.heatmap))
        err_console.print(f"heatmap: {args.heatmap}")
    return 1 if comparison is not None and not comparison.passed else 0


def run_baseline(args: argparse.Namespace) -> int:
    """Write a missing baseline; merge into an existing one, replacing it only with ``--update``."""
    from ..baseline import BaselineStore

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
