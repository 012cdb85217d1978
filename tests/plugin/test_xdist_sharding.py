"""The profile's evaluations shared out among pytest-xdist workers (evaluation/sharding.py).

Unit tests drive the claims, the waiting and the takeovers with fake sweeps in threads; the end-to-end
tests run one test file under ``-n 0`` and ``-n 2`` through pytester on a tiny random model and check
that the workers together compute each evaluation once and end with the profile ``-n 0`` computes.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from plugin_project import fact_suite_project
from tiny_models import tiny_model, tiny_tokenizer
from trained_tiny import write_fact_suite

from pytest_layercheck.core.errors import LayercheckError
from pytest_layercheck.data.profile_data import INTACT, Evaluation
from pytest_layercheck.evaluation.profiler import _estimate
from pytest_layercheck.evaluation.result_cache import ResultCache
from pytest_layercheck.evaluation.sharding import (
    Shard,
    ShardTimeoutError,
    SweepJob,
    Unit,
    assign,
    plan_units,
    run_sharded,
    split,
    work_order,
)
from pytest_layercheck.model.ablation import Ablation
from pytest_layercheck.model.devices import device_for_worker, worker_device
from pytest_layercheck.model.runtime import ModelRuntime
from pytest_layercheck.model.threads import usable_cores
from pytest_layercheck.pytest_plugin.session_workers import worker_index
from pytest_layercheck.scoring.flops import ModelShape, TokenWork, evaluation_flops
from pytest_layercheck.scoring.protocols import prepare
from pytest_layercheck.suites.builtin import load_builtin_suite

KEY = b"k" * 32
#: (worker thread, job label, keys) of one compute call of a fake sweep.
Call = tuple[str, str, tuple[str, ...]]


# ------------------------------------------------------------------------------- device choice
def test_each_worker_gets_its_own_gpu_only_when_there_are_several() -> None:
    assert [worker_device(i, 4) for i in range(6)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert worker_device(1, 1) is None  # one GPU: the workers share it, as without xdist
    assert worker_device(1, 0) is None  # CPU: nothing changes
    assert device_for_worker("auto", None, 2, 4) == "cuda:2"
    assert device_for_worker(None, None, 3, 2) == "cuda:1"
    assert device_for_worker("cuda:1", None, 0, 4) == "cuda:1"  # a pinned device stays
    assert device_for_worker("cpu", None, 1, 4) == "cpu"
    assert device_for_worker("auto", "auto", 1, 4) == "auto"  # a device map spreads the model itself
    assert device_for_worker("auto", None, None, 4) == "auto"  # not an xdist worker
    assert device_for_worker("auto", None, 1, 1) == "auto"
    assert [worker_index(w) for w in ("gw0", "gw12", "master", None)] == [0, 12, None, None]


def test_workers_without_the_controllers_folder_each_compute_everything_and_say_so(tmp_path: Path) -> None:
    from pytest_layercheck.pytest_plugin.session import LayercheckSession
    from pytest_layercheck.pytest_plugin.session_options import SessionOptions

    def session(exchange: Path | None, worker: str = "gw1") -> LayercheckSession:
        return LayercheckSession(
            SessionOptions(baseline_dir=tmp_path, is_xdist_worker=True, worker=worker, workers=2, exchange=exchange)
        )

    remote = session(tmp_path / "on-the-controller-host")
    assert remote.workers.shard is None
    assert "not on this worker's filesystem" in remote.workers.notes[0]
    assert "each worker computed the whole profile" in remote.workers.notes[0]
    (tmp_path / "run").mkdir()
    local = session(tmp_path / "run", "gw1")
    assert (
        local.workers.shard is not None
        and (local.workers.shard.index, local.workers.shard.count) == (1, 2)
        and not local.workers.notes
    )
    controller = LayercheckSession(SessionOptions(baseline_dir=tmp_path))
    assert controller.workers.shard is None
    controller.absorb_worker_payload(remote.worker_payload() or "")
    assert controller.messages == remote.workers.notes  # the controller's summary shows it
    folder = controller.workers.folder()
    assert folder.is_dir() and controller.workers.folder() == folder
    controller.workers.cleanup()
    assert not folder.exists()


# ------------------------------------------------------------------------------- fake sweeps
def fake_job(
    label: str,
    layers: int,
    calls: list[Call],
    lock: threading.Lock,
    delay: float | Mapping[str, float] = 0.0,
    fail: bool = False,
    items: int = 3,
) -> SweepJob:
    """A sweep of ``layers`` removals; ``delay``: seconds per call, or per worker (thread name)."""
    keys = (INTACT, *(f"skip:{i}" for i in range(layers)))

    def identity(key: str) -> Mapping[str, object]:
        return {"suite": label, "protocol": "fake", "ablation": key, "items": [f"i{n}" for n in range(items)]}

    def compute(wanted: Sequence[str], beat: object) -> dict[str, Evaluation]:
        with lock:
            calls.append((threading.current_thread().name, label, tuple(wanted)))
        if fail:
            raise RuntimeError("out of memory")
        time.sleep(delay if isinstance(delay, float) else delay[threading.current_thread().name])
        return {
            k: Evaluation(
                label,
                "fake",
                k,
                () if k == INTACT else (int(k.split(":")[1]),),
                {"acc": tuple(float((len(k) + n) % 2) for n in range(items))},
            )
            for k in wanted
        }

    return SweepJob(
        label,
        keys,
        identity,
        compute,
        estimate=lambda: (float(layers), {f"skip:{i}": float(layers - i) for i in range(layers)}),
    )


def test_units_split_each_sweep_by_cost_and_workers_get_balanced_deterministic_shares() -> None:
    job = fake_job("s", 6, [], threading.Lock())
    groups = split(job, job.keys, 2)
    assert sorted(k for g in groups for k in g) == sorted(job.keys) and INTACT in groups[0]
    assert [job.cost(g) for g in groups] == [17.0, 16.0]  # intact pass + removals of layers 0,3,4 / 1,2,5
    assert all(list(g) == sorted(g, key=job.keys.index) for g in groups)  # plan order inside a group
    units = plan_units([job, job], [job.keys, job.keys[:2]], 3)
    owners = assign(units, 3)
    assert owners == assign(units, 3) and sorted(set(owners)) == [0, 1, 2]
    loads: Counter[int] = Counter()
    for unit, owner in zip(units, owners):
        loads[owner] += unit.cost
    assert max(loads.values()) - min(loads.values()) <= max(u.cost for u in units)


def test_a_worker_does_its_own_units_costliest_first_then_the_others_cheapest_first() -> None:
    units = [Unit(0, (f"u{i}",), cost) for i, cost in enumerate([5.0, 1.0, 4.0, 3.0, 2.0, 6.0])]
    owners = [0, 1, 0, 1, 2, 2]
    assert [u.keys[0] for u in work_order(units, owners, 0, 3)] == ["u0", "u2", "u1", "u3", "u4", "u5"]
    assert [u.keys[0] for u in work_order(units, owners, 2, 3)] == ["u5", "u4", "u2", "u0", "u1", "u3"]


def test_a_slow_worker_keeps_no_claims_on_units_it_has_not_started(tmp_path: Path) -> None:
    """Claims are made unit by unit: a fast worker takes over the slow one's unstarted units, so an
    estimate that was off costs about one unit, not the slow worker's whole share."""
    calls: list[Call] = []
    lock = threading.Lock()
    jobs = [fake_job(name, 4, calls, lock, delay={"gw0": 0.01, "gw1": 1.0}) for name in "abcd"]
    results, caches, _ = run_workers(tmp_path, jobs, 2)
    computed = Counter((label, k) for _, label, keys in calls for k in keys)
    assert len(computed) == 4 * 5 and set(computed.values()) == {1}, calls  # each evaluation once
    units = Counter(name for name, _, _ in calls)
    assert units["gw1"] <= 2 and units["gw0"] >= 6, calls  # 4 units each by the estimate
    assert results[0] == results[1]


def test_work_is_shared_out_by_the_flops_it_needs_not_by_items() -> None:
    """A unit's cost is the FLOPs of its evaluations (``scoring.flops``): four retrieval items, long
    contexts, weigh far more than four knowledge items; a removal costs the layers the sweep reruns."""
    model, tokenizer = tiny_model("llama", layers=4), tiny_tokenizer()
    ablations = [Ablation.skipping(i) for i in range(4)]
    bases = {}
    for name in ("knowledge", "retrieval"):
        suite = load_builtin_suite(name).limited(4)
        prepared = prepare(suite, suite.default_protocol, tokenizer)
        call = cast(Any, SimpleNamespace(ablations=ablations))
        base, costs = _estimate(lambda: ModelShape.of(ModelRuntime.of(model)), call, lambda p=prepared: p)()
        assert prepared.loglikelihood is not None
        work, shape = TokenWork.of(prepared.loglikelihood), ModelShape.of(ModelRuntime.of(model))
        assert base == evaluation_flops(work, shape)
        assert [costs[a.key] for a in ablations] == [evaluation_flops(work, shape, a, reuse=True) for a in ablations]
        assert costs[ablations[0].key] > costs[ablations[2].key] > costs[ablations[3].key]
        bases[name] = base
    assert bases["retrieval"] > 2 * bases["knowledge"], bases  # equal item counts


def run_workers(
    tmp_path: Path, jobs: Sequence[SweepJob], count: int, cache_mode: str = "readwrite", timeout: float = 30.0
) -> tuple[list[list[dict[str, Evaluation]]], list[ResultCache], list[str]]:
    """``run_sharded`` for workers 0..count-1 at once, in threads, each with its own cache object."""
    results: list[list[dict[str, Evaluation]]] = [[] for _ in range(count)]
    caches = [ResultCache(tmp_path / "cache", mode=cache_mode, key=KEY) for _ in range(count)]
    errors: list[BaseException] = []
    notes: list[str] = []
    (tmp_path / "exchange").mkdir(exist_ok=True)

    def work(index: int) -> None:
        shard = Shard(index, count, tmp_path / "exchange", worker=f"gw{index}", timeout=timeout, poll=0.01)
        try:
            results[index] = run_sharded(jobs, shard, caches[index], notes.append)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), name=f"gw{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results, caches, notes


@pytest.mark.parametrize("cache_mode", ["readwrite", "off", "readonly"])
def test_workers_compute_each_evaluation_once_and_all_end_with_every_one(tmp_path: Path, cache_mode: str) -> None:
    calls: list[Call] = []
    lock = threading.Lock()
    jobs = [fake_job("a", 6, calls, lock, delay=0.2), fake_job("b", 4, calls, lock, delay=0.2)]
    results, caches, notes = run_workers(tmp_path, jobs, 3, cache_mode)
    computed = Counter((label, k) for _, label, keys in calls for k in keys)
    assert len(computed) == 7 + 5 and set(computed.values()) == {1}, calls  # each of the 12 evaluations once
    assert {name for name, _, _ in calls} == {"gw0", "gw1", "gw2"}  # every worker did a share
    assert [c.misses for c in caches] == [sum(len(k) for n, _, k in calls if n == f"gw{i}") for i in range(3)]
    assert all(c.hits == 0 and c.misses + c.shared == 12 for c in caches)
    assert results[0] == results[1] == results[2]
    assert [sorted(r) for r in results[0]] == [sorted(j.keys) for j in jobs] and not notes
    written = list((tmp_path / "cache").glob("*/*.json"))
    assert len(written) == (12 if cache_mode == "readwrite" else 0)  # no cache: the run's own folder
    assert len(list((tmp_path / "exchange" / "results").glob("*/*.json"))) == (0 if written else 12)


def test_a_worker_that_never_asks_leaves_its_share_to_the_others(tmp_path: Path) -> None:
    calls: list[Call] = []
    job = fake_job("a", 6, calls, threading.Lock())
    shard = Shard(0, 3, tmp_path / "exchange", worker="gw0", poll=0.01)
    (tmp_path / "exchange").mkdir()
    cache = ResultCache(tmp_path / "cache", key=KEY)
    started = time.perf_counter()
    (found,) = run_sharded([job], shard, cache)
    assert time.perf_counter() - started < 5  # nobody waited for gw1 and gw2, which never came
    assert sorted(found) == sorted(job.keys) and cache.misses == 7 and cache.hits == 0
    assert len(calls) == 3  # its own group, then the two unclaimed groups: one call each
    again = ResultCache(tmp_path / "cache", key=KEY)
    run_sharded([job], Shard(1, 3, tmp_path / "exchange", worker="gw1"), again)
    assert again.shared == 7 and again.misses == 0  # another worker's results, not the cache's


def claim_as(folder: Path, job: SweepJob, keys: Sequence[str], worker: str, pid: int) -> None:
    """Claims of ``keys`` in the name of another worker (process ``pid``)."""
    claims = folder / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    for key in keys:
        record = {"worker": worker, "pid": pid, "host": socket.gethostname(), "state": "working", "time": time.time()}
        (claims / f"{ResultCache.key(job.identity(key))}.0").write_text(json.dumps(record))


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_claims_of_a_crashed_worker_are_taken_over_at_once_and_said(tmp_path: Path) -> None:
    calls: list[Call] = []
    job = fake_job("a", 4, calls, threading.Lock())
    folder = tmp_path / "exchange"
    cache = ResultCache(tmp_path / "cache", key=KEY)
    claim_as(folder, job, job.keys, "gw1", dead_pid())  # gw1 claimed everything, then died
    notes: list[str] = []
    started = time.perf_counter()
    (found,) = run_sharded([job], Shard(0, 2, folder, worker="gw0", timeout=600, poll=0.01), cache, notes.append)
    assert time.perf_counter() - started < 5 and sorted(found) == sorted(job.keys)
    assert calls == [("MainThread", "a", job.keys)]  # one call for all taken-over keys
    assert len(notes) == 1 and "gw0 computed 5 evaluation(s) that another xdist worker had claimed" in notes[0]
    assert "a/skip:3" in notes[0] and "ended before computing it" in notes[0]


def test_claims_of_a_hung_worker_are_taken_over_after_the_timeout(tmp_path: Path) -> None:
    calls: list[Call] = []
    job = fake_job("a", 2, calls, threading.Lock())
    folder = tmp_path / "exchange"
    cache = ResultCache(tmp_path / "cache", key=KEY)
    claim_as(folder, job, ["skip:1"], "gw1", os.getpid())  # alive, but it never computes it
    notes: list[str] = []
    started = time.perf_counter()
    (found,) = run_sharded([job], Shard(0, 2, folder, worker="gw0", timeout=1.0, poll=0.05), cache, notes.append)
    assert 1.0 <= time.perf_counter() - started < 10 and sorted(found) == sorted(job.keys)
    assert "a/skip:1 (gw1 showed no sign of life for 1 s" in notes[0]
    assert "--layercheck-shard-timeout (now 1 s)" in notes[0]


def test_without_the_fallback_a_timeout_is_an_error_naming_the_cells(tmp_path: Path) -> None:
    job = fake_job("b", 2, [], threading.Lock())
    claim_as(tmp_path / "exchange", job, ["skip:0"], "gw1", os.getpid())
    shard = Shard(0, 2, tmp_path / "exchange", worker="gw0", timeout=0.5, fallback=False, poll=0.05)
    with pytest.raises(ShardTimeoutError) as error:
        run_sharded([job], shard, ResultCache(tmp_path / "cache", key=KEY))
    assert isinstance(error.value, LayercheckError) and error.value.fix is not None
    assert "b/skip:0 (gw1 showed no sign of life" in error.value.problem
    assert "--layercheck-shard-timeout" in error.value.fix


def test_a_failed_computation_gives_its_claims_up(tmp_path: Path) -> None:
    folder = tmp_path / "exchange"
    cache = ResultCache(tmp_path / "cache", key=KEY)
    broken = fake_job("a", 2, [], threading.Lock(), fail=True)
    with pytest.raises(RuntimeError):
        run_sharded([broken], Shard(0, 2, folder, worker="gw0", poll=0.01), cache)
    calls: list[Call] = []
    notes: list[str] = []
    run_sharded(
        [fake_job("a", 2, calls, threading.Lock())], Shard(1, 2, folder, worker="gw1", poll=0.01), cache, notes.append
    )
    assert sorted(k for _, _, keys in calls for k in keys) == sorted([INTACT, "skip:0", "skip:1"])
    assert "gave it up" in notes[0]


# ------------------------------------------------------------------------- on a tiny model
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    tiny_model("llama", layers=6, seed=3).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    write_fact_suite(folder / "facts.yaml")
    return folder


def test_a_sweep_split_into_groups_gives_bit_identical_loglikelihoods(tiny_folder: Path) -> None:
    """The grouping changes which streams share a batched call; rows never interact, so on the CPU
    each ablation's log-likelihoods are the very same numbers (on a GPU, kernels chosen by shape may
    round differently; the outcomes would still agree but for exact ties)."""
    import torch

    from pytest_layercheck.model.ablation import Ablation
    from pytest_layercheck.model.loading import load_model
    from pytest_layercheck.scoring.protocols import batch_settings, prepare
    from pytest_layercheck.scoring.sweep import run_loglikelihood_sweep
    from pytest_layercheck.suites.builtin import resolve_suite

    loaded = load_model(tiny_folder, device="cpu")
    prepared = prepare(resolve_suite(str(tiny_folder / "facts.yaml")).limited(40), "mc_text", loaded.tokenizer)
    assert prepared.loglikelihood is not None
    plan = prepared.loglikelihood.plan(batch_settings(loaded.runtime, None, None))
    ablations = [Ablation.skipping((i,)) for i in range(6)]
    intact, whole = run_loglikelihood_sweep(loaded.runtime, plan, ablations)
    for group in ([0, 3, 4], [1, 2, 5], [5]):
        again, part = run_loglikelihood_sweep(loaded.runtime, plan, [ablations[i] for i in group])
        assert torch.equal(again.loglikelihood, intact.loglikelihood)
        assert all(torch.equal(p.loglikelihood, whole[i].loglikelihood) for i, p in zip(group, part))


def test_sharded_build_profile_equals_the_serial_one(tiny_folder: Path, tmp_path: Path) -> None:
    """Two workers (threads, each with its own copy of the model) build the profile sharded: together
    they compute what one serial build computes, each evaluation once, and both get its profile."""
    from pytest_layercheck.evaluation.profiler import build_profile
    from pytest_layercheck.evaluation.settings import ProfileSettings
    from pytest_layercheck.model.loading import load_model

    settings = ProfileSettings(suites=(str(tiny_folder / "facts.yaml"),), limit=None)
    serial_cache = ResultCache(tmp_path / "serial", key=KEY)
    serial = build_profile(load_model(tiny_folder, device="cpu"), settings, cache=serial_cache)
    models = [load_model(tiny_folder, device="cpu") for _ in range(2)]
    caches = [ResultCache(tmp_path / "sharded", enabled=False) for _ in range(2)]
    (tmp_path / "run").mkdir()
    profiles: list = [None, None]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            profiles[i] = build_profile(
                models[i], settings, cache=caches[i], shard=Shard(i, 2, tmp_path / "run", worker=f"gw{i}", poll=0.02)
            )
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert serial_cache.misses == 8  # every item intact, the sweep's 40 items intact, 6 removals
    assert caches[0].misses + caches[1].misses == 8 and min(c.misses for c in caches) > 0
    assert all(c.misses + c.shared == 8 for c in caches)
    for profile in profiles:
        assert profile.evaluations == serial.evaluations
        assert list(profile.evaluations) == list(serial.evaluations)  # in the same order too


# ---------------------------------------------------------------------------- end to end
CHECKS = """
import pytest

@pytest.mark.layercheck("knowledge", "intact")
def test_intact():
    pass

@pytest.mark.layercheck("knowledge", "shallow", max_drop=0.5)
def test_shallow():
    pass

@pytest.mark.layercheck("knowledge", "middle", max_drop=0.5)
def test_middle():
    pass

@pytest.mark.layercheck("knowledge", "deep", max_drop=0.5)
def test_deep():
    pass
"""
#: A test of the whole profile beside the marker checks: a worker that runs it computes the complete
#: profile while another computes the checks' partial one.
WHOLE = """
def test_whole_profile(layercheck_profile):
    assert len(layercheck_profile.evaluations) == 7
"""
COMPUTED = re.compile(
    r"profile computed in [\d.]+ s(?: by (\d) xdist workers?)? "
    r"\(evaluations: (\d+) from cache, (\d+) computed(?:: ([^)]*))?"
)


@pytest.fixture
def sharded_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.Pytester:
    """The fact-suite project with the :data:`CHECKS` module on a tiny random model named in its ini file."""
    model = tiny_model("llama", layers=6, seed=3)
    model.save_pretrained(tmp_path / "tiny")
    tiny_tokenizer().save_pretrained(tmp_path / "tiny")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))  # where the controller makes its folder
    return fact_suite_project(
        pytester, monkeypatch, tmp_path / "cache", f"layercheck_model = {tmp_path / 'tiny'}\n", test_checks=CHECKS
    )


def run(project: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict]:
    result = project.runpytest("-p", "no:cacheprovider", "--layercheck-report=report.json", *args)
    return result, json.loads((project.path / "report.json").read_text())


def computed(result: pytest.RunResult) -> tuple[int, int, str | None]:
    """(xdist workers, evaluations computed over all of them, computed per worker) from the summary."""
    match = COMPUTED.search(result.stdout.str())
    assert match, result.stdout.str()
    return int(match[1] or 0), int(match[3]), match[4]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("cache", "whole"),
    [
        # Without the cache a serial run that computes a partial profile and then the whole one computes the
        # partial one twice (nothing keeps it); so this case has marker checks only.
        ("no-cache", False),
        ("cache", True),
    ],
)
def test_two_workers_together_compute_what_one_process_computes_and_agree(
    sharded_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache: str, whole: bool
) -> None:
    pytest.importorskip("xdist")
    for variable in ("LAYERCHECK_THREADS", "OMP_NUM_THREADS"):  # the workers choose, as for a user
        monkeypatch.delenv(variable, raising=False)
    sharded_project.runpytest("-p", "no:cacheprovider", "--layercheck-update").assert_outcomes(passed=4)
    if whole:
        sharded_project.makepyfile(test_whole=WHOLE)
    flags = ("--layercheck-no-cache",) if cache == "no-cache" else ()
    tests = 4 + whole
    reports = {}
    for workers in ("0", "2"):
        monkeypatch.setenv("LAYERCHECK_CACHE_DIR", str(tmp_path / f"cache-{workers}"))  # each from an empty cache
        result, reports[workers] = run(sharded_project, "-n", workers, *flags)
        result.assert_outcomes(passed=tests)
        counted = computed(result)
        assert counted[0] == (0 if workers == "0" else 2) or (workers == "2" and counted[0] == 1)
        # Every item intact, the sweep's 40 items intact (its activations) and each of the 6 removals.
        assert counted[1] == 8, result.stdout.str()
        if workers == "2":
            assert counted[2] is not None and re.fullmatch(r"gw\d \d+(, gw\d \d+)?", counted[2])
            # Each worker's thread count is said; on 2 cores the two workers take one core each.
            share = "1 core per xdist worker of 2" if usable_cores() < 4 else "torch thread"
            result.stdout.fnmatch_lines([f"torch threads of gw*: * torch thread* ({share}*"])
    serial, sharded = reports["0"], reports["2"]
    assert sharded["profile"]["evaluations"] == serial["profile"]["evaluations"]  # every outcome of every item
    assert sharded["profile"]["cells"] == serial["profile"]["cells"]
    assert sharded["comparison"] == serial["comparison"] and sharded["passed"] == serial["passed"]
    assert not list((tmp_path / "tmp").iterdir())  # the controller removed the run's folder


@pytest.mark.slow
@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_a_bad_shard_timeout_is_a_usage_error_that_says_the_fix(pytester: pytest.Pytester, value: str) -> None:
    """``--layercheck-shard-timeout`` as a user passes it: a bad value stops pytest before any test runs."""
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess(f"--layercheck-shard-timeout={value}", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*bad --layercheck-shard-timeout '{value}'*", "*How to fix: give a number of seconds > 0*"]
    )
    good = pytester.runpytest_subprocess("--layercheck-shard-timeout=30", "-p", "no:cacheprovider")
    good.assert_outcomes(passed=1)
