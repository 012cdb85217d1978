"""Load and validate capability-suite YAML files.

A suite file is parsed with PyYAML's *safe* loader only (a project rule: suite files may come from
anywhere), through a subclass that remembers the line of every mapping, key and list element so that
every validation error can say ``FILE:LINE: where: field 'x' ...`` and how to fix it. The parts:
:mod:`.yaml_reader` (safe, capped parsing with lines), :mod:`.suite_builder` (the rules below) and
:mod:`.suite_hash` (the content hash); this module is the entry point and the format's reference.

File format (every built-in suite repeats this in a comment at its top)::

    name: knowledge                # required, string
    capability: knowledge          # required: a built-in capability or any label of your own (safety, my-evals)
    description: ...               # required, string
    version: 1                     # optional integer; documentation only
    default_protocol: mc_text      # required, must be declared under protocols
    protocols:                     # required, protocol name -> settings (null = all defaults)
      mc_letters: {template: "{context}\\n{choices_block}\\nAnswer:"}
      mc_text: {template: ..., target_delimiter: " ", fewshot_delimiter: "\\n\\n"}
      continuation: {template: ...}
      generate_until: {template: ..., until: ["\\n"], max_gen_toks: 32, answer_regex: "(-?\\d+)"}
    fewshot: [item, ...]           # optional examples before every prompt (id/domain/kind optional)
    metadata: {...}                # optional, JSON-like; e.g. generator seed and version
    items:                         # required, non-empty
      - id: geo-001                # required, unique, no whitespace
        context: The capital of France is
        domain: geography          # required (per-domain breakdowns)
        kind: capital              # required (finer breakdowns)
        choices: [Paris, Lyon, Nice, Lille]   # multiple choice: >= 2 distinct strings ...
        gold: 0                    # ... and the 0-based index of the right one
        target: Paris              # the answer for continuation / generate_until
        metadata: {...}            # optional, JSON-like; provenance, never scored

Templates must use ``{context}``; ``{choices_block}`` (the ``A. text`` lines) is required in
``mc_letters`` and allowed elsewhere for multiple-choice items. Other braces are kept literally
(the scorer substitutes only these two), but ``{word}`` is rejected as a misspelt placeholder.
``until``, ``max_gen_toks`` and ``answer_regex`` only apply to ``generate_until``.
Answers must be YAML strings: quote numbers (``target: "42"``) so YAML 1.1 cannot silently turn
``010`` into 8 or ``1:20`` into 80.

``content_hash`` covers what can change a score or its per-domain breakdown: name, capability,
default protocol, protocol settings (defaults filled in), few-shot examples and items without their
``metadata``. Comments, formatting, ``description``, ``version`` and ``metadata`` do not change it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from pytest_layercheck.core.errors import SuiteFormatError
from pytest_layercheck.suites.field_checks import _plain
from pytest_layercheck.suites.schema import Suite
from pytest_layercheck.suites.suite_builder import _SuiteBuilder
from pytest_layercheck.suites.yaml_reader import _check_size, _MarkedDict, _parse_yaml, _read_text

__all__ = ["FORMAT_SUMMARY", "load_suite", "load_suite_text", "load_suites", "load_suite_metadata"]

#: The file format in brief; written at the top of every built-in suite file.
FORMAT_SUMMARY = """\
Format (checked by pytest_layercheck/suites/loader.py, whose docstring has the details):
  name, capability (knowledge|reasoning|retrieval), description   required strings
  version                 optional integer, documentation only
  default_protocol        one of the declared protocols
  protocols               {mc_letters|mc_text|continuation|generate_until: settings or null}
     settings             template ({context}; mc_letters also {choices_block}), target_delimiter,
                          fewshot_delimiter; generate_until also until, max_gen_toks, answer_regex
  fewshot                 examples in item format, rendered before every prompt (not scored)
  metadata                free-form provenance, not scored and not hashed
  items                   list of {id, domain, kind, context, choices, gold (0-based), target,
                          metadata}
Unknown fields are errors. Quote numeric answers ("42") so YAML keeps them as text."""

_PathLike = str | os.PathLike[str]


def _parse(text: str, source: Path) -> _MarkedDict:
    """A suite document: size and aliases capped, duplicate keys refused, a mapping at the top."""
    _check_size(len(text.encode("utf-8")), source)
    document = _parse_yaml(text, source)
    if not isinstance(document, _MarkedDict):
        raise SuiteFormatError(
            f"{source}:1: a suite file must be a YAML mapping of 'name', 'capability', ... 'items'",
            "start from one of the built-in suites (the format is described at the top of each)",
        )
    return document


# --------------------------------------------------------------------------------------------------
# Public API


def load_suite(path: _PathLike) -> Suite:
    """Load, validate and hash one suite file; problems raise :class:`SuiteFormatError`."""
    path = Path(path)
    return _SuiteBuilder(path, _parse(_read_text(path), path)).build()


def load_suite_text(text: str, source: _PathLike = "<string>") -> Suite:
    """Like :func:`load_suite` for YAML text; ``source`` names it in error messages."""
    source = Path(source)
    suite = _SuiteBuilder(source, _parse(text, source)).build()
    return replace(suite, source=None)


def load_suites(paths: Iterable[_PathLike]) -> list[Suite]:
    """Load several suites; two suites with one name would mix up results, so that is an error."""
    suites: list[Suite] = []
    by_name: dict[str, Suite] = {}
    for path in paths:
        suite = load_suite(path)
        if suite.name in by_name:
            raise SuiteFormatError(
                f"{suite.source}: suite name {suite.name!r} is also used by {by_name[suite.name].source}",
                "give each suite a distinct 'name'",
            )
        by_name[suite.name] = suite
        suites.append(suite)
    return suites


def load_suite_metadata(path: _PathLike) -> dict[str, Any]:
    """The header ``metadata`` of a suite file (e.g. generator seed), after full validation."""
    path = Path(path)
    document = _parse(_read_text(path), path)
    _SuiteBuilder(path, document).build()
    return _plain(document.get("metadata") or {})
