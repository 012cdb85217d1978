"""Public entry points: prepare a suite once, score it under any number of ablations.

    prepared = prepare(suite, "mc_text", tokenizer)       # render + tokenise + group, once
    runtime = ModelRuntime.of(model)                       # what scoring reads about the model, once
    for ablation in ...:                                   # ~31 times in a depth profile
        with ablate(model, ablation):
            result = score(runtime, prepared)              # model calls only

Metrics per protocol (lm-evaluation-harness semantics, read in its source; suites/protocols.py):

* ``mc_letters`` / ``mc_text``: ``acc`` = argmax of the summed log-likelihoods is gold;
  ``acc_norm`` = argmax of log-likelihood / len(candidate in characters) is gold (ties go to the
  first choice, as with ``np.argmax``). For letters every candidate has length 1, so the two agree.
  ``p_correct`` = the gold choice's probability, softmax over the choices' summed log-likelihoods;
  ``margin`` = the gold choice's log-likelihood minus the best other choice's.
* ``continuation``: ``loglikelihood`` of the target and ``exact_match`` = the target is the
  greedy continuation.
* ``generate_until``: ``exact_match`` of the normalised extracted answer against the target.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from pytest_layercheck.core.errors import ModelLoadError, NonFiniteScoreError, ProtocolError
from pytest_layercheck.model.ablation import Ablation, ablate
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring.batching import LOGIT_BUDGET, BatchSettings, default_token_budget
from pytest_layercheck.scoring.engine import (
    PreparedLoglikelihood,
    prepare_loglikelihood,
    run_generation,
    run_loglikelihood,
)
from pytest_layercheck.scoring.generation import PreparedGeneration
from pytest_layercheck.scoring.loglikelihood import LoglikelihoodOutput
from pytest_layercheck.scoring.rendering import RenderedItem, render
from pytest_layercheck.scoring.results import ItemOutcome, ProtocolResult
from pytest_layercheck.scoring.sweep import run_loglikelihood_sweep
from pytest_layercheck.scoring.tokenisation import (
    encode_pairs,
    encode_texts,
    encoding_rule,
    tokenizer_max_length,
    truncate_pair,
    truncate_prompt,
)
from pytest_layercheck.suites.protocols import get_protocol
from pytest_layercheck.suites.schema import ProtocolSettings, Suite

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class PreparedSuite:
    """A suite rendered and tokenised for one protocol and tokenizer; reusable across models
    that share the tokenizer (all ablations of one model)."""

    suite: Suite
    protocol: str
    settings: ProtocolSettings
    items: tuple[RenderedItem, ...]
    tokenizer: PreTrainedTokenizerBase
    max_length: int | None
    loglikelihood: PreparedLoglikelihood | None = None
    generation: PreparedGeneration | None = None
    #: For log-likelihood protocols: the (item, candidate) position of each request.
    request_item: torch.Tensor | None = None
    request_choice: torch.Tensor | None = None

    @property
    def longest_input(self) -> int:
        engine = self.loglikelihood or self.generation
        return engine.longest_input if engine is not None else 0

    @property
    def highest_token_id(self) -> int:
        """The largest token id scoring feeds the model or reads from its logits; -1 when none."""
        if self.loglikelihood is not None:
            return self.loglikelihood.highest_token_id
        if self.generation is not None and self.generation.prompts:
            pad = getattr(self.tokenizer, "pad_token_id", None)  # generate feeds it to finished rows
            return max(self.generation.highest_token_id, pad if isinstance(pad, int) else -1)
        return -1


def prepare(
    suite: Suite,
    protocol: str | None,
    tokenizer: PreTrainedTokenizerBase,
    limit: int | None = None,
    max_length: int | None = None,
) -> PreparedSuite:
    """Render, validate and tokenise ``suite`` for ``protocol`` (None: the suite's default).

    ``max_length`` left-truncates contexts to fit a model's window; None uses the tokenizer's
    declared maximum (``prepare_and_score`` passes the model's own limit).
    """
    protocol = protocol or suite.default_protocol
    suite = suite.limited(limit)
    settings = suite.settings(protocol)
    items = tuple(render(suite, protocol))
    max_length = max_length if max_length is not None else tokenizer_max_length(tokenizer)
    rule = encoding_rule(tokenizer)
    common = functools.partial(
        PreparedSuite,
        suite=suite,
        protocol=protocol,
        settings=settings,
        items=items,
        tokenizer=tokenizer,
        max_length=max_length,
    )

    if get_protocol(protocol).generates:
        prompts = encode_texts(tokenizer, rule, [r.prompt for r in items])
        return common(
            generation=PreparedGeneration(
                prompts=tuple(tuple(truncate_prompt(p, max_length, settings.max_gen_toks)) for p in prompts),
                until=tuple(settings.until),
                max_new_tokens=settings.max_gen_toks,
            ),
        )

    pairs = [(r.prompt, settings.target_delimiter + cand) for r in items for cand in r.candidates]
    encoded = encode_pairs(tokenizer, rule, pairs)
    requests = [(truncate_pair(ctx, cont, max_length), cont) for ctx, cont in encoded]
    return common(
        loglikelihood=prepare_loglikelihood(requests),
        request_item=torch.tensor([i for i, r in enumerate(items) for _ in r.candidates], dtype=torch.long),
        request_choice=torch.tensor([c for r in items for c in range(len(r.candidates))], dtype=torch.long),
    )


def batch_settings(
    runtime: ModelRuntime, batch_size: int | None = None, token_budget: int | None = None
) -> BatchSettings:
    """Forward-pass limits for ``runtime``'s model: a device-dependent token budget, optionally a row cap."""
    return BatchSettings(
        token_budget=token_budget or default_token_budget(runtime.device),
        max_rows=batch_size,
        logit_rows=max(1, LOGIT_BUDGET // runtime.vocab_size),
    )


def score(
    runtime: ModelRuntime,
    prepared: PreparedSuite,
    batch_size: int | None = None,
    token_budget: int | None = None,
    share_prefix: bool = True,
) -> ProtocolResult:
    """Score prepared requests with ``runtime``'s model on its own device.

    ``batch_size`` caps sequences per forward pass; by default only the token budget limits
    batches. ``share_prefix`` runs the token prefix common to all prompts (few-shot examples)
    once per call instead of once per prompt. Results depend on none of these (up to float
    rounding). On a CPU with several torch threads, prompt batches run on as many threads of one
    torch thread each (``run_loglikelihood``'s ``workers``): hooks you add to the model are called
    from those threads. Non-finite log-likelihoods or logits raise :class:`NonFiniteScoreError`.
    """
    return _score(runtime, prepared, batch_size, token_budget, share_prefix, None)


def _score(
    runtime: ModelRuntime,
    prepared: PreparedSuite,
    batch_size: int | None,
    token_budget: int | None,
    share_prefix: bool,
    ablation: Ablation | None,
) -> ProtocolResult:
    """:func:`score`, naming ``ablation`` (None: not known) when the scores are not finite."""
    _check_fits(runtime, prepared)
    settings = batch_settings(runtime, batch_size, token_budget)
    if not prepared.items:
        return _result(prepared, [])
    if prepared.generation is not None:
        try:
            texts = run_generation(
                runtime, prepared.tokenizer, prepared.generation, settings, share_prefix=share_prefix
            )
        except NonFiniteScoreError:
            raise _non_finite(prepared, [ablation], "greedy generation's logits") from None
        return _result(prepared, _generation_outcomes(prepared, texts))
    assert prepared.loglikelihood is not None
    output = run_loglikelihood(runtime, prepared.loglikelihood.plan(settings), share_prefix=share_prefix)
    _check_finite(prepared, [(ablation, output)])
    return _loglikelihood_result(prepared, output)


def score_sweep(
    runtime: ModelRuntime,
    prepared: PreparedSuite,
    ablations: Sequence[Ablation],
    *,
    donor: Any = None,
    batch_size: int | None = None,
    token_budget: int | None = None,
    share_prefix: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[ProtocolResult, list[ProtocolResult]]:
    """Score ``prepared`` intact and under each ablation: (intact result, [result per ablation]).

    Log-likelihood protocols reuse the intact model's activations below each ablation's first
    affected layer (:mod:`.sweep`); generation scores each ablated model in turn. The results
    equal ``score`` under ``ablate`` for each ablation, up to float rounding. Non-finite scores, intact
    or under any ablation, raise :class:`NonFiniteScoreError` before any result is returned (so none is cached).
    """
    _check_fits(runtime, prepared)
    if prepared.loglikelihood is None or not prepared.items:
        results = []
        for done, ablation in enumerate([Ablation(), *ablations], start=1):
            with ablate(runtime.model, ablation, donor=donor):
                results.append(_score(runtime, prepared, batch_size, token_budget, share_prefix, ablation))
            if on_step:
                on_step(done, len(ablations) + 1)
        return results[0], results[1:]
    plan = prepared.loglikelihood.plan(batch_settings(runtime, batch_size, token_budget))
    intact, outputs = run_loglikelihood_sweep(
        runtime, plan, ablations, donor=donor, share_prefix=share_prefix, on_step=on_step
    )
    _check_finite(prepared, [(Ablation(), intact)])  # an intact model's NaN is named as such, not per ablation
    _check_finite(prepared, list(zip(ablations, outputs)))
    return _loglikelihood_result(prepared, intact), [_loglikelihood_result(prepared, o) for o in outputs]


def _check_fits(runtime: ModelRuntime, prepared: PreparedSuite) -> None:
    limit = runtime.max_length
    if limit is not None and prepared.longest_input > limit:
        raise ProtocolError(
            f"suite {prepared.suite.name!r} has inputs of {prepared.longest_input} tokens, "
            f"more than the model's maximum of {limit}",
            f"prepare it with max_length={limit} (prepare_and_score does this for you)",
        )
    rows = runtime.vocabulary_rows
    highest = prepared.highest_token_id
    if rows is not None and highest >= rows:
        raise ModelLoadError(
            f"the tokenizer produces token id {highest} for suite {prepared.suite.name!r}, but the model's "
            f"embedding has only {rows} rows (ids 0-{rows - 1}): the tokenizer does not belong to this model",
            "use the tokenizer that matches the model: the one saved with it (its folder's tokenizer files, "
            "from tokenizer.save_pretrained), not one of another model or vocabulary size",
        )


def _check_finite(prepared: PreparedSuite, outputs: Sequence[tuple[Ablation | None, LoglikelihoodOutput]]) -> None:
    """Refuse non-finite log-likelihoods: an argmax over NaN picks the first choice, so a diverged model
    (or one whose activations overflow in float16) would score as if it knew every answer."""
    bad = [
        (ablation, int((~torch.isfinite(output.loglikelihood)).sum()), output.loglikelihood.numel())
        for ablation, output in outputs
    ]
    bad = [entry for entry in bad if entry[1]]
    if bad:
        _, count, total = bad[0]
        raise _non_finite(prepared, [ablation for ablation, _, _ in bad], f"{count} of {total} log-likelihoods")


def _non_finite(prepared: PreparedSuite, ablations: Sequence[Ablation | None], what: str) -> NonFiniteScoreError:
    """The error for non-finite scores of ``prepared`` under ``ablations`` (None: an ablation not known)."""
    problem = (
        f"{what} are not finite (NaN or infinite), so its answers cannot be scored (an argmax over NaN still picks one)"
    )
    first = ablations[0]
    if first is None or first.is_intact:
        where = "on the model as given" if first is None else "on the intact model"
        return NonFiniteScoreError(
            f"suite {prepared.suite.name!r} ({prepared.protocol}) evaluated {where}: {problem}",
            "if the model's weights are finite, its activations overflowed: score in float32 (--dtype float32 / "
            "--layercheck-dtype float32); if they are NaN, the checkpoint diverged in training: use one saved "
            "before its loss became NaN. No result of this evaluation was stored",
        )
    keys = [a.key for a in ablations if a is not None]
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return NonFiniteScoreError(
        f"suite {prepared.suite.name!r} ({prepared.protocol}) evaluated with ablation{'s' if len(keys) > 1 else ''} "
        f"{shown}: {problem}; the intact model's scores are finite, so its activations overflow only under "
        f"{'this ablation' if len(keys) == 1 else 'these ablations'}",
        "score in float32 if a 16-bit dtype was used (--dtype float32 / --layercheck-dtype float32); a model "
        "whose activations overflow in float32 as well when a layer is removed cannot be profiled that way. "
        "No result of this evaluation was stored",
    )


def _result(prepared: PreparedSuite, outcomes: list[ItemOutcome]) -> ProtocolResult:
    return ProtocolResult(prepared.suite.name, prepared.suite.content_hash, prepared.protocol, tuple(outcomes))


def _loglikelihood_result(prepared: PreparedSuite, output: LoglikelihoodOutput) -> ProtocolResult:
    if get_protocol(prepared.protocol).multiple_choice:
        return _result(prepared, _choice_outcomes(prepared, output.loglikelihood))
    return _result(prepared, _continuation_outcomes(prepared, output.loglikelihood, output.greedy))


def prepare_and_score(
    runtime: ModelRuntime,
    tokenizer: PreTrainedTokenizerBase,
    suite: Suite,
    protocol: str | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
) -> ProtocolResult:
    """One-shot convenience: ``prepare`` (truncating to the model's window) then ``score``."""
    prepared = prepare(suite, protocol, tokenizer, limit=limit, max_length=runtime.max_length)
    return score(runtime, prepared, batch_size=batch_size)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def _choice_outcomes(prepared: PreparedSuite, lls: torch.Tensor) -> list[ItemOutcome]:
    """acc / acc_norm for all items at once: lls laid out as [item, choice], padded with -inf."""
    assert prepared.request_item is not None and prepared.request_choice is not None
    n_items = len(prepared.items)
    width = max(len(r.candidates) for r in prepared.items)
    table = torch.full((n_items, width), float("-inf"), dtype=torch.float64)
    lengths = torch.ones((n_items, width), dtype=torch.float64)
    table[prepared.request_item, prepared.request_choice] = lls
    lengths[prepared.request_item, prepared.request_choice] = torch.tensor(
        [float(len(c)) for r in prepared.items for c in r.candidates], dtype=torch.float64
    )
    pred = table.argmax(1).tolist()
    pred_norm = (table / lengths).argmax(1).tolist()
    p_correct, margin = _gold_scores(table, prepared)
    outcomes = []
    for i, rendered in enumerate(prepared.items):
        n, gold = len(rendered.candidates), rendered.item.gold
        outcomes.append(
            ItemOutcome(
                rendered.item.id,
                {
                    "acc": float(pred[i] == gold),
                    "acc_norm": float(pred_norm[i] == gold),
                    "p_correct": p_correct[i],
                    "margin": margin[i],
                },
                {
                    "loglikelihoods": table[i, :n].tolist(),
                    "candidates": list(rendered.candidates),
                    "prediction": pred[i],
                    "prediction_norm": pred_norm[i],
                    "gold": gold,
                },
            )
        )
    return outcomes


def _gold_scores(table: torch.Tensor, prepared: PreparedSuite) -> tuple[list[float], list[float]]:
    """Per item: the gold choice's probability normalised over the choices (``p_correct``), and its
    log-likelihood minus the best other choice's (``margin``; 0 for an item with one choice)."""
    gold = torch.tensor([r.item.gold for r in prepared.items], dtype=torch.long)
    gold_ll = table.gather(1, gold[:, None])[:, 0]
    p_correct = (gold_ll - torch.logsumexp(table, dim=1)).exp().clamp(0.0, 1.0)
    others = table.scatter(1, gold[:, None], float("-inf")).amax(1)
    margin = torch.where(torch.isfinite(others), gold_ll - others, torch.zeros_like(gold_ll))
    return p_correct.tolist(), margin.tolist()


def _continuation_outcomes(prepared: PreparedSuite, lls: torch.Tensor, greedy: torch.Tensor) -> list[ItemOutcome]:
    return [
        ItemOutcome(
            rendered.item.id,
            {"loglikelihood": ll, "exact_match": float(is_greedy)},
            {"target": rendered.candidates[0]},
        )
        for rendered, ll, is_greedy in zip(prepared.items, lls.tolist(), greedy.tolist())
    ]


def extract_answer(text: str, answer_regex: str | None) -> str | None:
    """The answer in a generation: the regex's first group (or whole match), else the stripped text.

    Returns None when a regex is given and does not match (scored as wrong).
    """
    if answer_regex is None:
        return text.strip()
    match = re.search(answer_regex, text)
    if match is None:
        return None
    answer = match.group(1) if match.re.groups else match.group(0)
    return answer.strip() if answer is not None else None


_TRAILING = string.punctuation + string.whitespace


def normalise_answer(text: str) -> str:
    """Strip, lowercase, and drop trailing punctuation/whitespace ("Paris." == "paris")."""
    return text.strip().lower().rstrip(_TRAILING)


def _generation_outcomes(prepared: PreparedSuite, texts: list[str]) -> list[ItemOutcome]:
    regex = prepared.settings.answer_regex
    outcomes = []
    for rendered, text in zip(prepared.items, texts):
        target = rendered.candidates[0]
        answer = extract_answer(text, regex)
        correct = answer is not None and normalise_answer(answer) == normalise_answer(target)
        outcomes.append(
            ItemOutcome(
                rendered.item.id,
                {"exact_match": float(correct)},
                {"generation": text, "answer": answer, "target": target},
            )
        )
    return outcomes
