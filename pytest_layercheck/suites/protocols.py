"""The scoring protocols, one object each: what a protocol scores, by which metric, from which template.

A protocol is either a *log-likelihood* protocol (candidates scored after the prompt, lm-eval's
``loglikelihood`` requests) or a *generation* protocol (greedy decoding until a stop string, lm-eval's
``generate_until``). Everything else that differs between protocols lives on its :class:`ScoringProtocol`:
the candidates an item offers, its primary metric, the placeholders its template must contain and
the items it can score. The suite loader, the renderer, the scorer and the profile records all ask
the registry instead of branching on protocol names, so a new protocol is one :class:`ScoringProtocol`
and one :func:`register` call, as model families are one entry in ``model/architecture.py``.

The built-in four follow lm-evaluation-harness semantics:

* ``mc_letters`` / ``mc_text``: the letters (``A``, ``B``, ...) or the choice texts are scored; ``acc``
  is the argmax of the summed log-likelihoods, ``acc_norm`` the argmax per character, ``p_correct`` the
  gold choice's probability over the choices (what cells are judged by), ``margin`` its lead in nats.
* ``continuation``: the target is scored; ``loglikelihood`` is its log-likelihood, ``exact_match`` = it
  is the greedy continuation.
* ``generate_until``: greedy generation; ``exact_match`` of the extracted answer against the target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pytest_layercheck.core.errors import ProtocolError
from pytest_layercheck.core.registry import Registry
from pytest_layercheck.suites.schema import LETTERS, SuiteItem

Kind = Literal["loglikelihood", "generation"]
#: Settings only generation protocols read (the others refuse them as unknown fields).
GENERATION_FIELDS: tuple[str, ...] = ("until", "max_gen_toks", "answer_regex")


@dataclass(frozen=True)
class ScoringProtocol:
    """One scoring protocol (see the module docstring)."""

    name: str
    kind: Kind
    #: The protocol's headline metric, as lm-eval names it (accuracy-style, 0/1 per item): what the analyses
    #: count and what an answer is chosen by. The others are kept and reported.
    primary_metric: str
    #: Items are multiple-choice (``choices`` + ``gold``) rather than a single ``target``.
    multiple_choice: bool
    #: What is scored (or, for generation, expected) after the prompt.
    candidates: Callable[[SuiteItem], tuple[str, ...]]
    #: Placeholders the template must contain.
    placeholders: frozenset[str] = frozenset({"context"})
    #: Extra item requirements beyond choices/gold or a target: a problem text, or None.
    item_check: Callable[[SuiteItem], str | None] = lambda item: None
    #: The metric a profile cell is judged by when a check names none; None: ``primary_metric``.
    #: Multiple choice is judged by ``p_correct``, which carries more information per item than ``acc``.
    judged_by: str | None = None

    @property
    def cell_metric(self) -> str:
        """The metric a profile cell and a check are judged by unless they name another."""
        return self.judged_by or self.primary_metric

    @property
    def generates(self) -> bool:
        return self.kind == "generation"

    def gold_answer(self, item: SuiteItem) -> str:
        """The answer a few-shot example shows."""
        if self.multiple_choice:
            assert item.gold is not None
            return self.candidates(item)[item.gold]
        return item.answer_text or ""

    def item_problem(self, item: SuiteItem) -> str | None:
        """Why this protocol cannot score ``item``, or None."""
        if self.multiple_choice:
            if not item.is_multiple_choice:
                return f"protocol {self.name!r} needs 'choices' and 'gold', but the item has none"
            assert item.gold is not None
            if not 0 <= item.gold < len(item.choices):
                return f"gold={item.gold} is outside the {len(item.choices)} choices"
        elif not item.answer_text:
            return f"protocol {self.name!r} needs a non-empty 'target' (or choices with 'gold')"
        return self.item_check(item)


_REGISTRY: Registry[ScoringProtocol] = Registry("protocol", ProtocolError)


def register(protocol: ScoringProtocol) -> ScoringProtocol:
    """Make ``protocol`` available to suites, the renderer and the scorer by its name."""
    return _REGISTRY.register(protocol.name, protocol, "give the new protocol its own name")


def unregister(name: str) -> None:
    """Remove a registered protocol (tests that add a toy protocol clean up with this)."""
    _REGISTRY.unregister(name)


def protocol_names() -> tuple[str, ...]:
    return _REGISTRY.names()


def get_protocol(name: str) -> ScoringProtocol:
    return _REGISTRY.get(name)


def primary_metric(name: str) -> str:
    return get_protocol(name).primary_metric


def _letters(item: SuiteItem) -> tuple[str, ...]:
    return tuple(LETTERS[: len(item.choices)])


def _target(item: SuiteItem) -> tuple[str, ...]:
    return (item.answer_text or "",)


def _letters_fit(item: SuiteItem) -> str | None:
    if len(item.choices) > len(LETTERS):
        return f"mc_letters supports at most {len(LETTERS)} choices, the item has {len(item.choices)}"
    return None


def _no_empty_choice(item: SuiteItem) -> str | None:
    return None if all(item.choices) else "an empty choice cannot be scored (acc_norm divides by the choice length)"


MC_LETTERS = register(
    ScoringProtocol(
        "mc_letters",
        "loglikelihood",
        "acc",
        True,
        _letters,
        frozenset({"context", "choices_block"}),
        _letters_fit,
        judged_by="p_correct",
    )
)
MC_TEXT = register(
    ScoringProtocol(
        "mc_text",
        "loglikelihood",
        "acc",
        True,
        lambda item: tuple(item.choices),
        item_check=_no_empty_choice,
        judged_by="p_correct",
    )
)
CONTINUATION = register(ScoringProtocol("continuation", "loglikelihood", "exact_match", False, _target))
GENERATE_UNTIL = register(ScoringProtocol("generate_until", "generation", "exact_match", False, _target))
