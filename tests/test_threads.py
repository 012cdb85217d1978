"""Thread-count choice: overrides, core limits and the decision rule (no timing is asserted)."""

from __future__ import annotations

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


@pytest.mark.parametrize(("timings", "expected"), [
    ({1: 1.0, 2: 0.55}, 2),  # quiet machine: 1.8x faster with 2 threads
    ({1: 1.0, 2: 0.85}, 1),  # the second core is busy elsewhere: 1.2x is not worth the spin-waiting
    ({1: 1.0, 2: 1.6}, 1),  # oversubscribed: slower with 2
    ({1: 1.0, 4: 0.30}, 4),  # 3.3x >= 1 + 3 * 0.45
    ({1: 1.0, 4: 0.45}, 1),  # 2.2x on 4 cores: shared
])
def test_more_threads_only_when_they_pay(timings: dict[int, float], expected: int) -> None:
    assert threads.pick(timings) == expected


def test_a_busy_core_measured_gives_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "load_average", lambda: 0.2)
    monkeypatch.setattr(threads, "calibrate", lambda counts: {1: 0.030, 2: 0.029})
    choice = threads.choose_threads({})
    assert (choice.threads, choice.source, choice.timings) == (1, "measured", {1: 0.030, 2: 0.029})
    assert choice.describe() == ("1 torch thread (measured, 1 thread: 30 ms, 2 threads: 29 ms; "
                                 "2 usable cores, load average 0.2)")


def test_a_quiet_machine_measured_gives_every_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "load_average", lambda: 0.3)
    monkeypatch.setattr(threads, "calibrate", lambda counts: {1: 0.040, 2: 0.021})
    assert threads.choose_threads({}).threads == 2


@pytest.mark.parametrize(("cores", "load", "calibrated"), [(2, 1.0, None), (2, 3.9, None), (8, 6.2, 2)])
def test_cores_other_processes_keep_busy_are_not_used(monkeypatch: pytest.MonkeyPatch, cores: int, load: float,
                                                      calibrated: int | None) -> None:
    """A quiet moment in the calibration does not outvote a load average that says the cores are taken."""
    measured: list[tuple[int, ...]] = []
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(threads, "load_average", lambda: load)
    monkeypatch.setattr(threads, "calibrate", lambda counts: measured.append(counts) or {c: 0.04 / c for c in counts})
    choice = threads.choose_threads({})
    assert choice.threads == (calibrated or 1)
    assert measured == ([(1, calibrated)] if calibrated else [])


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
        assert first.wait_policy is None  # torch is already imported: the wait policy cannot change now
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
