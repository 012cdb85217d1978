"""Retrieval heads: the copy score on hand-built attention patterns, the recorded top-1 positions
against a full forward pass with attention outputs, the whole detection against a hand computation
on a tiny model, the masking comparison against independent decoding, errors, reports and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from scoring_references import sharp_attention_model
from tiny_models import tiny_config, tiny_model, tiny_tokenizer
from transformers import AutoModelForCausalLM

from pytest_layercheck.analysis.retrieval_heads.decoding import greedy_decode
from pytest_layercheck.analysis.retrieval_heads.detection import RetrievalHeads, find_retrieval_heads
from pytest_layercheck.analysis.retrieval_heads.masking import MaskingComparison, compare_masking, random_control_heads
from pytest_layercheck.analysis.retrieval_heads.needles import (
    NeedleTest,
    copy_counts,
    needle_recall,
    needle_scores,
    needle_tests,
    tokenise_needle,
)
from pytest_layercheck.cli import main
from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.statistics import exact_mcnemar
from pytest_layercheck.model import kv_cache
from pytest_layercheck.model.head_masking import mask_heads
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring.protocols import normalise_answer, prepare, score
from pytest_layercheck.suites.loader import load_suite
from pytest_layercheck.suites.retrieval_problems import DECOYS

# --------------------------------------------------------------------------------------------------
# The score on hand-built attention patterns
# --------------------------------------------------------------------------------------------------

#            position: 0  1  2  3  4  5  6
PROMPT_IDS = (5, 9, 7, 7, 3, 8, 3)
SPAN = (2, 5)  # needle tokens 7, 7, 3; the 3 at position 6 lies outside the needle
GENERATED = (7, 3, 1)
# argmax[step][layer][head]
ARGMAX = torch.tensor([
    [[2, 0], [3, 1]],  # step 0 emits 7: (0,0) copies from 2, (1,0) from 3; (0,1) and (1,1) look elsewhere
    [[4, 4], [1, 6]],  # step 1 emits 3: (0,0), (0,1) copy from 4; (1,1) sees a 3 at 6, outside the needle
    [[4, 6], [2, 5]],  # step 2 emits 1: nobody copies (no 1 in the needle)
])  # fmt: skip


def test_copy_counts_by_hand() -> None:
    counts = copy_counts(ARGMAX, GENERATED, PROMPT_IDS, SPAN)
    assert counts.tolist() == [[2, 1], [1, 0]]
    expected = torch.tensor([[2 / 3, 1 / 3], [1 / 3, 0]], dtype=torch.float64)
    torch.testing.assert_close(needle_scores(ARGMAX, GENERATED, PROMPT_IDS, SPAN), expected)


def test_copy_counts_checks_shapes() -> None:
    with pytest.raises(ValueError, match="3 steps"):
        copy_counts(ARGMAX[:2], GENERATED, PROMPT_IDS, SPAN)
    with pytest.raises(ValueError, match="span"):
        copy_counts(ARGMAX, GENERATED, PROMPT_IDS, (5, 9))


def test_needle_recall_is_multiset_token_recall() -> None:
    needle = [1, 2, 2, 3]
    assert needle_recall([2, 3, 9], needle) == 0.5  # exactly half: such a test does not count
    assert needle_recall([2, 2, 3, 2], needle) == 0.75  # the third 2 matches nothing
    assert needle_recall([3, 2, 1, 2], needle) == 1.0  # order does not matter (ROUGE-1)


# --------------------------------------------------------------------------------------------------
# Needle tests
# --------------------------------------------------------------------------------------------------


def test_needle_tests_are_deterministic_and_prefix_stable() -> None:
    first = needle_tests(12, seed=3)
    assert first == needle_tests(12, seed=3)
    assert needle_tests(4, seed=3) == first[:4]
    assert needle_tests(4, seed=4) != first[:4]
    assert [t.depth for t in first[:6]] == [0.0, 0.25, 0.5, 0.75, 1.0, 0.0]
    assert [t.size for t in first] == ["short"] * 5 + ["medium"] * 5 + ["short"] * 2
    for test in first:
        assert test.prompt.count(test.needle) == 1  # the code appears only in the needle sentence
        groups = test.needle.split()
        assert len(groups) == 2 and all(len(g) == 4 and g.isdigit() for g in groups)
        decoys = sum(test.prompt.count(d.split("{}")[1]) for d in DECOYS if d.split("{}")[1].strip(". "))
        assert decoys >= 3
        assert test.prompt.endswith(
            f"What is the secret code for {test.needle_sentence[20:].split(' is ')[0]}?\n"
            f"The secret code for {test.needle_sentence[20:].split(' is ')[0]} is"
        )


def test_tokenize_needle_span_holds_the_code() -> None:
    tok = tiny_tokenizer(add_bos=True)
    for test in needle_tests(3):
        tokenized = tokenise_needle(test, tok)
        assert tokenized.prompt_ids[0] == 1  # the BOS rule of the scoring code applies
        assert tok.decode(list(tokenized.needle_ids)) == test.needle
        assert tok.decode(list(tokenized.prompt_ids[1:]), skip_special_tokens=True) == test.prompt


def test_needle_tests_reject_bad_input() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        needle_tests(0)
    with pytest.raises(ConfigError, match="haystack size"):
        needle_tests(2, sizes=("huge",))


# --------------------------------------------------------------------------------------------------
# Recording during greedy decoding
# --------------------------------------------------------------------------------------------------


def reference_argmax(model: torch.nn.Module, prompt: list[int], generated: list[int]) -> torch.Tensor:
    """Top-1 positions from ONE full forward pass over prompt + generated with output_attentions:
    the row of the position that predicted each generated token."""
    ids = torch.tensor([prompt + generated[:-1]])
    with torch.no_grad():
        attentions = model(ids, output_attentions=True).attentions  # per layer (1, heads, q, k)
    rows = [len(prompt) - 1 + s for s in range(len(generated))]
    return torch.stack([torch.stack([a[0, :, r].argmax(-1) for a in attentions]) for r in rows])


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_recorded_positions_match_a_full_forward_pass(implementation: str) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", layers=3), attn_implementation=implementation).eval()
    prompt = [int(x) for x in torch.randint(3, 128, (20,), generator=torch.Generator().manual_seed(1))]
    decoded = greedy_decode(model, tiny_tokenizer(), prompt, 6, until=(), record=True)
    with torch.no_grad():
        expected_tokens = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert list(decoded.tokens) == expected_tokens[0, len(prompt) :].tolist()
    assert decoded.argmax is not None and decoded.argmax.shape == (6, 3, 4)
    eager = model
    if implementation == "sdpa":  # the reference needs weights: same weights, eager attention
        eager = AutoModelForCausalLM.from_config(tiny_config("llama", layers=3), attn_implementation="eager").eval()
        eager.load_state_dict(model.state_dict())
    assert torch.equal(decoded.argmax, reference_argmax(eager, prompt, list(decoded.tokens)))
    assert model.config._attn_implementation == implementation  # restored


def test_decoding_stops_at_a_stop_string() -> None:
    tok = tiny_tokenizer()
    model = tiny_model("llama", layers=2)
    prompt = tok("The code is", add_special_tokens=False)["input_ids"]
    free = greedy_decode(model, tok, prompt, 8, until=())
    first = tok.decode([free.tokens[0]])
    stopped = greedy_decode(model, tok, prompt, 8, until=(first,), record=True)
    assert stopped.tokens == free.tokens[:1] and stopped.argmax is not None and stopped.argmax.shape[0] == 1


# --------------------------------------------------------------------------------------------------
# Detection end to end, against a hand computation
# --------------------------------------------------------------------------------------------------


def self_consistent_needle(model: torch.nn.Module, tok, filler: str) -> NeedleTest:
    """A needle the random model's greedy answer recovers: iterate needle := answer to a fixed point."""
    needle = "ab"
    for _ in range(8):
        sentence = f"The code is {needle}."
        test = NeedleTest(
            f"fixed-{filler[:4]}", f"{filler} {sentence} Then more.\nThe code is", needle, sentence, 0.5, "short"
        )
        answer = tok.decode(list(greedy_decode(model, tok, tokenise_needle(test, tok).prompt_ids, 8).tokens))
        new = answer.split("\n")[0].strip()[:6].strip()
        if new == needle:
            return test
        needle = new or needle
    raise AssertionError("no fixed point: pick another filler")


def test_detection_equals_hand_computation() -> None:
    """Valid tests are averaged, invalid ones ignored; each copy is counted from a full forward pass."""
    model, tok = tiny_model("llama", layers=4), tiny_tokenizer()
    valid = [self_consistent_needle(model, tok, f) for f in ("Some words here.", "Other words there.")]
    invalid = NeedleTest("wrong", "Words.\nThe code is 5555.\nThe code is", "5555", "The code is 5555.", 0.0, "short")
    result = find_retrieval_heads(model, tok, tests=[valid[0], invalid, valid[1]], max_new_tokens=8)

    total = torch.zeros(4, 4, dtype=torch.float64)
    counted = 0
    for test in (valid[0], invalid, valid[1]):
        tokenized = tokenise_needle(test, tok)
        prompt, (start, end) = list(tokenized.prompt_ids), tokenized.span
        generated = list(greedy_decode(model, tok, prompt, 8).tokens)
        needle = prompt[start:end]
        hits = sum(min(generated.count(t), needle.count(t)) for t in set(needle))
        if hits / len(needle) <= 0.5:
            continue
        counted += 1
        argmax = reference_argmax(model, prompt, generated)
        for s, token in enumerate(generated):
            for layer in range(4):
                for head in range(4):
                    position = int(argmax[s, layer, head])
                    if start <= position < end and prompt[position] == token:
                        total[layer, head] += 1 / (end - start)
    assert counted == 2 and result.valid_tests == 2
    assert [t.valid for t in result.tests] == [True, False, True]
    assert total.max() > 0  # some head copies, so the comparison below is not all zeros
    for (layer, head), value in result.scores.items():
        assert value == pytest.approx(float(total[layer, head]) / 2, abs=1e-12)
    expected = sorted(
        ((layer, h) for layer in range(4) for h in range(4) if total[layer, h] / 2 > 0.1),
        key=lambda k: (-float(total[k]), k),
    )
    assert result.retrieval_heads == expected
    assert result.share == len(expected) / 16


def test_no_valid_test_gives_zero_scores() -> None:
    model, tok = tiny_model("llama", layers=2), tiny_tokenizer()
    invalid = NeedleTest("wrong", "Words.\nThe code is 5555.\nThe code is", "5555", "The code is 5555.", 0.0, "short")
    result = find_retrieval_heads(model, tok, tests=[invalid])
    assert result.valid_tests == 0 and set(result.scores.values()) == {0.0} and result.retrieval_heads == []


# --------------------------------------------------------------------------------------------------
# Masking comparison
# --------------------------------------------------------------------------------------------------


def test_masking_applies_during_decoding_only() -> None:
    """The prefill (all prompt tokens but the last) runs intact; every decoding step, including the
    one that produces the first answer token, runs with the head attending uniformly."""
    model, tok = sharp_attention_model(), tiny_tokenizer()
    calls: list[torch.Tensor] = []
    handle = model.model.layers[2].self_attn.register_forward_hook(lambda m, a, out: calls.append(out[1]))
    prompt = [int(x) for x in torch.randint(3, 128, (10,), generator=torch.Generator().manual_seed(2))]
    try:
        decoded = greedy_decode(model, tok, prompt, 4, until=(), masked={2: [1]})
    finally:
        handle.remove()
    assert len(calls) == 1 + len(decoded.tokens) == 5
    prefill = calls[0][0, 1]  # head 1 over the 9 prefilled positions
    assert prefill.shape == (9, 9) and (prefill[-1] - 1 / 9).abs().max() > 0.05  # not uniform: intact
    for step, weights in enumerate(calls[1:]):
        keys = 10 + step
        assert weights.shape[-2:] == (1, keys)
        torch.testing.assert_close(weights[0, 1, 0], torch.full((keys,), 1 / keys))  # uniform
        assert (weights[0, 0, 0] - 1 / keys).abs().max() > 0.05  # an unmasked head is not


def synthetic_heads(scores: dict[tuple[int, int], float], layers: int = 4, heads: int = 4) -> RetrievalHeads:
    full = {(layer, h): scores.get((layer, h), 0.0) for layer in range(layers) for h in range(heads)}
    return RetrievalHeads("tiny", layers, heads, 0.1, 0.5, full, ())


SCORES = {(2, 1): 0.6, (3, 0): 0.4, (1, 3): 0.2, (0, 2): 0.1, (2, 2): 0.05}


def test_top_and_random_heads() -> None:
    heads = synthetic_heads(SCORES)
    assert heads.retrieval_heads == [(2, 1), (3, 0), (1, 3)]  # 0.1 itself is not above the threshold
    assert heads.top(2) == [(2, 1), (3, 0)]
    control = random_control_heads(heads, 3, seed=0)
    assert control == random_control_heads(heads, 3, seed=0)
    assert len(set(control)) == 3 and not set(control) & {(2, 1), (3, 0), (1, 3)}
    draws = {tuple(random_control_heads(heads, 3, seed=s)) for s in range(10)}
    assert len(draws) > 1  # the seed matters
    assert all(heads.scores[h] <= 0.1 for d in draws for h in d)
    with pytest.raises(ConfigError, match="positive"):
        heads.top(0)
    with pytest.raises(ConfigError, match="more than the 16 heads"):
        heads.top(17)
    with pytest.raises(ConfigError, match="non-retrieval heads"):
        random_control_heads(heads, 9)  # 16 - 3 retrieval heads - 9 top heads leave only 4


def test_mcnemar_p_values_by_hand() -> None:
    comparison = MaskingComparison(
        model="m",
        suite="s",
        protocol="generate_until",
        metric="exact_match",
        k=2,
        seed=0,
        decode_only=True,
        item_ids=tuple("abcdefgh"),
        top_heads=((0, 0), (1, 1)),
        top_scores=(0.5, 0.05),
        random_heads=((2, 2), (3, 3)),
        threshold=0.1,
        intact=(1, 1, 1, 1, 1, 1, 0, 0),
        top_masked=(0, 0, 0, 0, 1, 0, 0, 1),
        random_masked=(1, 1, 1, 1, 1, 0, 1, 0),
    )
    assert comparison.intact_accuracy == 0.75 and comparison.top_accuracy == 0.25
    assert comparison.random_accuracy == 0.75 and comparison.difference == 0.5
    # random right & top wrong: a, b, c, d, g (5); top right & random wrong: h (1)
    assert comparison.p_value == exact_mcnemar(5, 1) == pytest.approx(2 * 7 / 64)
    assert comparison.p_top_vs_intact == exact_mcnemar(5, 1)  # a-d, f lost; h gained
    assert comparison.p_random_vs_intact == exact_mcnemar(1, 1)
    assert comparison.retrieval_heads_masked == 1
    json.dumps(comparison.to_dict())


@pytest.fixture(scope="module")
def echo_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generate_until suite whose targets are half right, half wrong for the tiny model (its greedy
    answers come from the engine's batched ``generate``, independent of the code under test)."""
    model, tok = sharp_attention_model(), tiny_tokenizer()
    contexts = [f"Key {i}: {chr(97 + i) * 3} and {i * 7}.\nKey {i}:" for i in range(12)]
    items = [
        {"id": f"k{i}", "context": c, "domain": "kv", "kind": "echo", "target": "x"} for i, c in enumerate(contexts)
    ]
    path = tmp_path_factory.mktemp("echo") / "echo.yaml"
    document = {
        "name": "echo",
        "capability": "retrieval",
        "description": "tiny echo",
        "default_protocol": "generate_until",
        "protocols": {"generate_until": {"template": "{context}", "until": ["\n"], "max_gen_toks": 5}},
        "items": items,
    }
    path.write_text(yaml.safe_dump(document))
    answers = score(ModelRuntime.of(model), prepare(load_suite(path), "generate_until", tok)).outcomes
    kept = [(item, outcome.detail["answer"]) for item, outcome in zip(items, answers) if outcome.detail["answer"]][:6]
    assert len(kept) == 6  # targets must be non-empty
    for i, (item, answer) in enumerate(kept):
        item["target"] = answer if i % 2 == 0 else "never"
    document["items"] = [item for item, _ in kept]
    path.write_text(yaml.safe_dump(document))
    return path


def reference_masked_answers(model, tok, suite_path: Path, heads: dict[int, list[int]]) -> list[str]:
    """The paper's decode-only masking, written out: unmasked prefill of all but the last prompt token,
    then every step with the heads masked."""
    prepared = prepare(load_suite(suite_path), "generate_until", tok)
    answers = []
    for prompt in prepared.generation.prompts:
        with torch.no_grad():
            past = kv_cache.returned_cache(model(torch.tensor([prompt[:-1]]), use_cache=True))
            token, out = prompt[-1], []
            with mask_heads(model, heads, mode="uniform"):
                for _ in range(5):
                    step = model(torch.tensor([[token]]), use_cache=True, **kv_cache.cache_kwargs(model, past))
                    past, token = kv_cache.returned_cache(step), int(step.logits[0, -1].argmax())
                    if token == 2:
                        break
                    out.append(token)
                    if "\n" in tok.decode(out, skip_special_tokens=True):
                        break
        answers.append(tok.decode(out, skip_special_tokens=True).split("\n")[0])
    return answers


def test_compare_masking_against_independent_decoding(echo_suite: Path) -> None:
    model, tok = sharp_attention_model(), tiny_tokenizer()
    heads = synthetic_heads(SCORES)
    comparison = compare_masking(model, tok, heads=heads, k=3, suite=echo_suite, limit=None, seed=1)
    assert comparison.decode_only and comparison.metric == "exact_match"
    assert comparison.intact == (1.0, 0.0, 1.0, 0.0, 1.0, 0.0)  # the engine's answers, by construction
    assert list(comparison.top_heads) == [(2, 1), (3, 0), (1, 3)]
    assert list(comparison.random_heads) == random_control_heads(heads, 3, seed=1)
    targets = [item.target for item in load_suite(echo_suite).items]
    for masked, outcomes in (
        (comparison.top_heads, comparison.top_masked),
        (comparison.random_heads, comparison.random_masked),
    ):
        spec: dict[int, list[int]] = {}
        for layer, head in masked:
            spec.setdefault(layer, []).append(head)
        answers = reference_masked_answers(model, tok, echo_suite, spec)
        assert comparison.answers["top" if outcomes is comparison.top_masked else "random"] == tuple(answers)
        assert outcomes == tuple(float(normalise_answer(a) == normalise_answer(t)) for a, t in zip(answers, targets))
    assert comparison.top_masked != comparison.intact  # masking changes answers here: the check is sharp


def test_compare_masking_likelihood_protocol_masks_every_position(echo_suite: Path) -> None:
    model, tok = sharp_attention_model(), tiny_tokenizer()
    suite = load_suite(echo_suite)
    # a copy of the suite with a continuation protocol
    data = yaml.safe_load(echo_suite.read_text())
    data["protocols"]["continuation"] = {"template": "{context}"}
    path = echo_suite.parent / "echo_cont.yaml"
    path.write_text(yaml.safe_dump(data))
    comparison = compare_masking(model, tok, heads=synthetic_heads(SCORES), k=1, suite=path, protocol="continuation")
    assert not comparison.decode_only and len(comparison.intact) == len(suite.items)


def test_compare_masking_rejects_bad_k_and_foreign_heads() -> None:
    model, tok = tiny_model("llama", layers=4), tiny_tokenizer()
    with pytest.raises(ConfigError, match="more than the 16 heads"):
        compare_masking(model, tok, heads=synthetic_heads(SCORES), k=20)
    with pytest.raises(ConfigError, match="6 layers"):
        compare_masking(model, tok, heads=synthetic_heads(SCORES, layers=6), k=2)


# --------------------------------------------------------------------------------------------------
# Reports and CLI
# --------------------------------------------------------------------------------------------------


def test_reports_show_scores_and_comparison() -> None:
    from pytest_layercheck.analysis.retrieval_heads.render import retrieval_markdown, retrieval_renderable
    from pytest_layercheck.report.format import render_text

    heads = synthetic_heads(SCORES)
    comparison = MaskingComparison(
        "m",
        "retrieval",
        "generate_until",
        "exact_match",
        2,
        0,
        True,
        ("a", "b"),
        ((2, 1), (3, 0)),
        (0.6, 0.4),
        ((0, 0), (1, 1)),
        0.1,
        (1, 1),
        (0, 0),
        (1, 1),
    )
    text = render_text(retrieval_renderable(heads, comparison, top=4), width=140)
    assert "3 of 16 heads (18.8%) score above 0.1" in text
    assert "0.600" in text and "L2.H1, L3.H0" in text and "decoding only" in text
    assert "top-2 minus random: -1.000" in text
    markdown = retrieval_markdown(heads, comparison)
    assert "| 1 " in markdown and "0.600" in markdown and "top-2 retrieval heads" in markdown


def test_cli_retrieval_heads(tmp_path: Path, echo_suite: Path) -> None:
    from trained_tiny import save

    config = tiny_config("llama", layers=2)
    config.max_position_embeddings = 1024  # needle prompts are ~700 characters, one token each here
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    folder = save(model, tmp_path / "tiny")
    out = tmp_path / "rh.json"
    assert (
        main(
            [
                "retrieval-heads",
                str(folder),
                "--tests",
                "2",
                "--k",
                "2",
                "--suite",
                str(echo_suite),
                "--limit",
                "2",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    written = json.loads(out.read_text())
    assert written["retrieval_heads"]["tests"] == 2 and len(written["retrieval_heads"]["scores"]) == 2
    assert written["masking"]["k"] == 2 and written["masking"]["items"] == 2


# --------------------------------------------------------------------------------------------------
# The real default model
# --------------------------------------------------------------------------------------------------


@pytest.mark.real_model
def test_real_model_has_sparse_retrieval_heads_that_retrieval_needs(smollm) -> None:
    """Measured on SmolLM2-135M: every needle is recovered, a few percent of heads copy from it, and
    masking the top 14 during decoding breaks retrieval-suite answers that 14 random heads keep."""
    heads = find_retrieval_heads(smollm, tests=3)
    assert heads.valid_tests == 3
    assert 0 < len(heads.retrieval_heads) <= 27  # sparse: at most 10% of the 270 heads
    comparison = compare_masking(smollm, heads=heads, k=14, limit=2)
    assert comparison.intact_accuracy == 1.0
    assert comparison.top_accuracy < comparison.random_accuracy
