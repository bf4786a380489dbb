"""How a job uses the CPU: its share of the cores, and no denormal floats.

Two trainings that each take every core slow each other down far more than twofold (their thread
pools fight over the same cores), so a launcher that runs n jobs side by side gives each job 1/n of
the cores. The top-level ``threads`` setting overrides the share.

An LSTM's gradients shrink along the sentence into the denormal range (below ~1e-38), where a CPU
computes them many times slower; flushing them to zero (as GPUs do) changes nothing a float32
model can represent and made a 400-word IMDB training step 6x faster (``make bench-train``).
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


def use_job_cpu(setting: int | None) -> int:
    """Set torch's intra-op threads for this job (a Hydra job: its launcher is read from the
    running config), flush denormal floats to zero, and return the threads."""
    launcher = None
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        launcher = HydraConfig.get().launcher
    threads = job_threads(setting, launcher, machine_cores())
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    return threads
