"""How many torch threads a job uses: the cores, shared out among the jobs that run at once.

Two trainings that each take every core slow each other down far more than twofold (their thread
pools fight over the same cores), so a launcher that runs n jobs side by side gives each job 1/n of
the cores. The top-level ``threads`` setting overrides the share.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from src.errors import SettingError


class ThreadsConfigError(SettingError):
    """A thread setting that cannot work; the message names the setting."""


def machine_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers and Slurm narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def concurrent_jobs(launcher: Mapping | None, cores: int) -> int:
    """How many jobs ``launcher`` (a ``hydra.launcher`` config) runs at once on this machine.

    joblib runs ``n_jobs`` (negative counts back from the cores, as joblib does: -1 is all of
    them); every other launcher here runs one job at a time on a machine (a cluster's scheduler
    gives each job its own cores).
    """
    if not launcher or "joblib" not in str(launcher.get("_target_", "")):
        return 1
    n_jobs = launcher.get("n_jobs") or 1
    return max(1, n_jobs if n_jobs > 0 else cores + 1 + n_jobs)


def job_threads(setting: int | None, launcher: Mapping | None, cores: int) -> int:
    """The ``threads`` setting checked against the machine, or (``None``) this job's share of
    the cores: ``cores // concurrent jobs``, at least one."""
    if setting is None:
        return max(1, cores // concurrent_jobs(launcher, cores))
    if not 1 <= setting <= cores:
        raise ThreadsConfigError(
            f"threads={setting}: use 1 to {cores} (this machine's cores), or null to share the "
            "cores among parallel jobs"
        )
    return setting


def use_job_threads(setting: int | None) -> int:
    """Set torch's intra-op threads for this job (a Hydra job: its launcher is read from the
    running config) and return how many."""
    launcher = None
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        launcher = HydraConfig.get().launcher
    threads = job_threads(setting, launcher, machine_cores())
    torch.set_num_threads(threads)
    return threads
