"""The data model of a capability suite: items plus the protocol settings used to score them.

Field names follow lm-evaluation-harness where a counterpart exists (``target_delimiter``,
``fewshot_delimiter``, ``until``, ``max_gen_toks``) so users can carry their intuition over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


class SuiteWarning(UserWarning):
    """A suite that loads but may not measure what it should: answers after a doubled delimiter, or a
    score at chance on the intact model, where a guard can never fail."""


#: The built-in capabilities. A suite may also carry any label of its own (``safety``, ``my-evals``).
CAPABILITIES: tuple[str, ...] = ("knowledge", "reasoning", "retrieval")

#: Scoring protocols (see suites/protocols.py). The two multiple-choice variants are the
#: "log-likelihood default" (answer letters) and "log-likelihood continuation" (full answer texts) of
#: "Demystifying the Roles of LLM Layers" (arXiv 2510.02091).

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class SuiteItem:
    """One test item. Multiple-choice items have ``choices``/``gold``; others have ``target``."""

    id: str
    context: str
    domain: str
    kind: str
    choices: tuple[str, ...] = ()
    gold: int | None = None
    target: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    line: int | None = None

    @property
    def is_multiple_choice(self) -> bool:
        return bool(self.choices) and self.gold is not None

    @property
    def answer_text(self) -> str | None:
        """The text a continuation/generation protocol expects: ``target`` or the gold choice."""
        if self.target is not None:
            return self.target
        if self.is_multiple_choice:
            return self.choices[self.gold]  # type: ignore[index]
        return None


@dataclass(frozen=True)
class ProtocolSettings:
    """How a suite's items are rendered and judged under one protocol.

    ``template`` is formatted with ``{context}`` and, for ``mc_letters``, ``{choices_block}``
    (lines ``A. text``). Few-shot examples are rendered with the same template followed by
    ``target_delimiter`` and their answer, joined by ``fewshot_delimiter``.
    """

    template: str = "{context}"
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    until: tuple[str, ...] = ("\n",)
    max_gen_toks: int = 32
    answer_regex: str | None = None


@dataclass(frozen=True)
class Suite:
    """A named, hashed collection of items for one capability."""

    name: str
    capability: str
    description: str
    items: tuple[SuiteItem, ...]
    protocols: Mapping[str, ProtocolSettings]
    default_protocol: str
    fewshot: tuple[SuiteItem, ...] = ()
    content_hash: str = ""
    source: Path | None = None

    def settings(self, protocol: str) -> ProtocolSettings:
        from pytest_layercheck.core.errors import ProtocolError

        try:
            return self.protocols[protocol]
        except KeyError:
            raise ProtocolError(
                f"suite {self.name!r} does not declare protocol {protocol!r}",
                f"use one of {sorted(self.protocols)} or add a '{protocol}' entry under 'protocols:' "
                f"in {self.source or 'the suite file'}",
            ) from None

    def limited(self, limit: int | None) -> Suite:
        """The first ``limit`` items (suite files are already in a balanced, fixed order)."""
        if limit is None or limit >= len(self.items):
            return self
        return replace(self, items=self.items[:limit])
