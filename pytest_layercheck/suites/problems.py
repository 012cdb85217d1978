"""A generated question with its computed answer, and how its four choices are laid out.

Shared by the reasoning and retrieval generators: gold positions and the answer's rank in size cycle
per kind, so neither "the first choice" nor "the smallest number" is ever a shortcut.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NAMES: tuple[str, ...] = (
    "Anna", "Boris", "Carla", "David", "Elena", "Felix", "Greta", "Hugo", "Irene", "James",
    "Karen", "Lucas", "Maria", "Nina", "Olga", "Pablo", "Rosa", "Simon", "Tara", "Omar",
    "Vera", "Walter", "Sofia", "Peter", "Zoe", "Aaron", "Bella", "Chris", "Diana", "Ethan",
    "Fiona", "Leo",
)  # fmt: skip


def arrange_choices(answer: str, wrong: Iterable[str], position: int) -> tuple[list[str], int]:
    """Four choices: the first three distinct entries of ``wrong``, the gold at ``position % 4``."""
    distractors: list[str] = []
    for candidate in wrong:
        if candidate != answer and candidate not in distractors:
            distractors.append(candidate)
        if len(distractors) == 3:
            break
    if len(distractors) < 3:
        raise ValueError(f"not enough distractors for {answer!r}: {distractors}")
    gold = position % 4
    return distractors[:gold] + [answer] + distractors[gold:], gold


#: The shapes of a numeric item's four choices: the answer with its tens digit wrong (the mark of
#: a carry mistake), {b, b+10, b+20, b+30}; where that cannot hold the answer at every rank
#: (answers below 40, one-digit answers), consecutive numbers {b, ..., b+3}. The shape depends on
#: the answer alone and the answer's rank in size cycles within each kind (``Problem.item``), so
#: "the smallest" or "the middle one" is never a shortcut. (An earlier version let the rank fall
#: back to 0 when a shape did not fit: the answer was then the smallest choice in 48% of items and
#: the model's preference for small numbers passed for skill.)
_SHAPES: tuple[tuple[int, ...], ...] = ((0, 10, 20, 30), (0, 1, 2, 3))
_NEAR_MISSES: tuple[int, ...] = (1, -1, 2, -2, 3, -3, 10, -10, 4, -4, 5, -5, 11, -11, 20, -20)


def numeric_distractors(answer: int, rank: int) -> list[str]:
    """Three near misses in the shape of :data:`_SHAPES` with the answer at ``rank`` in size where
    possible, never negative and with as many digits as the answer.

    Digits are separate tokens, so under summed log-likelihood a shorter number wins by length alone
    (measured: "60" beat "600" for "How many centimetres are in 6 metres?"). We also tried computed
    slips (wrong operation, precedence slip, wrong factor) as distractors: SmolLM2-135M preferred
    them to the answer (word problems 0.16, the suite 0.44 on its first 100 items, against 0.51
    with near misses), leaving too little room to measure a drop when layers are removed.
    """

    def valid(number: int) -> bool:
        return number >= 0 and len(str(number)) == len(str(answer))

    def choices(shape: tuple[int, ...], at: int) -> list[int]:
        base = answer - shape[at]
        return [base + step for step in shape if base + step != answer]

    # The shape depends on the answer alone (the first that fits at every rank), so the answer's
    # rank stays uniform within each shape.
    for shape in _SHAPES:
        if all(all(map(valid, choices(shape, at))) for at in range(len(shape))):
            return [str(w) for w in choices(shape, rank % len(shape))]
    return [str(answer + d) for d in _NEAR_MISSES if valid(answer + d)]  # answers 0..2, 10..12


@dataclass(frozen=True)
class Problem:
    """One generated question with its computed answer and the wrong answers offered with it.

    ``wrong`` are fixed distractors (values from the context, the other numbers compared); numeric
    problems are then topped up with :func:`numeric_distractors` at the rank the item is given.
    """

    domain: str
    kind: str
    context: str
    answer: str
    wrong: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    numeric: bool = False

    def item(self, item_id: str, index: int) -> dict[str, Any]:
        """The item as the ``index``-th of its kind: gold position and the answer's rank in size
        both cycle, decorrelated ((i + i // 4) % 4), so each kind is balanced in both."""
        wrong = self.wrong
        if self.numeric:
            wrong += tuple(numeric_distractors(int(self.answer), (index + index // 4) % 4))
        choices, gold = arrange_choices(self.answer, wrong, index)
        return {
            "id": item_id, "domain": self.domain, "kind": self.kind, "context": self.context,
            "choices": choices, "gold": gold, "target": self.answer,
            "metadata": dict(self.metadata),
        }  # fmt: skip


def _numeric(domain: str, kind: str, context: str, answer: int, expression: str) -> Problem:
    """A numeric problem; ``expression`` (also computing the answer) lets tests re-check it."""
    return Problem(domain, kind, context, str(answer), metadata={"expression": expression}, numeric=True)
