"""Strict decoding of what pytest-layercheck reads back from disk: profiles (baselines) and cache entries.

A CI gate must fail closed, so nothing read from disk is trusted. A profile or cache entry is accepted
only if its schema is exact (no unknown or missing keys, typed fields, ``schema_version`` an int and not
``true``), every number in it is finite, every outcome is what its metric can hold (0/1 for accuracy,
a probability for ``p_correct``; :mod:`.metrics`), every outcome vector is exactly as
long as the items its evaluation scored (all ``item_ids`` intact, the first ``sweep_items`` under an
ablation), and the values derived from the outcomes (``means``, ``cells``) are the ones the outcomes
give. Anything else raises :class:`SchemaError`, which says where the problem is.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_layercheck.core.errors import LayercheckError
from pytest_layercheck.data.metrics import metric_kind
from pytest_layercheck.data.records import (
    CELL_METRIC,
    INTACT,
    MAX_ANSWER_CHARS,
    PRIMARY_METRIC,
    SCHEMA_VERSION,
    Evaluation,
)
from pytest_layercheck.suites.protocols import get_protocol, protocol_names

#: Keys of a profile document, exactly (``DepthProfile.to_json``).
PROFILE_KEYS = frozenset(
    {"schema_version", "model", "environment", "settings", "bands", "suites", "cells", "evaluations"}
)
SUITE_KEYS = frozenset({"name", "capability", "content_hash", "protocol", "item_ids", "sweep_items"})
SUITE_REQUIRED = frozenset({"capability", "content_hash", "protocol", "item_ids"})
EVALUATION_KEYS = frozenset({"protocol", "removed_layers", "means", "outcomes"})
#: Keys of a result-cache entry (``ResultCache.put``).
CACHE_ENTRY_KEYS = frozenset(
    {"format", "identity", "suite", "protocol", "ablation", "removed_layers", "outcomes", "answers", "signature"}
)
#: Of them, those an entry may lack (entries written before answers were recorded have none).
CACHE_ENTRY_OPTIONAL = frozenset({"answers"})
#: A recorded choice index above this is not an answer to any suite's item.
MAX_CHOICE_INDEX = 1 << 16
#: Derived values are recomputed from the outcomes; a stored one further off than this was edited.
DERIVED_TOLERANCE = 1e-9


class SchemaError(LayercheckError, ValueError):
    """A profile, baseline or cache entry that does not decode strictly; the message says where."""


def _fail(where: str, problem: str) -> SchemaError:
    return SchemaError(f"{where}: {problem}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def expect_object(
    value: Any, where: str, keys: frozenset[str] | None = None, required: frozenset[str] | None = None
) -> dict[str, Any]:
    """``value`` as a JSON object with string keys; with ``keys``, exactly those (``required`` of them at least)."""
    if not isinstance(value, dict):
        raise _fail(where, f"expected an object, found {_kind(value)}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise _fail(where, f"key {bad[0]!r} is not a string")
    if keys is not None:
        unknown = sorted(set(value) - keys)
        missing = sorted((keys if required is None else required) - set(value))
        if unknown:
            raise _fail(where, f"unknown field(s) {', '.join(map(repr, unknown))}")
        if missing:
            raise _fail(where, f"missing field(s) {', '.join(map(repr, missing))}")
    return value


def expect_int(value: Any, where: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An int that is not a bool (JSON ``true`` is not 1 here), within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, f"expected an integer, found {_kind(value)} {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"{minimum if minimum is not None else '-inf'}..{maximum if maximum is not None else 'inf'}"
        raise _fail(where, f"{value} is outside {bounds}")
    return value


def expect_str(value: Any, where: str, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _fail(where, f"expected a string, found {_kind(value)}")
    if not empty and not value:
        raise _fail(where, "is empty")
    return value


def expect_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(where, f"expected a list, found {_kind(value)}")
    return value


def check_finite(value: Any, where: str) -> None:
    """Every number anywhere in ``value`` is finite (JSON's NaN and Infinity extensions are refused)."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            raise _fail(path, f"{node} is not a finite number")
        if isinstance(node, dict):
            stack.extend((v, f"{path}.{k}") for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node))


class _DuplicateKey(Exception):
    """A key given twice in one JSON object; :func:`loads_strict` turns it into a located JSONDecodeError."""

    def __init__(self, key: str, first: int = -1, second: int = -1) -> None:
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def loads_strict(text: str) -> Any:
    """``json.loads``, except that a key given twice in one object is a ``JSONDecodeError`` at its second place.

    JSON readers keep the last of two equal keys silently, so a key appended to a baseline (a second
    ``"outcomes"``) would override the one a reviewer reads. Nesting too deep for the parser is a
    ``JSONDecodeError`` too, not a crash.
    """
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey:
        found = _locate_duplicate(text)
        first_line = text.count("\n", 0, found.first) + 1
        raise json.JSONDecodeError(
            f"key {found.key!r} appears twice in one object (first on line {first_line}); "
            "a JSON reader would silently keep only the last",
            text,
            found.second,
        ) from None
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply to read", text, 0) from None


def _locate_duplicate(text: str) -> _DuplicateKey:
    """Where the first key repeated in one object is (``text`` parses apart from that): a walk over the
    document's objects, since ``object_pairs_hook`` is not told positions."""
    decoder = json.JSONDecoder()
    space = re.compile(r"[ \t\n\r]*")

    def skip(pos: int) -> int:
        match = space.match(text, pos)
        return match.end() if match else pos

    def walk(pos: int) -> int:
        """The end of the value at ``pos``; raises the first duplicate found in it."""
        pos = skip(pos)
        opening = text[pos : pos + 1]
        if opening not in ("{", "["):
            return decoder.raw_decode(text, pos)[1]
        closing = "}" if opening == "{" else "]"
        seen: dict[str, int] = {}
        pos = skip(pos + 1)
        while text[pos] != closing:
            if opening == "{":
                key, end = decoder.raw_decode(text, pos)
                if key in seen:
                    raise _DuplicateKey(key, seen[key], pos)
                seen[key] = pos
                pos = skip(end) + 1  # past the colon
            pos = skip(walk(pos))
            if text[pos] == ",":
                pos = skip(pos + 1)
        return pos + 1

    try:
        walk(0)
    except _DuplicateKey as found:
        return found
    return _DuplicateKey("?", 0, 0)  # unreachable for a text json.loads refused for a duplicate


def decode_outcomes(encoded: Any, where: str, expected: int, metric: str) -> tuple[float, ...]:
    """Per-item values of ``metric`` from ``"0110…"`` or ``[0.93, 0.41, …]``, exactly ``expected`` of them.

    Each value must be what the metric can hold (:func:`metrics.metric_kind`): 0/1 for accuracy-style
    metrics, a probability for ``p_correct``, a finite number for margins, <= 0 for log-likelihoods.
    """

    kind = metric_kind(metric)
    if isinstance(encoded, str):
        stray = sorted(set(encoded) - {"0", "1"})
        if stray:
            raise _fail(where, f"outcome string holds {stray[0]!r}; only '0' and '1' are outcomes")
        values = tuple(1.0 if ch == "1" else 0.0 for ch in encoded)
    elif isinstance(encoded, list):
        for index, v in enumerate(encoded):
            problem = kind.problem(v)
            if problem:
                raise _fail(f"{where}[{index}]", f"{v!r} {problem}")
        values = tuple(float(v) for v in encoded)
    else:
        raise _fail(where, f"expected a '0101…' string or a list of numbers, found {_kind(encoded)}")
    if len(values) != expected:
        raise _fail(where, f"{len(values)} outcomes for {expected} items")
    return values


def _layers(value: Any, where: str, num_layers: int) -> tuple[int, ...]:
    layers = tuple(expect_int(v, f"{where}[{i}]", 0, num_layers - 1) for i, v in enumerate(expect_list(value, where)))
    if len(set(layers)) != len(layers):
        raise _fail(where, "repeats a layer")
    return layers


def _item_ids(value: Any, where: str) -> tuple[str, ...]:
    ids = tuple(expect_str(v, f"{where}[{i}]") for i, v in enumerate(expect_list(value, where)))
    if not ids:
        raise _fail(where, "is empty; a suite scores at least one item")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        duplicate = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise _fail(where, f"item id {duplicate!r} appears twice")
    return ids


def check_profile_json(data: Any) -> None:
    """Raise :class:`SchemaError` unless ``data`` is an exact, well-typed, finite, binary profile document."""

    top = expect_object(data, "profile", PROFILE_KEYS)
    check_finite(top, "profile")
    num_layers = _check_header(top)
    expected = _check_suites(top["suites"])
    _check_evaluations(top["evaluations"], expected, num_layers)


def _check_header(top: dict[str, Any]) -> int:
    """Check everything of a profile before its suites (version, model, environment, settings, cells,
    bands); return the model's number of layers, which bounds every layer index after it."""
    version = expect_int(top["schema_version"], "schema_version")
    if version != SCHEMA_VERSION:
        raise _fail("schema_version", f"{version} is not the version this pytest-layercheck reads ({SCHEMA_VERSION})")
    model = expect_object(top["model"], "model")
    expect_str(model.get("name"), "model.name")
    expect_str(model.get("fingerprint"), "model.fingerprint")
    num_layers = expect_int(model.get("num_layers"), "model.num_layers", 1)
    expect_object(top["environment"], "environment")
    expect_object(top["settings"], "settings")
    expect_list(top["cells"], "cells")
    for band, layers in expect_object(top["bands"], "bands").items():
        _layers(layers, f"bands.{band}", num_layers)
    return num_layers


def _check_suites(value: Any) -> dict[str, tuple[str, int, int]]:
    """Check a profile's ``suites``; return each suite's protocol, item count and swept item count, which
    its evaluations are held to."""
    suites = expect_object(value, "suites")
    if not suites:
        raise _fail("suites", "is empty; a profile holds at least one suite")
    expected: dict[str, tuple[str, int, int]] = {}
    for name, raw in suites.items():
        where = f"suites.{name}"
        entry = expect_object(raw, where, SUITE_KEYS, SUITE_REQUIRED)
        if "name" in entry and entry["name"] != name:
            raise _fail(f"{where}.name", f"{entry['name']!r} differs from the key {name!r}")
        expect_str(entry["capability"], f"{where}.capability")
        expect_str(entry["content_hash"], f"{where}.content_hash")
        protocol = expect_str(entry["protocol"], f"{where}.protocol")
        if protocol not in PRIMARY_METRIC:
            raise _fail(f"{where}.protocol", f"unknown protocol {protocol!r} (known: {', '.join(PRIMARY_METRIC)})")
        items = len(_item_ids(entry["item_ids"], f"{where}.item_ids"))
        sweep = entry.get("sweep_items")
        swept = items if sweep is None else expect_int(sweep, f"{where}.sweep_items", 1, items)
        expected[name] = (protocol, items, swept)
    return expected


def _check_evaluations(value: Any, expected: Mapping[str, tuple[str, int, int]], num_layers: int) -> None:
    """Check a profile's ``evaluations``: each belongs to a listed suite, every suite has an intact one,
    and all of a suite's evaluations record the same metrics."""
    evaluations = expect_object(value, "evaluations")
    for suite, by_key in evaluations.items():
        if suite not in expected:
            raise _fail(f"evaluations.{suite}", "belongs to no suite listed under 'suites'")
        metrics: set[str] | None = None
        for key, raw in expect_object(by_key, f"evaluations.{suite}").items():
            metrics = _check_evaluation(raw, f"evaluations.{suite}.{key}", key, expected[suite], num_layers, metrics)
        if metrics is None or INTACT not in by_key:
            raise _fail(f"evaluations.{suite}", "has no 'intact' evaluation")
    missing = sorted(set(expected) - set(evaluations))
    if missing:
        raise _fail("evaluations", f"suite(s) {', '.join(map(repr, missing))} have no evaluations")


def _check_evaluation(
    raw: Any, where: str, key: str, suite: tuple[str, int, int], num_layers: int, metrics: set[str] | None
) -> set[str]:
    """Check one evaluation of a suite (its protocol, item count and swept item count in ``suite``); return
    the suite's metrics, which are this evaluation's when ``metrics`` (those of the ones before) is None."""
    protocol, items, swept = suite
    ev = expect_object(raw, where, EVALUATION_KEYS)
    if ev["protocol"] != protocol:
        raise _fail(f"{where}.protocol", f"{ev['protocol']!r} is not the suite's protocol {protocol!r}")
    removed = _layers(ev["removed_layers"], f"{where}.removed_layers", num_layers)
    if (key == INTACT) != (not removed):
        raise _fail(f"{where}.removed_layers", "only the 'intact' evaluation removes no layer")
    outcomes = expect_object(ev["outcomes"], f"{where}.outcomes")
    if metrics is None:
        metrics = set(outcomes)
    required = {PRIMARY_METRIC[protocol], CELL_METRIC[protocol]}
    if set(outcomes) != metrics or not required <= set(outcomes):
        raise _fail(
            f"{where}.outcomes",
            f"metrics {sorted(outcomes)} differ from the suite's {sorted(metrics)} or lack one of {sorted(required)}",
        )
    for metric, encoded in outcomes.items():
        decode_outcomes(encoded, f"{where}.outcomes.{metric}", items if key == INTACT else swept, metric)
    means = expect_object(ev["means"], f"{where}.means")
    if set(means) != set(outcomes):
        raise _fail(f"{where}.means", f"metrics {sorted(means)} differ from the outcomes' {sorted(outcomes)}")
    return metrics


def _normal(value: Any) -> Any:
    """JSON-equal form: tuples become lists, as after a round trip through a file."""
    return json.loads(json.dumps(value))


def _differs(stored: Any, derived: Any) -> bool:
    if isinstance(stored, bool) or isinstance(derived, bool):
        return stored is not derived
    if isinstance(stored, (int, float)) and isinstance(derived, (int, float)):
        if math.isnan(derived):
            return not (isinstance(stored, float) and math.isnan(stored))
        return not abs(stored - derived) <= DERIVED_TOLERANCE * max(1.0, abs(derived))
    if isinstance(stored, dict) and isinstance(derived, dict):
        return stored.keys() != derived.keys() or any(_differs(stored[k], derived[k]) for k in derived)
    if isinstance(stored, list) and isinstance(derived, list):
        return len(stored) != len(derived) or any(_differs(a, b) for a, b in zip(stored, derived))
    return stored != derived


def check_derived(data: Mapping[str, Any], derived: Mapping[str, Any]) -> None:
    """The stored ``means`` and ``cells`` of ``data`` are those of ``derived``, the document its decoded outcomes
    give (nothing edited by hand)."""
    fresh = _normal(derived)
    for suite, by_key in data["evaluations"].items():
        for key, ev in by_key.items():
            if _differs(ev["means"], fresh["evaluations"][suite][key]["means"]):
                raise _fail(
                    f"evaluations.{suite}.{key}.means",
                    f"{ev['means']} are not the means of the stored outcomes "
                    f"({fresh['evaluations'][suite][key]['means']}); the file was edited",
                )
    if _differs(data["cells"], fresh["cells"]):
        index = next(
            (i for i, (a, b) in enumerate(zip(data["cells"], fresh["cells"])) if _differs(a, b)),
            min(len(data["cells"]), len(fresh["cells"])),
        )
        raise _fail(
            f"cells[{index}]",
            "does not match the cells the stored outcomes give "
            f"({len(data['cells'])} stored, {len(fresh['cells'])} derived); the file was edited",
        )


def decode_cache_entry(payload: Any, identity: Mapping[str, Any], choices: Sequence[int] | None = None) -> Evaluation:
    """The evaluation in a cache entry, after checking it against the ``identity`` it was looked up by.

    The stored identity must equal ``identity``; the suite, protocol and ablation must be the ones the
    identity names; outcomes must be what their metric can hold and as many as the identity's ``items``; ``answers``, if present,
    as :func:`decode_answers` requires (``choices``: each item's number of choices, when the caller knows them).
    """

    entry = expect_object(payload, "cache entry", CACHE_ENTRY_KEYS, CACHE_ENTRY_KEYS - CACHE_ENTRY_OPTIONAL)
    check_finite(entry, "cache entry")
    if _normal(entry["identity"]) != _normal(dict(identity)):
        stored = expect_object(entry["identity"], "identity")
        wanted = _normal(dict(identity))
        fields = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
        raise _fail("identity", f"stored for another evaluation (differs in {', '.join(fields)})")
    for field in ("protocol", "ablation"):
        if field in identity and entry[field] != identity[field]:
            raise _fail(field, f"{entry[field]!r} is not the {field} asked for ({identity[field]!r})")
    protocol = expect_str(entry["protocol"], "protocol")
    ablation = expect_str(entry["ablation"], "ablation")
    removed = tuple(
        expect_int(v, f"removed_layers[{i}]", 0)
        for i, v in enumerate(expect_list(entry["removed_layers"], "removed_layers"))
    )
    if ablation == INTACT and removed:
        raise _fail("removed_layers", "the intact evaluation removes no layer")
    items: Sequence[Any] = identity.get("items", ())
    expected = len(items) if isinstance(items, (list, tuple)) else -1
    outcomes = expect_object(entry["outcomes"], "outcomes")
    for wanted in (PRIMARY_METRIC[protocol], CELL_METRIC[protocol]) if protocol in PRIMARY_METRIC else ():
        if wanted not in outcomes:
            raise _fail("outcomes", f"lack the metric {wanted!r}")
    decoded = {}
    for metric, values in outcomes.items():
        decoded[metric] = decode_outcomes(
            values, f"outcomes.{metric}", expected if expected >= 0 else len(values), metric
        )
    answers = None
    if entry.get("answers") is not None:
        if ablation != INTACT:
            raise _fail("answers", "only the intact evaluation records answers")
        answers = decode_answers(
            entry["answers"], "answers", protocol, expected if expected >= 0 else len(entry["answers"]), choices
        )
    return Evaluation(
        suite=expect_str(entry["suite"], "suite"),
        protocol=protocol,
        ablation=ablation,
        removed_layers=removed,
        outcomes=decoded,
        answers=answers,
    )


def decode_answers(
    value: Any, where: str, protocol: str, expected: int, choices: Sequence[int] | None = None
) -> tuple[int | str, ...]:
    """What a model answered per item (:attr:`Evaluation.answers`), exactly ``expected`` of them: choice
    indices (0 <= index < the item's number of choices, or :data:`MAX_CHOICE_INDEX` where unknown) for a
    multiple-choice protocol, strings of at most ``MAX_ANSWER_CHARS`` for a generating one; a protocol that
    chooses nothing records no answers."""

    values = expect_list(value, where)
    if protocol not in protocol_names():
        raise _fail(where, f"recorded for unknown protocol {protocol!r}")
    kind = get_protocol(protocol)
    if len(values) != expected:
        raise _fail(where, f"{len(values)} answers for {expected} items")
    if choices is not None and len(choices) != expected:
        raise _fail(where, f"{expected} answers for {len(choices)} items with choices")
    answers: list[int | str] = []
    for index, answer in enumerate(values):
        at = f"{where}[{index}]"
        if kind.multiple_choice:
            bound = choices[index] - 1 if choices is not None else MAX_CHOICE_INDEX
            answers.append(expect_int(answer, at, 0, bound))
        elif kind.generates:
            text = expect_str(answer, at, empty=True)
            if len(text) > MAX_ANSWER_CHARS:
                raise _fail(at, f"{len(text)} characters, more than an answer keeps ({MAX_ANSWER_CHARS})")
            answers.append(text)
        else:
            raise _fail(where, f"protocol {protocol!r} chooses no answer, so none is recorded")
    return tuple(answers)


__all__ = [
    "CACHE_ENTRY_KEYS",
    "PROFILE_KEYS",
    "SchemaError",
    "check_derived",
    "check_finite",
    "check_profile_json",
    "decode_answers",
    "decode_cache_entry",
    "decode_outcomes",
    "expect_int",
    "expect_object",
    "expect_str",
]
