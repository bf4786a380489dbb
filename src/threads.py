"""How a job uses the CPU: its share of the cores, and no denormal floats.

Two trainings that each take every core slow each other down far more than twofold (their thread
pools fight over the same cores), so a launcher that runs n jobs side by side gives each job 1/n of
the cores. The top-level ``threads`` setting overrides the share.

Whoever starts the jobs (a launcher, two terminals, another person's tests), a training also
yields the cores other processes are using: :class:`CoreShare` (the ``fair_share`` callback)
measures, every second, how many of this process's cores the other processes kept busy, and gives
torch the rest (at least one thread; up to every core for a training and a study job, so a job
whose siblings have finished takes their cores). OpenMP's idle threads spin before they sleep,
so two jobs that each take every core slow each other 4x; each now drops to one thread within a
second.
``OMP_WAIT_POLICY=PASSIVE`` (no spinning) would share as fairly, but costs a job alone about 15 %
(``make bench-share``).

An LSTM's gradients shrink along the sentence into the denormal range (below ~1e-38), where a CPU
computes them many times slower; flushing them to zero (as GPUs do) changes nothing a float32
model can represent and made a 400-word IMDB training step 6x faster (``make bench-train``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from src.errors import SettingError


class ThreadsConfigError(SettingError):
    """A thread setting that cannot work; the message names the setting."""


def machine_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers and Slurm narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return cast(int, os.cpu_count())  # None only where the count cannot be told


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


PROC_STAT = Path("/proc/stat")
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal (not idle, iowait)


def busy_seconds(cpus: set[int], stat: str | None = None) -> float | None:
    """CPU seconds spent busy so far on ``cpus``, by every process (None: no /proc/stat)."""
    if stat is None:
        if not PROC_STAT.is_file():
            return None
        stat = PROC_STAT.read_text()
    ticks = 0
    for line in stat.splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks += sum(int(fields[i]) for i in BUSY_FIELDS if i < len(fields))
    return ticks / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    """CPU seconds this process (all its threads) has used."""
    times = os.times()
    return times.user + times.system


def free_threads(cores: int, others_busy: float, most: int) -> int:
    """Threads for a job on ``cores`` cores when other processes keep ``others_busy`` of them
    busy (in cores): the cores left, rounded, at most ``most``, at least one."""
    return max(1, min(most, int(cores - others_busy + 0.5)))


class CoreShare:
    """Torch's threads from the cores other processes leave free, measured again when at least
    ``every`` seconds have passed (:meth:`update`, called often and cheap: one read of
    /proc/stat). ``most``: the most threads it gives (default every core: a job whose siblings
    have finished takes their cores). ``changes`` counts the times
    it set a new count and ``fewest`` is the lowest it set: a sum over fewer threads rounds
    differently, so a training that changed its threads need not give the same weights again."""

    def __init__(self, most: int | None = None, every: float = 1.0) -> None:
        self.most, self.every = machine_cores() if most is None else most, every
        self.cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        self.last = self._sample()
        self.changes, self.fewest = 0, torch.get_num_threads()

    def _sample(self) -> tuple[float, float, float | None]:
        return time.perf_counter(), own_seconds(), busy_seconds(self.cpus)

    def update(self) -> int | None:
        """Set torch's threads if a window has passed; the threads set (None: not yet, or no
        /proc/stat to measure with)."""
        now = time.perf_counter()
        if now - self.last[0] < self.every:
            return None
        sample = self._sample()
        (then, own_then, busy_then), self.last = self.last, sample
        if busy_then is None or sample[2] is None:
            return None
        wall = sample[0] - then
        others = max(0.0, (sample[2] - busy_then) - (sample[1] - own_then)) / wall
        threads = free_threads(len(self.cpus), others, self.most)
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
            self.changes, self.fewest = self.changes + 1, min(self.fewest, threads)
        return threads
