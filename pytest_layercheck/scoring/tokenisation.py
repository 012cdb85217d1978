"""lm-evaluation-harness's context/continuation encoding, so our log-likelihoods match its numbers.

The rules (lm-eval ``TemplateLM._encode_pair`` / ``loglikelihood``):

* Trailing whitespace of the context moves onto the continuation, so a word-initial space is
  tokenised with the word it belongs to (``"Answer:" + " A"``, never ``"Answer: " + "A"``).
* ``whole = encode(context + continuation)``, ``context_enc = encode(context)`` and
  ``continuation_enc = whole[len(context_enc):]``: the continuation is what the joint encoding adds.
* An empty context is replaced by one prefix token (BOS, else EOS), which lm-eval calls
  ``prefix_token_id``.
* Too-long inputs lose tokens from the left of the context; the continuation is always kept.

**BOS rule.** lm-eval encodes with the tokenizer's default special tokens. We reproduce that
without inheriting any *suffix* a tokenizer might append: we probe the tokenizer once and prepend
its BOS to every encoding exactly when its default encoding starts with BOS (Llama-2/3, Gemma) and
add nothing otherwise (SmolLM2, GPT-2, Qwen). Text that already starts with the BOS string is not
given a second one (lm-eval's ``has_bos_prefix`` check).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_layercheck.core.errors import ProtocolError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: Tokenizers report a huge sentinel as ``model_max_length`` when they do not know the limit.
_UNKNOWN_LENGTH = 1_000_000

_PROBE_TEXT = "layercheck probe"


@dataclass(frozen=True)
class EncodingRule:
    """How one tokenizer turns text into model input: the BOS prefix and the empty-context token."""

    prefix: tuple[int, ...]
    bos_text: str | None
    empty_context_token: int


def encoding_rule(tokenizer: PreTrainedTokenizerBase) -> EncodingRule:
    """Probe ``tokenizer`` once for the BOS rule documented in this module."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    eos_id = getattr(tokenizer, "eos_token_id", None)
    default = tokenizer.encode(_PROBE_TEXT)
    plain = tokenizer.encode(_PROBE_TEXT, add_special_tokens=False)
    wants_bos = bos_id is not None and default[:1] == [bos_id] and plain[:1] != [bos_id]
    empty_token = bos_id if bos_id is not None else eos_id
    if empty_token is None:
        raise ProtocolError(
            "the tokenizer has neither a BOS nor an EOS token, so an empty context cannot be scored",
            "give the tokenizer a bos_token or eos_token, or make every prompt non-empty",
        )
    return EncodingRule(
        prefix=(int(bos_id),) if wants_bos and bos_id is not None else (),
        bos_text=getattr(tokenizer, "bos_token", None) if wants_bos else None,
        empty_context_token=int(empty_token),
    )


def encode_texts(tokenizer: PreTrainedTokenizerBase, rule: EncodingRule, texts: Sequence[str]) -> list[list[int]]:
    """Encode many texts in one (parallel, for fast tokenizers) call, applying the BOS rule."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    if not rule.prefix:
        return [list(ids) for ids in encoded]
    return [
        list(ids) if rule.bos_text and text.startswith(rule.bos_text) else [*rule.prefix, *ids]
        for text, ids in zip(texts, encoded)
    ]


def split_trailing_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """Move the context's trailing whitespace onto the continuation (lm-eval's first rule)."""
    stripped = context.rstrip()
    return stripped, context[len(stripped) :] + continuation


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, rule: EncodingRule, pairs: Sequence[tuple[str, str]]
) -> list[tuple[list[int], list[int]]]:
    """Encode (context, continuation) pairs exactly as lm-eval's causal ``loglikelihood`` does.

    Returns ``(context_enc, continuation_enc)`` per pair. Contexts and joint texts are encoded in
    two batched tokenizer calls; identical strings are encoded once.
    """
    moved = [split_trailing_whitespace(ctx, cont) for ctx, cont in pairs]
    unique = sorted({ctx for ctx, _ in moved if ctx} | {ctx + cont for ctx, cont in moved if ctx})
    unique_conts = sorted({cont for ctx, cont in moved if not ctx})
    ids = dict(zip(unique, encode_texts(tokenizer, rule, unique)))
    plain = tokenizer(unique_conts, add_special_tokens=False)["input_ids"] if unique_conts else []
    plain_ids = dict(zip(unique_conts, plain))

    out: list[tuple[list[int], list[int]]] = []
    for ctx, cont in moved:
        if ctx:
            context_enc = ids[ctx]
            continuation_enc = ids[ctx + cont][len(context_enc) :]
        else:
            continuation_enc = list(plain_ids[cont])
            if continuation_enc[:1] == [rule.empty_context_token]:
                context_enc, continuation_enc = continuation_enc[:1], continuation_enc[1:]
            else:
                context_enc = [rule.empty_context_token]
        if not continuation_enc:
            raise ProtocolError(
                f"the continuation {cont!r} adds no tokens after its context ...{ctx[-40:]!r}",
                "make every answer/choice a non-empty string that is not absorbed into the prompt's last token",
            )
        out.append((context_enc, continuation_enc))
    return out


def truncate_pair(context_enc: list[int], continuation_enc: list[int], max_length: int | None) -> list[int]:
    """Left-truncate the context so the model input (context + continuation[:-1]) fits ``max_length``."""
    if max_length is None:
        return context_enc
    if len(continuation_enc) > max_length:
        raise ProtocolError(
            f"a continuation of {len(continuation_enc)} tokens exceeds the model's maximum length {max_length}",
            "shorten the answer texts of the suite",
        )
    overflow = len(context_enc) + len(continuation_enc) - 1 - max_length
    return context_enc[overflow:] if overflow > 0 else context_enc


def truncate_prompt(prompt_enc: list[int], max_length: int | None, max_new_tokens: int) -> list[int]:
    """Left-truncate a generation prompt so prompt + generated tokens fit ``max_length``."""
    if max_length is None:
        return prompt_enc
    room = max_length - max_new_tokens
    if room <= 0:
        raise ProtocolError(
            f"max_gen_toks={max_new_tokens} leaves no room for a prompt within the model's maximum length {max_length}",
            "lower max_gen_toks in the suite's generate_until settings",
        )
    return prompt_enc[-room:]


def tokenizer_max_length(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The tokenizer's declared maximum length, or None when it only reports a sentinel."""
    value = getattr(tokenizer, "model_max_length", None)
    return int(value) if isinstance(value, int) and 0 < value < _UNKNOWN_LENGTH else None
