"""Throughput of the scoring engine on a real model (default: the converted SmolLM2-135M-Instruct).

    python benchmarks/scoring_throughput.py [--model default|PATH] [--items 100] [--threads N]
    python benchmarks/scoring_throughput.py --builtin reasoning,knowledge,retrieval [--limit 40] [--threads N]

Reports items/s for mc_text (4 choices, ~40-token prompts), mc_letters, continuation and
generate_until, separating preparation (once per suite) from execution (once per ablation), and,
for comparison, a naive lm-eval-style run of mc_text (every context+choice as its own
right-padded sequence, logits at every position).

``--builtin``: the built-in few-shot suites under their default protocol (or ``--protocol``),
scored alternately with and without shared-prefix reuse (``score(..., share_prefix=...)``) in the
same process, ``--repeats`` times each, with the 1-minute load average at every run (another
process may be using the CPU) and the largest log-likelihood difference between the two modes.
``--model default`` loads the package's default model (``LAYERCHECK_CACHE_DIR`` locates it).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring.protocols import prepare, score
from pytest_layercheck.suites.schema import ProtocolSettings, Suite, SuiteItem

SUBJECTS = ["the capital of", "the largest city in", "the official language of", "the currency used in"]
PLACES = ["France", "Japan", "Brazil", "Kenya", "Canada", "Norway", "India", "Mexico", "Egypt", "Chile"]
ANSWERS = [
    "Paris",
    "Tokyo and the surrounding area",
    "the Brazilian real",
    "Swahili",
    "Ottawa",
    "Oslo",
    "Hindi",
    "Mexico City",
]


def synthetic_suite(n: int) -> Suite:
    """Four-way items with prompts of roughly 40 tokens and choices of 1-6 tokens."""
    items = []
    for i in range(n):
        subject, place = SUBJECTS[i % len(SUBJECTS)], PLACES[i % len(PLACES)]
        context = (
            f"The following question is about world geography and general knowledge (item {i}). "
            f"Read it carefully and answer it. Which of the following is {subject} {place}?"
        )
        choices = tuple(ANSWERS[(i + k) % len(ANSWERS)] for k in range(4))
        items.append(
            SuiteItem(
                id=f"b{i}", context=context, domain="geo", kind="mc", choices=choices, gold=i % 4, target=choices[i % 4]
            )
        )
    protocols = {
        "mc_text": ProtocolSettings(template="Question: {context}\nAnswer:"),
        "mc_letters": ProtocolSettings(template="Question: {context}\n{choices_block}\nAnswer:"),
        "continuation": ProtocolSettings(template="Question: {context}\nAnswer:"),
        "generate_until": ProtocolSettings(template="Question: {context}\nAnswer:", until=("\n",), max_gen_toks=16),
    }
    return Suite("bench", "knowledge", "", tuple(items), protocols, "mc_text")


@torch.inference_mode()
def naive_mc_text(model, prepared, batch: int) -> float:
    """lm-eval's own scheme for comparison: every (context, continuation) as a full sequence."""
    ll = prepared.loglikelihood
    seqs = [ll.contexts[c] + cont for c, cont in zip(ll.request_context, ll.continuations)]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    start = time.perf_counter()
    for b in range(0, len(order), batch):
        group = [seqs[i][:-1] for i in order[b : b + batch]]
        width = len(group[0])
        ids = torch.zeros((len(group), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(group):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
    return time.perf_counter() - start


def builtin_prefix_sharing(
    model, tokenizer, names: list[str], protocol: str | None, limit: int, repeats: int, token_budget: int | None
) -> None:
    """items/s of built-in suites with and without shared-prefix reuse, runs interleaved."""
    from pytest_layercheck.suites.builtin import load_builtin_suite

    runtime = ModelRuntime.of(model)
    for name in names:
        prepared = prepare(load_builtin_suite(name).limited(limit), protocol, tokenizer)
        engine = prepared.loglikelihood or prepared.generation
        seqs = engine.contexts if prepared.loglikelihood else engine.prompts
        lengths = sorted(map(len, seqs))
        print(
            f"{name} ({prepared.protocol}, {len(prepared.items)} items): prompts {lengths[0]}-{lengths[-1]} tokens "
            f"(median {lengths[len(lengths) // 2]}), shared prefix {len(engine.prefix)} tokens"
        )
        times: dict[bool, list[float]] = {False: [], True: []}
        results = {}
        for run in range(repeats + 1):  # the first round warms up (and builds the plan)
            for share in (False, True):
                load = os.getloadavg()[0]
                start = time.perf_counter()
                results[share] = score(runtime, prepared, token_budget=token_budget, share_prefix=share)
                elapsed = time.perf_counter() - start
                if run:
                    times[share].append(elapsed)
                    print(
                        f"  share_prefix={share!s:5s} {elapsed:6.2f}s = {len(prepared.items) / elapsed:6.2f} items/s "
                        f"(load {load:.2f})"
                    )
        best = {share: len(prepared.items) / min(t) for share, t in times.items()}
        diff = max(
            (
                abs(a - b)
                for x, y in zip(results[False].outcomes, results[True].outcomes)
                for a, b in zip(x.detail.get("loglikelihoods", []), y.detail.get("loglikelihoods", []))
            ),
            default=0.0,
        )
        same = all(x.scores == y.scores for x, y in zip(results[False].outcomes, results[True].outcomes))
        print(
            f"  best: {best[False]:.2f} -> {best[True]:.2f} items/s ({best[True] / best[False]:.2f}x); "
            f"max |ll difference| {diff:.2e}; identical metrics: {same}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default", help="'default' or any spec layercheck can load")
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--token-budget", type=int, default=None)
    parser.add_argument("--builtin", default=None, help="comma-separated built-in suites: compare share_prefix on/off")
    parser.add_argument("--protocol", default=None, help="with --builtin: protocol (default: each suite's own)")
    parser.add_argument("--limit", type=int, default=40, help="with --builtin: items per suite")
    parser.add_argument("--repeats", type=int, default=2, help="with --builtin: timed runs per mode")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "default":
        from pytest_layercheck.model.loading import load_model

        loaded = load_model("default", device="cpu")
        model, tokenizer = loaded.model, loaded.tokenizer
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    if args.builtin:
        print(
            f"model {args.model}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}, "
            f"attn={model.config._attn_implementation}"
        )
        builtin_prefix_sharing(
            model, tokenizer, args.builtin.split(","), args.protocol, args.limit, args.repeats, args.token_budget
        )
        return
    suite = synthetic_suite(args.items)
    runtime = ModelRuntime.of(model)
    print(
        f"model {args.model}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}, "
        f"attn={model.config._attn_implementation}"
    )
    for protocol in ("mc_text", "mc_letters", "continuation", "generate_until"):
        t0 = time.perf_counter()
        prepared = prepare(suite, protocol, tokenizer)
        t1 = time.perf_counter()
        score(runtime, prepared, token_budget=args.token_budget)  # warm-up, builds the plan
        t2 = time.perf_counter()
        result = score(runtime, prepared, token_budget=args.token_budget)
        t3 = time.perf_counter()
        tokens = prepared.longest_input
        print(
            f"{protocol:15s} prepare {t1 - t0:6.2f}s  first run {t2 - t1:6.2f}s  "
            f"repeat run {t3 - t2:6.2f}s = {len(suite.items) / (t3 - t2):6.1f} items/s "
            f"(longest input {tokens} tokens; metrics {result.metrics})"
        )
        if protocol == "mc_text":
            naive = naive_mc_text(model, prepared, batch=32)
            print(
                f"{'  naive mc_text':15s} {naive:6.2f}s = {len(suite.items) / naive:6.1f} items/s "
                "(full sequences, all logits)"
            )


if __name__ == "__main__":
    main()
