"""Parity check: our scorer vs lm-evaluation-harness's HF backend on the same requests.

    python benchmarks/lmeval_parity.py [--model default|PATH] [--items 40] [--no-install]

lm-eval is not a dependency of pytest-layercheck; when it is missing this script installs it
with ``pip install lm-eval==0.4.13`` (pinned in depth_sweep.py) into the running interpreter's environment (``--no-install``
refuses; prefer running it from a separate virtualenv). Both sides get the same prompt strings
(rendered by our ``rendering`` module) and the same model object; lm-eval receives them as raw
``loglikelihood`` / ``generate_until`` ``Instance`` requests through ``HFLM(pretrained=model)``,
so its own tokenisation, batching and one-token-continuation cache are exercised. acc/acc_norm are
derived from lm-eval's log-likelihoods with its multiple-choice formulas
(``argmax(lls)``, ``argmax(lls / len(choice))``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pytest_layercheck.scoring.protocols import prepare, score
from pytest_layercheck.suites.schema import ProtocolSettings

sys.path.insert(0, str(Path(__file__).parent))
from depth_sweep import LM_EVAL_REQUIREMENT, ensure_lm_eval  # noqa: E402
from scoring_throughput import synthetic_suite  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default", help="'default' or any spec layercheck can load")
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8, help="lm-eval's batch size")
    parser.add_argument("--no-install", action="store_true")
    args = parser.parse_args()
    if not ensure_lm_eval(install=not args.no_install):
        sys.exit(f"lm-eval is not installed (pip install {LM_EVAL_REQUIREMENT}), and --no-install was given")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from pytest_layercheck.model.loading import load_model

    loaded = load_model(args.model, device="cpu", dtype="float32")
    model, tokenizer = loaded.model, loaded.tokenizer
    runtime = loaded.runtime
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size, device="cpu")
    suite = synthetic_suite(args.items)
    # One few-shot example, so the prompts exercise the few-shot path as well.
    suite = replace(suite, items=suite.items[1:], fewshot=suite.items[:1])
    all_ok = True

    for protocol in ("mc_text", "mc_letters", "continuation"):
        prepared = prepare(suite, protocol, tokenizer)
        delimiter = prepared.settings.target_delimiter
        t0 = time.perf_counter()
        ours = score(runtime, prepared)
        t1 = time.perf_counter()
        instances = [
            Instance("loglikelihood", {}, (r.prompt, delimiter + cand), k)
            for k, (r, cand) in enumerate((r, c) for r in prepared.items for c in r.candidates)
        ]
        theirs = iter(lm.loglikelihood(instances, disable_tqdm=True))
        t2 = time.perf_counter()
        max_diff, disagreements = 0.0, []
        for rendered, outcome in zip(prepared.items, ours.outcomes):
            answers = [next(theirs) for _ in rendered.candidates]
            lls = np.array([ll for ll, _ in answers])
            if protocol == "continuation":
                max_diff = max(max_diff, abs(lls[0] - outcome.scores["loglikelihood"]))
                if float(answers[0][1]) != outcome.scores["exact_match"]:
                    disagreements.append((rendered.item.id, "exact_match"))
                continue
            lengths = np.array([float(len(c)) for c in rendered.candidates])
            gold = rendered.item.gold
            lm_eval_scores = {"acc": float(np.argmax(lls) == gold), "acc_norm": float(np.argmax(lls / lengths) == gold)}
            max_diff = max(max_diff, float(np.abs(lls - np.array(outcome.detail["loglikelihoods"])).max()))
            disagreements += [(rendered.item.id, m) for m in lm_eval_scores if lm_eval_scores[m] != outcome.scores[m]]
        ok = not disagreements and max_diff < 1e-3
        all_ok &= ok
        print(
            f"{protocol:13s} items={len(prepared.items):3d}  max |ll diff|={max_diff:.2e}  "
            f"metric disagreements={disagreements or 'none'}  ours {t1 - t0:.1f}s, lm-eval {t2 - t1:.1f}s  "
            f"{'OK' if ok else 'MISMATCH'}"
        )
        if protocol != "continuation":
            print(f"{'':13s} ours: {{acc: {ours.mean('acc'):.3f}, acc_norm: {ours.mean('acc_norm'):.3f}}}")

    settings = ProtocolSettings(template="Question: {context}\nAnswer:", until=("\n", "."), max_gen_toks=16)
    gen_suite = replace(suite, protocols={**suite.protocols, "generate_until": settings})
    prepared = prepare(gen_suite, "generate_until", tokenizer)
    ours = score(runtime, prepared)
    gen_kwargs = {"until": list(settings.until), "max_gen_toks": settings.max_gen_toks, "do_sample": False}
    theirs = lm.generate_until(
        [Instance("generate_until", {}, (r.prompt, gen_kwargs), k) for k, r in enumerate(prepared.items)],
        disable_tqdm=True,
    )
    mismatched = [o.item_id for o, t in zip(ours.outcomes, theirs) if o.detail["generation"] != t]
    all_ok &= not mismatched
    print(
        f"generate_until items={len(prepared.items):3d}  differing generations: {mismatched or 'none'}  "
        f"{'OK' if not mismatched else 'MISMATCH'}"
    )
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
