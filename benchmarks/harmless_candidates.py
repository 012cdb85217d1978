"""Harmless candidates of the default model against its committed baseline, at the default settings.

Seeded copies of SmolLM2-135M-Instruct with relative weight noise (every decoder weight w becomes
w * (1 + level * N(0, 1))) are profiled exactly as ``layercheck profile`` profiles a model, and judged by
the session's verdict (every cell, shift cells included, Holm over all of them). A harmless candidate must
pass; the script prints, per candidate, the verdict, the largest cell change and the smallest adjusted p,
and exits 1 if any candidate failed.

    python benchmarks/harmless_candidates.py --levels 1e-4,1e-3 --seeds 1,2

It takes one default profile per candidate (minutes each on a 2-core CPU); results go to
``benchmarks/RESULTS.md`` by hand, with the machine and date.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

from pytest_layercheck.evaluation.baseline import BaselineStore
from pytest_layercheck.evaluation.comparison import Verdict
from pytest_layercheck.evaluation.profiler import build_profile
from pytest_layercheck.evaluation.result_cache import ResultCache
from pytest_layercheck.evaluation.settings import ProfileSettings
from pytest_layercheck.model.loading import LoadedModel, load_model

REPO = Path(__file__).resolve().parents[1]


def noisy_copy(loaded: LoadedModel, original: dict[str, torch.Tensor], level: float, seed: int) -> LoadedModel:
    """``loaded`` with its decoder weights set to the original ones times ``1 + level * N(0, 1)``, seeded."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in loaded.model.named_parameters():
            if name in original:
                noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.copy_(original[name] * (1 + level * noise))
    return dataclasses.replace(loaded)  # a new LoadedModel: its fingerprint is the noisy weights'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1e-4,1e-3", help="relative noise levels, comma-separated")
    parser.add_argument("--seeds", default="1,2", help="noise seeds, comma-separated")
    args = parser.parse_args(argv)
    baseline = BaselineStore(REPO / "baselines").load("smollm2-135m-instruct")
    loaded = load_model("default")
    original = {name: p.detach().clone() for name, p in loaded.model.named_parameters() if ".layers." in name}
    failed = 0
    with tempfile.TemporaryDirectory() as cache_dir:
        for level in (float(x) for x in args.levels.split(",")):
            for seed in (int(x) for x in args.seeds.split(",")):
                start = time.perf_counter()
                candidate = noisy_copy(loaded, original, level, seed)
                profile = build_profile(candidate, ProfileSettings(), cache=ResultCache(Path(cache_dir)))
                comparison = Verdict().compare(baseline, profile)
                largest = max(comparison.cells, key=lambda c: abs(c.delta))
                smallest = min(comparison.cells, key=lambda c: c.p_adjusted)
                failed += not comparison.passed
                print(
                    f"noise {level:g} seed {seed}: {'passed' if comparison.passed else 'FAILED'} "
                    f"({len(comparison.cells)} cells; largest change {largest.label} {largest.delta:+.4f}; "
                    f"smallest adjusted p {smallest.label} {smallest.p_adjusted:.3g}; "
                    f"{time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
