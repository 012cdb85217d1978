"""Shared pieces of the scoring tests: sharpened tiny models and hand-written references.

The references run one unpadded sequence per request, with no cache, no mask and their own
log-softmax, so they share nothing with the engine they check.
"""

from __future__ import annotations

import functools

import torch
from tiny_models import tiny_model


@functools.cache
def sharp_model(
    family: str, attn: str = "eager", seed: int = 1, sharpen_embeddings: bool = True, layers: int = 3
) -> torch.nn.Module:
    """A tiny model with larger random weights, so its predictions are peaked, not near-uniform.

    Near-uniform logits would make argmax decisions (acc, greedy, generation) hinge on noise.
    ``sharpen_embeddings=False`` keeps token embeddings small: Gemma scales them by sqrt(hidden),
    and enlarged ones swamp every layer so the model repeats one token whatever the prompt.
    """
    model = tiny_model(family, layers=layers)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim < 2 or (not sharpen_embeddings and ("embed_tokens" in name or "wte" in name)):
                continue
            param.copy_(torch.randn(param.shape, generator=generator) * 2.0 / param.shape[-1] ** 0.5)
    model.config._attn_implementation = attn
    return model


def sharp_attention_model(family: str = "llama", layers: int = 4) -> torch.nn.Module:
    """A tiny model with large q/k weights, so attention is far from uniform and masking a head (or making
    it attend uniformly) shows; :func:`sharp_model` enlarges every weight instead."""
    model = tiny_model(family, layers=layers)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in model.model.layers:
            for proj in (block.self_attn.q_proj, block.self_attn.k_proj):
                proj.weight.copy_(torch.randn(proj.weight.shape, generator=gen) * 0.5)
    return model


@torch.no_grad()
def hand_loglikelihood(model: torch.nn.Module, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    """Sum of the continuation's log-probs on one unpadded sequence, and whether it is greedy."""
    logprobs = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].double(), dim=-1)
    rows = [logprobs[len(ctx) - 1 + i] for i in range(len(cont))]
    return sum(float(r[t]) for r, t in zip(rows, cont)), all(int(r.argmax()) == t for r, t in zip(rows, cont))


@torch.no_grad()
def hand_generate(model: torch.nn.Module, tok, prompt: list[int], until: tuple[str, ...], max_new: int) -> str:
    """Plain greedy loop without cache; stop at EOS, a stop string, or ``max_new`` tokens."""
    ids, new = list(prompt), []
    for _ in range(max_new):
        token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        if token == tok.eos_token_id:
            break
        ids.append(token)
        new.append(token)
        if any(s in tok.decode(new, skip_special_tokens=True) for s in until):
            break
    text = tok.decode(new, skip_special_tokens=True)
    for stop in until:
        text = text.split(stop)[0]
    return text
