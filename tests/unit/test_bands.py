"""Depth bands: exact coverage, the documented rounding rule, parsing and validation."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest

from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.bands import DepthBands


def _round_half_up(fraction: str, n: int) -> int:
    """Independent reference for the boundary rule, in decimal arithmetic."""
    return int((Decimal(fraction) * n).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@pytest.mark.parametrize("n", [*range(3, 65), 85, 165])
def test_default_bands_cover_every_layer_exactly_once(n: int) -> None:
    bands = DepthBands().as_dict(n)
    assert list(bands) == ["shallow", "middle", "deep"]
    flat = [layer for layers in bands.values() for layer in layers]
    assert flat == list(range(n))
    cut1, cut2 = _round_half_up("0.3", n), _round_half_up("0.7", n)
    assert bands == {
        "shallow": tuple(range(0, cut1)),
        "middle": tuple(range(cut1, cut2)),
        "deep": tuple(range(cut2, n)),
    }
    for name, layers in bands.items():
        for layer in layers:
            assert DepthBands().band_of(layer, n) == name


def test_thirty_layers_match_documented_example() -> None:
    bands = DepthBands()
    assert bands.layers("shallow", 30) == tuple(range(0, 9))
    assert bands.layers("middle", 30) == tuple(range(9, 21))
    assert bands.layers("deep", 30) == tuple(range(21, 30))
    assert bands.band_of(8, 30) == "shallow"
    assert bands.band_of(9, 30) == "middle"
    assert bands.band_of(21, 30) == "deep"


def test_half_rounds_up_exactly() -> None:
    # 0.3 * 5 = 1.5 and 0.7 * 5 = 3.5 exactly in decimal: both round up (to 2 and 4).
    assert DepthBands().as_dict(5) == {"shallow": (0, 1), "middle": (2, 3), "deep": (4,)}
    # 0.7 * 45 = 31.5, but 31.499999999999996 in binary floating point; the rule still rounds it up.
    assert DepthBands().layers("deep", 45) == tuple(range(32, 45))
    # A band may hold no layer of a very shallow model; layers() says so, as_dict() refuses it.
    assert DepthBands().layers("shallow", 1) == ()


def test_custom_bands_from_mapping_and_parse_round_trip() -> None:
    custom = DepthBands({"early": (0, 0.25), "late": (0.25, 1)})
    assert custom.names == ("early", "late")
    assert custom.as_dict(8) == {"early": (0, 1), "late": (2, 3, 4, 5, 6, 7)}
    assert DepthBands.parse(str(custom)) == custom
    assert DepthBands.parse(" shallow = 0 : 0.3 , middle=0.3:0.7,deep=0.7:1 ") == DepthBands()
    assert str(DepthBands()) == "shallow=0:0.3,middle=0.3:0.7,deep=0.7:1"
    assert DepthBands().describe() == {"shallow": [0.0, 0.3], "middle": [0.3, 0.7], "deep": [0.7, 1.0]}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "shallow=0:0.3,,deep=0.3:1",
        "shallow:0:0.3,deep=0.3:1",
        "shallow=0-0.3,deep=0.3:1",
        "shallow=0:x,deep=0.3:1",
        "shallow=0:0.3,deep=0.4:1",  # gap
        "shallow=0:0.5,deep=0.4:1",  # overlap
        "shallow=0.1:0.5,deep=0.5:1",  # does not start at 0
        "shallow=0:0.5,deep=0.5:0.9",  # does not end at 1
        "shallow=0:0.5,shallow=0.5:1",  # duplicate
        "shallow=0:0,deep=0:1",  # empty band
        "=0:0.5,deep=0.5:1",  # empty name
        "shallow=0:nan,deep=0.5:1",
    ],
)
def test_invalid_band_strings_raise_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        DepthBands.parse(text)
    assert "How to fix" in str(info.value)


def test_bad_queries_raise_config_error() -> None:
    bands = DepthBands()
    with pytest.raises(ConfigError, match="unknown depth band 'top'"):
        bands.layers("top", 10)
    with pytest.raises(ConfigError):
        bands.band_of(10, 10)
    with pytest.raises(ConfigError):
        bands.band_of(-1, 10)
    with pytest.raises(ConfigError):
        bands.as_dict(0)
    with pytest.raises(ConfigError):
        DepthBands(())


@pytest.mark.parametrize(
    ("text", "n", "empty"),
    [
        ("shallow=0:0.01,middle=0.01:0.7,deep=0.7:1", 30, "shallow=0:0.01"),
        ("shallow=0:0.3,middle=0.3:0.7,deep=0.7:1", 2, "middle=0.3:0.7"),
        ("shallow=0:0.3,middle=0.3:0.7,deep=0.7:1", 1, "shallow=0:0.3, deep=0.7:1"),
    ],
)
def test_a_band_that_holds_no_layer_is_an_error_not_dropped(text: str, n: int, empty: str) -> None:
    with pytest.raises(ConfigError) as info:
        DepthBands.parse(text).as_dict(n)
    assert f"depth band(s) {empty} hold no layer of this {n}-layer model" in info.value.problem
    assert f"at least 1/{n} of depth" in info.value.fix
