"""A real fine-tune scenario on a CPU: one fine-tune that breaks what the model knows, one that does not.

Starting from the default model (SmolLM2-135M-Instruct), this script fully fine-tunes chosen decoder
layers twice, on text it generates locally, and saves two candidate checkpoints (safetensors plus
tokenizer) that ``layercheck compare`` and the pytest guard must tell apart:

* ``harmful``: reasoning-style SFT pushed hard. Chain-of-thought arithmetic ("Let's think step by
  step ...") at a high learning rate on layers 3-8 and 22-29. Knowledge recall drops measurably.
* ``benign``: a few gentle steps at a tiny learning rate, on the same layers, on text the base model
  wrote itself (greedy continuations of everyday prompts), so the text is in distribution.

Everything is seeded. ``--compare`` then runs the guard (``compare_models`` on the built-in
knowledge suite, the base model as the baseline) on both candidates and prints both reports. With
``--compare`` the exit status is 0 exactly when the guard fails the harmful candidate and passes the
benign one.

    python examples/finetune_scenario.py --out scenario --compare          # the documented run
    python examples/finetune_scenario.py --out scenario --quick --compare  # the CI-sized run
    python examples/finetune_scenario.py --out one --quick --only harmful  # one candidate, no guard
    layercheck compare default scenario/harmful --suites knowledge --limit 0 --mode bands

Timings on a 2-core CPU are in ``examples/README.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Recipe:
    """One fine-tune: which layers train, for how long, how hard, on what text."""

    name: str
    layers: tuple[int, ...]
    steps: int
    lr: float
    batch: int
    data: str  # "cot": chain-of-thought arithmetic; "self": the base model's own continuations
    examples: int  # distinct training texts, cycled through in a seeded order


def layer_range(text: str) -> tuple[int, ...]:
    """``"3-8,22-29"`` -> (3, 4, ..., 8, 22, ..., 29)."""
    layers: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        start, _, end = part.partition("-")
        layers.extend(range(int(start), int(end or start) + 1))
    return tuple(sorted(set(layers)))


TRAINED_LAYERS = layer_range("3-8,22-29")
HARMFUL = Recipe("harmful", TRAINED_LAYERS, steps=100, lr=1e-3, batch=4, data="cot", examples=400)
BENIGN = Recipe("benign", TRAINED_LAYERS, steps=10, lr=1e-5, batch=4, data="self", examples=16)
#: The CI-sized variant: the same recipes with fewer, harder steps (see examples/README.md).
QUICK = {"harmful": {"steps": 10, "lr": 3e-3}, "benign": {"steps": 3}}

# --------------------------------------------------------------------------------------------- data

_COT_TEMPLATES = (
    (
        "+",
        lambda a, b: a + b,
        lambda a, b: f"{a} + {b // 10 * 10} = {a + b // 10 * 10}. {a + b // 10 * 10} + {b % 10} = {a + b}.",
    ),
    (
        "-",
        lambda a, b: a - b,
        lambda a, b: f"{a} - {b // 10 * 10} = {a - b // 10 * 10}. {a - b // 10 * 10} - {b % 10} = {a - b}.",
    ),
    (
        "*",
        lambda a, b: a * b,
        lambda a, b: (
            f"{a} * {b // 10} tens = {a * (b // 10) * 10}. {a} * {b % 10} = {a * (b % 10)}. "
            f"{a * (b // 10) * 10} + {a * (b % 10)} = {a * b}."
        ),
    ),
)


def cot_texts(count: int, seed: int) -> list[str]:
    """Chain-of-thought arithmetic in the style of reasoning SFT data: question, steps, answer."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        op, result, steps = rng.choice(_COT_TEMPLATES)
        a, b = rng.randint(20, 99), rng.randint(11, 19 if op == "*" else 99)
        if op == "-" and b > a:
            a, b = b, a
        texts.append(
            f"Question: What is {a} {op} {b}?\nLet's think step by step. {steps(a, b)} The answer is {result(a, b)}."
        )
    return texts


_EVERYDAY_PROMPTS = (
    "Here are a few tips for keeping houseplants healthy:",
    "A good breakfast can include",
    "When you travel by train, it helps to",
    "The best way to learn a new language is",
    "Writing a clear email starts with",
    "On a rainy weekend, families often",
    "To cook rice on the stove,",
    "A short description of a quiet village:",
    "Some simple ways to save energy at home are",
    "Before a job interview, you should",
    "The library in our town offers",
    "Walking every day is good for you because",
    "To make a cup of tea,",
    "A friendly note to a new neighbour:",
    "The main parts of a bicycle are",
    "Planning a small birthday party involves",
)


@torch.inference_mode()
def self_texts(model: Any, tokenizer: Any, count: int, new_tokens: int = 40) -> list[str]:
    """The base model's own greedy continuations of everyday prompts: text from its own distribution."""
    prompts = list(_EVERYDAY_PROMPTS[:count])
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(prompts, return_tensors="pt", padding=True)
        output = model.generate(
            **batch, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    finally:
        tokenizer.padding_side = side
    continuations = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return [f"{p}{c}" for p, c in zip(prompts, continuations, strict=True)]


# ----------------------------------------------------------------------------------------- training


def finetune(model: Any, tokenizer: Any, texts: Sequence[str], recipe: Recipe, seed: int) -> dict[str, Any]:
    """Full fine-tune of ``recipe.layers`` (everything else frozen) with AdamW; returns losses and time."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trained = [p for i in recipe.layers for p in model.model.layers[i].parameters()]
    for parameter in trained:
        parameter.requires_grad_(True)
    optimiser = torch.optim.AdamW(trained, lr=recipe.lr, weight_decay=0.0)
    rng = random.Random(seed)
    order: list[int] = []
    losses: list[float] = []
    model.train()
    torch.manual_seed(seed)
    started = time.perf_counter()
    for step in range(recipe.steps):
        if len(order) < recipe.batch:
            fresh = list(range(len(texts)))
            rng.shuffle(fresh)
            order.extend(fresh)
        batch_texts = [texts[order.pop()] for _ in range(recipe.batch)]
        batch = tokenizer(batch_texts, return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(round(loss.item(), 4))
        if step % 10 == 0 or step == recipe.steps - 1:
            print(
                f"  {recipe.name} step {step + 1:>3}/{recipe.steps}  loss {loss.item():.3f}  "
                f"{time.perf_counter() - started:6.1f} s",
                flush=True,
            )
    seconds = time.perf_counter() - started
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return {"seconds": round(seconds, 1), "first_loss": losses[0], "last_loss": losses[-1]}


def build_candidate(
    base: Any, tokenizer: Any, recipe: Recipe, out: Path, seed: int, self_data: list[str] | None = None
) -> dict[str, Any]:
    """Fine-tune a copy of ``base`` by ``recipe`` and save it (safetensors + tokenizer) to ``out/<name>``."""
    started = time.perf_counter()
    if recipe.data == "cot":
        texts = cot_texts(recipe.examples, seed)
    elif self_data is not None:
        texts = self_data
    else:
        texts = self_texts(base, tokenizer, recipe.examples)
    data_seconds = time.perf_counter() - started
    model = copy.deepcopy(base)
    stats = finetune(model, tokenizer, texts, recipe, seed)
    folder = out / recipe.name
    model.save_pretrained(folder)  # safetensors
    tokenizer.save_pretrained(folder)
    (folder / "layercheck-scenario.json").write_text(
        json.dumps({"recipe": asdict(recipe), "seed": seed, "example": texts[0], **stats}, indent=2) + "\n"
    )
    total = time.perf_counter() - started
    return {**stats, "data_seconds": round(data_seconds, 1), "total_seconds": round(total, 1), "folder": str(folder)}


# -------------------------------------------------------------------------------------------- guard


def guard(out: Path, limit: int | None, localise: str, width: int) -> tuple[bool, dict[str, Any]]:
    """Compare both candidates with the base on the knowledge suite; True when harmful fails and benign passes."""
    from pytest_layercheck.analysis.compare.models import CompareSettings, compare_models
    from pytest_layercheck.analysis.compare.render import render_compare_markdown, render_compare_terminal
    from pytest_layercheck.evaluation.result_cache import ResultCache
    from pytest_layercheck.evaluation.settings import ProfileSettings
    from pytest_layercheck.model.loading import load_model

    settings = CompareSettings(
        profile=ProfileSettings(suites=("knowledge",), limit=limit, sweep_limit=limit, mode="bands"), localise=localise
    )
    base = load_model("default", device="cpu")
    cache = ResultCache()
    outcome: dict[str, Any] = {}
    for name in ("harmful", "benign"):
        candidate = load_model(out / name, device="cpu")
        started = time.perf_counter()
        result = compare_models(base, candidate, settings, cache=cache)
        seconds = time.perf_counter() - started
        print(f"\n===== guard: {name} candidate ({seconds:.1f} s) =====")
        print(render_compare_terminal(result, width=width))
        (out / f"{name}-report.md").write_text(render_compare_markdown(result))
        (out / f"{name}-report.json").write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
        cell = result.comparison.cell("knowledge", "intact")
        outcome[name] = {
            "passed": result.passed,
            "base_acc": cell.baseline,
            "candidate_acc": cell.current,
            "p_value": cell.p_value,
            "verdicts": result.verdicts,
            "seconds": round(seconds, 1),
        }
        del candidate
    told_apart = (not outcome["harmful"]["passed"]) and outcome["benign"]["passed"]
    return told_apart, outcome


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("scenario"), help="folder for the two candidates")
    parser.add_argument("--quick", action="store_true", help="CI-sized: fewer, harder harmful steps (see QUICK)")
    parser.add_argument("--layers", default=None, help="layers to fine-tune, e.g. 3-8,22-29 (default: that)")
    parser.add_argument("--harmful-steps", type=int, default=None)
    parser.add_argument("--harmful-lr", type=float, default=None)
    parser.add_argument("--benign-steps", type=int, default=None)
    parser.add_argument("--benign-lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--compare", action="store_true", help="then run the guard on both candidates")
    parser.add_argument(
        "--guard-only",
        action="store_true",
        help="skip fine-tuning; run the guard on the candidates already in --out (implies --compare)",
    )
    parser.add_argument("--limit", type=int, default=0, help="knowledge items for the guard (0 = all 264)")
    parser.add_argument("--localise", default="bands,changed", help="layer groups to revert (see layercheck compare)")
    parser.add_argument("--width", type=int, default=130, help="report width in characters")
    parser.add_argument(
        "--only",
        choices=("harmful", "benign"),
        default=None,
        help="build this candidate alone (a one-off fine-tune to guard; not with --compare)",
    )
    args = parser.parse_args(argv)
    if args.only and (args.compare or args.guard_only):
        parser.error(
            f"--only {args.only} builds one candidate, but the guard compares both: "
            "drop --compare/--guard-only, or drop --only"
        )
    return args


def recipes(args: argparse.Namespace) -> tuple[Recipe, Recipe]:
    harmful, benign = HARMFUL, BENIGN
    if args.quick:
        harmful, benign = replace(harmful, **QUICK["harmful"]), replace(benign, **QUICK["benign"])
    if args.layers:
        layers = layer_range(args.layers)
        harmful, benign = replace(harmful, layers=layers), replace(benign, layers=layers)
    overrides = {"harmful": (args.harmful_steps, args.harmful_lr), "benign": (args.benign_steps, args.benign_lr)}
    steps, lr = overrides["harmful"]
    harmful = replace(harmful, steps=steps or harmful.steps, lr=lr or harmful.lr)
    steps, lr = overrides["benign"]
    benign = replace(benign, steps=steps or benign.steps, lr=lr or benign.lr)
    return harmful, benign


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from pytest_layercheck.analysis.localise.replacement import layer_span
    from pytest_layercheck.model.loading import load_model

    harmful, benign = recipes(args)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, Any] = {"threads": torch.get_num_threads()}
    if not args.guard_only:
        base = load_model("default", device="cpu", dtype="float32")
        print(f"loaded {base.name} in {base.load_seconds:.1f} s; {torch.get_num_threads()} CPU thread(s)")
        timings["load_seconds"] = round(base.load_seconds, 1)
        for recipe in (r for r in (harmful, benign) if args.only in (None, r.name)):
            print(
                f"fine-tuning {recipe.name}: {layer_span(recipe.layers)} ({len(recipe.layers)} layers), "
                f"{recipe.steps} steps x {recipe.batch} texts, lr {recipe.lr:g}, data {recipe.data}"
            )
            timings[recipe.name] = build_candidate(base.model, base.tokenizer, recipe, args.out, args.seed)
            print(f"  saved {timings[recipe.name]['folder']} ({timings[recipe.name]['total_seconds']} s in all)")
        timings["finetune_seconds"] = round(time.perf_counter() - started, 1)
        del base
    code = 0
    if args.compare or args.guard_only:
        guard_started = time.perf_counter()
        told_apart, outcome = guard(args.out, args.limit or None, args.localise, args.width)
        timings["guard"] = outcome
        timings["guard_seconds"] = round(time.perf_counter() - guard_started, 1)
        print(
            f"\nguard {'told the candidates apart' if told_apart else 'did NOT tell the candidates apart'}: "
            f"harmful {'passed' if outcome['harmful']['passed'] else 'failed'}, "
            f"benign {'passed' if outcome['benign']['passed'] else 'failed'}"
        )
        code = 0 if told_apart else 1
    timings["total_seconds"] = round(time.perf_counter() - started, 1)
    name = "guard-timings.json" if args.guard_only else "timings.json"
    (args.out / name).write_text(json.dumps(timings, indent=2, default=str) + "\n")
    if not args.guard_only:
        trained = ", ".join(f"{name} {timings[name]['seconds']} s" for name in ("harmful", "benign") if name in timings)
        print(
            f"timings: fine-tuning {timings['finetune_seconds']} s ({trained} of training), "
            f"total {timings['total_seconds']} s"
        )
    else:
        print(f"timings: guard {timings['guard_seconds']} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
