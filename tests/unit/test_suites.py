"""The built-in suites load, are well-formed, have computed answers that check out, regenerate
identically, and malformed suite files fail with FILE:LINE and the field named."""

from __future__ import annotations

import ast
import collections
import importlib
import operator
import re
import sys
from pathlib import Path

import hypothesis
import pytest
from small_suites import VALID, billion_laughs

from pytest_layercheck.core.errors import SuiteFormatError
from pytest_layercheck.suites.builtin import (
    BUILTIN_SUITES,
    builtin_suite_path,
    load_builtin_suite,
    resolve_suite,
)
from pytest_layercheck.suites.loader import load_suite, load_suite_metadata, load_suite_text, load_suites
from pytest_layercheck.suites.protocols import protocol_names
from pytest_layercheck.suites.schema import CAPABILITIES, Suite

GENERATED = ("reasoning", "retrieval")


@pytest.fixture(scope="module")
def suites() -> dict[str, Suite]:
    return {name: load_builtin_suite(name) for name in BUILTIN_SUITES}


# --------------------------------------------------------------------------------------------------
# Built-in suites


@pytest.mark.parametrize("name", BUILTIN_SUITES)
def test_builtin_suite_is_well_formed(suites: dict[str, Suite], name: str) -> None:
    suite = suites[name]
    assert suite.name == suite.capability == name
    assert suite.capability in CAPABILITIES
    assert len(suite.items) >= 200
    assert suite.default_protocol in suite.protocols
    assert set(suite.protocols) == set(protocol_names())
    ids = [item.id for item in suite.items]
    assert len(ids) == len(set(ids))
    contexts = [item.context for item in suite.items]
    assert len(contexts) == len(set(contexts)), "every item asks something different"
    for item in (*suite.fewshot, *suite.items):
        assert len(item.choices) == 4
        assert len(set(item.choices)) == 4
        assert item.target == item.choices[item.gold], item.id
    golds = collections.Counter(item.gold for item in suite.items)
    assert min(golds.values()) >= len(suite.items) // 8, f"gold positions unbalanced: {golds}"


def test_knowledge_covers_the_domains(suites: dict[str, Suite]) -> None:
    domains = collections.Counter(item.domain for item in suites["knowledge"].items)
    assert set(domains) == {"geography", "science", "history", "language", "medicine"}
    assert domains["medicine"] >= 50
    assert min(domains.values()) >= 40


@pytest.mark.parametrize("name", BUILTIN_SUITES)
def test_first_items_are_a_balanced_sample(suites: dict[str, Suite], name: str) -> None:
    """Quick profiles take the first N items: every domain must show up early and in proportion."""
    items = suites[name].items
    overall = collections.Counter(item.domain for item in items)
    for limit in (20, 50):
        head = collections.Counter(item.domain for item in items[:limit])
        assert set(head) == set(overall), (limit, head)
        for domain, count in overall.items():
            assert abs(head[domain] - limit * count / len(items)) <= 1.5, (limit, domain, head)


@pytest.mark.parametrize("name", BUILTIN_SUITES)
def test_hash_is_stable_and_full_length(suites: dict[str, Suite], name: str) -> None:
    again = load_builtin_suite(name)
    assert again.content_hash == suites[name].content_hash
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", again.content_hash)


def test_hash_ignores_formatting_but_not_content(tmp_path: Path) -> None:
    base = load_suite(_write(tmp_path, "a.yaml", VALID))
    reformatted = "# a comment\n" + VALID.replace(
        "[Paris, Lyon, Nice, Lille]", "\n      - Paris\n      - Lyon\n      - Nice\n      - Lille"
    )
    assert load_suite(_write(tmp_path, "b.yaml", reformatted)).content_hash == base.content_hash
    explicit_default = VALID.replace('{template: "{context}"}', '{template: "{context}", target_delimiter: " "}')
    assert load_suite(_write(tmp_path, "c.yaml", explicit_default)).content_hash == base.content_hash
    changed = VALID.replace("    gold: 0\n", "    gold: 1\n", 1)
    assert load_suite(_write(tmp_path, "d.yaml", changed)).content_hash != base.content_hash


def test_builtin_resolution(tmp_path: Path) -> None:
    assert resolve_suite("knowledge").name == "knowledge"
    path = _write(tmp_path, "mine.yaml", VALID)
    assert resolve_suite(str(path)).name == "tiny"
    assert builtin_suite_path("retrieval").name == "retrieval.yaml"
    with pytest.raises(SuiteFormatError, match="knowledge, reasoning, retrieval"):
        resolve_suite("knowledg")


def test_load_suites_rejects_two_suites_with_one_name(tmp_path: Path) -> None:
    first, second = _write(tmp_path, "a.yaml", VALID), _write(tmp_path, "b.yaml", VALID)
    with pytest.raises(SuiteFormatError, match="also used by"):
        load_suites([first, second])


# --------------------------------------------------------------------------------------------------
# Generated answers, recomputed here independently of the generator

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
}


def _evaluate(expression: str) -> int:
    """Integer arithmetic with + - * // ( ) and max/min: nothing else is accepted."""

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.FloorDiv):
                assert left % right == 0, f"inexact division in {expression}"
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("max", "min"):
            values = [walk(arg) for arg in node.args]
            return max(values) if node.func.id == "max" else min(values)
        raise AssertionError(f"unexpected syntax in {expression!r}")

    return walk(ast.parse(expression, mode="eval"))


#: How many small units make one big unit, written out independently of the generator.
_FACTORS = {
    ("centimetres", "metres"): 100, ("metres", "kilometres"): 1000, ("grams", "kilograms"): 1000,
    ("millilitres", "litres"): 1000, ("minutes", "hours"): 60, ("seconds", "minutes"): 60,
    ("hours", "days"): 24, ("days", "weeks"): 7, ("months", "years"): 12, ("eggs", "dozen"): 12,
}  # fmt: skip


def _answer_from_question(domain: str, kind: str, question: str) -> int | None:
    """Solve the question from its text alone (None for word problems, checked another way)."""
    if domain in ("arithmetic", "multi_step"):
        return _evaluate(re.fullmatch(r"What is (.+)\?", question).group(1))
    if domain == "comparison":
        numbers = [int(n) for n in re.findall(r"\d+", question)]
        return max(numbers) if "larg" in question else min(numbers)  # larger, largest
    if domain == "unit_conversion":
        if match := re.fullmatch(r"How many (\w+) are in (\d+) (\w+)\?", question):
            small, amount, big = match.groups()
            return int(amount) * _FACTORS[(small, big)]
        big, total, small = re.fullmatch(r"How many (\w+) make (\d+) (\w+)\?", question).groups()
        factor = _FACTORS[(small, big)]
        assert int(total) % factor == 0
        return int(total) // factor
    if domain == "algebra":
        left, right = re.fullmatch(r"If (.+) = (\d+), what is x\?", question).groups()
        solutions = [x for x in range(0, 1000) if _evaluate(left.replace("x", str(x))) == int(right)]
        assert len(solutions) == 1, question
        return solutions[0]
    return None


def test_reasoning_answers_recomputed(suites: dict[str, Suite]) -> None:
    suite = suites["reasoning"]
    seen_domains = set()
    for item in (*suite.fewshot, *suite.items):
        seen_domains.add(item.domain)
        target = int(item.target)
        from_question = _answer_from_question(item.domain, item.kind, item.context)
        if from_question is not None:
            assert from_question == target, (item.id, item.context)
        if item.metadata:  # few-shot examples carry no metadata
            expression = item.metadata["expression"]
            assert _evaluate(expression) == target, (item.id, expression)
            if item.domain == "word_problem":
                in_story = collections.Counter(re.findall(r"\d+", item.context))
                assert not collections.Counter(re.findall(r"\d+", expression)) - in_story, item.id
        assert all(choice.isdigit() for choice in item.choices), item.id
    ranks = collections.Counter(
        sorted(map(int, item.choices)).index(int(item.target)) for item in suite.items if item.domain != "comparison"
    )
    assert min(ranks.values()) >= sum(ranks.values()) // 8, f"answer's rank by size leaks: {ranks}"
    assert seen_domains == {
        "arithmetic",
        "multi_step",
        "comparison",
        "unit_conversion",
        "algebra",
        "word_problem",
    }


def test_retrieval_answers_only_in_context(suites: dict[str, Suite]) -> None:
    suite = suites["retrieval"]
    depths: dict[str, set[float]] = collections.defaultdict(set)
    for item in (*suite.fewshot, *suite.items):
        assert item.context.count(item.target) == 1, item.id
        for choice in item.choices:
            assert choice in item.context, (item.id, choice)
        if item.domain == "needle":
            haystack, question, cue = item.context.split("\n")
            thing = re.fullmatch(r"What is the secret code for (.+)\?", question).group(1)
            assert cue == f"The secret code for {thing} is"
            sentences = re.split(r"(?<=\.) ", haystack)
            needles = [i for i, s in enumerate(sentences) if s.startswith("The secret code")]
            assert len(needles) == 1
            assert sentences[needles[0]] == f"The secret code for {thing} is {item.target}.", item.id
            slack = 0.5 / (len(sentences) - 1) + 1e-9  # the needle sits at the nearest sentence break
            assert abs(needles[0] / (len(sentences) - 1) - item.metadata["depth"]) <= slack, item.id
            depths[item.kind].add(item.metadata["depth"])
        else:
            lines = item.context.split("\n")
            table = dict(line.split(": ") for line in lines[1:-2])
            attribute, key = re.fullmatch(r"What is the (.+) of (\w+)\?", lines[-2]).groups()
            assert lines[-1] == f"{key}:"
            assert attribute in lines[0]
            assert table[key] == item.target, item.id
            assert set(item.choices) <= set(table.values())
    assert set(depths) == {"short", "medium", "long"}
    assert all(found == {0.0, 0.25, 0.5, 0.75, 1.0} for found in depths.values())


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Generate in-process with an extra local module full of in-range integer literals imported:
    hypothesis mixes literals of local modules into its draws unless the generator stops it."""
    folder = tmp_path_factory.mktemp("localconstants")
    literals = ", ".join(str(n) for n in (*range(2, 100, 7), 1234, 5678, 8043, 9999))
    (folder / "layercheck_literals.py").write_text(f"LITERALS = ({literals})\n")
    sys.path.insert(0, str(folder))
    try:
        importlib.import_module("layercheck_literals")
        from pytest_layercheck.suites.generate import generate_texts

        return generate_texts()
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("layercheck_literals", None)


@pytest.mark.slow
@pytest.mark.parametrize("name", GENERATED)
def test_generation_is_deterministic(regenerated: dict[str, str], name: str) -> None:
    path = builtin_suite_path(name)
    metadata = load_suite_metadata(path)
    assert metadata["seed"]
    if metadata["hypothesis_version"] == hypothesis.__version__:
        assert regenerated[name] == path.read_text(encoding="utf-8"), (
            f"{path} is stale: run python -m pytest_layercheck.suites.generate"
        )
    else:  # another hypothesis version may draw other numbers; it must still be repeatable
        from pytest_layercheck.suites.generate import generate_texts

        assert generate_texts()[name] == regenerated[name]


@pytest.mark.slow
def test_generate_command_writes_and_checks(
    regenerated: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pytest_layercheck.suites import generate

    monkeypatch.setattr(generate, "generate_texts", lambda: regenerated)
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1  # nothing written yet
    assert generate.main(["--out", str(tmp_path)]) == 0
    assert generate.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "retrieval.yaml").write_text("stale", encoding="utf-8")
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1
    assert "retrieval.yaml: differs" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Malformed suite files


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _edit(line: int, replacement: str | None) -> str:
    """VALID with 1-based ``line`` replaced (``None`` deletes it; a "\\n" inside inserts lines)."""
    lines = VALID.splitlines()
    if replacement is None:
        del lines[line - 1]
    else:
        lines[line - 1] = replacement
    return "\n".join(lines) + "\n"


BAD_SUITES = {
    # name: (text, line the error must name, text the message must contain)
    "missing field": (_edit(2, None), 1, "required field 'capability' is missing"),
    "bad gold": (
        _edit(14, "    gold: 4"),
        14,
        "item 'a': field 'gold' is 4 but the item has 4 choices (valid: 0..3)",
    ),
    "duplicate id": (_edit(16, "  - id: a"), 16, "item 'a': field 'id' duplicates"),
    "unknown field": (
        _edit(13, "    choises: [Paris, Lyon, Nice, Lille]"),
        13,
        "unknown field 'choises'",
    ),
    "bad protocol": (_edit(6, '  mc_txt: {template: "{context}"}'), 6, "unknown protocol 'mc_txt'"),
    "invalid yaml": (_edit(10, "    context: The capital: of France"), 10, "invalid YAML"),
    "bad capability": (_edit(2, "capability: knowlege"), 2, "field 'capability' is 'knowlege'"),
    "undeclared default": (
        _edit(4, "default_protocol: continuation"),
        4,
        "field 'default_protocol'",
    ),
    "unquoted number": (_edit(15, "    target: 1945"), 15, "field 'target' is an integer (1945)"),
    "duplicate key": (_edit(14, "    gold: 0\n    gold: 1"), 15, "key 'gold' appears twice"),
    "bad placeholder": (
        _edit(6, '  mc_text: {template: "{contxt}"}'),
        6,
        "field 'template' uses unknown placeholder '{contxt}'",
    ),
    "bad regex": (
        _edit(7, '  generate_until: {template: "{context}", answer_regex: "(\\\\d+"}'),
        7,
        "field 'answer_regex' does not compile",
    ),
    "misplaced setting": (
        _edit(6, '  mc_text: {template: "{context}", until: ["."]}'),
        6,
        "unknown field 'until'",
    ),
    "one choice": (_edit(13, "    choices: [Paris]"), 13, "field 'choices' has only 1"),
    "protocol needs choices": (
        _edit(20, None).replace("    gold: 1\n", ""),
        16,
        "protocol 'mc_text' needs them",
    ),
    "not a mapping": ("- just\n- a list\n", 1, "must be a YAML mapping"),
    "date in metadata": (
        _edit(15, "    target: Paris\n    metadata: {when: 2024-01-01}"),
        16,
        "field 'metadata.when' is a date",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SUITES))
def test_malformed_suite_names_file_line_and_field(tmp_path: Path, case: str) -> None:
    text, line, expected = BAD_SUITES[case]
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(SuiteFormatError) as caught:
        load_suite(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert expected in message, message
    assert caught.value.fix, "every error says how to fix it"


def test_literal_braces_and_choice_lists_in_templates(tmp_path: Path) -> None:
    """Only {context} and {choices_block} are placeholders (as in the scorer); JSON stays literal."""
    text = _edit(6, """  mc_text: {template: '{"task": "capital"} {context}\n{choices_block}'}""")
    suite = load_suite(_write(tmp_path, "json.yaml", text))
    assert suite.settings("mc_text").template.startswith('{"task": "capital"}')


def test_valid_fixture_loads(tmp_path: Path) -> None:
    suite = load_suite(_write(tmp_path, "ok.yaml", VALID))
    assert [item.line for item in suite.items] == [9, 16]
    assert suite.settings("generate_until").until == ("\n",)


# --------------------------------------------------------------------------------------------------
# Limits at the door


def test_a_suite_over_the_size_limit_is_refused_without_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_layercheck.suites import loader

    big = _write(tmp_path, "big.yaml", VALID + "# padding\n" * 3_000_000)  # 30 MB
    monkeypatch.setattr(loader, "_parse", lambda *a: pytest.fail("a refused file must not be parsed"))
    with pytest.raises(SuiteFormatError) as info:
        load_suite(big)
    assert "more than the limit of 8.4 MB" in info.value.problem and "LAYERCHECK_MAX_SUITE_BYTES" in info.value.fix
    monkeypatch.undo()
    monkeypatch.setenv("LAYERCHECK_MAX_SUITE_BYTES", "100")
    with pytest.raises(SuiteFormatError, match="more than the limit"):
        load_suite_text(VALID)


def test_a_yaml_alias_bomb_is_refused_at_once() -> None:
    import time

    text = billion_laughs()
    assert len(text) - len(VALID) < 700  # 10**9 nodes; seven levels took 7 s before the check, x10 per level
    started = time.perf_counter()
    with pytest.raises(SuiteFormatError, match="aliases expand the document to more than 2000000 nodes"):
        load_suite_text(text)
    assert time.perf_counter() - started < 1.0


def test_too_many_aliases_are_refused() -> None:
    text = "x: &x 1\nitems: [" + ",".join(["*x"] * 1001) + "]\n"
    with pytest.raises(SuiteFormatError, match="more than 1000 YAML aliases"):
        load_suite_text(text)


def test_a_few_aliases_and_merge_keys_still_load() -> None:
    text = VALID.replace(
        '  mc_text: {template: "{context}"}', '  mc_text: &plain {template: "{context}"}\n  continuation: *plain'
    )
    assert set(load_suite_text(text).protocols) == {"mc_text", "generate_until", "continuation"}


def test_resolve_suites_refuses_two_suites_with_one_name(tmp_path: Path) -> None:
    from pytest_layercheck.suites.builtin import resolve_suites

    first = _write(tmp_path, "one.yaml", VALID)
    second = _write(tmp_path, "two.yaml", VALID)
    with pytest.raises(SuiteFormatError) as info:
        resolve_suites([str(first), str(second)])
    assert "are both named 'tiny'" in info.value.problem
    with pytest.raises(SuiteFormatError, match="both named 'knowledge'"):
        resolve_suites(["knowledge", "knowledge"])
    assert [s.name for s in resolve_suites(["knowledge", str(first)])] == ["knowledge", "tiny"]


def test_a_user_file_may_not_take_a_builtin_name(tmp_path: Path) -> None:
    impostor = _write(tmp_path, "knowledge.yaml", VALID.replace("name: tiny", "name: knowledge"))
    with pytest.raises(SuiteFormatError) as info:
        resolve_suite(str(impostor))
    assert "is the name of a built-in suite" in info.value.problem and "my-knowledge" in info.value.fix
    assert resolve_suite("knowledge").source == builtin_suite_path("knowledge")
