"""A protocol is one object in the registry: a toy protocol defined here, registered, is loaded, rendered
and scored without touching the loader, renderer or scorer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from tiny_models import tiny_model, tiny_tokenizer

from pytest_layercheck.core.errors import ProtocolError
from pytest_layercheck.data.records import PRIMARY_METRIC
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.scoring.protocols import prepare, score
from pytest_layercheck.suites.loader import load_suite_text
from pytest_layercheck.suites.protocols import ScoringProtocol, get_protocol, protocol_names, register, unregister

#: Options numbered 1, 2, 3 instead of lettered: what a user's own protocol might look like.
MC_NUMBERS = ScoringProtocol(
    "mc_numbers", "loglikelihood", "acc", True, lambda item: tuple(str(i + 1) for i in range(len(item.choices)))
)

SUITE = """
name: toy
capability: knowledge
description: numbered options
default_protocol: {protocol}
protocols:
  {protocol}: {{template: "{{context}}"}}
items:
  - {{id: a, domain: toy, kind: toy, context: "One plus one is", choices: ["1", "2", "3"], gold: 1}}
  - {{id: b, domain: toy, kind: toy, context: "The first number is", choices: ["1", "2", "3"], gold: 0}}
  - {{id: c, domain: toy, kind: toy, context: "Three comes after", choices: ["1", "2", "3"], gold: 1}}
"""


@pytest.fixture
def numbers() -> Iterator[ScoringProtocol]:
    yield register(MC_NUMBERS)
    unregister(MC_NUMBERS.name)


def test_a_registered_protocol_is_loaded_rendered_and_scored(numbers: ScoringProtocol) -> None:
    torch.manual_seed(0)
    model, tokenizer = tiny_model("llama", layers=2), tiny_tokenizer()
    runtime = ModelRuntime.of(model)
    toy = load_suite_text(SUITE.format(protocol="mc_numbers"))
    # Its candidates are the digits, which for these items are exactly the choice texts: mc_text agrees.
    reference = load_suite_text(SUITE.format(protocol="mc_text"))
    ours = score(runtime, prepare(toy, "mc_numbers", tokenizer))
    theirs = score(runtime, prepare(reference, "mc_text", tokenizer))
    assert [o.scores for o in ours.outcomes] == [o.scores for o in theirs.outcomes]
    assert PRIMARY_METRIC["mc_numbers"] == "acc" and "mc_numbers" in protocol_names()


def test_an_unregistered_protocol_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ProtocolError, match="unknown protocol 'mc_numbers'"):
        get_protocol("mc_numbers")
    assert "mc_numbers" not in protocol_names()


def test_names_are_unique(numbers: ScoringProtocol) -> None:
    with pytest.raises(ProtocolError, match="already registered"):
        register(ScoringProtocol("mc_numbers", "generation", "exact_match", False, lambda item: ()))
