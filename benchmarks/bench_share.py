"""Fair sharing of the cores: one training epoch alone, and two started side by side.

Each training is a fresh process (as a job under any launcher, or one started by hand in a
second terminal is): it composes the run config, reads a seeded 3,000-sentence slice of
rotten_tomatoes, builds the model, then waits until every process of its round is ready and
times one epoch of the project's step under a Lightning Trainer (validation and checkpoints off).

- before: what a job did before the project chose how to share the cores: torch imported before
  ``src`` (the OpenMP runtime's own defaults: its idle threads spin for a while before they
  sleep) and every core as torch threads;
- after: what every job does now: ``use_job_cpu(None)``, and the ``fair_share`` callback
  (:class:`src.callbacks.FairShare`), which gives torch the cores other processes leave free,
  measured once a second.

Every figure is a ratio within this one run, each round the median of ``--repeats``: the machine
is shared, so absolute seconds move with whatever else runs, the ratios far less.

    make bench-share
    python benchmarks/bench_share.py --repeats 7 --sentences 3000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "results" / "benchmarks" / "share.txt"


def child(mode: str, sentences: int, go: Path) -> None:
    """One training: ready its data, wait for ``go`` to exist, time one epoch, print JSON."""
    import torch
    from bench_train import epoch_trainer  # a sibling script: benchmarks/ is on sys.path
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from src.callbacks import FairShare
    from src.threads import use_job_cpu

    threads = use_job_cpu(None)  # every core: one process, no launcher

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"data.limit={sentences}", "seed=0"])
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    cfg.model.vocab_size = datamodule.tokenizer.get_vocab_size()
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    trainer = epoch_trainer(cfg, [FairShare()] if mode == "after" else [])
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.01)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    seconds = time.perf_counter() - start
    final = torch.get_num_threads()
    print(json.dumps({"seconds": seconds, "threads": threads, "final": final}), flush=True)


def round_of(mode: str, count: int, sentences: int, env: dict) -> list[float]:
    """``count`` trainings started together; each one's epoch seconds."""
    with tempfile.TemporaryDirectory() as folder:
        go = Path(folder) / "go"
        command = [sys.executable, __file__, "--child", mode, "--sentences", str(sentences)]
        procs = [
            subprocess.Popen(
                [*command, "--go", str(go)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(count)
        ]
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        go.touch()
        results = [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    return [r["seconds"] for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["before", "after"])
    parser.add_argument("--go", type=Path)
    parser.add_argument("--sentences", type=int, default=3000)
    parser.add_argument(
        "--repeats", type=int, default=7, help="rounds (3 do not separate 1.0 from 0.92)"
    )
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.sentences, args.go)
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    env["PYTHONPATH"] = str(ROOT)
    started = time.time()
    load_before = os.getloadavg()
    alone, pair = {}, {}
    for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits both
        for mode in ("before", "after"):
            alone.setdefault(mode, []).append(round_of(mode, 1, args.sentences, env)[0])
            pair.setdefault(mode, []).extend(round_of(mode, 2, args.sentences, env))
    median = {m: statistics.median(alone[m]) for m in alone}
    lines = [
        f"bench_share: one epoch of {args.sentences} rotten_tomatoes sentences, "
        f"median of {args.repeats} rounds (pairs: both trainings of every round)",
        f"cores: {os.cpu_count()}; load average before {load_before[0]:.2f}, "
        f"after {os.getloadavg()[0]:.2f}; {time.time() - started:.0f} s in all",
        "",
        "| | alone (s) | side by side, each (s) | side by side / alone |",
        "|---|---|---|---|",
    ]
    for mode in ("before", "after"):
        both = statistics.median(pair[mode])
        slowest = max(pair[mode])
        lines.append(
            f"| {mode} | {median[mode]:.2f} | {both:.2f} (slowest {slowest:.2f}) | "
            f"{both / median[mode]:.2f}x (slowest {slowest / median[mode]:.2f}x) |"
        )
    lines += [
        "",
        f"alone, before / after (speed kept): {median['before'] / median['after']:.3f}",
        f"side by side after / alone before: "
        f"{statistics.median(pair['after']) / median['before']:.2f}x",
        f"raw seconds: {json.dumps({'alone': alone, 'pair': pair})}",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
