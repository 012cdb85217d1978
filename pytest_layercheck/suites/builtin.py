"""Locate the built-in suites (knowledge, reasoning, retrieval) and resolve ``--suite`` arguments.

Installed wheels carry the repository's top-level ``suites/`` folder as
``pytest_layercheck/builtin_suites/`` (pyproject ``force-include``); an editable or source checkout
has no such folder, so we fall back to ``<repo>/suites/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SuiteFormatError
from .loader import load_suite
from .schema import Suite

BUILTIN_SUITES: tuple[str, ...] = ("knowledge", "reasoning", "retrieval")

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_WHEEL_SUITES = _PACKAGE_DIR / "builtin_suites"
_SOURCE_SUITES = _PACKAGE_DIR.parent / "suites"


def source_suites_dir() -> Path | None:
    """``<repo>/suites`` when running from a source checkout (where the generator writes)."""
    return _SOURCE_SUITES if _SOURCE_SUITES.is_dir() else None


def builtin_suites_dir() -> Path:
    """The folder holding the built-in suite files, wheel layout first."""
    for candidate in (_WHEEL_SUITES, _SOURCE_SUITES):
        if candidate.is_dir():
            return candidate
    raise SuiteFormatError(
        f"the built-in suites are missing: neither {_WHEEL_SUITES} nor {_SOURCE_SUITES} exists",
        "reinstall pytest-layercheck (the wheel ships them as pytest_layercheck/builtin_suites/)",
    )


def _unknown(name: str) -> SuiteFormatError:
    return SuiteFormatError(
        f"unknown suite {name!r}: not a built-in suite and not an existing YAML file",
        f"use a built-in suite ({', '.join(BUILTIN_SUITES)}) or the path of a suite .yaml file",
    )


def builtin_suite_path(name: str) -> Path:
    """Path of the built-in suite ``name`` (one of :data:`BUILTIN_SUITES`)."""
    if name not in BUILTIN_SUITES:
        raise _unknown(name)
    path = builtin_suites_dir() / f"{name}.yaml"
    if not path.is_file():
        raise SuiteFormatError(
            f"built-in suite file {path} is missing", "reinstall pytest-layercheck"
        )
    return path


def load_builtin_suite(name: str) -> Suite:
    """Load and validate one built-in suite."""
    return load_suite(builtin_suite_path(name))


def resolve_suite_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A built-in name (``"knowledge"``) or a path to a YAML suite file, as a path.

    A bare built-in name wins over a same-named file in the working directory; write ``./knowledge``
    or ``knowledge.yaml`` to mean the file.
    """
    text = os.fspath(name_or_path)
    if text in BUILTIN_SUITES:
        return builtin_suite_path(text)
    path = Path(text)
    if path.is_file():
        return path
    raise _unknown(text)


def resolve_suite(name_or_path: str | os.PathLike[str]) -> Suite:
    """Load a suite given a built-in name or a path to a YAML file."""
    return load_suite(resolve_suite_path(name_or_path))
