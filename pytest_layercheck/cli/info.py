"""``layercheck info``: load a model and show its layers, heads, bands, fingerprint and a sanity continuation."""

from __future__ import annotations

import argparse
from typing import Any, cast

from pytest_layercheck.cli.common import add_subcommand, console, load


def register(subparsers: argparse._SubParsersAction) -> None:
    add_subcommand(
        subparsers,
        "info",
        help="load a model and show its layers, heads, bands and fingerprint",
        handler=run,
        model=True,
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from pytest_layercheck.data.bands import DepthBands

    loaded = load(args.model, args)
    adapter = loaded.adapter
    default = DepthBands()
    bands = {name: default.layers(name, adapter.num_layers) for name in default.names}  # may be empty: shown as such
    for key, value in loaded.describe().items():
        console.print(f"{key:>12}: {value}")
    console.print(
        f"{'heads':>12}: {adapter.num_heads} query / {adapter.num_kv_heads} key-value, head dim {adapter.head_dim}"
    )
    for band, layers in bands.items():
        span = f"{layers[0]}–{layers[-1]}" if layers else "(empty)"
        console.print(f"{band:>12}: layers {span}")
    prompt = "The capital of France is"
    inputs = loaded.tokenizer(prompt, return_tensors="pt").to(loaded.device)
    with torch.inference_mode():
        # generate comes from the GenerationMixin every causal LM class mixes in; the stubs do not say so
        output = cast(Any, loaded.model).generate(**inputs, max_new_tokens=4, do_sample=False)
    continuation = loaded.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    console.print(f"{'check':>12}: {prompt!r} -> {continuation!r}")
    return 0
