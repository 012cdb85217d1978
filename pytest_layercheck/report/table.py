"""The capability × band table every renderer shows, built once as plain strings plus statuses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pytest_layercheck.data.profile_data import DepthProfile
from pytest_layercheck.evaluation.comparison_result import CellComparison, ProfileComparison, Status
from pytest_layercheck.report.format import band_header, band_order, cell_text


@dataclass(frozen=True)
class TableCell:
    text: str
    status: Status | None = None  # None: not compared
    failed: bool = False


@dataclass(frozen=True)
class ProfileTable:
    headers: list[str]
    rows: list[list[TableCell]]
    lead_columns: int  # descriptive columns before the band columns

    def text_rows(self) -> list[list[str]]:
        return [[cell.text for cell in row] for row in self.rows]


def build_table(
    profile: DepthProfile, comparison: ProfileComparison | None = None, metrics: Sequence[str] | None = None
) -> ProfileTable:
    """One row per suite × metric, one column per band (intact first); Δ and markers when compared.

    ``metrics`` defaults to each suite's primary metric. A capability column appears only when some
    suite's capability differs from its name.
    """
    bands = band_order(profile)
    show_capability = any(info.capability != name for name, info in profile.suites.items())
    headers = [
        "suite",
        *(["capability"] if show_capability else []),
        "metric",
        "items",
        *(band_header(profile, band) for band in bands),
    ]
    compared: dict[tuple[str, str, str], CellComparison] = {
        (c.suite, c.band, c.metric): c for c in (comparison.cells if comparison else [])
    }
    by_row: dict[tuple[str, str], dict[str, TableCell]] = {}
    for cell in profile.cells(metrics):
        match = compared.get((cell.suite, cell.band, cell.metric))
        by_row.setdefault((cell.suite, cell.metric), {})[cell.band] = TableCell(
            cell_text(cell.value, match), match.status if match else None, match.failed if match else False
        )
    rows = []
    for (suite, metric), cells in by_row.items():
        info = profile.suites[suite]
        lead = [suite, *([info.capability] if show_capability else []), metric, str(len(info.item_ids))]
        rows.append([TableCell(text) for text in lead] + [cells.get(band, TableCell("")) for band in bands])
    return ProfileTable(headers, rows, len(headers) - len(bands))
