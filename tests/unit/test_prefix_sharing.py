"""Shared-prefix reuse in the scoring engine: exact, run once per evaluation, and easy to switch off.

Few-shot suites put the same examples before every prompt. The engine runs that common token
prefix once per ``score`` call and every prompt batch on top of a per-row shifted copy of its KV
cache (see ``pytest_layercheck/scoring/engine.py``). These tests check that this changes nothing
but speed: against ``share_prefix=False`` and against references computed by hand, unbatched and
without any cache, on tiny models of families with rotary positions (Llama, Qwen2), sliding
windows and logit soft-capping (Gemma2, window of 8 tokens, so any misplaced cache column shows)
and absolute position embeddings (GPT-2); at several batch sizes, with items whose lengths differ
by more than the shared prefix, and under layer ablations.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import pytest
import torch
from scoring_references import hand_generate, hand_loglikelihood, sharp_model
from tiny_models import tiny_tokenizer
from transformers.cache_utils import CacheLayerMixin

from pytest_layercheck.model.ablation import Ablation, ablate
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring import engine
from pytest_layercheck.scoring.batching import BatchSettings, shared_prefix
from pytest_layercheck.scoring.engine import MIN_SHARED_PREFIX
from pytest_layercheck.scoring.prompt_cache import RowsOfLayer
from pytest_layercheck.scoring.protocols import batch_settings, prepare, score
from pytest_layercheck.suites.schema import ProtocolSettings, Suite, SuiteItem


def model(family: str, attn: str = "eager") -> torch.nn.Module:
    return sharp_model(family, attn, seed=7, sharpen_embeddings=False)


TOL = 1e-4
#: p_correct and margin are computed from two log-likelihoods (the gold choice's and the best other /
#: the log-sum-exp of all), each within TOL: the margin is then within 2 * TOL, and so is p_correct
#: (|d log p| <= 2 * TOL, p <= 1).
SCORE_TOL = 2 * TOL
FAMILIES = ("llama", "qwen2", "gemma2", "gpt2")
BATCHES = (1, 3, None)  # None: only the token budget limits a batch


# --------------------------------------------------------------------------------------------
# Models, tokenizer, suites
# --------------------------------------------------------------------------------------------


@functools.cache
def tokenizer():
    return tiny_tokenizer()


# Item contexts from 1 to ~70 characters (the tokenizer is nearly character-level), so the
# suffixes after the shared few-shot prefix differ by far more than one batch's padding.
CONTEXTS = [
    "What is 2+2?",
    "x",
    "Name the capital of France, and say why it became the capital at all?",
    "Pick one.",
    "Which of these numbers is prime?",
    "Q",
    "The the the",
    "How many legs do three spiders and two ants have together?",
    "Sum?",
    "Which word rhymes with cat?",
]
CHOICES = [
    ("four", "five", "twenty-two", "x"),
    ("Paris", "Lyon"),
    ("A", "B", "the other one", "none of them at all"),
]
SHOTS = [
    SuiteItem(id="s1", context="What is 1+1?", domain="t", kind="t", choices=("two", "three"), gold=0, target="two"),
    SuiteItem(
        id="s2", context="Colour of the sky?", domain="t", kind="t", choices=("green", "blue"), gold=1, target="blue"
    ),
    SuiteItem(
        id="s3", context="Opposite of up?", domain="t", kind="t", choices=("down", "left"), gold=0, target="down"
    ),
]


def few_shot_suite(n: int = 10, shots: int = 3, **settings: ProtocolSettings) -> Suite:
    items = tuple(
        SuiteItem(
            id=f"q{i}",
            context=CONTEXTS[i % len(CONTEXTS)],
            domain="t",
            kind="t",
            choices=CHOICES[i % len(CHOICES)],
            gold=i % len(CHOICES[i % len(CHOICES)]),
            target=["four", "Paris", "the other"][i % 3],
        )
        for i in range(n)
    )
    protocols = {
        "mc_text": ProtocolSettings(template="Q: {context}\nA:"),
        "mc_letters": ProtocolSettings(template="Q: {context}\n{choices_block}\nA:"),
        "continuation": ProtocolSettings(template="Q: {context}\nA:"),
        "generate_until": ProtocolSettings(template="Q: {context}\nA:", until=("\n",), max_gen_toks=8),
    }
    protocols.update(settings)
    return Suite(
        name="fewshot",
        capability="knowledge",
        description="",
        items=items,
        protocols=protocols,
        default_protocol="mc_text",
        fewshot=tuple(SHOTS[:shots]),
        content_hash="h",
    )


# --------------------------------------------------------------------------------------------
# Hand references: one unpadded sequence per request, no cache, no mask, own log_softmax
# --------------------------------------------------------------------------------------------


def hand_requests(prepared) -> list[list[tuple[list[int], list[int]]]]:
    """Per item, the (context, continuation) token pairs, encoded by hand (lm-eval's rule)."""
    tok, delim = prepared.tokenizer, prepared.settings.target_delimiter
    out = []
    for rendered in prepared.items:
        pairs = []
        for cand in rendered.candidates:
            stripped = rendered.prompt.rstrip()
            whole = tok.encode(stripped + rendered.prompt[len(stripped) :] + delim + cand, add_special_tokens=False)
            ctx = tok.encode(stripped, add_special_tokens=False)
            pairs.append((ctx, whole[len(ctx) :]))
        out.append(pairs)
    return out


def lls_of(result) -> list[list[float]]:
    if "loglikelihoods" in result.outcomes[0].detail:
        return [list(o.detail["loglikelihoods"]) for o in result.outcomes]
    return [[o.scores["loglikelihood"]] for o in result.outcomes]


def hand_gold_scores(lls: list[float], gold: int) -> tuple[float, float]:
    """p_correct = exp(ll_gold - logsumexp(lls)) and margin = ll_gold - max(other lls), by hand."""
    top = max(lls)
    logsumexp = top + math.log(sum(math.exp(ll - top) for ll in lls))
    others = [ll for i, ll in enumerate(lls) if i != gold]
    return math.exp(lls[gold] - logsumexp), lls[gold] - max(others)


def assert_same_result(a, b) -> None:
    """Same log-likelihoods (to float rounding), identical metric decisions and generations."""
    assert [o.item_id for o in a.outcomes] == [o.item_id for o in b.outcomes]
    for x, y in zip(a.outcomes, b.outcomes):
        assert x.scores.keys() == y.scores.keys()
        for key in x.scores:
            if key == "loglikelihood":
                assert x.scores[key] == pytest.approx(y.scores[key], abs=TOL)
            elif key in ("p_correct", "margin"):  # float scores: equal to float rounding
                assert x.scores[key] == pytest.approx(y.scores[key], abs=SCORE_TOL), (x.item_id, key)
            else:  # 0/1 decisions: exactly equal
                assert x.scores[key] == y.scores[key], (x.item_id, key)
        if "loglikelihoods" in x.detail:
            assert x.detail["loglikelihoods"] == pytest.approx(y.detail["loglikelihoods"], abs=TOL)
        for key in ("prediction", "prediction_norm", "generation"):
            if key in x.detail:
                assert x.detail[key] == y.detail[key], (x.item_id, key)


class ForwardLog:
    """Records the token shape of every model forward (via the input embedding) while active."""

    def __init__(self, m) -> None:
        self.m, self.shapes = m, []

    def __enter__(self):
        self.handle = self.m.get_input_embeddings().register_forward_hook(
            lambda mod, args, out: self.shapes.append(tuple(args[0].shape))
        )
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


# --------------------------------------------------------------------------------------------
# The common prefix
# --------------------------------------------------------------------------------------------


def test_shared_prefix_is_the_longest_common_token_prefix() -> None:
    assert shared_prefix([(1, 2, 3, 4), (1, 2, 3, 5, 6), (1, 2, 9)]) == (1, 2)
    # Every sequence keeps at least its last token (its logits score what follows).
    assert shared_prefix([(1, 2, 3), (1, 2, 3, 4, 5)]) == (1, 2)
    assert shared_prefix([(7, 1), (8, 1)]) == ()
    # Fewer than two distinct sequences: nothing to share.
    assert shared_prefix([(1, 2, 3), (1, 2, 3)]) == ()
    assert shared_prefix([]) == ()
    # Order does not matter (the lexicographic extremes bound everything in between).
    seqs = [(5, 5, 1, 9), (5, 5, 1, 0, 0), (5, 5, 1, 4), (5, 5, 2)]
    assert shared_prefix(seqs) == shared_prefix(seqs[::-1]) == (5, 5)


def test_few_shot_prompts_share_a_long_prefix_and_batches_mix_lengths(one_batch: None) -> None:
    """The situation under test is real: a long shared prefix, suffixes differing by more than it."""
    prepared = prepare(few_shot_suite(), "mc_text", tokenizer())
    ll = prepared.loglikelihood
    suffixes = [len(c) - len(ll.prefix) for c in ll.contexts]
    assert len(ll.prefix) >= MIN_SHARED_PREFIX
    assert all(c[: len(ll.prefix)] == ll.prefix for c in ll.contexts)
    assert max(suffixes) - min(suffixes) > len(ll.prefix) // 2
    (batch,) = ll.plan(BatchSettings(token_budget=10**6)).batches
    assert len(set(batch.attention_mask.sum(1).tolist())) > 5
    short = prepare(few_shot_suite(shots=0), "mc_text", tokenizer()).loglikelihood
    assert len(short.prefix) < MIN_SHARED_PREFIX


# --------------------------------------------------------------------------------------------
# Exactness
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("protocol", ["mc_text", "continuation"])
def test_loglikelihood_with_sharing_equals_hand_computation(family: str, protocol: str) -> None:
    m, tok = model(family), tokenizer()
    runtime = ModelRuntime.of(m)
    # An empty delimiter lets a continuation target be the model's own greedy text (exact_match 1).
    suite = few_shot_suite(continuation=ProtocolSettings(template="Q: {context}\nA:", target_delimiter=""))
    if protocol == "continuation":
        greedy = {
            r.item.id: hand_generate(m, tok, tok.encode(r.prompt), (), 3) for r in prepare(suite, protocol, tok).items
        }
        suite = replace(
            suite,
            items=tuple(
                replace(it, target=greedy[it.id]) if k % 2 == 0 and greedy[it.id] else it
                for k, it in enumerate(suite.items)
            ),
        )
    prepared = prepare(suite, protocol, tok)
    expected = [[hand_loglikelihood(m, ctx, cont) for ctx, cont in pairs] for pairs in hand_requests(prepared)]
    unshared = score(runtime, prepared, batch_size=4, share_prefix=False)
    results = {bs: score(runtime, prepared, batch_size=bs) for bs in BATCHES}
    results["budget"] = score(runtime, prepared, token_budget=300)  # budget-driven batches of a few rows
    for result in results.values():
        assert_same_result(result, unshared)
        for item, outcome, ref in zip(prepared.items, result.outcomes, expected):
            lls = [ll for ll, _ in ref]
            if protocol == "mc_text":
                assert outcome.detail["loglikelihoods"] == pytest.approx(lls, abs=TOL)
                pred = max(range(len(lls)), key=lls.__getitem__)
                pred_norm = max(range(len(lls)), key=lambda i: lls[i] / len(item.candidates[i]))
                gold = item.item.gold
                assert outcome.scores.keys() == {"acc", "acc_norm", "p_correct", "margin"}
                assert {k: outcome.scores[k] for k in ("acc", "acc_norm")} == {
                    "acc": float(pred == gold),
                    "acc_norm": float(pred_norm == gold),
                }
                p_correct, margin = hand_gold_scores(lls, gold)
                assert outcome.scores["p_correct"] == pytest.approx(p_correct, abs=SCORE_TOL)
                assert outcome.scores["margin"] == pytest.approx(margin, abs=SCORE_TOL)
            else:
                assert outcome.scores["loglikelihood"] == pytest.approx(lls[0], abs=TOL)
                assert outcome.scores["exact_match"] == float(ref[0][1])
    # Decisions go both ways, so their equality means something.
    assert 0 < unshared.mean("acc" if protocol == "mc_text" else "exact_match") < 1


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_single_token_candidates_with_sharing(family: str) -> None:
    """mc_letters: every score comes from the shared pass's last position, no continuation pass."""
    m, tok = model(family), tokenizer()
    runtime = ModelRuntime.of(m)
    prepared = prepare(few_shot_suite(8, shots=2), "mc_letters", tok)
    assert len(prepared.loglikelihood.prefix) >= MIN_SHARED_PREFIX
    unshared = score(runtime, prepared, share_prefix=False)
    for bs in BATCHES:
        result = score(runtime, prepared, batch_size=bs)
        assert_same_result(result, unshared)
        for outcome, pairs in zip(result.outcomes, hand_requests(prepared)):
            assert outcome.detail["loglikelihoods"] == pytest.approx(
                [hand_loglikelihood(m, *p)[0] for p in pairs], abs=TOL
            )


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_with_sharing_equals_plain_greedy_loop(family: str) -> None:
    m, tok = model(family), tokenizer()
    runtime = ModelRuntime.of(m)
    settings = ProtocolSettings(template="Q: {context}\nA:", until=("\n", "?"), max_gen_toks=8)
    prepared = prepare(few_shot_suite(generate_until=settings), "generate_until", tok)
    assert len(prepared.generation.prefix) >= MIN_SHARED_PREFIX
    expected = [
        hand_generate(m, tok, tok.encode(r.prompt), settings.until, settings.max_gen_toks) for r in prepared.items
    ]
    assert len(set(expected)) > 1
    unshared = score(runtime, prepared, batch_size=4, share_prefix=False)
    assert [o.detail["generation"] for o in unshared.outcomes] == expected
    for bs in BATCHES:
        result = score(runtime, prepared, batch_size=bs)
        assert [o.detail["generation"] for o in result.outcomes] == expected
        assert_same_result(result, unshared)


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])  # Gemma2's soft-capping is eager-only
def test_sdpa_attention_with_sharing(family: str) -> None:
    """SDPA builds its (sliding-window) masks its own way; sharing must not depend on that."""
    tok = tokenizer()
    prepared = prepare(few_shot_suite(), "mc_text", tok)
    eager = score(ModelRuntime.of(model(family, "eager")), prepared, share_prefix=False)
    sdpa_model = model(family, "sdpa")
    for bs in (2, None):
        assert_same_result(score(ModelRuntime.of(sdpa_model), prepared, batch_size=bs), eager)


def test_rows_padded_past_the_whole_prefix(one_batch: None) -> None:
    """A short shared prefix (one short shot) and very different suffixes in one batch: some rows'
    left padding is shorter than the prefix (their cache columns are shifted copies of it), others'
    is wider (their cache holds no prefix column at all; they are computed in full)."""
    shot = SuiteItem(id="s", context="Up?", domain="t", kind="t", choices=("down", "left"), gold=0, target="down")
    suite = replace(few_shot_suite(10, shots=0), fewshot=(shot,))
    items = [replace(it, context=it.context * 2) for it in suite.items]
    longest = max(items, key=lambda it: len(it.context))
    items += [replace(longest, id=f"cut{k}", context=longest.context[:-k]) for k in (3, 9)]
    suite = replace(suite, items=tuple(items))
    for family in ("llama", "gemma2", "gpt2"):
        m = model(family)
        prepared = prepare(suite, "mc_text", tokenizer())
        ll = prepared.loglikelihood
        (batch,) = ll.plan(batch_settings(ModelRuntime.of(m))).batches
        pads = batch.attention_mask.shape[1] - batch.attention_mask.sum(1)
        assert len(ll.prefix) >= MIN_SHARED_PREFIX
        assert ((pads > 0) & (pads < len(ll.prefix))).sum() >= 2 and (pads > len(ll.prefix)).sum() >= 2
        result = score(ModelRuntime.of(m), prepared)
        assert_same_result(result, score(ModelRuntime.of(m), prepared, share_prefix=False))
        for outcome, pairs in zip(result.outcomes, hand_requests(prepared)):
            assert outcome.detail["loglikelihoods"] == pytest.approx(
                [hand_loglikelihood(m, *p)[0] for p in pairs], abs=TOL
            )


def test_duplicate_prompts_and_truncated_contexts() -> None:
    m, tok = model("llama"), tokenizer()
    runtime = ModelRuntime.of(m)
    suite = few_shot_suite(4)
    doubled = prepare(replace(suite, items=suite.items + suite.items), "mc_text", tok)
    result = score(runtime, doubled)
    assert lls_of(result)[:4] == lls_of(result)[4:]
    assert_same_result(result, score(runtime, doubled, share_prefix=False))
    # Left truncation cuts the few-shot block differently per prompt: nothing is shared, still right.
    truncated = prepare(suite, "mc_text", tok, max_length=40)
    assert len(truncated.loglikelihood.prefix) < MIN_SHARED_PREFIX
    assert_same_result(score(runtime, truncated), score(runtime, truncated, share_prefix=False))


# --------------------------------------------------------------------------------------------
# Once per evaluation, from the model as it is at call time
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["mc_text", "generate_until"])
def test_prefix_runs_once_per_score_call(protocol: str, one_batch: None) -> None:
    m, tok = model("llama"), tokenizer()
    runtime = ModelRuntime.of(m)
    prepared = prepare(few_shot_suite(), protocol, tok)
    prompts = prepared.loglikelihood.contexts if prepared.loglikelihood else prepared.generation.prompts
    prefix, width = len((prepared.loglikelihood or prepared.generation).prefix), max(map(len, prompts))
    for _ in range(2):  # again on the second call: the prefix cache is never kept between calls
        with ForwardLog(m) as log:
            score(runtime, prepared, batch_size=3)
        assert log.shapes[0] == (1, prefix) and log.shapes.count((1, prefix)) == 1
        assert log.shapes[1] == (3, width - prefix)  # the first batch runs only the columns after the prefix
    with ForwardLog(m) as log:
        score(runtime, prepared, batch_size=3, share_prefix=False)
    assert (1, prefix) not in log.shapes and log.shapes[0] == (3, width)


def test_no_prefix_pass_below_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    m, tok = model("llama"), tokenizer()
    runtime = ModelRuntime.of(m)
    prepared = prepare(few_shot_suite(), "mc_text", tok)
    prefix, width = len(prepared.loglikelihood.prefix), max(map(len, prepared.loglikelihood.contexts))
    monkeypatch.setattr(engine, "MIN_SHARED_PREFIX", prefix + 1)
    with ForwardLog(m) as log:
        result = score(runtime, prepared, batch_size=3)
    assert (1, prefix) not in log.shapes and log.shapes[0] == (3, width)
    assert_same_result(result, score(runtime, prepared, batch_size=3, share_prefix=False))


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_sharing_follows_the_ablation_of_each_call(family: str) -> None:
    """Layer skipping deletes blocks and renumbers KV slots between calls: the prefix cache must be
    the current model's, so the same prepared suite is scored intact, ablated and intact again."""
    m, tok = model(family), tokenizer()
    runtime = ModelRuntime.of(m)
    prepared = prepare(few_shot_suite(6), "continuation", tok)
    intact = score(runtime, prepared)
    with ablate(m, Ablation.skipping((1,))):
        ablated = score(runtime, prepared, batch_size=2)
        assert_same_result(ablated, score(runtime, prepared, batch_size=2, share_prefix=False))
        for outcome, pairs in zip(ablated.outcomes, hand_requests(prepared)):
            assert outcome.scores["loglikelihood"] == pytest.approx(hand_loglikelihood(m, *pairs[0])[0], abs=TOL)
    assert_same_result(score(runtime, prepared), intact)
    assert max(abs(a - b) for a, b in zip(intact.values("loglikelihood"), ablated.values("loglikelihood"))) > 0.1


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_batches_on_several_cores_give_the_serial_numbers(family: str) -> None:
    """Prompt batches on two threads, one torch thread each (``split_over_cores``): the hand-computed
    log-likelihoods, and bit for bit the numbers of the batches run one after another."""
    import threading

    from pytest_layercheck.model.architecture import get_adapter

    m, tok = model(family), tokenizer()
    runtime = ModelRuntime.of(m)
    prepared = prepare(few_shot_suite(), "mc_text", tok)
    assert prepared.loglikelihood is not None
    plan = prepared.loglikelihood.plan(BatchSettings(token_budget=300))
    assert len(plan.batches) > 2
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    idents: set[int] = set()
    hook = get_adapter(m).layers[-1].register_forward_pre_hook(lambda *_: idents.add(threading.get_ident()))
    try:
        split = engine.run_loglikelihood(runtime, plan, workers=2)
        hook.remove()
        serial = engine.run_loglikelihood(runtime, plan, workers=1)
    finally:
        hook.remove()
        torch.set_num_threads(before)
    assert len(idents - {threading.get_ident()}) == 2  # the batches ran on two other threads
    assert torch.equal(split.loglikelihood, serial.loglikelihood) and torch.equal(split.greedy, serial.greedy)
    expected = [hand_loglikelihood(m, ctx, cont)[0] for pairs in hand_requests(prepared) for ctx, cont in pairs]
    assert split.loglikelihood.tolist() == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("family", FAMILIES)
def test_continuation_calls_read_the_prompt_cache_one_layer_at_a_time(family: str, share: bool) -> None:
    """A continuation call gathers its rows of the prompt cache inside each layer (``RowsOfLayer``),
    not for every layer up front: the hand-computed numbers, the prompt cache left as it was for the
    batch's next call, and no layer's gathered keys still alive when the next layer gathers its own."""
    import weakref

    m, tok = model(family), tokenizer()
    prepared = prepare(few_shot_suite(), "mc_text", tok)
    assert prepared.loglikelihood is not None
    plan = prepared.loglikelihood.plan(BatchSettings(token_budget=30))
    assert any(len(batch.chunks) > 1 for batch in plan.batches)  # later calls reuse the same prompt cache
    alive: list[weakref.ref] = []
    sources: list[tuple[CacheLayerMixin, torch.Tensor]] = []
    update, init = RowsOfLayer.update, RowsOfLayer.__init__

    def recorded_init(self, source, index):
        sources.append((source, source.keys.clone()))
        init(self, source, index)

    def recorded_update(self, key_states, value_states, *args, **kwargs):
        assert all(ref() is None for ref in alive)  # the previous layer's selection is gone
        keys, values = update(self, key_states, value_states, *args, **kwargs)
        alive[:] = [weakref.ref(keys), weakref.ref(values)]
        return keys, values

    RowsOfLayer.update, RowsOfLayer.__init__ = recorded_update, recorded_init
    try:
        result = engine.run_loglikelihood(ModelRuntime.of(m), plan, share_prefix=share, workers=1)
    finally:
        RowsOfLayer.update, RowsOfLayer.__init__ = update, init
    assert sources and all(torch.equal(source.keys, before) for source, before in sources)
    expected = [hand_loglikelihood(m, ctx, cont)[0] for pairs in hand_requests(prepared) for ctx, cont in pairs]
    assert result.loglikelihood.tolist() == pytest.approx(expected, abs=TOL)
