"""Optional extras (``datasets``, ``lmeval``): imported only when a source needs them, with the pip line when missing."""

from __future__ import annotations

import importlib
from typing import Any

from pytest_layercheck.core.errors import SuiteFormatError


def _require(module: str, extra: str, requirement: str) -> Any:
    """The optional module, or an error that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SuiteFormatError(
            f"this import needs the {module!r} package, which is not installed",
            f"pip install 'pytest-layercheck[{extra}]' (or pip install '{requirement}')",
        ) from None


def _first_line(exc: BaseException) -> str:
    """An extra's exception in one line (its type and first line), for a message of our own."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
