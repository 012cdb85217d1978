"""The ``layercheck`` command: profile a model, record a baseline, or check that a model loads.

    layercheck profile [MODEL]        depth-sensitivity profile, printed as a table
    layercheck baseline [MODEL]       record (or refresh) the baseline in baselines/
    layercheck info [MODEL]           load a model and show what layercheck sees

MODEL defaults to ``default`` (SmolLM2-135M-Instruct, fetched and cached on first use).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .errors import LayercheckError

console = Console(stderr=False)
err_console = Console(stderr=True)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default="default",
                        help="'default', a transformers folder, a .gguf file or a PEFT adapter folder")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, float32 on CPU), float32, bfloat16")
    parser.add_argument("--adapter-base", default=None, help="base model of a PEFT adapter, if not in its config")


def _add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suites", default="knowledge,reasoning,retrieval", help="comma-separated suites")
    parser.add_argument("--protocols", default="", help="overrides, e.g. knowledge=mc_text,reasoning=continuation")
    parser.add_argument("--limit", default=None, help="items per suite (0 = all; default %(default)s = built-in default)")
    parser.add_argument("--mode", default="layers", help="layers (default), bands or window:K")
    parser.add_argument("--bands", default="", help="e.g. shallow=0:0.3,middle=0.3:0.7,deep=0.7:1")
    parser.add_argument("--no-cache", action="store_true", help="recompute instead of reading the result cache")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layercheck", description="Layer-level capability profiles of language models.")
    commands = parser.add_subparsers(dest="command", required=True)

    profile = commands.add_parser("profile", help="print the depth-sensitivity profile of a model")
    _add_model_arguments(profile)
    _add_profile_arguments(profile)
    profile.add_argument("--baseline-dir", default="baselines", help="compare with the baseline here if one exists")
    profile.add_argument("--baseline", default=None, help="baseline name to compare with (default: the model name)")
    profile.add_argument("--json", dest="json_path", default=None, help="write a JSON report here")
    profile.add_argument("--markdown", default=None, help="write the markdown table here")
    profile.add_argument("--heatmap", default=None, help="write a per-layer heatmap PNG here (needs matplotlib)")

    baseline = commands.add_parser("baseline", help="record or refresh a model's baseline")
    _add_model_arguments(baseline)
    _add_profile_arguments(baseline)
    baseline.add_argument("--baseline-dir", default="baselines", help="folder of baseline files")
    baseline.add_argument("--name", default=None, help="baseline name (default: the model name)")
    baseline.add_argument("--update", action="store_true", help="allow replacing an existing, different baseline")

    info = commands.add_parser("info", help="load a model and show its layers, heads, bands and fingerprint")
    _add_model_arguments(info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "info":
            return _info(args)
        if args.command == "profile":
            return _profile(args)
        if args.command == "baseline":
            return _baseline(args)
    except LayercheckError as exc:
        err_console.print(f"[bold red]layercheck:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("[bold red]layercheck:[/] interrupted; nothing was written")
        return 130
    return 0


def _load(args: argparse.Namespace):  # noqa: ANN202 - LoadedModel, imported lazily for a fast --help
    from .loading import load_model

    with err_console.status(f"loading model {args.model!r}") as status:
        loaded = load_model(args.model, device=args.device, dtype=args.dtype, adapter_base=args.adapter_base,
                            progress=lambda message: status.update(message))
    err_console.print(f"loaded {loaded.name} on {loaded.device} ({loaded.load_seconds:.1f} s)")
    return loaded


def _info(args: argparse.Namespace) -> int:
    import torch

    from .architecture import get_adapter
    from .bands import DepthBands

    loaded = _load(args)
    adapter = get_adapter(loaded.model)
    bands = DepthBands().as_dict(adapter.num_layers)
    for key, value in loaded.describe().items():
        console.print(f"{key:>12}: {value}")
    console.print(f"{'heads':>12}: {adapter.num_heads} query / {adapter.num_kv_heads} key-value, head dim {adapter.head_dim}")
    for band, layers in bands.items():
        span = f"{layers[0]}–{layers[-1]}" if layers else "(empty)"
        console.print(f"{band:>12}: layers {span}")
    prompt = "The capital of France is"
    inputs = loaded.tokenizer(prompt, return_tensors="pt").to(loaded.device)
    with torch.inference_mode():
        output = loaded.model.generate(**inputs, max_new_tokens=4, do_sample=False)
    continuation = loaded.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    console.print(f"{'check':>12}: {prompt!r} -> {continuation!r}")
    return 0


def _settings(args: argparse.Namespace):  # noqa: ANN202
    from .bands import DepthBands
    from .profiler import ProfileSettings
    from .session import parse_limit, parse_protocols

    return ProfileSettings(
        suites=tuple(s.strip() for s in args.suites.split(",") if s.strip()),
        protocols=parse_protocols(args.protocols),
        mode=args.mode,
        bands=DepthBands.parse(args.bands) if args.bands else DepthBands(),
        limit=parse_limit(args.limit),
    )


@contextmanager
def _progress_bar() -> Iterator[object]:
    with Progress(
        TextColumn("[bold]{task.description:<32}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False,
    ) as progress:
        task = progress.add_task("profiling", total=None)

        def hook(description: str, done: int, total: int) -> None:
            progress.update(task, description=description, completed=done, total=total)

        yield hook


def _compute_profile(args: argparse.Namespace):  # noqa: ANN202
    from .profiler import build_profile
    from .result_cache import ResultCache

    loaded = _load(args)
    cache = ResultCache(enabled=not args.no_cache)
    started = time.perf_counter()
    with _progress_bar() as hook:
        profile = build_profile(loaded, _settings(args), cache=cache, progress=hook)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    err_console.print(f"profile: {seconds:.1f} s ({cache.hits} evaluations from cache, {cache.misses} computed)")
    return profile


def _profile(args: argparse.Namespace) -> int:
    from .baseline import BaselineStore
    from .comparison import Tolerance, compare_profiles
    from .errors import BaselineError
    from .report.terminal import render_terminal

    profile = _compute_profile(args)
    comparison = None
    store = BaselineStore(Path(args.baseline_dir))
    name = args.baseline or str(profile.model["name"])
    if store.exists(name):
        try:
            comparison = compare_profiles(store.load(name), profile, tolerance=Tolerance.parse("0.05"), alpha=0.05)
        except BaselineError as exc:
            err_console.print(f"[yellow]not compared with baseline {name!r}:[/] {exc}", highlight=False)
    console.print(render_terminal(profile, comparison, width=console.width), highlight=False)
    if args.json_path:
        from .report.json_report import write_json_report

        write_json_report(Path(args.json_path), profile, comparison)
        err_console.print(f"JSON report: {args.json_path}")
    if args.markdown:
        from .atomic import atomic_write_text
        from .report.markdown import render_markdown

        atomic_write_text(Path(args.markdown), render_markdown(profile, comparison))
        err_console.print(f"markdown: {args.markdown}")
    if args.heatmap:
        from .report.heatmap import plot_layer_heatmap

        plot_layer_heatmap(profile, Path(args.heatmap))
        err_console.print(f"heatmap: {args.heatmap}")
    return 1 if comparison is not None and not comparison.passed else 0


def _baseline(args: argparse.Namespace) -> int:
    from .baseline import BaselineStore

    profile = _compute_profile(args)
    store = BaselineStore(Path(args.baseline_dir))
    name = args.name or str(profile.model["name"])
    result = store.save(profile, name, update=args.update)
    console.print(f"baseline {result.status}: {result.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
