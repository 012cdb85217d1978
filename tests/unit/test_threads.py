"""Thread-count choice: overrides, core limits and the decision rule (no timing is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.model import threads


def test_layercheck_threads_overrides_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "calibrate", lambda counts: pytest.fail("must not measure"))
    choice = threads.choose_threads({"LAYERCHECK_THREADS": "3", "OMP_NUM_THREADS": "1"})
    assert (choice.threads, choice.source) == (3, "LAYERCHECK_THREADS")


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_a_bad_layercheck_threads_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="LAYERCHECK_THREADS"):
        threads.choose_threads({"LAYERCHECK_THREADS": value})


def test_an_explicit_omp_num_threads_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "calibrate", lambda counts: pytest.fail("must not measure"))
    choice = threads.choose_threads({"LAYERCHECK_THREADS": "auto", "OMP_NUM_THREADS": "2"})
    assert (choice.threads, choice.source) == (2, "OMP_NUM_THREADS")


def test_one_usable_core_needs_no_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)
    monkeypatch.setattr(threads, "calibrate", lambda counts: pytest.fail("must not measure"))
    assert threads.choose_threads({}).threads == 1


@pytest.mark.parametrize(
    ("timings", "expected"),
    [
        ({1: 1.0, 2: 0.55}, 2),  # quiet machine: 1.8x faster with 2 threads
        ({1: 1.0, 2: 0.75}, 2),  # a noisy calibration on a quiet machine (1.3x): still 2
        ({1: 1.0, 2: 0.90}, 1),  # the second core is busy elsewhere: 1.1x is not worth it
        ({1: 1.0, 2: 1.6}, 1),  # oversubscribed: slower with 2
        ({1: 1.0, 4: 0.55}, 4),  # 1.8x >= 1 + 3 * 0.2
        ({1: 1.0, 4: 0.70}, 1),  # 1.4x on 4 cores: shared
    ],
)
def test_more_threads_only_when_they_pay(timings: dict[int, float], expected: int) -> None:
    assert threads.pick(timings) == expected


def test_a_busy_core_measured_gives_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 0.2)
    monkeypatch.setattr(threads, "calibrate", lambda counts: {1: 0.030, 2: 0.029})
    choice = threads.choose_threads({})
    assert (choice.threads, choice.source, choice.timings) == (1, "measured", {1: 0.030, 2: 0.029})
    assert choice.describe() == (
        "1 torch thread (measured, 1 thread: 30 ms, 2 threads: 29 ms; 2 usable cores, 0.2 busy elsewhere)"
    )


def test_a_quiet_machine_measured_gives_every_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 0.1)
    monkeypatch.setattr(threads, "calibrate", lambda counts: {1: 0.040, 2: 0.021})
    assert threads.choose_threads({}).threads == 2


@pytest.mark.parametrize(("cores", "busy", "calibrated"), [(2, 1.0, None), (2, 0.3, None), (2, 3.9, None), (8, 6.2, 2)])
def test_cores_other_processes_keep_busy_are_not_used(
    monkeypatch: pytest.MonkeyPatch, cores: int, busy: float, calibrated: int | None
) -> None:
    """A quiet moment in the calibration does not outvote a sample that says the cores are taken."""
    measured: list[tuple[int, ...]] = []
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: busy)
    monkeypatch.setattr(threads, "calibrate", lambda counts: measured.append(counts) or {c: 0.04 / c for c in counts})
    choice = threads.choose_threads({})
    assert choice.threads == (calibrated or 1)
    assert measured == ([(1, calibrated)] if calibrated else [])


WORKER = {"PYTEST_XDIST_WORKER": "gw1", "PYTEST_XDIST_WORKER_COUNT": "2"}


def test_xdist_workers_split_the_cores_without_measuring_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers on 2 cores take 1 thread each, whatever the other is doing when sampled."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: pytest.fail("must not sample"))
    monkeypatch.setattr(threads, "calibrate", lambda counts: pytest.fail("must not measure"))
    choice = threads.choose_threads(WORKER)
    assert choice.threads == 1 and choice.describe() == "1 torch thread (1 core per xdist worker of 2; 2 usable cores)"
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 0.0)
    assert threads.choose_threads({**WORKER, "PYTEST_XDIST_WORKER": ""}, measure=False).threads == 2  # not a worker


@pytest.mark.parametrize(("busy", "expected"), [(0.0, 4), (4.0, 4), (5.2, 3), (8.0, 1)])
def test_an_xdist_worker_counts_only_load_beyond_the_other_workers_share(
    monkeypatch: pytest.MonkeyPatch, busy: float, expected: int
) -> None:
    """8 cores, 2 workers: a share of 4; the other worker's 4 busy cores are not load, a fifth is."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: busy)
    assert threads.choose_threads(WORKER, measure=False).threads == expected


@pytest.mark.parametrize(
    ("environ", "count"),
    [({}, 1), (WORKER, 2), ({"PYTEST_XDIST_WORKER_COUNT": "4"}, 1), ({**WORKER, "PYTEST_XDIST_WORKER_COUNT": "x"}, 1)],
)
def test_the_worker_count_comes_from_xdists_environment(environ: dict[str, str], count: int) -> None:
    assert threads.xdist_workers(environ) == count


def test_without_proc_stat_the_load_average_stands_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: None)
    monkeypatch.setattr(threads, "load_average", lambda: 1.6)
    monkeypatch.setattr(threads, "calibrate", lambda counts: pytest.fail("must not measure"))
    assert threads.choose_threads({}).describe() == "1 torch thread (cores busy; 2 usable cores, 1.6 busy elsewhere)"


def test_the_counters_are_read_per_cpu(tmp_path) -> None:
    """/proc/stat: user nice system idle iowait irq softirq steal; idle and iowait are not busy, steal is."""
    stat = tmp_path / "stat"
    stat.write_text("cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 10 0 5 80 5 0 0 0 0 0\ncpu1 1 0 1 90 0 0 0 8 0 0\nintr 5\n")
    assert threads._cpu_counters(None, stat) == (15 + 10, 100 + 100)
    assert threads._cpu_counters({1}, stat) == (10, 100)
    assert threads._cpu_counters(None, tmp_path / "missing") is None


@pytest.mark.slow
def test_a_busy_process_is_seen_and_this_ones_own_work_is_not() -> None:
    """A real busy loop in another process shows as (nearly) a whole core; the sample subtracts this
    process's own CPU time, so a busy thread here adds nothing."""
    if threads.busy_elsewhere(0.05) is None:
        pytest.skip("no /proc/stat")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert threads.busy_elsewhere(0.5) >= 0.7
    finally:
        hog.kill()
        hog.wait()


@pytest.mark.slow
def test_configure_threads_beside_a_busy_core_sets_a_sleeping_wait_policy() -> None:
    """In a fresh process (torch not imported yet) the policy is set before OpenMP starts: with a
    core taken by another process, fewer threads than cores and idle threads that sleep."""
    env = {
        k: v
        for k, v in os.environ.items()  # a plain process: not one of this run's xdist workers
        if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", threads.ENV) and not k.startswith("PYTEST_XDIST")
    }
    script = (
        "import os, sys; from pytest_layercheck.model.threads import configure_threads, usable_cores; "
        "c = configure_threads(); print(c.threads, usable_cores(), c.wait_policy, os.environ['OMP_WAIT_POLICY'], "
        "'torch' in sys.modules); print(c.describe())"
    )
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    finally:
        hog.kill()
        hog.wait()
    assert run.returncode == 0, run.stderr
    chosen, cores, policy, environ_policy, _ = run.stdout.splitlines()[0].split()
    assert policy == environ_policy == "PASSIVE", run.stdout
    assert int(chosen) <= max(1, int(cores) - 1), run.stdout
    assert "busy elsewhere" in run.stdout and "OMP_WAIT_POLICY=PASSIVE" in run.stdout


def test_calibration_times_each_count_and_restores_torch() -> None:
    before = torch.get_num_threads()
    timings = threads.calibrate((1, 2), rounds=1, shape=(8, 8, 8))
    assert set(timings) == {1, 2} and all(t > 0 for t in timings.values())
    assert torch.get_num_threads() == before


def test_cgroup_quota_caps_the_cores(tmp_path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads._cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads._cgroup_cpu_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert threads._cgroup_cpu_limit(v1) == 2.0
    assert threads.usable_cores() >= 1


def test_configure_applies_the_choice_once(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_CHOSEN", None)
    monkeypatch.setenv("LAYERCHECK_THREADS", "1")
    try:
        first = threads.configure_threads()
        assert torch.get_num_threads() == 1 and first.threads == 1
        # The plugin chose the policy when pytest loaded it (before torch), or the user did: never late here.
        assert first.wait_policy == threads._POLICY and not first.policy_late
        monkeypatch.setenv("LAYERCHECK_THREADS", "2")
        assert threads.configure_threads() is first  # once per process
        assert threads.configure_threads(force=True).threads == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_batch_size_names_the_option_and_the_fix(value: str) -> None:
    """The batch-size option shares the whole-number rule of LAYERCHECK_THREADS (one parser)."""
    from pytest_layercheck.evaluation.options import profile_settings

    with pytest.raises(ConfigError, match=f"bad batch size '{value}'") as info:
        profile_settings({"batch_size": value})
    assert "use a whole number >= 1" in str(info.value)
    assert profile_settings({"batch_size": "3"}).batch_size == 3


@pytest.mark.slow
def test_a_users_wait_policy_is_kept() -> None:
    """docs/performance.md: on a dedicated machine ``OMP_WAIT_POLICY=ACTIVE`` is kept as given."""
    env = {**{k: v for k, v in os.environ.items() if k != threads.ENV}, "OMP_WAIT_POLICY": "ACTIVE"}
    script = (
        "import os; from pytest_layercheck.model.threads import configure_threads; "
        "c = configure_threads(); print(c.wait_policy, os.environ['OMP_WAIT_POLICY'])"
    )
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["None", "ACTIVE"]


PYTEST_POLICY = """
import os, sys

def test_policy():
    print("POLICY", os.environ.get("OMP_WAIT_POLICY"))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_pytest_starts_torch_with_sleeping_threads_unless_the_user_chose(
    tmp_path, given: str | None, expected: str
) -> None:
    """The plugin imports torch when pytest loads it, so the policy is set before that import, in a user's
    pytest run; a policy the user set is kept."""
    (tmp_path / "test_policy.py").write_text(PYTEST_POLICY)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "PYTEST_ADDOPTS")}
    if given:
        env["OMP_WAIT_POLICY"] = given
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", "-n", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"POLICY {expected}" in run.stdout


@pytest.mark.slow
def test_a_wait_policy_that_came_too_late_is_said() -> None:
    """torch imported before layercheck, nobody set a policy: the thread choice says OpenMP's default applies."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY",)}
    script = (
        "import torch; from pytest_layercheck.model.threads import configure_threads; "
        "print(configure_threads().describe())"
    )
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "OpenMP's default wait policy (torch was imported before layercheck could set PASSIVE)" in run.stdout


@pytest.mark.slow
def test_the_command_line_starts_torch_with_sleeping_threads(tmp_path) -> None:
    """``layercheck`` sets the policy before its commands import torch, and says so when it loads a model."""
    from tiny_models import tiny_model, tiny_tokenizer

    tiny_model("llama", layers=2).save_pretrained(tmp_path / "tiny")
    tiny_tokenizer().save_pretrained(tmp_path / "tiny")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY" and not k.startswith("PYTEST_XDIST")}
    run = subprocess.run(
        [str(Path(sys.executable).parent / "layercheck"), "info", str(tmp_path / "tiny")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "OMP_WAIT_POLICY=PASSIVE" in " ".join(run.stderr.split()), run.stderr


def test_split_over_cores_runs_each_task_on_one_torch_thread_elsewhere_and_restores_torch() -> None:
    import threading

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:

        def task(i: int):
            time.sleep(0.05)  # all tasks alive at once: the pool must use several threads
            return i, threading.get_ident(), torch.get_num_threads(), torch.is_inference_mode_enabled()

        with torch.inference_mode():
            results = threads.split_over_cores([lambda i=i: task(i) for i in range(4)], workers=2)
        assert [r[0] for r in results] == [0, 1, 2, 3]  # in task order
        idents = {r[1] for r in results}
        assert threading.get_ident() not in idents and len(idents) == 2
        assert all(r[2] == 1 and r[3] for r in results)  # one torch thread each; the caller's inference mode
        assert torch.get_num_threads() == 2
        serial = threads.split_over_cores([lambda i=i: task(i) for i in range(2)], workers=1)
        assert {r[1] for r in serial} == {threading.get_ident()} and all(r[2] == 2 for r in serial)
    finally:
        torch.set_num_threads(before)


def test_split_over_cores_raises_a_tasks_error_and_still_restores_torch() -> None:
    before = torch.get_num_threads()

    def fails() -> None:
        raise ValueError("task 2 failed")

    with pytest.raises(ValueError, match="task 2 failed"):
        threads.split_over_cores([lambda: None, fails, lambda: None], workers=2)
    assert torch.get_num_threads() == before


ARENAS = """
import ctypes, os, sys, tempfile, threading
from pytest_layercheck.model import threads
if sys.argv[1] == "share":
    assert threads.share_malloc_arena()
elif sys.argv[1] == "plugin":  # what pytest does first when it loads the plugin
    import pytest_layercheck.pytest_plugin
elif sys.argv[1] == "cli":  # a command that needs no model: the arena is capped before it runs
    from pytest_layercheck.cli import main
    assert main(["cache", "show", "--cache-dir", tempfile.mkdtemp()]) == 0
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.fopen.restype = ctypes.c_void_p

def allocate():
    for _ in range(100):
        libc.free(libc.malloc(64 * 1024))

workers = [threading.Thread(target=allocate) for _ in range(2)]
for w in workers: w.start()
for w in workers: w.join()
path = os.path.join(tempfile.mkdtemp(), "info.xml")
fp = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(fp))
libc.fclose(ctypes.c_void_p(fp))
print(open(path).read().count("<heap nr="))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc arenas")
def test_threads_share_the_main_malloc_arena_once_asked() -> None:
    """glibc's per-thread arenas keep freed blocks (the sweep's threads peaked 0.44 GiB higher);
    after ``share_malloc_arena`` new threads allocate from the main one, unless the user chose. The
    pytest plugin and the CLI ask for it before any thread of theirs runs."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}

    def heaps(mode: str, **extra: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", ARENAS, mode], capture_output=True, text=True, check=True, env={**env, **extra}
        )
        return int(out.stdout.split()[-1])  # the last line: after what a command printed

    assert heaps("plain") >= 2  # the threads got arenas of their own
    assert heaps("share") == 1
    assert heaps("plugin") == 1  # the plugin and the CLI cap it before any thread of theirs runs
    assert heaps("cli") == 1
    assert heaps("plugin", MALLOC_ARENA_MAX="4") >= 2
    result = subprocess.run(
        [sys.executable, "-c", "from pytest_layercheck.model import threads; print(threads.share_malloc_arena())"],
        capture_output=True,
        text=True,
        check=True,
        env={**env, "MALLOC_ARENA_MAX": "4"},
    )
    assert result.stdout.strip() == "False"  # the user's setting is kept
