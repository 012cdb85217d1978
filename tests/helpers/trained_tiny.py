"""A tiny Llama trained in seconds to memorise a small fact suite, plus damaged and noisy variants.

Plugin tests need a model whose capability is real (so damaging layers measurably lowers accuracy)
and cheap (so a full per-layer profile runs in a second). Random weights sit at chance, where every
change is noise; a few hundred optimiser steps on the suite's own answers fix that.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import yaml
from run_shared import once_per_run
from tiny_models import tiny_model, tiny_tokenizer

COLOURS = ["red", "blue", "gold", "pink", "grey", "teal", "lime", "navy"]


def fact_suite_items(n: int = 48, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        choices = rng.sample(COLOURS, 4)
        gold = rng.randrange(4)
        items.append(
            {
                "id": f"fact-{i:03d}",
                "context": f"Item {i} is",
                "domain": "colours",
                "kind": "memorised",
                "choices": choices,
                "gold": gold,
                "target": choices[gold],
            }
        )
    return items


def write_fact_suite(path: Path, n: int = 48) -> Path:
    """A knowledge suite in the project's YAML format, scored by full-text multiple choice."""
    suite = {
        "name": "facts",
        "capability": "knowledge",
        "description": "Facts a tiny test model memorised.",
        "default_protocol": "mc_text",
        "protocols": {"mc_text": {"template": "{context}"}, "continuation": {"template": "{context}"}},
        "items": fact_suite_items(n),
    }
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def train_fact_model(n: int = 48, steps: int = 300, seed: int = 0) -> torch.nn.Module:
    """Teach a 6-layer tiny Llama to continue every ``Item i is`` with its gold colour."""
    model = tiny_model("llama", layers=6, seed=seed).train()
    tokenizer = tiny_tokenizer()
    texts = [f"{item['context']} {item['target']}" for item in fact_suite_items(n)]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(seed)
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        # Unclipped, a loss spike near step 200 left a 16-fact model at 4 of 16 exact matches on an Intel
        # Xeon (rounding differs between CPUs): too few for a damaged copy to fail significantly.
        # Clipped, greedy decoding there gave all 16 (and all 48 at 300 steps).
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
    return model.eval()


def shared_fact_model(folder: Path, n: int = 48, steps: int = 300, seed: int = 0) -> torch.nn.Module:
    """:func:`train_fact_model`, trained once per test run and shared by its xdist workers through
    ``folder`` (the run's shared folder; see :func:`run_shared.once_per_run`)."""
    from transformers import AutoModelForCausalLM

    def make(target: Path) -> None:
        train_fact_model(n, steps, seed).save_pretrained(target)

    return AutoModelForCausalLM.from_pretrained(once_per_run(folder, f"fact-model-{n}-{steps}-{seed}", make)).eval()


def save(model: torch.nn.Module, folder: Path) -> Path:
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def perturbed(model: torch.nn.Module, layers: list[int], scale: float, seed: int = 1) -> torch.nn.Module:
    """A copy with Gaussian noise of ``scale`` times each weight's std added to the given layers."""
    import copy

    damaged = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for index in layers:
            for parameter in damaged.model.layers[index].parameters():
                noise = torch.randn(parameter.shape, generator=generator) * parameter.std() * scale
                parameter.add_(noise)
    return damaged
