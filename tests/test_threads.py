"""Each job's torch threads: its share of the cores when a launcher runs jobs side by side."""

from __future__ import annotations

import pytest

from src.threads import ThreadsConfigError, concurrent_jobs, job_threads, machine_cores
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
