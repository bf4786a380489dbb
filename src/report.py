"""What a run leaves behind: a flat metrics.json, a console table, and the W&B summary."""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import wandb  # noqa: E402
from hydra.experimental.callback import Callback  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from src.analysis.figures import panel_grid  # noqa: E402
from src.analysis.stats import linear_cka, matched_correlation  # noqa: E402
from src.compress.pipeline import ACTIVATIONS_FILE  # noqa: E402

log = logging.getLogger(__name__)

Metrics = Mapping[str, float | int | str | None]


def write_metrics(folder: str | Path, metrics: Metrics) -> Path:
    """Merge ``metrics`` into ``folder/metrics.json`` (one flat JSON object per run)."""
    path = Path(folder) / "metrics.json"
    existing = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**existing, **metrics}, indent=2, sort_keys=True) + "\n")
    return path


def format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) and abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def summary_table(metrics: Metrics, keys: list[str]) -> str:
    """A two-column text table of the ``keys`` present in ``metrics``."""
    rows = [(k, format_value(metrics[k])) for k in keys if k in metrics]
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


# ---- the end of a multirun: every job's metrics.json in one table and one figure ----

GROUP_KEYS = ["data", "layer", "method", "target_width"]
MEAN_KEYS = [
    "baseline/test_acc",
    "compressed/test_acc",
    "delta_acc",
    "compressed/agreement",
    "compressed/logit_rel_error",
    "compressed/dead_neurons",
    "compress_seconds",
]


def gather_metrics(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per job folder under ``sweep_dir`` that wrote a metrics.json."""
    rows = []
    for path in sorted(Path(sweep_dir).glob("**/metrics.json")):
        rows.append(
            {"job": str(path.parent.relative_to(sweep_dir)), **json.loads(path.read_text())}
        )
    return pd.DataFrame(rows)


def aggregate(jobs: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per data set, layer, method and width."""
    if "target_width" not in jobs:
        return pd.DataFrame()
    compressed = jobs.dropna(subset=["target_width"])
    stats = compressed.groupby(GROUP_KEYS)[[k for k in MEAN_KEYS if k in jobs]].agg(["mean", "std"])
    stats.columns = [f"{key} {stat}" for key, stat in stats.columns]
    stats["seeds"] = compressed.groupby(GROUP_KEYS)["seed"].nunique()
    return stats.reset_index()


def mean_std_cells(stats: pd.DataFrame, key: str) -> list[str]:
    """``mean ± std`` per row of :func:`aggregate`'s output (the mean alone for one seed)."""
    mean, std = stats[f"{key} mean"], stats[f"{key} std"].fillna(0.0)
    return [
        f"{m:.4f} ± {s:.4f}" if n > 1 else f"{m:.4f}"
        for m, s, n in zip(mean, std, stats["seeds"], strict=True)
    ]


def markdown_table(stats: pd.DataFrame) -> str:
    """Every aggregated key, one row per data set, layer, method and width."""
    table = stats[GROUP_KEYS + ["seeds"]].copy()
    for key in MEAN_KEYS:
        if f"{key} mean" in stats:
            table[key] = mean_std_cells(stats, key)
    return table.to_markdown(index=False, disable_numparse=True)


def width_table(stats: pd.DataFrame, key: str = "compressed/test_acc") -> str:
    """One ``key`` at a glance: a row per data set, layer and method, a column per width."""
    cells = stats[GROUP_KEYS].assign(cell=mean_std_cells(stats, key))
    wide = cells.pivot(index=GROUP_KEYS[:3], columns="target_width", values="cell").fillna("")
    wide.columns = [f"width {int(w)}" for w in wide.columns]
    return wide.reset_index().to_markdown(index=False, disable_numparse=True)


def accuracy_figure(jobs: pd.DataFrame) -> Figure:
    """Test accuracy against target width, one line per method (mean, spread over seeds), one
    panel per data set and layer, the baseline as a dashed line."""
    panels = sorted(jobs.groupby(["data", "layer"]).groups)
    fig, axes = panel_grid(len(panels), 5.5, 4, per_row=jobs["layer"].nunique())
    for ax, (data, layer) in zip(axes, panels, strict=False):
        panel = jobs[(jobs["data"] == data) & (jobs["layer"] == layer)]
        for method, rows in panel.groupby("method"):
            acc = rows.groupby("target_width")["compressed/test_acc"].agg(["mean", "std"])
            ax.errorbar(
                acc.index,
                acc["mean"],
                yerr=acc["std"].fillna(0),
                marker="o",
                label=method,
                capsize=3,
            )
        base = panel.drop_duplicates("seed")["baseline/test_acc"].mean()
        ax.axhline(base, color="black", linestyle="--", label="baseline")
        ax.set_xscale("log", base=2)
        widths = sorted(panel["target_width"].unique())
        ax.set_xticks(widths, [str(int(w)) for w in widths])
        ax.set_xlabel("target width")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{data}, layer {int(layer)}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


SIBLING_KEYS = ["data", "layer", "target_width", "seed"]
SWEEP_FIGURES = ("accuracy.png", "cka.png")


def sibling_similarity(jobs: pd.DataFrame, sweep_dir: str | Path) -> pd.DataFrame:
    """Linear CKA and best-matched correlation between the shrunk layers of every two jobs that
    share data, layer, width and seed, on their test features (``compressed_activations.npy``).

    Jobs are named by method, or by their folder where a sweep ran one method several ways.
    """
    rows = []
    compressed = jobs.dropna(subset=["target_width"])
    for key, group in compressed.groupby(SIBLING_KEYS):
        unique = group["method"].is_unique
        features = {
            method if unique else job: torch.from_numpy(np.load(path))
            for job, method in zip(group["job"], group["method"], strict=True)
            if (path := Path(sweep_dir) / job / ACTIVATIONS_FILE).is_file()
        }
        key_columns = dict(zip(SIBLING_KEYS, key, strict=True))
        rows += [key_columns | pair for pair in pairwise_similarity(features)]
    return pd.DataFrame(rows)


def pairwise_similarity(features: Mapping[str, torch.Tensor]) -> list[dict]:
    """Linear CKA and best-matched correlation between every two named layers' features
    (rows: the same test sentences), one dict per pair: a, b, cka, matched_r."""
    return [
        {"a": a, "b": b}
        | {"cka": linear_cka(features[a], features[b])}
        | {"matched_r": matched_correlation(features[a], features[b])}
        for a, b in itertools.combinations(sorted(features), 2)
    ]


def cka_figure(pairs: pd.DataFrame) -> Figure:
    """Mean CKA over seeds between every two methods, one heatmap per data set, layer and width."""
    mean = pairs.groupby([*SIBLING_KEYS[:3], "a", "b"])["cka"].mean().reset_index()
    panels = mean.groupby(SIBLING_KEYS[:3])
    fig, axes = panel_grid(len(panels), 4.2, 4)
    for ax, ((data, layer, width), panel) in zip(axes, panels, strict=False):
        names = sorted(set(panel["a"]) | set(panel["b"]))
        grid = pd.DataFrame(1.0, index=names, columns=names)
        for a, b, cka in zip(panel["a"], panel["b"], panel["cka"], strict=True):
            grid.loc[a, b] = grid.loc[b, a] = cka
        image = ax.imshow(grid.to_numpy(), vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_title(f"{data}, layer {int(layer)}, width {int(width)}", fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.8, label="linear CKA")
    return fig


def summarise_sweep(sweep_dir: str | Path) -> pd.DataFrame:
    """Write summary.csv (every job), summary.md and accuracy.png into ``sweep_dir``, and
    cka.csv and cka.png where jobs left their shrunk layers' features."""
    sweep_dir = Path(sweep_dir)
    jobs = gather_metrics(sweep_dir)
    if jobs.empty:
        log.warning("no metrics.json under %s: nothing to summarise", sweep_dir)
        return jobs
    jobs.to_csv(sweep_dir / "summary.csv", index=False)
    stats = aggregate(jobs)
    if stats.empty:
        return jobs
    (sweep_dir / "summary.md").write_text(
        f"Test accuracy (mean ± std over seeds)\n\n{width_table(stats)}\n\n"
        f"Every measure\n\n{markdown_table(stats)}\n"
    )
    figure = accuracy_figure(jobs.dropna(subset=["target_width"]))
    figure.savefig(sweep_dir / "accuracy.png", dpi=110)
    plt.close(figure)
    pairs = sibling_similarity(jobs, sweep_dir)
    if not pairs.empty:
        pairs.to_csv(sweep_dir / "cka.csv", index=False)
        figure = cka_figure(pairs)
        figure.savefig(sweep_dir / "cka.png", dpi=110)
        plt.close(figure)
    return jobs


def log_summary_run(
    folder: Path,
    settings: DictConfig,
    name: str,
    job_type: str,
    tables: Mapping[str, pd.DataFrame],
    images: list[Path],
    config: Mapping[str, object] | None = None,
) -> None:
    """One W&B run (``settings``: the logger.wandb config) holding a study's or sweep's tables
    and figures, stored under ``folder``: the report-style page of the results. ``config`` (the
    command and settings that produced them) makes the page say how to regenerate it."""
    run = wandb.init(
        project=settings.project,
        group=settings.group,
        job_type=job_type,
        name=name,
        dir=str(folder),
        mode=settings.mode,
        config=dict(config or {}),
    )
    try:
        for key, frame in tables.items():
            run.log({key: wandb.Table(dataframe=frame.astype(str))})
        for path in images:
            run.log({path.stem: wandb.Image(str(path))})
    finally:
        run.finish()


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, summarise it and log a W&B summary run."""

    def __init__(self, wandb: bool = True) -> None:
        self.wandb = wandb

    def on_multirun_end(self, config: DictConfig, **kwargs: object) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = summarise_sweep(sweep_dir)
        if jobs.empty:
            return
        print(f"sweep summary: {sweep_dir / 'summary.csv'}, {sweep_dir / 'summary.md'}")
        if self.wandb and "wandb" in config.get("logger", {}):
            tables = {"summary": jobs}
            if (sweep_dir / "cka.csv").is_file():
                tables["cka"] = pd.read_csv(sweep_dir / "cka.csv")
            log_summary_run(
                sweep_dir,
                config.logger.wandb,
                name=f"summary {sweep_dir.name}",
                job_type="summary",
                tables=tables,
                images=[p for p in map(sweep_dir.joinpath, SWEEP_FIGURES) if p.is_file()],
            )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Summarise a multirun folder again.")
    parser.add_argument("sweep_dir", help="a multirun folder (hydra.sweep.dir) of finished jobs")
    summarise_sweep(parser.parse_args().sweep_dir)
