"""The scorer against values computed by hand on the same tiny models.

Every reference here runs the model UNBATCHED on one full token sequence (no padding, no cache,
no attention mask), takes ``log_softmax`` itself, sums the target tokens' log-probs itself and
picks argmaxes itself; generation references are a plain greedy loop that re-runs the whole
sequence at every step. The engine (batching, padding, prompt sharing, KV caches,
``logits_to_keep``, ``generate``) must reproduce those numbers.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import replace

import pytest
from scoring_references import hand_generate, hand_loglikelihood, sharp_model
from tiny_models import FAMILIES, tiny_tokenizer

from pytest_layercheck.core.errors import ProtocolError
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring import batching
from pytest_layercheck.scoring.batching import BatchSettings
from pytest_layercheck.scoring.protocols import (
    extract_answer,
    normalise_answer,
    prepare,
    prepare_and_score,
    score,
)
from pytest_layercheck.scoring.rendering import render_prompt
from pytest_layercheck.scoring.tokenisation import encode_pairs, encoding_rule
from pytest_layercheck.suites.schema import ProtocolSettings, Suite, SuiteItem

TOL = 1e-4
#: p_correct and margin are computed from two log-likelihoods (the gold choice's and the best other /
#: the log-sum-exp of all), each within TOL: the margin is then within 2 * TOL, and so is p_correct
#: (|d log p| <= 2 * TOL, p <= 1).
SCORE_TOL = 2 * TOL


# --------------------------------------------------------------------------------------------
# Fixtures: sharpened tiny models, a tokenizer and small suites
# --------------------------------------------------------------------------------------------


@functools.cache
def tokenizer(add_bos: bool = False):
    return tiny_tokenizer(add_bos=add_bos)


CONTEXTS = [
    "What is 2+2?",
    "Name the capital of France, please.",
    "x",
    "Which of these is a prime number and why would anyone ask?",
    "The the the",
    "Pick one.",
    "Q",
    "A longer question that spans well beyond the sliding window of the tiny Gemma models?",
]
CHOICES = [
    ("four", "five", "twenty-two", "x"),
    ("Paris", "Lyon"),
    ("A", "B", "the other one", "none of them at all"),
]


def make_suite(n: int = 8, fewshot: int = 1, **settings: ProtocolSettings) -> Suite:
    """Items with mixed context and choice lengths (so batches mix paddings) and few-shot examples."""
    items = tuple(
        SuiteItem(
            id=f"q{i}",
            context=CONTEXTS[i % len(CONTEXTS)] + (" " * (i % 2)),
            domain="test",
            kind="test",
            choices=CHOICES[i % len(CHOICES)],
            gold=i % len(CHOICES[i % len(CHOICES)]),
            target=["four", "Paris", "the other"][i % 3],
            line=i + 1,
        )
        for i in range(n + fewshot)
    )
    protocols = {
        "mc_text": ProtocolSettings(template="Q: {context}\nA:"),
        "mc_letters": ProtocolSettings(template="Q: {context}\n{choices_block}\nAnswer:"),
        "continuation": ProtocolSettings(template="Q: {context}\nA:"),
        "generate_until": ProtocolSettings(template="Q: {context}\nA:", until=("\n",), max_gen_toks=10),
    }
    protocols.update(settings)
    return Suite(
        name="tiny",
        capability="knowledge",
        description="",
        items=items[fewshot:],
        protocols=protocols,
        default_protocol="mc_text",
        fewshot=items[:fewshot],
        content_hash="h",
    )


# --------------------------------------------------------------------------------------------
# Hand references
# --------------------------------------------------------------------------------------------


def hand_pair(tok, context: str, continuation: str, bos: bool = False) -> tuple[list[int], list[int]]:
    """lm-eval's encoding, written out: move trailing spaces, encode whole and context, split."""
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + continuation
    prefix = [tok.bos_token_id] if bos else []
    whole = prefix + tok.encode(stripped + continuation, add_special_tokens=False)
    ctx = prefix + tok.encode(stripped, add_special_tokens=False)
    return ctx, whole[len(ctx) :]


def hand_gold_scores(lls: list[float], gold: int) -> tuple[float, float]:
    """p_correct = exp(ll_gold - logsumexp(lls)) and margin = ll_gold - max(other lls), by hand."""
    top = max(lls)
    logsumexp = top + math.log(sum(math.exp(ll - top) for ll in lls))
    others = [ll for i, ll in enumerate(lls) if i != gold]
    return math.exp(lls[gold] - logsumexp), lls[gold] - max(others)


def assert_mc_scores(scores: dict, lls: list[float], gold: int, pred: int, pred_norm: int) -> None:
    """0/1 metrics exactly; p_correct and margin against the hand computation from ``lls``."""
    assert scores.keys() == {"acc", "acc_norm", "p_correct", "margin"}
    assert {k: scores[k] for k in ("acc", "acc_norm")} == {
        "acc": float(pred == gold),
        "acc_norm": float(pred_norm == gold),
    }
    p_correct, margin = hand_gold_scores(lls, gold)
    assert scores["p_correct"] == pytest.approx(p_correct, abs=SCORE_TOL)
    assert scores["margin"] == pytest.approx(margin, abs=SCORE_TOL)


def hand_prompt(item: SuiteItem, shots: tuple[SuiteItem, ...], answer, delimiter: str = " ") -> str:
    """The Q/A template with few-shot examples, written out by hand."""
    parts = [f"Q: {s.context}\nA:{delimiter}{answer(s)}" for s in shots]
    return "\n\n".join([*parts, f"Q: {item.context}\nA:"])


# --------------------------------------------------------------------------------------------
# Protocols against hand computation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_mc_text_matches_hand_computation(family: str) -> None:
    model, tok, suite = sharp_model(family), tokenizer(), make_suite()
    result = prepare_and_score(ModelRuntime.of(model), tok, suite, "mc_text", batch_size=4)
    for item, outcome in zip(suite.items, result.outcomes):
        prompt = hand_prompt(item, suite.fewshot, lambda s: s.choices[s.gold])
        lls = [hand_loglikelihood(model, *hand_pair(tok, prompt, " " + c))[0] for c in item.choices]
        assert outcome.detail["loglikelihoods"] == pytest.approx(lls, abs=TOL)
        pred = max(range(len(lls)), key=lambda i: lls[i])
        pred_norm = max(range(len(lls)), key=lambda i: lls[i] / len(item.choices[i]))
        assert_mc_scores(outcome.scores, lls, item.gold, pred, pred_norm)
    # The sharpened models must not make this test vacuous: both metrics take both values somewhere.
    assert result.mean("acc") < 1


def test_acc_norm_divides_by_character_length() -> None:
    model, tok = sharp_model("llama"), tokenizer()
    result = prepare_and_score(ModelRuntime.of(model), tok, make_suite(24), "mc_text")
    disagreements = 0
    for outcome in result.outcomes:
        lls, cands = outcome.detail["loglikelihoods"], outcome.detail["candidates"]
        normed = [ll / len(c) for ll, c in zip(lls, cands)]
        assert outcome.detail["prediction_norm"] == normed.index(max(normed))
        assert outcome.detail["prediction"] == lls.index(max(lls))
        disagreements += outcome.detail["prediction"] != outcome.detail["prediction_norm"]
    assert disagreements > 0, "choices of different lengths should make acc and acc_norm differ somewhere"


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_mc_letters_matches_hand_computation(family: str) -> None:
    model, tok, suite = sharp_model(family), tokenizer(), make_suite()
    result = prepare_and_score(ModelRuntime.of(model), tok, suite, "mc_letters", batch_size=3)
    for item, outcome in zip(suite.items, result.outcomes):
        letters = "ABCD"[: len(item.choices)]
        block = "\n".join(f"{L}. {c}" for L, c in zip(letters, item.choices))
        shot = suite.fewshot[0]
        shot_block = "\n".join(f"{L}. {c}" for L, c in zip("ABCD", shot.choices))
        prompt = f"Q: {shot.context}\n{shot_block}\nAnswer: {'ABCD'[shot.gold]}\n\nQ: {item.context}\n{block}\nAnswer:"
        assert render_prompt(suite, "mc_letters", item) == prompt
        lls = [hand_loglikelihood(model, *hand_pair(tok, prompt, " " + L))[0] for L in letters]
        assert outcome.detail["loglikelihoods"] == pytest.approx(lls, abs=TOL)
        pred = max(range(len(lls)), key=lambda i: lls[i])
        assert_mc_scores(outcome.scores, lls, item.gold, pred, pred)


def test_mc_letters_scores_all_letters_from_one_prompt_row() -> None:
    """ " A", " B", ... are single tokens: one prompt pass per item, no continuation pass."""
    prepared = prepare(make_suite(), "mc_letters", tokenizer())
    ll = prepared.loglikelihood
    assert len(ll.contexts) == len(prepared.items)
    assert ll.rows == () and set(ll.request_row) == {-1}
    plan = ll.plan(BatchSettings(token_budget=10**6))
    assert all(batch.chunks == () for batch in plan.batches)


def test_identical_requests_are_computed_once() -> None:
    suite = make_suite(3)
    duplicated = replace(suite, items=suite.items + suite.items)
    prepared = prepare(duplicated, "mc_text", tokenizer())
    assert len(prepared.loglikelihood.contexts) == 3
    assert len(prepared.loglikelihood.rows) <= sum(len(i.choices) for i in suite.items)
    result = score(ModelRuntime.of(sharp_model("llama")), prepared)
    first, second = result.outcomes[:3], result.outcomes[3:]
    assert [o.detail["loglikelihoods"] for o in first] == [o.detail["loglikelihoods"] for o in second]


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3"])
def test_continuation_matches_hand_computation(family: str) -> None:
    model, tok = sharp_model(family), tokenizer()
    # An empty delimiter lets a target be exactly the model's own greedy text.
    suite = make_suite(continuation=ProtocolSettings(template="Q: {context}\nA:", target_delimiter=""))
    items = []
    for k, item in enumerate(suite.items):
        if k % 2 == 0:  # half the targets: the greedy continuation, so exact_match can be 1
            prompt = hand_prompt(item, suite.fewshot, lambda s: s.answer_text, delimiter="")
            greedy = hand_generate(model, tok, tok.encode(prompt), (), 3)
            item = replace(item, target=greedy or item.target)
        items.append(item)
    suite = replace(suite, items=tuple(items))
    result = prepare_and_score(ModelRuntime.of(model), tok, suite, "continuation", batch_size=5)
    hits = 0
    for item, outcome in zip(suite.items, result.outcomes):
        prompt = hand_prompt(item, suite.fewshot, lambda s: s.answer_text, delimiter="")
        ll, greedy = hand_loglikelihood(model, *hand_pair(tok, prompt, item.target))
        assert outcome.scores["loglikelihood"] == pytest.approx(ll, abs=TOL)
        assert outcome.scores["exact_match"] == float(greedy)
        hits += greedy
    assert 0 < hits < len(suite.items)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2", "qwen3"])
def test_generate_until_matches_plain_greedy_loop(family: str) -> None:
    model, tok = sharp_model(family), tokenizer()
    base = make_suite()
    # Stop at a character the model does emit, so cutting is exercised.
    probe = hand_generate(
        model, tok, tok.encode(hand_prompt(base.items[0], base.fewshot, lambda s: s.answer_text)), (), 10
    )
    stops = [probe[k : k + 2] for k in range(2, len(probe) - 1) if probe.find(probe[k : k + 2]) >= 2]
    settings = ProtocolSettings(template="Q: {context}\nA:", until=(*stops[:1], "\n"), max_gen_toks=10)
    suite = make_suite(generate_until=settings)
    expected = {}
    for item in suite.items:
        prompt = hand_prompt(item, suite.fewshot, lambda s: s.answer_text)
        expected[item.id] = hand_generate(model, tok, tok.encode(prompt), settings.until, settings.max_gen_toks)
    # Targets: half the model's own answers (exact_match 1), half the suite's.
    suite = replace(
        suite,
        items=tuple(
            replace(item, target=expected[item.id].strip() + ".") if k % 2 and expected[item.id].strip() else item
            for k, item in enumerate(suite.items)
        ),
    )
    result = prepare_and_score(ModelRuntime.of(model), tok, suite, "generate_until", batch_size=3)
    for item, outcome in zip(suite.items, result.outcomes):
        assert outcome.detail["generation"] == expected[item.id]
        assert outcome.detail["answer"] == expected[item.id].strip()
        assert outcome.scores["exact_match"] == float(
            normalise_answer(expected[item.id]) == normalise_answer(item.target)
        )
    assert result.mean("exact_match") > 0


def test_generation_ignores_sampling_settings_of_the_model() -> None:
    """A model's generation_config (sampling, repetition penalty, ...) must not change greedy scoring."""
    model, tok, suite = sharp_model("llama"), tokenizer(), make_suite(4)
    expected = [
        o.detail["generation"] for o in prepare_and_score(ModelRuntime.of(model), tok, suite, "generate_until").outcomes
    ]
    tuned = copy.deepcopy(model)
    config = tuned.generation_config
    config.do_sample, config.temperature, config.top_p = True, 0.6, 0.9
    config.repetition_penalty, config.no_repeat_ngram_size, config.min_new_tokens = 1.5, 2, 5
    assert [
        o.detail["generation"] for o in prepare_and_score(ModelRuntime.of(tuned), tok, suite, "generate_until").outcomes
    ] == expected


def test_generate_until_answer_regex() -> None:
    model, tok = sharp_model("llama"), tokenizer()
    settings = ProtocolSettings(template="Q: {context}\nA:", until=("\n",), max_gen_toks=6, answer_regex=r"(\S)")
    suite = make_suite(4, generate_until=settings)
    result = prepare_and_score(ModelRuntime.of(model), tok, suite, "generate_until")
    for outcome in result.outcomes:
        text = outcome.detail["generation"]
        first = text.split()[0][0] if text.split() else None
        assert outcome.detail["answer"] == first


def test_extract_and_normalise_answer() -> None:
    assert extract_answer("  Paris.\n", None) == "Paris."
    assert extract_answer("The answer is 42, surely", r"answer is (\d+)") == "42"
    assert extract_answer("#### 17", r"#### \d+") == "#### 17"
    assert extract_answer("no number", r"(\d+)") is None
    assert normalise_answer(" Paris. ") == normalise_answer("paris") == "paris"
    assert normalise_answer("3.5") == "3.5"


# --------------------------------------------------------------------------------------------
# Batching and padding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["mc_text", "mc_letters", "continuation"])
def test_scores_do_not_depend_on_batch_size(protocol: str) -> None:
    model, tok = sharp_model("llama"), tokenizer()
    runtime = ModelRuntime.of(model)
    prepared = prepare(make_suite(16), protocol, tok)
    results = {bs: score(runtime, prepared, batch_size=bs) for bs in (1, 3, 16)}
    results["tokens"] = score(runtime, prepared, token_budget=64)  # budget-driven batches
    reference = results[1]
    metric_keys = reference.metrics
    for other in results.values():
        for a, b in zip(reference.outcomes, other.outcomes):
            assert a.scores.keys() == b.scores.keys()
            for key in metric_keys:
                if key == "loglikelihood":
                    assert a.scores[key] == pytest.approx(b.scores[key], abs=TOL)
                elif key in ("p_correct", "margin"):  # float scores: equal to float rounding
                    assert a.scores[key] == pytest.approx(b.scores[key], abs=SCORE_TOL)
                else:  # 0/1 decisions: exactly equal
                    assert a.scores[key] == b.scores[key]
            if "loglikelihoods" in a.detail:
                assert a.detail["loglikelihoods"] == pytest.approx(b.detail["loglikelihoods"], abs=TOL)


def test_generation_does_not_depend_on_batch_size() -> None:
    model, tok = sharp_model("gpt2"), tokenizer()
    prepared = prepare(make_suite(9), "generate_until", tok)
    texts = {
        bs: [o.detail["generation"] for o in score(ModelRuntime.of(model), prepared, batch_size=bs).outcomes]
        for bs in (1, 3, 16)
    }
    assert texts[1] == texts[3] == texts[16]


@pytest.mark.parametrize("budget", [64, 128, 256])
def test_continuation_calls_count_the_prompt_tokens_they_read_at_a_discount(budget: int) -> None:
    """A continuation call's own tokens fit the token budget; the prompt tokens its rows attend to,
    read one layer at a time, fit ``CACHE_READS`` budgets. Counting those fully split a batch's
    continuations into calls of a few rows each, every call streaming all the weights."""
    prepared = prepare(make_suite(16), "mc_text", tokenizer())
    assert prepared.loglikelihood is not None
    plan = prepared.loglikelihood.plan(BatchSettings(token_budget=budget))
    reads = []
    for batch in plan.batches:
        cached = batch.input_ids.shape[1]
        for chunk in batch.chunks:
            rows, width = chunk.input_ids.shape
            reads.append(rows * (width + cached))
            assert rows == 1 or (rows * width <= budget and reads[-1] <= batching.CACHE_READS * budget)
    assert max(reads) > budget  # more than the old rule (computed and cached tokens within one budget) allowed


def test_batches_mix_lengths_and_continuation_pass_is_used(one_batch: None) -> None:
    """The padding paths under test are real: one batch holds contexts and continuations of several lengths."""
    prepared = prepare(make_suite(8), "mc_text", tokenizer())
    plan = prepared.loglikelihood.plan(BatchSettings(token_budget=10**6))
    (batch,) = plan.batches
    assert len(set(batch.attention_mask.sum(1).tolist())) > 3  # left padding in the prompt pass
    chunk_lengths = {n for chunk in batch.chunks for n in chunk.input_ids.ne(0).sum(1).tolist()}
    assert len(batch.chunks) == 1 and len(chunk_lengths) > 2  # right padding in the continuation pass


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3"])
def test_sdpa_attention_with_padding_matches_eager(family: str) -> None:
    """Fully masked (left-padding) rows must not produce NaNs or leak into real rows under SDPA."""
    tok, suite = tokenizer(), make_suite()
    eager = prepare_and_score(ModelRuntime.of(sharp_model(family, "eager")), tok, suite, "mc_text", batch_size=8)
    sdpa = prepare_and_score(ModelRuntime.of(sharp_model(family, "sdpa")), tok, suite, "mc_text", batch_size=8)
    for a, b in zip(eager.outcomes, sdpa.outcomes):
        assert b.detail["loglikelihoods"] == pytest.approx(a.detail["loglikelihoods"], abs=TOL)


# --------------------------------------------------------------------------------------------
# Encoding rules
# --------------------------------------------------------------------------------------------


def test_trailing_space_moves_onto_the_continuation() -> None:
    tok = tokenizer()
    rule = encoding_rule(tok)
    ((ctx, cont),) = encode_pairs(tok, rule, [("Answer: ", "A")])
    assert tok.convert_ids_to_tokens(cont) == [" A"]  # the merged token, not " " + "A"
    assert ctx == tok.encode("Answer:", add_special_tokens=False)
    # A prompt ending in a space scores exactly like the same prompt with " " + candidate.
    model = sharp_model("llama")
    runtime = ModelRuntime.of(model)
    spaced = make_suite(4, mc_text=ProtocolSettings(template="Q: {context}\nA: ", target_delimiter=""))
    plain = make_suite(4)
    a = prepare_and_score(runtime, tok, spaced, "mc_text", batch_size=2)
    b = prepare_and_score(runtime, tok, plain, "mc_text", batch_size=2)
    for x, y in zip(a.outcomes, b.outcomes):
        assert x.detail["loglikelihoods"] == pytest.approx(y.detail["loglikelihoods"], abs=TOL)


def test_empty_context_uses_the_bos_token() -> None:
    tok = tokenizer()
    ((ctx, cont),) = encode_pairs(tok, encoding_rule(tok), [("", "the")])
    assert ctx == [tok.bos_token_id] and cont == tok.encode("the", add_special_tokens=False)


def test_bos_rule_follows_the_tokenizer() -> None:
    plain, with_bos = tokenizer(False), tokenizer(True)
    assert encoding_rule(plain).prefix == ()
    assert encoding_rule(with_bos).prefix == (with_bos.bos_token_id,)
    ((ctx, cont),) = encode_pairs(with_bos, encoding_rule(with_bos), [("Q: hi\nA:", " B")])
    assert ctx[0] == with_bos.bos_token_id and with_bos.bos_token_id not in cont
    model, suite = sharp_model("gemma"), make_suite(4)
    result = prepare_and_score(ModelRuntime.of(model), with_bos, suite, "mc_text")
    for item, outcome in zip(suite.items, result.outcomes):
        prompt = hand_prompt(item, suite.fewshot, lambda s: s.choices[s.gold])
        lls = [hand_loglikelihood(model, *hand_pair(with_bos, prompt, " " + c, bos=True))[0] for c in item.choices]
        assert outcome.detail["loglikelihoods"] == pytest.approx(lls, abs=TOL)


def test_long_contexts_are_left_truncated_keeping_the_continuation() -> None:
    model, tok, suite = sharp_model("gpt2"), tokenizer(), make_suite(4)
    prepared = prepare(suite, "mc_text", tok, max_length=20)
    assert prepared.longest_input <= 20
    result = score(ModelRuntime.of(model), prepared)
    for item, outcome in zip(suite.items, result.outcomes):
        prompt = hand_prompt(item, suite.fewshot, lambda s: s.choices[s.gold])
        lls = []
        for choice in item.choices:
            ctx, cont = hand_pair(tok, prompt, " " + choice)
            full = (ctx + cont)[-21:]  # lm-eval: keep max_length + 1 tokens, the last is never input
            lls.append(hand_loglikelihood(model, full[: len(full) - len(cont)], cont)[0])
        assert outcome.detail["loglikelihoods"] == pytest.approx(lls, abs=TOL)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_protocol_mismatch_errors_name_the_item_and_fix() -> None:
    tok = tokenizer()
    suite = make_suite(2)
    open_ended = replace(suite, items=(replace(suite.items[0], choices=(), gold=None),))
    with pytest.raises(ProtocolError, match=r"item 'q1', line 2: protocol 'mc_text' needs 'choices'"):
        prepare(open_ended, "mc_text", tok)
    with pytest.raises(ProtocolError, match="does not declare protocol 'mc_letters'"):
        prepare(replace(suite, protocols={"mc_text": suite.protocols["mc_text"]}), "mc_letters", tok)
    with pytest.raises(ProtocolError, match="unknown protocol"):
        prepare(replace(suite, protocols={**suite.protocols, "nope": ProtocolSettings()}), "nope", tok)
    no_block = replace(suite, protocols={**suite.protocols, "mc_letters": ProtocolSettings(template="{context}")})
    with pytest.raises(ProtocolError, match="choices_block"):
        prepare(no_block, "mc_letters", tok)
    no_target = replace(suite, items=(replace(suite.items[0], choices=(), gold=None, target=None),))
    with pytest.raises(ProtocolError, match="needs a non-empty 'target'"):
        prepare(no_target, "generate_until", tok)
    bad_gold = replace(suite, items=(replace(suite.items[0], gold=7),))
    with pytest.raises(ProtocolError, match="gold=7"):
        prepare(bad_gold, "mc_text", tok)


def test_inputs_longer_than_the_model_are_refused_with_a_fix() -> None:
    prepared = prepare(make_suite(2), "mc_text", tokenizer(), max_length=10_000)
    long_suite = replace(prepared.suite, items=(replace(prepared.suite.items[0], context="word " * 80),))
    prepared = prepare(long_suite, "mc_text", tokenizer(), max_length=10_000)
    with pytest.raises(ProtocolError, match="max_length=256"):
        score(ModelRuntime.of(sharp_model("gpt2")), prepared)
    result = prepare_and_score(
        ModelRuntime.of(sharp_model("gpt2")), tokenizer(), long_suite, "mc_text"
    )  # truncates for you
    assert len(result.outcomes) == 1


def test_empty_suite_scores_to_no_outcomes() -> None:
    suite = replace(make_suite(1), items=())
    for protocol in ("mc_text", "generate_until"):
        assert prepare_and_score(ModelRuntime.of(sharp_model("llama")), tokenizer(), suite, protocol).outcomes == ()


def test_default_protocol_and_limit() -> None:
    result = prepare_and_score(ModelRuntime.of(sharp_model("llama")), tokenizer(), make_suite(6), limit=2)
    assert result.protocol == "mc_text" and [o.item_id for o in result.outcomes] == ["q1", "q2"]
    assert result.suite == "tiny" and result.suite_hash == "h"


def test_prompt_batches_split_where_padding_would_dominate() -> None:
    settings = BatchSettings(token_budget=10_000)
    # Computed widths (after a 20-token shared prefix): 20, 18, 13, 12 | 11 | 4, 3 (each >= 0.6 of the first).
    lengths = [40, 38, 33, 32, 31, 24, 23]
    assert batching._chunks(lengths, settings, scored_all=False, shared=20, min_fill=0.6) == [
        slice(0, 4),
        slice(4, 5),
        slice(5, 7),
    ]
    assert batching._chunks(lengths, settings, scored_all=False, shared=20) == [slice(0, 7)]  # no fill rule
    # Nothing shared: whole lengths count, and only 23 < 0.6 * 40.
    assert batching._chunks(lengths, settings, scored_all=False, min_fill=0.6) == [slice(0, 6), slice(6, 7)]
