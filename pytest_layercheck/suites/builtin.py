"""Locate the built-in suites (knowledge, reasoning, retrieval) and resolve ``--suite`` arguments.

Installed wheels carry the repository's top-level ``suites/`` folder as
``pytest_layercheck/builtin_suites/`` (pyproject ``force-include``); an editable or source checkout
has no such folder, so we fall back to ``<repo>/suites/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pytest_layercheck.core.errors import SuiteFormatError
from pytest_layercheck.suites.loader import load_suite
from pytest_layercheck.suites.schema import Suite

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
        raise SuiteFormatError(f"built-in suite file {path} is missing", "reinstall pytest-layercheck")
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


def resolve_suite(name_or_path: str | os.PathLike[str] | Suite) -> Suite:
    """Load a suite given a built-in name or a path to a YAML file (a loaded :class:`Suite` is returned as is).

    A user file may not take a built-in suite's name: its results would be recorded, cached and compared
    as that suite's, silently replacing it.
    """
    from pytest_layercheck.suites.importers import RECORD_FORMATS, load_records_suite

    if isinstance(name_or_path, Suite):
        return name_or_path
    path = resolve_suite_path(name_or_path)
    # A record file whose fields already have the suite's names is a suite as it is.
    suite = load_records_suite(path) if path.suffix.lower() in RECORD_FORMATS else load_suite(path)
    if suite.name in BUILTIN_SUITES and path.resolve() != builtin_suite_path(suite.name).resolve():
        raise SuiteFormatError(
            f"{path}: suite name {suite.name!r} is the name of a built-in suite; the file would silently "
            "replace it in profiles and baselines",
            f"give the suite its own name (e.g. name: my-{suite.name})",
        )
    return suite


def resolve_suites(names_or_paths: Iterable[str | os.PathLike[str]]) -> list[Suite]:
    """Load several suites (see :func:`resolve_suite`); two with one name would mix up results, so that is an error."""
    suites: dict[str, tuple[str, Suite]] = {}
    for entry in names_or_paths:
        suite = resolve_suite(entry)
        if suite.name in suites:
            first = suites[suite.name][0]
            raise SuiteFormatError(
                f"suites {first!r} and {os.fspath(entry)!r} are both named {suite.name!r}; their results would "
                "be merged under one name",
                "list each suite once, and give every suite file a distinct 'name'",
            )
        suites[suite.name] = (os.fspath(entry), suite)
    return [suite for _, suite in suites.values()]
