"""Each job's torch threads: its share of the cores when a launcher runs jobs side by side."""

from __future__ import annotations

import os

import pytest
import torch

from src.threads import (
    CoreShare,
    ThreadsConfigError,
    busy_seconds,
    concurrent_jobs,
    free_threads,
    job_threads,
    machine_cores,
)
from tests.conftest import QUICK, read_metrics, run_app

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


@pytest.mark.parametrize(
    ("launcher", "cores", "jobs"),
    [
        (None, 8, 1),
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 8, 1),
        ({"_target_": JOBLIB, "n_jobs": 2}, 8, 2),
        ({"_target_": JOBLIB, "n_jobs": -1}, 8, 8),
        ({"_target_": JOBLIB, "n_jobs": -2}, 8, 7),
        ({"_target_": JOBLIB, "n_jobs": None}, 8, 1),
    ],
)
def test_concurrent_jobs_follow_the_launcher(launcher: dict | None, cores: int, jobs: int) -> None:
    assert concurrent_jobs(launcher, cores) == jobs


def test_parallel_jobs_share_the_cores_and_a_setting_overrides_the_share() -> None:
    two = {"_target_": JOBLIB, "n_jobs": 2}
    assert job_threads(None, two, 8) == 4
    assert job_threads(None, two, 2) == 1
    assert job_threads(None, {"_target_": JOBLIB, "n_jobs": 16}, 8) == 1  # never 0
    assert job_threads(None, None, 8) == 8
    assert job_threads(3, two, 8) == 3


@pytest.mark.parametrize("setting", [0, -1, 10_000])
def test_impossible_thread_counts_are_refused_naming_the_setting(setting: int) -> None:
    with pytest.raises(ThreadsConfigError, match=f"threads={setting}"):
        job_threads(setting, None, machine_cores())


@pytest.mark.slow
def test_a_run_refuses_a_bad_thread_count_before_any_work(tmp_path) -> None:
    result = run_app("threads=0", f"hydra.run.dir={tmp_path}", "logger=csv", timeout=120)
    assert result.returncode != 0 and "threads=0" in result.stderr
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_jobs_under_the_joblib_launcher_report_their_share_of_the_cores(
    tmp_path, quick_cache
) -> None:
    result = run_app(
        *QUICK,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "compress=prune",
        "target_width=2,4",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"cache_dir={quick_cache}",
        "logger=csv",
        multirun=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [read_metrics(p.parent) for p in (tmp_path / "sweep").glob("*/metrics.json")]
    assert len(jobs) == 2
    assert [job["threads"] for job in jobs] == [max(1, machine_cores() // 2)] * 2


@pytest.mark.parametrize(
    ("cores", "others", "most", "threads"),
    [
        (2, 0.0, 2, 2),  # alone: every core of its share
        (2, 1.0, 2, 1),  # another training on one core: the other one
        (2, 2.0, 2, 1),  # every core busy: still one thread
        (8, 2.6, 8, 5),
        (8, 0.0, 4, 4),  # never more than the launcher's share
    ],
)
def test_a_training_takes_the_cores_others_leave_free(
    cores: int, others: float, most: int, threads: int
) -> None:
    assert free_threads(cores, others, most) == threads


def test_busy_seconds_count_only_this_process_cpus() -> None:
    stat = "cpu  9 9 9 9 9 9 9 9\ncpu0 100 0 50 1000 7 0 0 10\ncpu1 200 0 0 5 0 0 0 0\nintr 5\n"
    ticks = os.sysconf("SC_CLK_TCK")
    assert busy_seconds({0}, stat) == pytest.approx(160 / ticks)  # user, system, steal
    assert busy_seconds({0, 1}, stat) == pytest.approx(360 / ticks)


def test_the_share_is_measured_again_only_once_a_window_has_passed() -> None:
    before = torch.get_num_threads()
    try:
        share = CoreShare(most=1, every=3600.0)
        assert share.update() is None  # within the window: nothing measured, nothing changed
        share.every = 0.0
        assert share.update() in (None, 1)  # None only where there is no /proc/stat
    finally:
        torch.set_num_threads(before)


def test_the_share_counts_the_thread_changes_it_makes() -> None:
    """What FairShare reports after a fit: how often the count changed, and the fewest set."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        share = CoreShare(most=1, every=0.0)
        assert (share.changes, share.fewest) == (0, 2)
        if share.update() is None:
            pytest.skip("no /proc/stat to measure with")
        assert (share.changes, share.fewest) == (1, 1)  # 2 -> 1: the job's share is one thread
        share.update()
        assert share.changes == 1  # already at one thread: nothing set again
    finally:
        torch.set_num_threads(before)
