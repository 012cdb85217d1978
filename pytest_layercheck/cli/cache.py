"""``layercheck cache show|verify|prune``: inspect, check and clean the result cache.

layercheck cache show                    where it is, its mode and key, entries per model
layercheck cache verify [--delete]       check every entry (signature, schema, outcomes); exit 2 if any fails
layercheck cache prune [--older-than D] [--all] [--dry-run]
                                         delete failing entries, leftovers of interrupted writes, old entries
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from pytest_layercheck.analysis.arguments import count
from pytest_layercheck.cli import EXIT_ERROR, EXIT_PASSED
from pytest_layercheck.cli.common import add_subcommand, console, err_console


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_subcommand(
        subparsers,
        "cache",
        help="show, verify or prune the result cache",
        description="Inspect, check and clean the result cache (see the README's "
        "Reliability section for what a shared CI cache may hold).",
        handler=run,
    )
    actions = parser.add_subparsers(dest="action", required=True)
    show = add_subcommand(actions, "show", help="where the cache is, its mode and signing key, entries per model")
    verify = add_subcommand(actions, "verify", help="check every entry; exit 2 if any fails")
    verify.add_argument("--delete", action="store_true", help="delete the entries that fail")
    prune = add_subcommand(
        actions, "prune", help="delete failing entries, leftovers of interrupted writes, old entries"
    )
    prune.add_argument(
        "--older-than",
        type=count,
        default=None,
        metavar="DAYS",
        help="also delete entries written more than DAYS days ago",
    )
    prune.add_argument("--all", action="store_true", help="delete every entry")
    prune.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    for sub in (show, verify, prune):
        sub.add_argument(
            "--cache-dir", default=None, help="the results folder (default: $LAYERCHECK_CACHE_DIR/results)"
        )


def run(args: argparse.Namespace) -> int:
    from pytest_layercheck.evaluation.result_cache import ResultCache

    cache = ResultCache(Path(args.cache_dir) if args.cache_dir else None, mode="readwrite")
    return {"show": _show, "verify": _verify, "prune": _prune}[args.action](cache, args)


def _show(cache, args: argparse.Namespace) -> int:  # noqa: ANN001 - ResultCache, imported lazily
    from pytest_layercheck.evaluation.result_cache import resolve_mode, signing_key

    files = list(cache.files())
    size = sum(path.lstat().st_size for path in files)  # a link's own size: nothing in the cache is followed
    console.print(f"folder   {cache.folder}")
    console.print(f"mode     {resolve_mode()} (set with $LAYERCHECK_CACHE_MODE: readwrite, readonly, off)")
    console.print(f"key      {signing_key()[1]}")
    console.print(
        f"entries  {len(files)} ({size / 1e6:.1f} MB); {len(cache.leftovers())} leftovers of interrupted writes"
    )
    models: Counter[tuple[str, str]] = Counter()
    failing = 0
    for path in files:
        found = cache.check_file(path)
        if found.problem is not None or found.identity is None:
            failing += 1
            continue
        models[(str(found.identity.get("fingerprint", "?")), str(found.identity.get("suite_hash", "?")))] += 1
    for (fingerprint, suite), n in sorted(models.items()):
        console.print(f"  model {fingerprint[:19]}…  suite {suite[:19]}…  {n} evaluations")
    if failing:
        console.print(f"[yellow]{failing} entries fail their checks[/]: `layercheck cache verify` lists them")
    return EXIT_PASSED


def _verify(cache, args: argparse.Namespace) -> int:  # noqa: ANN001
    bad = [found for found in map(cache.check_file, cache.files()) if found.problem is not None]
    for found in bad:
        console.print(f"[red]bad[/] {found.path}: {found.problem}", highlight=False)
        if args.delete:
            cache.remove(found.path)
    total = sum(1 for _ in cache.files()) + (len(bad) if args.delete else 0)
    console.print(
        f"{total - len(bad)} of {total} entries sound" + (f"; {len(bad)} deleted" if args.delete and bad else "")
    )
    if bad and not args.delete:
        err_console.print(
            "[bold red]layercheck:[/] the result cache holds entries that fail their checks "
            "(they are ignored and recomputed on use)\n  How to fix: `layercheck cache verify "
            "--delete` or `layercheck cache prune`",
            highlight=False,
        )
        return EXIT_ERROR
    return EXIT_PASSED


def _prune(cache, args: argparse.Namespace) -> int:  # noqa: ANN001
    from pytest_layercheck.evaluation.result_cache import age_days

    doomed: list[tuple[Path, str]] = [(path, "leftover of an interrupted write") for path in cache.leftovers()]
    for path in cache.files():
        if args.all:
            doomed.append((path, "--all"))
        elif args.older_than is not None and age_days(path) > args.older_than:
            doomed.append((path, f"older than {args.older_than} days"))
        else:
            problem = cache.check_file(path).problem
            if problem is not None:
                doomed.append((path, problem))
    for path, why in doomed:
        console.print(f"{'would delete' if args.dry_run else 'deleted'} {path} ({why})", highlight=False)
        if not args.dry_run:
            cache.remove(path)  # a link itself, never what it points to
    console.print(f"{len(doomed)} files {'to delete' if args.dry_run else 'deleted'}")
    return EXIT_PASSED
