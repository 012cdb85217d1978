"""Prompts through a tokenizer's chat template with lm-eval's ``--apply_chat_template`` semantics: the same
request strings as lm-eval builds, the same scores as lm-eval's own run, and a content hash of their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lm_eval_parity import (
    TASKS,
    assert_same_requests,
    assert_scored_like_lm_eval,
    intact_profile,
    lm_eval_requests,
    lm_eval_samples,
    lm_eval_task,
    our_requests,
)
from tiny_models import tiny_tokenizer

from pytest_layercheck.core.errors import ConfigError, ProtocolError
from pytest_layercheck.scoring.rendering import ChatRenderedSuite, ChatTemplate, render, with_chat_template
from pytest_layercheck.suites.loader import load_suite_text

CHATML = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
NO_SYSTEM = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
    "[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
)

SUITE = """\
name: chat-facts
capability: facts
description: d
default_protocol: mc_text
protocols:
  mc_text: {template: "Q: {context}\\nA:"}
  continuation: {template: "Q: {context}\\nA:"}
  generate_until: {template: "Q: {context}\\nA:", until: ["\\n"]}
fewshot:
- {context: "Capital of Peru?", choices: [Lima, Cusco], gold: 0}
items:
- {id: a, domain: d, kind: k, context: "Capital of France?", choices: [Paris, Lyon], gold: 0}
"""


def chat_tokenizer(template: str = CHATML) -> Any:
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = template
    return tokenizer


def test_few_shot_examples_become_turns_as_lm_eval_does_by_default() -> None:
    suite = load_suite_text(SUITE)
    chat = with_chat_template(suite, chat_tokenizer(), ChatTemplate())
    assert isinstance(chat, ChatRenderedSuite) and chat.chat.fewshot_as_multiturn
    [item] = render(chat, "mc_text")
    assert item.prompt == (
        "<|user|>Q: Capital of Peru?\nA:<|end|>\n<|assistant|>Lima<|end|>\n"
        "<|user|>Q: Capital of France?\nA:<|end|>\n<|assistant|>"
    )
    assert item.candidates == ("Paris", "Lyon") and chat.settings("mc_text").target_delimiter == ""
    assert chat.settings("continuation").target_delimiter == ""
    assert chat.settings("generate_until") == suite.settings("generate_until")


def test_single_turn_and_a_system_instruction() -> None:
    suite = load_suite_text(SUITE)
    chat = with_chat_template(
        suite, chat_tokenizer(), ChatTemplate(fewshot_as_multiturn=False, system_instruction="Be brief.")
    )
    [item] = render(chat, "mc_text")
    plain = render(suite, "mc_text")[0].prompt
    assert item.prompt == f"<|system|>Be brief.<|end|>\n<|user|>{plain}<|end|>\n<|assistant|>"


def test_a_template_without_a_system_role_drops_it_as_lm_eval_does() -> None:
    chat = with_chat_template(load_suite_text(SUITE), chat_tokenizer(NO_SYSTEM), ChatTemplate(system_instruction="X"))
    assert render(chat, "mc_text")[0].prompt.startswith("[user] Q: Capital of Peru?")


def test_chat_rendering_has_its_own_hash_and_survives_limits() -> None:
    suite = load_suite_text(SUITE)
    tokenizer = chat_tokenizer()
    hashes = {
        suite.content_hash,
        with_chat_template(suite, tokenizer, ChatTemplate()).content_hash,
        with_chat_template(suite, tokenizer, ChatTemplate(fewshot_as_multiturn=False)).content_hash,
        with_chat_template(suite, tokenizer, ChatTemplate(system_instruction="S")).content_hash,
    }
    assert len(hashes) == 4
    chat = with_chat_template(suite, tokenizer, ChatTemplate())
    assert isinstance(chat.limited(1), ChatRenderedSuite) and chat.limited(1).content_hash == chat.content_hash
    assert with_chat_template(suite, tokenizer, None) is suite
    assert with_chat_template(chat, tokenizer, ChatTemplate()) is chat
    with pytest.raises(ProtocolError, match="already rendered through a chat template"):
        with_chat_template(chat, tokenizer, ChatTemplate(system_instruction="S"))


def test_a_tokenizer_without_a_chat_template_is_refused() -> None:
    with pytest.raises(ProtocolError, match="the tokenizer has no chat template") as info:
        with_chat_template(load_suite_text(SUITE), tiny_tokenizer(), ChatTemplate())
    assert "base models have none" in str(info.value)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", None),
        ("off", None),
        (False, None),
        (None, None),
        ("on", ChatTemplate()),
        (True, ChatTemplate()),
        ("multiturn", ChatTemplate()),
        ("singleturn", ChatTemplate(fewshot_as_multiturn=False)),
    ],
)
def test_option_values(spec: Any, expected: ChatTemplate | None) -> None:
    assert ChatTemplate.parse(spec) == expected


def test_bad_option_values_say_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match="use 'on'"):
        ChatTemplate.parse("sometimes")
    with pytest.raises(ConfigError, match="system instruction was given without a chat template"):
        ChatTemplate.parse("off", system_instruction="S")
    assert ChatTemplate.parse("on", "S").describe() == {
        "apply_chat_template": True,
        "fewshot_as_multiturn": True,
        "system_instruction": "S",
    }


@pytest.mark.parametrize("multiturn", [True, False])
@pytest.mark.parametrize("task", sorted(TASKS))
def test_chat_requests_are_lm_evals_own(lm_eval_dir: Path, task: str, multiturn: bool) -> None:
    """lm-eval's build_all_requests with HFLM.apply_chat_template, against ours, for both test tasks."""
    from pytest_layercheck.suites.importers import import_source

    tokenizer = chat_tokenizer()
    suite = with_chat_template(
        import_source(TASKS[task]).suite,
        tokenizer,
        ChatTemplate(fewshot_as_multiturn=multiturn, system_instruction="Answer briefly."),
    )
    theirs = lm_eval_requests(
        lm_eval_task(TASKS[task]),
        chat={"tokenizer": tokenizer, "multiturn": multiturn},
        system_instruction="Answer briefly.",
    )
    assert_same_requests(our_requests(suite), theirs)


@pytest.mark.real_model
def test_chat_scored_the_same_as_lm_evals_apply_chat_template(
    lm_eval_dir: Path,
    tmp_path: Path,
    smollm: Any,
) -> None:
    """Both test tasks, imported, rendered through SmolLM2's chat template and profiled with build_profile, score
    like ``lm_eval --apply_chat_template`` (few-shot examples as turns, its default)."""
    from pytest_layercheck.suites.importers import import_source, write_suite

    chat = ChatTemplate()
    plain = {key: import_source(name).suite for key, name in TASKS.items()}
    rendered = {s.name: with_chat_template(s, smollm.tokenizer, chat) for s in plain.values()}
    paths = []
    for key, result in ((k, import_source(n)) for k, n in TASKS.items()):
        write_suite(result, tmp_path / f"{key}.yaml")
        paths.append(tmp_path / f"{key}.yaml")
    profile = intact_profile(smollm, list(rendered.values()), paths, chat_template=chat)  # as ProfileSettings has it
    assert {name: info.content_hash for name, info in profile.suites.items()} == {
        name: suite.content_hash for name, suite in rendered.items()
    }
    samples = lm_eval_samples(smollm, list(TASKS.values()), apply_chat_template=True)
    for name, suite in rendered.items():
        assert_scored_like_lm_eval(suite, samples[name], smollm, profile)
