"""The GPU benchmark's parts, run small on the CPU (the script itself needs CUDA or --device cpu)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
from repo_files import REPO
from small_suites import mixed_suite
from tiny_models import tiny_tokenizer

from pytest_layercheck.scoring.protocols import prepare

SCRIPT = REPO / "benchmarks" / "gpu_sweep.py"


def gpu_sweep():
    spec = importlib.util.spec_from_file_location("gpu_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_sweep"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_it_refuses_without_cuda(capsys, monkeypatch) -> None:
    bench = gpu_sweep()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main([]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_rows_on_a_small_random_llama() -> None:
    bench = gpu_sweep()
    device = torch.device("cpu")
    model = bench.random_llama(
        device, torch.float32, vocab=128, layers=3, hidden=32, intermediate=64, heads=4, kv_heads=2
    )
    assert len(model.model.layers) == 3 and model.config.hidden_size == 32
    prepared = prepare(mixed_suite(3), "mc_text", tiny_tokenizer())
    peak = bench.matmul_peak(device, torch.float32, size=64, repeats=1)
    rows = bench.run_rows(model, "tiny", [prepared, prepared], device, deadline=float("inf"), compare=True, peak=peak)
    assert [r.suite for r in rows] == ["sweep", "sweep", "total"]
    first = rows[0]
    assert first.evaluations == 4 and first.flops > 0 and first.flips == 0 and first.max_delta < 1e-5
    assert len(first.cells(peak)) == len(bench.HEADERS)


@pytest.mark.slow
def test_every_benchmark_parses_its_own_defaults() -> None:
    """Each script's ``--help`` works and the default sweep limits parse (a default built from a setting
    that may be None once broke ``python benchmarks/depth_sweep.py`` before it measured anything)."""
    gpu_sweep()  # puts the sibling depth_sweep on sys.path
    import depth_sweep

    scripts = sorted(SCRIPT.parent.glob("*.py"))
    assert {"depth_sweep.py", "gpu_sweep.py", "grouped_sdpa.py", "wait_policy.py"} <= {s.name for s in scripts}
    running = {
        script.name: subprocess.Popen(
            [sys.executable, str(script), "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for script in scripts
    }
    for name, process in running.items():  # side by side: each spends its seconds importing torch
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0 and "usage:" in stdout, (name, stderr)
    from pytest_layercheck.evaluation.settings import DEFAULT_SWEEP_LIMITS

    assert depth_sweep.parse_limits(depth_sweep.SWEEP_LIMITS_TEXT) == DEFAULT_SWEEP_LIMITS


@pytest.mark.slow
def test_the_memory_benchmark_counts_each_weight_once_and_sees_an_allocation() -> None:
    """``benchmarks/profile_memory.py``: tied embeddings count once in the weights, and a 64 MiB
    tensor shows in the phase it lived in, in the resident set and (with glibc) the live heap."""
    from tiny_models import tiny_model

    spec = importlib.util.spec_from_file_location("profile_memory", SCRIPT.parent / "profile_memory.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model = tiny_model("llama")
    model.lm_head.weight = model.model.embed_tokens.weight  # tied, as in SmolLM2
    expected = sum(p.numel() * p.element_size() for p in model.parameters())  # one entry per shared tensor
    expected += sum(b.numel() * b.element_size() for b in model.buffers())
    assert bench.weights_bytes(model) == expected

    # In a fresh process: a long-lived one (a test worker) may hold freed pages that the tensor reuses.
    probe = (
        "import importlib.util, json, sys, torch\n"
        f"spec = importlib.util.spec_from_file_location('profile_memory', {str(SCRIPT.parent / 'profile_memory.py')!r})\n"
        "bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)\n"
        "sampler = bench.Sampler()\n"
        "sampler.enter('before'); sampler.enter('holding')\n"
        "held = torch.ones(16 * 2**20)  # 64 MiB, written so that its pages are resident\n"
        "sampler.sample(); del held; sampler.enter('after')\n"
        "print(json.dumps({'peaks': sampler.peaks, 'heap': sampler.heap is not None}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    peaks = measured["peaks"]
    assert peaks["holding"][0] - peaks["before"][0] >= 0.055, peaks
    if measured["heap"]:
        assert peaks["holding"][1] - peaks["before"][1] >= 0.06, peaks
