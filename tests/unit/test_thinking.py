"""Fast vs slow thinking: answer extraction cases, correction/overthinking counts by hand, and a tiny
model run whose batched generations are checked against one-prompt-at-a-time greedy decoding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_model, tiny_tokenizer
from trained_tiny import save

from pytest_layercheck.analysis.thinking.fast_slow import (
    ALL,
    COT_TRIGGER,
    MATHS,
    MEDICINE,
    OTHER_KNOWLEDGE,
    compare_thinking,
    domain_group,
    extract_number,
    fast_prompt,
    judge,
    match_choice,
    paired_shift,
    question_text,
    slow_prompt,
)
from pytest_layercheck.analysis.thinking.render import thinking_markdown, thinking_renderable
from pytest_layercheck.cli import main
from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.model.loading import LoadedModel
from pytest_layercheck.report.format import render_text
from pytest_layercheck.scoring.generation import cut_at_stop
from pytest_layercheck.suites.schema import ProtocolSettings, Suite, SuiteItem


def item(context: str, target: str, choices: tuple[str, ...] = (), domain: str = "geography") -> SuiteItem:
    gold = choices.index(target) if choices else None
    return SuiteItem(
        id=context[:12].replace(" ", "_"),
        context=context,
        domain=domain,
        kind="k",
        choices=choices,
        gold=gold,
        target=target,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" 7 * 6 = 42. So, 7 * 6 = 42.\n\nThe answer is: 7", 7.0),  # strict: the stated answer wins
        (" 3 minutes is 3 * 60 = 180 seconds.", 180.0),  # flexible: the last number
        ("The answer is: Let's think step by step.\nSo 2 weeks is 14 days.", 14.0),  # strict finds none
        (" so the answer is 1,080 pencils", 1080.0),
        (" 8 * 8 = 64. So the answer is 8 * 8 = 64.", 64.0),  # a calculation states its result after "="
        ("So, the answer is x = 23.", 23.0),
        ("The answer is 4 + 4 =", 4.0),  # nothing after "=": the first number of the statement
        ("The answer is -5, not 5", -5.0),
        ("She has 1.5 apples left.", 1.5),
        ("no digits at all", None),
    ],
)
def test_extract_number(text: str, expected: float | None) -> None:
    assert extract_number(text) == expected


CAPITALS = ("Paris", "Lyon", "Marseille", "Nice")


@pytest.mark.parametrize(
    ("text", "context", "choices", "expected"),
    [
        (" The capital of France is Paris.", "The capital of France is", CAPITALS, 0),
        ("Paris is nice, but the answer is Lyon. Paris!", None, CAPITALS, 1),  # strict beats the last mention
        ("1. Lyon is big. 2. Nice is sunny. 3. Marseille", None, CAPITALS, 2),  # flexible: the last mention
        ("The answer is: Let's think step by step. It is nice", None, CAPITALS, 3),  # case-insensitive
        ("The opposite of hot is ...", "The opposite of hot is", ("cold", "hot", "warm", "dark"), None),  # echo only
        (" The opposite of hot is hot", "The opposite of hot is", ("cold", "hot", "warm", "dark"), 1),
        ("George Washington was first", None, ("George Washington", "George", "John Adams", "Lincoln"), 0),  # longest
        ("In August it is ag", None, ("Au", "Ag", "Si", "Sr"), 1),  # whole words: not "Au" inside "August"
        ("nothing relevant", None, CAPITALS, None),
    ],
)
def test_match_choice(text: str, context: str | None, choices: tuple[str, ...], expected: int | None) -> None:
    assert match_choice(text, choices, context) == expected


def test_judge_uses_the_target_kind() -> None:
    maths = item("What is 7 * 6?", "42")
    assert judge(maths, " 7 * 6 = 42").correct and judge(maths, " 42.0").correct
    assert not judge(maths, "The answer is 41. Then 42").correct
    knowledge = item("The capital of France is", "Paris", CAPITALS)
    verdict = judge(knowledge, " The capital of France is Paris.")
    assert verdict.correct and verdict.answer == "Paris"
    assert not judge(knowledge, " Lyon").correct and judge(knowledge, "").answer is None
    free = item("Say hello in French:", "bonjour")
    assert judge(free, " The answer is Bonjour!").correct and not judge(free, " salut").correct
    with pytest.raises(ConfigError):
        judge(SuiteItem(id="x", context="c", domain="d", kind="k"), "text")


def test_prompts_share_the_question_and_differ_only_in_the_lead() -> None:
    knowledge, maths = item("The capital of France is", "Paris", CAPITALS), item("What is 2 + 2?", "4")
    assert question_text(knowledge) == "Complete the sentence: The capital of France is ..."
    assert question_text(maths) == "What is 2 + 2?"
    for it in (knowledge, maths):
        assert slow_prompt(it) == fast_prompt(it) + " " + COT_TRIGGER


def test_corrections_and_overthinking_by_hand() -> None:
    fast = [True, True, False, False, True, False]
    slow = [True, False, True, True, False, False]
    shift = paired_shift("g", fast, slow)
    # item 1: right->wrong, items 2,3: wrong->right, item 4: right->wrong
    assert (shift.corrections, shift.overthinking) == (2, 2)
    assert (shift.fast_accuracy, shift.slow_accuracy) == (pytest.approx(3 / 6), pytest.approx(3 / 6))
    assert shift.difference == pytest.approx(0) and shift.p_value == pytest.approx(1.0)
    assert (shift.both_right, shift.both_wrong) == (1, 1)
    lopsided = paired_shift("g", [False] * 5 + [True], [True] * 6)
    assert (lopsided.corrections, lopsided.overthinking) == (5, 0)
    assert lopsided.difference == pytest.approx(5 / 6)
    assert lopsided.p_value == pytest.approx(2 / 2**5)  # exact two-sided binomial, 5 vs 0
    with pytest.raises(ConfigError):
        paired_shift("g", [True], [True, False])


def suites() -> tuple[Suite, Suite]:
    settings = {"mc_text": ProtocolSettings(template="{context}")}
    knowledge = Suite(
        name="facts",
        capability="knowledge",
        description="",
        default_protocol="mc_text",
        protocols=settings,
        items=(
            item("The organ that pumps blood is the", "heart", ("heart", "liver", "lung", "skin"), "medicine"),
            item("The capital of France is", "Paris", CAPITALS),
            item("The bone of the head is the", "skull", ("skull", "rib", "femur", "jaw"), "medicine"),
        ),
        content_hash="a",
    )
    reasoning = Suite(
        name="sums",
        capability="reasoning",
        description="",
        default_protocol="mc_text",
        protocols=settings,
        items=(item("What is 2 + 2?", "4", domain="arithmetic"), item("What is 9 - 3?", "6", domain="arithmetic")),
        content_hash="b",
    )
    return knowledge, reasoning


def greedy_alone(model: torch.nn.Module, prompt: str, tokens: int, until: tuple[str, ...]) -> str:
    tokenizer = tiny_tokenizer()
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=tokens,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=2,
        )
    new = out[0, ids.shape[1] :].tolist()
    new = new[: new.index(2)] if 2 in new else new
    return cut_at_stop(tokenizer.decode(new, skip_special_tokens=True), until)


def test_compare_thinking_pairs_batched_generations_per_item() -> None:
    model = tiny_model("llama", layers=2, seed=4)
    loaded = LoadedModel(
        model=model,
        tokenizer=tiny_tokenizer(),
        spec="tiny",
        name="tiny",
        kind="test",
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    knowledge, reasoning = suites()
    result = compare_thinking(loaded, suites=[knowledge, reasoning], limit=None, cot_tokens=12, fast_tokens=6)
    assert [p.group for p in result.items] == [MEDICINE, OTHER_KNOWLEDGE, MEDICINE, MATHS, MATHS]
    for pair, (suite, it) in zip(
        result.items, [(knowledge, i) for i in knowledge.items] + [(reasoning, i) for i in reasoning.items]
    ):
        assert pair.fast_text == greedy_alone(model, fast_prompt(it), 6, ("\n\n", "Question:"))
        assert pair.slow_text == greedy_alone(model, slow_prompt(it), 12, ("Question:",))
        assert pair.fast == judge(it, pair.fast_text) and pair.slow == judge(it, pair.slow_text)
        assert domain_group(suite, it) == pair.group
    assert result.groups() == [MEDICINE, OTHER_KNOWLEDGE, MATHS]
    total = result.shift(ALL)
    assert total.items == 5 and sum(s.items for s in result.shifts()[:-1]) == 5
    assert total.fast_correct == sum(p.fast.correct for p in result.items)
    text = render_text(thinking_renderable(result, fine=True), width=200)
    assert "overthinking" in text and "facts/medicine" in text
    markdown = thinking_markdown(result)
    assert markdown.count("\n|") == 6  # header, rule, medicine, other, maths, all
    assert len({line.count("|") for line in markdown.splitlines() if line.startswith("|")}) == 1
    json.dumps(result.to_json())
    with pytest.raises(ConfigError):
        compare_thinking(loaded, suites=[knowledge], cot_tokens=0)


def test_cli_runs_on_a_saved_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = save(tiny_model("llama", layers=2, seed=4), tmp_path / "tiny")
    out = tmp_path / "t.json"
    assert (
        main(
            [
                "thinking",
                str(folder),
                "--device",
                "cpu",
                "--limit",
                "2",
                "--cot-tokens",
                "8",
                "--fast-tokens",
                "4",
                "--show",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert "layercheck thinking" in capsys.readouterr().out
    payload = json.loads(out.read_text())
    assert len(payload["items"]) == 4 and payload["groups"][-1]["group"] == ALL


@pytest.mark.real_model
def test_real_model_answers_and_reasons(smollm: LoadedModel) -> None:
    """SmolLM2-135M on the first two items of each suite: the heart fact is right fast and slow; on 7 * 6 its
    chain of thought computes 42 but then states 7, which strict extraction takes as its answer."""
    result = compare_thinking(smollm, limit=2, cot_tokens=48)
    by_id = {p.item_id: p for p in result.items}
    assert by_id["med-001"].fast.correct and by_id["med-001"].slow.correct
    sums = by_id["arithmetic-001"]
    assert "7 * 6 = 42" in sums.slow_text and sums.slow.answer == "7" and not sums.slow.correct
    assert result.shift(ALL).items == 4
