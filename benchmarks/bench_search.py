"""How long ``compress=whole_model``'s search takes on one trained baseline, and where it goes.

The baseline is loaded from the cache (trained if missing: about 5 minutes for IMDB on 2 cores);
nothing the search computes is read from the cache. Prints the search's seconds, its rounds and
candidates, the widths it chose, and the seconds spent at each site (the candidates' own, the
site's probing included), then appends a row to ``results/bench/search.csv`` (or ``--out``):

    make bench-search                               # IMDB seed 42, as the README's row
    python benchmarks/bench_search.py seed=0        # IMDB seed 0 (2 rounds in the study)
    python benchmarks/bench_search.py --corpus rotten_tomatoes seed=1
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir

from src.pipeline import open_workbench
from src.threads import use_job_cpu
from src.whole_model import Budget, merge_method, search

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="imdb", help="rotten_tomatoes, sst2 or imdb")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "search.csv")
    args, overrides = parser.parse_known_args()
    experiment = [] if args.corpus == "rotten_tomatoes" else [f"+experiment={args.corpus}"]
    use_job_cpu(None)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                *experiment,
                *overrides,
                "compress=whole_model",
                "output_dir=outputs/bench-search",
            ],
        )
    bench = open_workbench(cfg, share=False).bench
    step, method, words = merge_method(cfg.compress)
    result = search(bench, step, method, Budget.of(cfg.compress), words)
    by_site: dict[str, float] = defaultdict(float)
    for candidate in result.candidates:
        by_site[candidate.site] += candidate.seconds
    params = sum(p.numel() for p in bench.network.parameters())
    chosen = sum(p.numel() for p in result.network.parameters())
    row = {
        "data": args.corpus,
        "seed": cfg.seed,
        "search_seconds": round(result.seconds, 1),
        "rounds": result.rounds,
        "candidates": len(result.candidates),
        "fewer_params": round(params / chosen, 2),
        "widths": ",".join(f"{k}={v}" for k, v in result.widths.items()),
        **{f"seconds/{site}": round(seconds, 1) for site, seconds in by_site.items()},
    }
    for key, value in row.items():
        print(f"{key:<20} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([row]).to_csv(args.out, mode="a", header=not args.out.exists(), index=False)


if __name__ == "__main__":
    with torch.no_grad():
        main()
