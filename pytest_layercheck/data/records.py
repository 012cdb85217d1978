"""The plain records of a profile: one suite's identity, one evaluation's per-item outcomes, one cell.

They sit below ``profile_data`` (the whole profile) and ``validation`` (which decodes records read
from disk), so both can use them without importing each other.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from pytest_layercheck.data.statistics import mean
from pytest_layercheck.suites.protocols import get_protocol, protocol_names

#: 2: multiple-choice evaluations keep ``p_correct`` and ``margin`` per item, and cells are judged by
#: ``p_correct``; version-1 baselines hold only 0/1 outcomes and are re-recorded, never mixed.
SCHEMA_VERSION = 2
INTACT = "intact"
#: Characters of a generated answer kept in :attr:`Evaluation.answers`.
MAX_ANSWER_CHARS = 200


class _ProtocolMetrics(Mapping[str, str]):
    """Protocol name -> one of its metrics (``attribute`` of the protocol), read from the protocol registry."""

    def __init__(self, attribute: str) -> None:
        self._attribute = attribute

    def __getitem__(self, protocol: str) -> str:
        if protocol not in protocol_names():
            raise KeyError(protocol)
        return str(getattr(get_protocol(protocol), self._attribute))

    def __iter__(self) -> Iterator[str]:
        return iter(protocol_names())

    def __len__(self) -> int:
        return len(protocol_names())


#: A protocol's headline (0/1, lm-eval's) metric: what analyses count.
PRIMARY_METRIC: Mapping[str, str] = _ProtocolMetrics("primary_metric")
#: The metric a protocol's profile cells are judged by unless a check names another.
CELL_METRIC: Mapping[str, str] = _ProtocolMetrics("cell_metric")


@dataclass(frozen=True)
class SuiteInfo:
    """What identifies a suite's contribution to a profile."""

    name: str
    capability: str
    content_hash: str
    protocol: str
    item_ids: tuple[str, ...]
    #: Leading items scored under ablations. The intact evaluation scores every item (it is cheap and
    #: carries the power of the intact cells); a layer sweep scores only the first ``sweep_items``.
    #: ``None``: every item.
    sweep_items: int | None = None

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRIC[self.protocol]

    @property
    def cell_metric(self) -> str:
        return CELL_METRIC[self.protocol]

    @property
    def swept_ids(self) -> tuple[str, ...]:
        """Ids of the items that ablation evaluations score, in order."""
        return self.item_ids if self.sweep_items is None else self.item_ids[: self.sweep_items]

    def ids_for(self, ablation: str) -> tuple[str, ...]:
        """Ids of the items an evaluation under ``ablation`` scores."""
        return self.item_ids if ablation == INTACT else self.swept_ids


@dataclass(frozen=True)
class Evaluation:
    """One suite × protocol × ablation, with every item's outcome per metric (aligned with item_ids)."""

    suite: str
    protocol: str
    ablation: str
    removed_layers: tuple[int, ...]
    outcomes: Mapping[str, tuple[float, ...]]
    #: What the model answered per item (aligned with the item ids), for the intact evaluation only: the
    #: chosen choice's index for multiple-choice protocols (argmax under the primary metric), the extracted
    #: answer text of a generation (the stripped generation where the answer pattern did not match), cut to
    #: :data:`MAX_ANSWER_CHARS`. ``None``: not recorded (ablations, continuation protocols, profiles read from
    #: a baseline file, older cache entries). Provenance for reports: never compared, never written into a
    #: profile document, so baselines and their comparison do not depend on it.
    answers: tuple[int | str, ...] | None = field(default=None, compare=False)

    def mean(self, metric: str) -> float:
        return mean(self.outcomes[metric])


@dataclass(frozen=True)
class CellId:
    """Which cell: capability × band × protocol × metric, and the ablations the band stands for.
    ``band`` is ``"intact"`` for the unablated model. Profile cells and their comparisons share it."""

    suite: str
    capability: str
    protocol: str
    metric: str
    band: str
    layers: tuple[int, ...]
    ablations: tuple[str, ...]

    @property
    def label(self) -> str:
        """``knowledge/shallow acc``: how the cell is named in every report."""
        return f"{self.suite}/{self.band} {self.metric}"


@dataclass(frozen=True)
class Cell(CellId):
    """A cell's value in one profile, beside the intact value and its worst single ablation."""

    value: float
    intact: float
    worst: float
    worst_ablation: str

    @property
    def drop(self) -> float:
        """How much removing the band costs relative to the intact model."""
        return self.intact - self.value
