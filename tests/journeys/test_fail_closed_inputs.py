"""Fault-injection rows for what a user hands in: nothing in a check, a check file, a setting, a suite or a
baseline may silently loosen a guard.

Each row runs the real entry point (``python -m pytest_layercheck.cli`` or pytest in a subprocess) in a
temporary folder and asserts the exit status and the message, as a user would see them: check values
that disable a check (NaN, ``-inf``, out of range, a key given twice), an alias bomb or an oversized
check file, a suite name in ``--limit``/``--sweep-limit``/``--protocols`` that is not in the run, a
``.jsonl`` suite over the size cap, answers that already begin with the delimiter's space, a suite
the intact model scores at chance, and a baseline with a key given twice.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from fault_world import RECORDED, SUITE, assert_exit, environment, layercheck
from trained_tiny import fact_suite_items, write_fact_suite


def _pytest_in(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[pytest.RunResult, str]:
    """pytest in a subprocess in ``pytester.path``, with the fault world's environment."""
    for key, value in environment(pytester.path).items():
        monkeypatch.setenv(key, value)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    return result, result.stdout.str() + result.stderr.str()


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------------- check values and check files
BAD_CHECK_FILES = {
    # file -> (text, where the error is, what it says)
    "layercheck_nan.yaml": ("checks:\n  - capability: knowledge\n    min: .nan\n", ":2:", "field 'min' is nan"),
    "layercheck_nan_text.yaml": ('checks:\n  - capability: knowledge\n    min: "nan"\n', ":2:", "field 'min' is 'nan'"),
    "layercheck_minus_inf.yaml": ("checks:\n  - capability: knowledge\n    min: -.inf\n", ":2:", "field 'min' is -inf"),
    "layercheck_min_over.yaml": (
        "checks:\n  - capability: knowledge\n    min: 1.5\n",
        ":2:",
        "outside the metric's range",
    ),
    "layercheck_alpha_nan.yaml": (
        "checks:\n  - capability: knowledge\n    alpha: .nan\n",
        ":2:",
        "field 'alpha' is nan",
    ),
    "layercheck_drop_over.yaml": (
        "checks:\n  - capability: knowledge\n    max_drop: 2\n",
        ":2:",
        "allows a drop of 2, more than the metric can fall",
    ),
    "layercheck_drop_nan.yaml": (
        "checks:\n  - capability: knowledge\n    max_drop: .nan\n",
        ":2:",
        "field 'max_drop': tolerance max_drop must be a finite number",
    ),
    "layercheck_twice.yaml": (
        "checks:\n  - capability: knowledge\n    max_drop: 0.05\n    max_drop: 100%\n",
        ":4:",
        "key 'max_drop' appears twice in one mapping (first on line 3)",
    ),
}


def test_check_file_values_that_would_disable_a_check_are_collection_errors(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: each of these collected, and ``min: .nan`` passed whatever the model scored."""
    for name, (text, _, _) in BAD_CHECK_FILES.items():
        (pytester.path / name).write_text(text)
    result, output = _pytest_in(pytester, monkeypatch, "--layercheck-model=no-such-model")
    assert result.ret == pytest.ExitCode.INTERRUPTED, output
    assert "Traceback" not in output and "passed" not in output
    flat = _one_line(output)
    for name, (_, line, message) in BAD_CHECK_FILES.items():
        assert f"{name}{line}" in flat and message in flat, (name, output)


def test_marker_values_that_would_disable_a_check_fail_the_test_that_names_them(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_guard="""
        import pytest

        @pytest.mark.layercheck("knowledge", min=float("nan"))
        def test_min_nan():
            pass

        @pytest.mark.layercheck("knowledge", min="nan")
        def test_min_nan_text():
            pass

        @pytest.mark.layercheck("knowledge", min=float("-inf"))
        def test_min_minus_inf():
            pass

        @pytest.mark.layercheck("knowledge", min=True)
        def test_min_bool():
            pass

        @pytest.mark.layercheck("knowledge", max_drop=float("nan"))
        def test_drop_nan():
            pass

        @pytest.mark.layercheck("knowledge", relative=float("inf"))
        def test_relative_inf():
            pass

        @pytest.mark.layercheck("knowledge", alpha=float("nan"))
        def test_alpha_nan():
            pass

        @pytest.mark.layercheck("knowledge", band=["shallow"] * 1000)
        def test_band_not_text():
            pass
    """
    )
    result, output = _pytest_in(pytester, monkeypatch, "--layercheck-model=no-such-model", "-rf")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    result.assert_outcomes(failed=8)
    assert "Traceback" not in output
    flat = _one_line(output)
    for test, message in [
        ("test_min_nan", "field 'min' is nan"),
        ("test_min_nan_text", "field 'min' is 'nan'"),
        ("test_min_minus_inf", "field 'min' is -inf"),
        ("test_min_bool", "field 'min' must be a number"),
        ("test_drop_nan", "field 'max_drop': tolerance max_drop must be a finite number"),
        ("test_relative_inf", "field 'relative': relative tolerance must be between 0% and 100%"),
        ("test_alpha_nan", "field 'alpha' is nan"),
        ("test_band_not_text", "field 'band' must be a string"),
    ]:
        assert f"test_guard.py::{test}: {message}" in flat, (test, output)


def _alias_bomb(levels: int) -> str:
    """A check whose name nests aliases ``levels`` deep, ten per level: 10**levels strings once expanded."""
    text = 'checks:\n  - capability: knowledge\n    name:\n      a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for level in range(1, levels):
        previous, current = chr(ord("a") + level - 1), chr(ord("a") + level)
        text += f"      {current}: &{current} [" + ",".join([f"*{previous}"] * 10) + "]\n"
    return text


@pytest.mark.slow
def test_an_alias_bomb_or_an_oversized_check_file_is_refused_naming_the_file(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the bomb's name became a test id of megabytes (2.1 GB at nine levels; six keep this test safe)."""
    bomb = _alias_bomb(6)
    assert len(bomb) < 600
    (pytester.path / "layercheck_bomb.yaml").write_text(bomb)
    (pytester.path / "layercheck_big.yaml").write_text("checks:\n  - capability: knowledge\n" + "# pad\n" * 200_000)
    started = time.perf_counter()
    result, output = _pytest_in(pytester, monkeypatch, "--layercheck-model=no-such-model")
    assert time.perf_counter() - started < 120
    assert result.ret == pytest.ExitCode.INTERRUPTED, output[:5000]
    assert len(output) < 20_000 and "Traceback" not in output, output[:5000]
    flat = _one_line(output)
    assert "layercheck_bomb.yaml:" in flat and "YAML aliases expand the document to more than 10000 nodes" in flat
    assert "layercheck_big.yaml: check file is 1.2 MB, more than the limit of 1.0 MB" in flat


# ------------------------------------------------------------------------------- suite names in settings
@pytest.mark.slow
@pytest.mark.parametrize("option", ["--limit", "--sweep-limit", "--protocols"])
def test_a_suite_name_not_in_the_run_is_exit_2_before_the_model_loads(tmp_path: Path, option: str) -> None:
    """Before: ``--limit knowlege=10`` was dropped and the suite profiled with its default item count."""
    write_fact_suite(tmp_path / "facts.yaml")
    value = "knowlege=mc_text" if option == "--protocols" else "facts=5,knowlege=10"
    result = layercheck(tmp_path, "profile", "no-such-model", "--suites", "facts.yaml", option, value)
    assert_exit(
        result,
        2,
        f"the {option[2:]} setting",
        "names suite 'knowlege', which is not a suite of this run (its suites: facts)",
    )
    # the suite's own name is accepted: the run goes on to the model, which does not exist
    good = "facts=mc_text" if option == "--protocols" else "facts=5"
    output = assert_exit(
        layercheck(tmp_path, "profile", "no-such-model", "--suites", "facts.yaml", option, good), 2, "no-such-model"
    )
    assert "not a suite of this run" not in output


def test_a_suite_name_not_in_the_run_is_a_usage_error_in_pytest(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_fact_suite(pytester.path / "facts.yaml")
    pytester.makepyfile(
        test_guard="""
        import pytest

        @pytest.mark.layercheck("knowledge", "intact")
        def test_knowledge_intact():
            pass
    """
    )
    result, output = _pytest_in(
        pytester,
        monkeypatch,
        "--layercheck-model=no-such-model",
        "--layercheck-suites=facts.yaml",
        "--layercheck-limit=knowlege=10",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert "Traceback" not in output
    assert "names suite 'knowlege', which is not a suite of this run (its suites: facts)" in _one_line(output)


# ------------------------------------------------------------------------------------------ JSONL suites
@pytest.mark.slow
def test_a_jsonl_suite_over_the_size_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """Before: the whole file was imported (105 s and 1 GB for a large one), then refused. Its lines are not
    even JSON, so a reader would stop at line 1 with another message."""
    with (tmp_path / "big.jsonl").open("w") as handle:
        handle.write("this is not JSON\n" * 530_000)  # 9 MB
    started = time.perf_counter()
    output = assert_exit(
        layercheck(tmp_path, "profile", "no-such-model", "--suites", "big.jsonl"),
        2,
        "big.jsonl: suite file is 9.0 MB, more than the limit of 8.4 MB",
    )
    assert "not a JSON object" not in output
    assert time.perf_counter() - started < 60


def _fact_records(path: Path, answer: str = "{}", gold_shift: int = 0, spaced: range | None = None) -> Path:
    """The fact model's 48 facts as free-answer JSONL records; ``answer`` formats each target."""
    with path.open("w") as handle:
        for index, item in enumerate(fact_suite_items()):
            target = answer.format(item["target"])
            if spaced is not None:
                target = (" " if index in spaced else "") + item["target"]
            handle.write(json.dumps({"id": item["id"], "context": item["context"], "target": target}) + "\n")
    return path


@pytest.mark.slow
def test_answers_that_begin_with_a_space_are_not_scored_after_two(ws: Path) -> None:
    """Written as continuations (``" red"``), the facts the model knows score 1.0, not 0: the importer drops the
    delimiter's space and says so. Forced back to a space, they score 0, and the profile warns that a guard
    on that suite can never fail."""
    _fact_records(ws / "spaced.jsonl", answer=" {}")
    assert_exit(
        layercheck(ws, "suite", "import", "spaced.jsonl", "--output", "spaced.yaml"),
        0,
        "warning: target delimiter: every answer begins with whitespace (e.g. ' ",
        'so the suite\'s target_delimiter is "", not the default space',
    )
    assert "target_delimiter: ''" in (ws / "spaced.yaml").read_text()
    output = assert_exit(
        layercheck(ws, "profile", "good", "--suites", "spaced.jsonl", "--limit", "0", "--mode", "bands"),
        0,
        "layercheck: warning: spaced.jsonl: target delimiter: every answer begins with whitespace",
        "│ spaced │ exact_match │ 48 │ 1.000 │",
    )
    assert "can never fail" not in output
    assert_exit(
        layercheck(
            ws,
            "suite",
            "import",
            "spaced.jsonl",
            "--target-delimiter",
            " ",
            "--name",
            "doubled",
            "--output",
            "doubled.yaml",
        ),
        0,
    )
    assert_exit(
        layercheck(ws, "profile", "good", "--suites", "doubled.yaml", "--limit", "0", "--mode", "bands"),
        0,
        "layercheck: warning: suite 'doubled' scores 0.000 (exact_match under continuation, 48 items) on the "
        "intact model, the lowest score there is: if this is the model you record baselines from, a guard on "
        "this suite can never fail",
        "Check the suite's target_delimiter",
    )


def test_some_answers_with_a_leading_space_are_a_warning_at_import(tmp_path: Path) -> None:
    _fact_records(tmp_path / "mixed.jsonl", spaced=range(3))
    assert_exit(
        layercheck(tmp_path, "suite", "import", "mixed.jsonl", "--output", "mixed.yaml"),
        0,
        "warning: target delimiter: 3 of 48 answers begin with whitespace (first: fact-000, ' ",
        "puts two spaces before them",
    )
    assert "target_delimiter" not in (tmp_path / "mixed.yaml").read_text()


@pytest.mark.slow
def test_a_multiple_choice_suite_at_chance_warns_in_the_cli_and_in_pytest(
    ws: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every gold answer moved to a wrong choice: the model that knows the facts scores below chance (1/4)."""
    items = fact_suite_items()
    for item in items:
        item["gold"] = (item["gold"] + 1) % len(item["choices"])
        item["target"] = item["choices"][item["gold"]]
    suite = {
        "name": "shuffled",
        "capability": "knowledge",
        "description": "Wrong golds.",
        "default_protocol": "mc_text",
        "protocols": {"mc_text": {"template": "{context}"}},
        "items": items,
    }
    (ws / "shuffled.yaml").write_text(json.dumps(suite))  # JSON is YAML
    message = (
        "suite 'shuffled' scores 0.000 (acc under mc_text, 48 items) on the intact model, no better than chance "
        "(0.250): if this is the model you record baselines from, a guard on this suite can never fail"
    )
    assert_exit(
        layercheck(ws, "profile", "good", "--suites", "shuffled.yaml", "--limit", "0", "--mode", "bands"),
        0,
        f"layercheck: warning: {message}",
    )
    shutil.copy(ws / "shuffled.yaml", pytester.path / "shuffled.yaml")
    pytester.makepyfile(
        test_guard="""
        import pytest

        @pytest.mark.layercheck("knowledge", min=0.0)
        def test_floor():
            pass
    """
    )
    result, output = _pytest_in(
        pytester,
        monkeypatch,
        f"--layercheck-model={ws / 'good'}",
        "--layercheck-suites=shuffled.yaml",
        "--layercheck-limit=0",
        "--layercheck-mode=bands",
    )
    assert result.ret == pytest.ExitCode.OK, output
    assert "SuiteWarning" in output and message in _one_line(output)


# --------------------------------------------------------------------------------------------- baselines
@pytest.mark.slow
def test_a_key_given_twice_in_a_baseline_is_exit_2_naming_the_file_and_line(ws: Path) -> None:
    """Before: JSON kept the last of the two keys, and the run compared against it (here: exit 1, regressed)."""
    path = ws / "baselines" / "facts.json"
    text = path.read_text()
    assert text.startswith('{\n  "schema_version": ')
    path.write_text('{\n  "schema_version": 999,\n' + text[2:])
    before = path.read_bytes()
    assert_exit(
        layercheck(ws, "profile", "damaged", *SUITE, *RECORDED),
        2,
        "facts.json is not valid JSON",
        "line 3, column 3: key 'schema_version' appears twice in one object (first on line 2)",
    )
    assert path.read_bytes() == before
