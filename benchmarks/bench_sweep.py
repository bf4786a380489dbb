"""What a sweep job costs beyond start-up, and what the sweep's summary costs.

On one cached baseline (default settings but ``trainer.max_epochs``, which changes what is
trained, not what a job does), each setting runs the 16-job sweep
``compress=weight_sum,ls_refit,prune,keep_one target_width=1,2,4,8`` with the summary callback
off. A job's cost is the time between the first and the last job's ``metrics.json`` over 15 (the
jobs run one after another in one process, so Python's, Hydra's and W&B's start-up fall before the
first); start-up is the time to the first job's ``metrics.json``. The summary is then timed alone,
in a fresh process, on the defaults' folder, with and without its W&B summary run; and as a default
sweep runs it, by its callback at the end, in the process that ran the jobs (whose W&B service is
already running), read from the callback's log.

- before: per-job figures and viewer page on, as every job wrote them by default;
- defaults: as a multirun's jobs run now;
- defaults, logger=csv: the same without a W&B run per job (its cost is the difference).

The machine is shared, so the figures are ratios and differences within this one run.

    make bench-sweep
    python benchmarks/bench_sweep.py --epochs 2
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from src.report import SUMMARY_TOOK  # noqa: E402

RESULT = ROOT / "results" / "benchmarks" / "sweep.txt"
GRID = ["compress=weight_sum,ls_refit,prune,keep_one", "target_width=1,2,4,8"]
SETTINGS = {
    "before (figures and viewer per job)": ["analysis.figures=true", "analysis.viewer=true"],
    "defaults": [],
    "defaults, logger=csv (no W&B run per job)": ["logger=csv"],
}


def run(args: list[str], env: dict) -> tuple[float, str]:
    """Seconds ``python -m src.run args`` took, and what it said; fails loudly."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "src.run", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"src.run {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def sweep(args: list[str], folder: Path, env: dict) -> tuple[float, float, float]:
    """The sweep's seconds, its start-up (to the first job's metrics.json) and a job's cost."""
    started = time.time()
    seconds = run(["-m", *args, f"hydra.sweep.dir={folder}"], env)[0]
    ends = sorted(p.stat().st_mtime for p in folder.glob("*/metrics.json"))
    assert len(ends) == 16, f"{len(ends)} of 16 jobs finished in {folder}"
    return seconds, ends[0] - started, (ends[-1] - ends[0]) / 15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="the cached baseline's epochs")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench-sweep")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    env = os.environ | {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT)}
    common = [f"trainer.max_epochs={args.epochs}", f"cache_dir={args.cache}"]
    quiet = ["~hydra.callbacks.sweep_summary", "trainer.enable_progress_bar=false"]
    load = os.getloadavg()[0]
    started = time.time()
    head = [
        f"bench_sweep: 16-job sweep ({' '.join(GRID)}) on a cached baseline "
        f"(default settings, trainer.max_epochs={args.epochs}), summary callback off",
    ]
    rows = [
        "| setting | sweep (s) | start-up to the first job's end (s) | per job after it (s) |",
        "|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        trained = run([*common, "logger=csv", f"hydra.run.dir={tmp}/baseline"], env)[0]
        head.append(f"baseline run (trained, or read from {args.cache}): {trained:.1f} s")
        for index, (name, extra) in enumerate(SETTINGS.items()):
            folder = Path(tmp) / f"sweep{index}"
            seconds, start_up, per_job = sweep([*common, *quiet, *extra, *GRID], folder, env)
            rows.append(f"| {name} | {seconds:.1f} | {start_up:.1f} | {per_job:.2f} |")
            print(rows[-1], flush=True)
        summary = summary_seconds(Path(tmp) / "sweep1", env)  # the defaults' 16 jobs
        in_sweep = callback_seconds([*common, *GRID], Path(tmp) / "with-summary", env)
    head.append(
        f"cores: {os.cpu_count()}; load average before {load:.2f}, after "
        f"{os.getloadavg()[0]:.2f}; {time.time() - started:.0f} s in all"
    )
    text = "\n".join(
        [
            *head,
            "",
            *rows,
            "",
            f"the sweep's summary on the defaults' 16 jobs, alone in a fresh process: {summary}",
            "the same at the end of a default sweep (its callback, in the process that ran the "
            f"jobs, whose W&B service is running): {in_sweep}",
        ]
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


def callback_seconds(args: list[str], folder: Path, env: dict) -> str:
    """The summary as a default sweep runs it (its callback on), timed by the callback's log."""
    _, said = run(
        ["-m", *args, "trainer.enable_progress_bar=false", f"hydra.sweep.dir={folder}"], env
    )
    took = re.search(rf"{SUMMARY_TOOK} ([0-9.]+) s", said)
    return f"{took.group(1)} s with its W&B run" if took else "not logged"


def summary_seconds(sweep_dir: Path, env: dict) -> str:
    """The summary as the callback runs it, timed in a fresh process after its imports."""
    code = (
        "import time, sys\n"
        "from pathlib import Path\n"
        "from omegaconf import OmegaConf\n"
        "from src.report import report_sweep\n"
        "w = OmegaConf.create({'project': 'neuron-merging', 'group': 'bench', 'mode': 'offline'})\n"
        "folder = Path(sys.argv[1])\n"
        "s = time.perf_counter(); report_sweep(folder, None); a = time.perf_counter() - s\n"
        "s = time.perf_counter(); report_sweep(folder, w); b = time.perf_counter() - s\n"
        "print(f'{a:.2f} s without its W&B run, {b:.2f} s with it (the callback\\'s default)')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(sweep_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return f"failed: {done.stderr[-500:]}"
    return done.stdout.strip().splitlines()[-1]


if __name__ == "__main__":
    main()
