"""Fault injection: every way a bad file, a stale cache or a killed process could switch the gate off.

Each test is one row of the fault-injection matrix in docs/reliability.md. Rows that act like a user run
the real entry point (``python -m pytest_layercheck.cli``, or pytest in a subprocess) in a temporary
folder on a tiny model that memorised 48 facts, and assert the exit status, the message, that no
traceback was printed, and that no file was lost or silently changed.

Exit statuses: 0 passed, 1 a capability regressed, 2 usage, configuration or input error.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fault_world import (
    RECORDED,
    SUITE,
    assert_exit,
    cache_hits,
    entries,
    environment,
    fingerprint_of,
    layercheck,
    snapshot,
)
from profile_factory import make_profile
from repo_files import REPO
from small_suites import billion_laughs
from tiny_models import fake_default_model

from pytest_layercheck.core.errors import BaselineError
from pytest_layercheck.data.validation import SchemaError
from pytest_layercheck.evaluation.baseline import BaselineStore, dumps_baseline

# --------------------------------------------------------------------------------------------------
# The result cache is untrusted input


@pytest.mark.slow
def test_nan_in_a_cached_outcome_is_recomputed_not_a_pass(ws: Path) -> None:
    baselines = snapshot(ws / "baselines")
    for path, payload in entries(ws).items():
        payload["outcomes"]["acc"][0] = math.nan
        path.write_text(json.dumps(payload))  # NaN: not even its writer could have signed it
    result = layercheck(ws, "profile", "damaged", *SUITE, *RECORDED)
    output = assert_exit(result, 1, "regressed", "ignored result-cache entry", "holds a number that is not finite")
    assert cache_hits(output) == 0
    assert snapshot(ws / "baselines") == baselines


@pytest.mark.slow
def test_a_forged_cache_entry_cannot_turn_a_regression_into_a_pass(ws: Path) -> None:
    """Copy the good model's outcomes into the damaged model's entries, as someone without the key could."""
    damaged = fingerprint_of(ws, "damaged")
    stored = entries(ws)
    good = {
        p["identity"]["ablation"]: p["outcomes"] for p in stored.values() if p["identity"]["fingerprint"] != damaged
    }
    forged = 0
    for path, payload in stored.items():
        if payload["identity"]["fingerprint"] == damaged:
            payload["outcomes"] = good[payload["identity"]["ablation"]]
            path.write_text(json.dumps(payload))
            forged += 1
    assert forged >= 7  # intact plus one per layer
    output = assert_exit(
        layercheck(ws, "profile", "damaged", *SUITE, *RECORDED),
        1,
        "regressed",
        "signature does not match this cache's key",
    )
    assert cache_hits(output) == 0


@pytest.mark.slow
def test_a_swapped_tokenizer_is_never_served_from_the_cache(ws: Path) -> None:
    """Same weights, a tokenizer that adds BOS: the candidate's evaluations are computed, not looked up."""
    shutil.rmtree(ws / "cache" / "results")
    result = layercheck(ws, "compare", "good", "good-bos", *SUITE, "--localise", "none", "--no-weights")
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode in (0, 1) and "Traceback" not in output, output
    assert cache_hits(output) == 0, output


@pytest.mark.slow
def test_the_cache_can_be_read_only_or_ignored(ws: Path) -> None:
    before = snapshot(ws / "cache")
    shutil.rmtree(ws / "baselines")
    readonly = environment(ws, LAYERCHECK_CACHE_MODE="readonly")
    stored = len(entries(ws)) // 2  # the good and the damaged model's
    assert cache_hits(assert_exit(layercheck(ws, "profile", "damaged", *SUITE, env=readonly), 0)) == stored
    assert_exit(layercheck(ws, "profile", "good-bos", *SUITE, env=readonly), 0)
    off = environment(ws, LAYERCHECK_CACHE_MODE="off")
    assert cache_hits(assert_exit(layercheck(ws, "profile", "damaged", *SUITE, env=off), 0)) == 0
    assert snapshot(ws / "cache") == before  # nothing written in either mode


KILLER = textwrap.dedent("""\
    import os, sys, time
    from pathlib import Path
    marker = Path(sys.argv[1])
    real_fsync = os.fsync
    def fsync_then_hang(fd):
        real_fsync(fd)           # the new content is on disk, in the temporary file
        marker.write_text("in the middle of a write")
        time.sleep(600)          # ... where kill -9 finds it
    os.fsync = fsync_then_hang
    from pytest_layercheck.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def kill_during_first_write(folder: Path, *args: str) -> None:
    """Run ``layercheck ARGS`` and SIGKILL it inside its first atomic file write."""
    script = folder / "killer.py"
    script.write_text(KILLER)
    marker = folder / "marker"
    process = subprocess.Popen(
        [sys.executable, str(script), str(marker), *args],
        cwd=folder,
        env=environment(folder),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert process.poll() is None, f"exited {process.returncode} before writing: {process.stderr.read()}"
            assert time.monotonic() < deadline, "never reached a write"
            time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_kill_9_during_a_baseline_write_keeps_the_old_baseline(ws: Path) -> None:
    before = snapshot(ws / "baselines")
    kill_during_first_write(
        ws, "baseline", "damaged", *SUITE, "--baseline-dir", "baselines", "--name", "facts", "--update"
    )
    assert {k: v for k, v in snapshot(ws / "baselines").items() if not k.endswith(".tmp")} == before
    assert [p.name for p in BaselineStore(ws / "baselines").stored()] == ["facts.json"]
    BaselineStore(ws / "baselines").load("facts")  # still a complete, valid baseline
    assert_exit(layercheck(ws, "profile", "good", *SUITE, *RECORDED), 0)


@pytest.mark.slow
def test_kill_9_during_a_cache_write_leaves_no_half_entry(ws: Path) -> None:
    damaged = fingerprint_of(ws, "damaged")
    victim = next(p for p, payload in entries(ws).items() if payload["identity"]["fingerprint"] == damaged)
    victim.write_bytes(b"old bytes of an entry that fails its checks")
    before = snapshot(ws / "cache")
    kill_during_first_write(ws, "profile", "damaged", *SUITE, *RECORDED)
    after = snapshot(ws / "cache")
    assert {k: v for k, v in after.items() if not k.endswith(".tmp")} == before  # the old file, byte for byte
    leftovers = [k for k in after if k.endswith(".tmp")]
    assert len(leftovers) == 1 and Path(leftovers[0]).parent == victim.parent.relative_to(ws / "cache")
    assert_exit(layercheck(ws, "cache", "verify"), 2, f"bad {victim}")
    assert_exit(layercheck(ws, "cache", "prune"), 0, "leftover of an interrupted write", "2 files deleted")
    assert_exit(layercheck(ws, "profile", "damaged", *SUITE, *RECORDED), 1, "regressed")
    total = len(entries(ws))
    assert_exit(layercheck(ws, "cache", "verify"), 0, f"{total} of {total} entries sound")


@pytest.mark.slow
def test_cache_show_names_folder_mode_and_key(ws: Path) -> None:
    total = len(entries(ws))
    assert_exit(
        layercheck(ws, "cache", "show"),
        0,
        f"folder {ws / 'cache' / 'results'}",
        "mode readwrite",
        f"key {ws / 'config' / 'pytest-layercheck' / 'cache-key'}",
        f"entries {total}",
        f"{total // 2} evaluations",
    )


# --------------------------------------------------------------------------------------------------
# Baselines are decoded strictly


def _outcome(data: dict, value: object) -> None:
    data["evaluations"]["knowledge"]["intact"]["outcomes"]["acc"] = value


BASELINE_DAMAGE = {
    "nan outcome": (lambda d: _outcome(d, [math.nan] * 200), "is not a finite number"),
    "non-binary outcome": (lambda d: _outcome(d, [0.5] * 200), "0.5 is not a 0/1 outcome"),
    "outcome string 2x": (lambda d: _outcome(d, "2x" + "1" * 198), "only '0' and '1' are outcomes"),
    "short outcomes": (lambda d: _outcome(d, "01"), "2 outcomes for 200 items"),
    "schema_version true": (lambda d: d.__setitem__("schema_version", True), "expected an integer, found bool"),
    "unknown field": (lambda d: d.__setitem__("cell", []), "unknown field(s) 'cell'"),
    "edited mean": (
        lambda d: d["evaluations"]["knowledge"]["intact"]["means"].__setitem__("acc", 0.99),
        "are not the means of the stored outcomes",
    ),
    "edited cell": (lambda d: d["cells"][0].__setitem__("value", 0.99), "does not match the cells"),
    "num_layers as text": (lambda d: d["model"].__setitem__("num_layers", "6"), "model.num_layers"),
    "duplicate item ids": (
        lambda d: d["suites"]["knowledge"]["item_ids"].__setitem__(1, "knowledge-item-0000"),
        "appears twice",
    ),
    "sweep_items beyond items": (lambda d: d["suites"]["knowledge"].__setitem__("sweep_items", 999), "999 is outside"),
}


@pytest.mark.parametrize("damage", list(BASELINE_DAMAGE))
def test_a_damaged_baseline_is_an_error_naming_the_problem(tmp_path: Path, damage: str) -> None:
    edit, message = BASELINE_DAMAGE[damage]
    data = json.loads(json.dumps(make_profile().to_json()))
    edit(data)
    store = BaselineStore(tmp_path)
    store.path_for("m").write_text(dumps_baseline(data) if damage != "nan outcome" else json.dumps(data))
    with pytest.raises(BaselineError) as info:
        store.load("m")
    assert message in info.value.problem and str(store.path_for("m")) in info.value.problem
    assert "--layercheck-update" in info.value.fix


def test_a_partial_profile_with_fewer_swept_items_round_trips() -> None:
    """Ablations score the first ``sweep_items`` items, and not every ablation need be present."""
    from dataclasses import replace

    from pytest_layercheck.data.profile_data import DepthProfile, Evaluation

    profile = make_profile(suites={"knowledge": ("mc_text", 10)})
    profile.suites["knowledge"] = replace(profile.suites["knowledge"], sweep_items=4)
    for key, ev in list(profile.evaluations.items()):
        if ev.ablation == "layer:05":
            del profile.evaluations[key]
        elif ev.ablation != "intact":
            profile.evaluations[key] = Evaluation(
                ev.suite, ev.protocol, ev.ablation, ev.removed_layers, {m: v[:4] for m, v in ev.outcomes.items()}
            )
    data = json.loads(json.dumps(profile.to_json()))
    assert DepthProfile.from_json(data).to_json() == profile.to_json()
    data["evaluations"]["knowledge"]["layer:00"]["outcomes"]["acc"] += "1"
    with pytest.raises(SchemaError, match="5 outcomes for 4 items"):
        DepthProfile.from_json(data)


@pytest.mark.slow
def test_nan_in_the_baseline_fails_pytest_with_a_message_not_a_traceback(
    world: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in environment(pytester.path).items():
        monkeypatch.setenv(key, value)
    shutil.copy(world / "facts.yaml", pytester.path / "facts.yaml")
    data = json.loads((world / "baselines" / "facts.json").read_text())
    data["evaluations"]["facts"]["intact"]["outcomes"]["acc"] = [math.nan] * 48
    (pytester.path / "baselines").mkdir()
    (pytester.path / "baselines" / "facts.json").write_text(json.dumps(data))
    pytester.makeini("[pytest]\nlayercheck_suites = facts.yaml\nlayercheck_limit = 0\nlayercheck_baseline = facts\n")
    pytester.makepyfile(
        test_guard="""
        import pytest

        @pytest.mark.layercheck("knowledge", "intact")
        def test_knowledge_intact():
            pass
    """
    )
    result = pytester.runpytest_subprocess(f"--layercheck-model={world / 'good'}", "-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    assert "KeyError" not in output and "Traceback" not in output
    assert "facts.json is malformed" in output and "is not a finite number" in output


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["not json", "nan outcome"])
def test_layercheck_profile_refuses_a_corrupt_baseline(ws: Path, damage: str) -> None:
    path = ws / "baselines" / "facts.json"
    if damage == "not json":
        path.write_text("{ <<<<<<< HEAD")
    else:
        data = json.loads(path.read_text())
        data["evaluations"]["facts"]["intact"]["outcomes"]["acc"] = [math.nan] * 48
        path.write_text(json.dumps(data))
    before = path.read_bytes()
    assert_exit(layercheck(ws, "profile", "damaged", *SUITE, *RECORDED), 2, "facts.json")
    assert path.read_bytes() == before


@pytest.mark.slow
def test_layercheck_baseline_refuses_to_silently_replace_a_corrupt_baseline(ws: Path) -> None:
    path = ws / "baselines" / "facts.json"
    path.write_text("{ <<<<<<< HEAD")
    assert_exit(
        layercheck(ws, "baseline", "good", *SUITE, "--baseline-dir", "baselines", "--name", "facts"),
        2,
        "facts.json is not valid JSON",
    )
    assert path.read_text() == "{ <<<<<<< HEAD"


def test_no_cells_compared_is_a_failure_not_a_pass() -> None:
    from pytest_layercheck.data.profile_data import Evaluation
    from pytest_layercheck.evaluation.comparison import compare_profiles

    baseline = make_profile(suites={"knowledge": ("mc_text", 40)}, extra_metrics=False)
    current = make_profile(suites={"knowledge": ("mc_text", 40)}, extra_metrics=False)
    for key, ev in current.evaluations.items():  # a scorer bug: a primary metric that is not 0/1
        current.evaluations[key] = Evaluation(
            ev.suite, ev.protocol, ev.ablation, ev.removed_layers, {"acc": tuple(0.5 for _ in ev.outcomes["acc"])}
        )
    comparison = compare_profiles(baseline, current)
    assert not comparison.cells
    assert not comparison.passed


# --------------------------------------------------------------------------------------------------
# Broken input is exit 2 with the problem and the fix, never a traceback or exit 1


@pytest.mark.slow
def test_a_truncated_model_safetensors_is_exit_2(ws: Path) -> None:
    shutil.copytree(ws / "good", ws / "truncated", symlinks=False)
    weights = ws / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    assert_exit(layercheck(ws, "profile", "truncated", *SUITE), 2, "truncated", "How to fix")


@pytest.mark.slow
def test_a_truncated_default_model_in_the_cache_is_exit_2(tmp_path: Path) -> None:
    target = fake_default_model(tmp_path / "cache")
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert_exit(
        layercheck(tmp_path, "info", "default"), 2, "the cached default model", "is damaged", f"delete {target}"
    )


@pytest.mark.slow
def test_a_default_gguf_with_the_wrong_hash_is_exit_2(tmp_path: Path) -> None:
    gguf = tmp_path / "cache" / "models" / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF" + b"\0" * 1000)
    assert_exit(layercheck(tmp_path, "info", "default"), 2, "not the pinned", f"delete {gguf}")


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ("heads", "good", "--limit", "-3"),
        ("thinking", "good", "--limit", "-1"),
        ("profile", "good", "--suites", "facts.yaml", "--limit", "-3"),
    ],
)
def test_a_negative_limit_is_refused(ws: Path, args: tuple[str, ...]) -> None:
    result = assert_exit(layercheck(ws, *args), 2)
    assert "negative" in result or ">= 0" in result


@pytest.mark.slow
def test_two_suites_with_one_name_are_refused(ws: Path) -> None:
    shutil.copy(ws / "facts.yaml", ws / "facts-copy.yaml")
    assert_exit(
        layercheck(ws, "profile", "good", "--suites", "facts.yaml,facts-copy.yaml", "--limit", "0"),
        2,
        "are both named 'facts'",
    )


@pytest.mark.slow
def test_a_user_file_named_like_a_builtin_suite_is_refused(ws: Path) -> None:
    text = (ws / "facts.yaml").read_text().replace("name: facts", "name: knowledge")
    (ws / "mine.yaml").write_text(text)
    assert_exit(
        layercheck(ws, "profile", "good", "--suites", "mine.yaml", "--limit", "0"),
        2,
        "suite name 'knowledge' is the name of a built-in suite",
    )


@pytest.mark.slow
def test_a_band_that_holds_no_layer_is_exit_2(ws: Path) -> None:
    assert_exit(
        layercheck(ws, "profile", "good", *SUITE, "--bands", "shallow=0:0.01,middle=0.01:0.7,deep=0.7:1"),
        2,
        "depth band(s) shallow=0:0.01 hold no layer of this 6-layer model",
    )


@pytest.mark.slow
def test_an_oversized_suite_and_an_alias_bomb_are_exit_2(ws: Path) -> None:
    (ws / "big.yaml").write_text((ws / "facts.yaml").read_text() + "# padding\n" * 2_000_000)  # 20 MB
    (ws / "bomb.yaml").write_text(billion_laughs())
    assert_exit(layercheck(ws, "profile", "good", "--suites", "big.yaml"), 2, "more than the limit of 8.4 MB")
    assert_exit(layercheck(ws, "profile", "good", "--suites", "bomb.yaml"), 2, "aliases expand the document")


@pytest.mark.slow
def test_suites_are_checked_before_the_model_loads(ws: Path) -> None:
    (ws / "bomb.yaml").write_text(billion_laughs())
    assert_exit(layercheck(ws, "profile", "no-such-model", "--suites", "bomb.yaml"), 2, "aliases expand the document")


@pytest.mark.slow
def test_alpha_out_of_range_is_a_usage_error_in_pytest(
    world: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in environment(pytester.path).items():
        monkeypatch.setenv(key, value)
    shutil.copy(world / "facts.yaml", pytester.path / "facts.yaml")
    pytester.makepyfile(
        test_guard="""
        import pytest

        @pytest.mark.layercheck("knowledge", "intact")
        def test_knowledge_intact():
            pass
    """
    )
    result = pytester.runpytest_subprocess(
        f"--layercheck-model={world / 'good'}",
        "--layercheck-suites=facts.yaml",
        "--layercheck-alpha=2",
        "-p",
        "no:cacheprovider",
    )
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert "Traceback" not in output and "alpha" in output


def test_an_internal_error_is_exit_3_never_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_layercheck import cli

    def boom(_args: object) -> int:
        raise RuntimeError("a bug")

    def unwritable(_args: object) -> int:
        raise PermissionError(13, "Permission denied", "/report.json")

    real = cli.build_parser

    def parser_with(handler):
        def build():
            parser = real()
            parser.set_defaults(handler=handler)
            for action in parser._subparsers._group_actions:  # noqa: SLF001 - test double for a handler
                for sub in action.choices.values():
                    sub.set_defaults(handler=handler)
            return parser

        return build

    monkeypatch.setattr(cli, "build_parser", parser_with(boom))
    assert cli.main(["info", "x"]) == 3
    assert "RuntimeError: a bug" in capsys.readouterr().err
    monkeypatch.setattr(cli, "build_parser", parser_with(unwritable))
    assert cli.main(["info", "x"]) == 2
    assert "Permission denied (/report.json)" in " ".join(capsys.readouterr().err.split())


def test_version(tmp_path: Path) -> None:
    from pytest_layercheck.core.version import __version__

    assert_exit(layercheck(tmp_path, "--version"), 0, f"layercheck (pytest-layercheck) {__version__}")


def test_benchmarks_pin_what_they_install() -> None:
    root = REPO / "benchmarks"
    for script in root.glob("*.py"):
        for line in script.read_text().splitlines():
            if '"install"' in line:
                assert "REQUIREMENT" in line, f"{script.name}: unpinned install: {line.strip()}"
    assert re.search(
        r'^LM_EVAL_REQUIREMENT = "lm-eval==\d+\.\d+\.\d+"$', (root / "depth_sweep.py").read_text(), re.MULTILINE
    )
