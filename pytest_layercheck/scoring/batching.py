"""How much one forward pass may hold, and how length-sorted rows are cut and padded into passes.

Model-independent sizes: a token budget adapts to prompt lengths where an item count would not, and
the cuts are made once per batch setting, then reused under every ablation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: Default forward-pass size in padded tokens (KV-cache tokens included for continuation passes).
#: CPU throughput saturates at small batches; accelerators profit from large ones.
CPU_TOKEN_BUDGET = 2048
ACCELERATOR_TOKEN_BUDGET = 16384
#: A continuation call's cached tokens (its rows' prompt keys and values) may number this many times
#: the token budget: attention only reads them, one layer at a time (:class:`~.prompt_cache.RowsOfLayer`), so they cost
#: far less than computed tokens; counting them fully split a prompt batch's continuations into a call
#: of a few rows per context, each streaming every weight.
CACHE_READS = 8
#: Upper bound on float32 logits materialised at once (elements; 2**24 = 64 MiB; logsumexp doubles it).
LOGIT_BUDGET = 2**24


def default_token_budget(device: torch.device) -> int:
    """Forward-pass size by device: a token budget adapts to prompt lengths, an item count does not."""
    return CPU_TOKEN_BUDGET if device.type == "cpu" else ACCELERATOR_TOKEN_BUDGET


@dataclass(frozen=True)
class BatchSettings:
    """Limits of one forward pass.

    ``token_budget`` bounds padded input tokens, ``max_rows`` (the user's ``batch_size``) bounds
    sequences, and ``logit_rows`` bounds the positions whose full-vocabulary logits are
    materialised at once (``LOGIT_BUDGET // vocab_size``).
    """

    token_budget: int
    max_rows: int | None = None
    logit_rows: int | None = None

    def fits(self, rows: int, width: int, scored_width: int, cached: int = 0) -> bool:
        """Whether ``rows`` sequences of ``width`` tokens, ``scored_width`` of them with logits, each
        attending to ``cached`` tokens of a prompt cache, fit."""
        return (
            rows * width <= self.token_budget
            and rows * (width + cached) <= CACHE_READS * self.token_budget
            and (self.max_rows is None or rows <= self.max_rows)
            and (self.logit_rows is None or rows * scored_width <= self.logit_rows)
        )


def _chunks(
    lengths: Sequence[int],
    settings: BatchSettings,
    scored_all: bool,
    cached: int = 0,
    shared: int = 0,
    min_fill: float = 0.0,
) -> list[slice]:
    """Split length-sorted (descending) rows into consecutive slices that fit ``settings``.

    The first row of a slice is its longest, so its length is the padded width. ``scored_all``:
    logits are needed at every position (continuation pass), not only the last (prompt pass).
    ``cached``: KV-cache tokens each row attends to (continuation pass; see :data:`CACHE_READS`).
    ``shared``: leading tokens that come from a shared-prefix cache and are not computed; with
    ``min_fill`` a slice also ends where a row's computed part would fill less than that share of
    the slice's computed width (padding costs as much as real tokens). A row too long for the budget on its
    own still gets a slice of its own.
    """
    out: list[slice] = []
    start = 0
    for i in range(len(lengths)):
        width = lengths[start]
        underfilled = lengths[i] - shared < min_fill * (width - shared)
        if i > start and (underfilled or not settings.fits(i + 1 - start, width, width if scored_all else 1, cached)):
            out.append(slice(start, i))
            start = i
    if lengths:
        out.append(slice(start, len(lengths)))
    return out


def _pad(seqs: Sequence[Sequence[int]], width: int, left: bool, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token lists to ``width``; returns (ids, attention mask)."""
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, seq in enumerate(seqs):
        if seq:
            cols = slice(width - len(seq), width) if left else slice(0, len(seq))
            ids[r, cols] = torch.tensor(seq, dtype=torch.long)
            mask[r, cols] = 1
    return ids, mask


def shared_prefix(seqs: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The longest common token prefix of ``seqs``, cut so every sequence keeps one token of its own.

    The last token of each sequence must be run per row (its logits score what follows), so the
    prefix is at most ``min(len) - 1`` tokens. Fewer than two distinct sequences share nothing.
    """
    distinct = set(map(tuple, seqs))
    if len(distinct) < 2:
        return ()
    # The common prefix of all sequences is that of the lexicographically first and last ones.
    lo, hi = min(distinct), max(distinct)
    limit = min(map(len, distinct)) - 1
    n = 0
    while n < limit and lo[n] == hi[n]:
        n += 1
    return tuple(lo[:n])
