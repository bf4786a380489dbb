"""How long ``compress=whole_model``'s search takes on trained baselines, and where it goes.

Each baseline is loaded from the cache (trained if missing: about 5 minutes for IMDB on 2 cores);
nothing the search computes is read from the cache. For each seed: the search's seconds, its
rounds and candidates, how many times fewer parameters it chose, and the seconds spent at each
site (its candidates', the site's probing included). Written to ``results/benchmarks/search.txt``
(or ``--out``):

    make bench-search                                   # IMDB seeds 42 (1 round) and 0 (2)
    python benchmarks/bench_search.py --corpus rotten_tomatoes --seeds 1
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from src.network import stored_params
from src.pipeline import open_workbench
from src.threads import machine_cores, use_job_cpu
from src.whole_model import Budget, merge_method, search
from src.workbench import Workbench

ROOT = Path(__file__).resolve().parents[1]


def cached_bench(corpus: str, seed: int, overrides: list[str]) -> tuple[DictConfig, Workbench]:
    """The run config (``compress=whole_model``) and the workbench of the cached baseline of
    ``corpus`` and ``seed`` (trained if missing)."""
    experiment = [] if corpus == "rotten_tomatoes" else [f"+experiment={corpus}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                *experiment,
                f"seed={seed}",
                *overrides,
                "compress=whole_model",
                "output_dir=outputs/bench-search",
            ],
        )
    return cfg, open_workbench(cfg, share=False).bench


def search_row(corpus: str, seed: int, overrides: list[str]) -> dict[str, str]:
    """One search on the cached baseline of ``corpus`` and ``seed``: its cost and choice."""
    cfg, bench = cached_bench(corpus, seed, overrides)
    step, method, words = merge_method(cfg.compress)
    result = search(bench, step, method, Budget.of(cfg.compress), words)
    by_site: dict[str, float] = defaultdict(float)
    for candidate in result.candidates:
        by_site[candidate.site] += candidate.seconds
    params, chosen = stored_params(bench.network), stored_params(result.network)  # codes counted
    return {
        "corpus": corpus,
        "seed": str(seed),
        "search (s)": f"{result.seconds:.1f}",
        "rounds": str(result.rounds),
        "candidates": str(len(result.candidates)),
        "fewer params": f"{params / chosen:.2f}x",
        "widths": ",".join(f"{site}={width}" for site, width in result.widths.items()),
        "by site (s)": ", ".join(f"{site} {t:.1f}" for site, t in by_site.items()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="imdb", help="rotten_tomatoes, sst2 or imdb")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "search.txt")
    args, overrides = parser.parse_known_args()
    use_job_cpu(None)
    rows = []
    for seed in args.seeds:
        rows.append(search_row(args.corpus, seed, overrides))
        print(rows[-1], flush=True)
    title = "bench_search: compress=whole_model's search on cached baselines"
    write_table(args.out, title, rows)


def write_table(out: Path, title: str, rows: list[dict[str, str]]) -> None:
    """``rows`` as a Markdown table under ``title`` (with the cores, measured alone), written to
    ``out`` and printed."""
    lines = [
        f"{title}, {machine_cores()} cores, alone",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
        *("| " + " | ".join(row.values()) + " |" for row in rows),
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    with torch.no_grad():
        main()
