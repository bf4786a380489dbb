"""Shrink the whole model to an accuracy budget: a width for every site, chosen on validation.

``compress=whole_model``: the sites in the order the network computes them (the embedding, each
LSTM layer, each head layer). At each, the model as cut so far is probed again (a cascade: a site
is analysed as the sites before it left it), and the smallest width whose validation accuracy stays
within ``compress.max_drop`` of the baseline's is found by bisection, with the merge method of
``compress.merge``; then the next site. The search reads the validation split only; the test
split is read once, for the model it chose.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import pandas as pd
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from src import schema
from src.baseline import obtain_baseline
from src.checkpoints import AtomicCheckpointIO
from src.compress.base import MergeMethod
from src.model import SentimentClassifier
from src.network import SentimentLSTM
from src.report import front_figure
from src.sites import ModelShape, Site, all_sites
from src.workbench import (
    COMPRESS_DIR,
    AnalysisSettings,
    CompressionConfigError,
    CompressStep,
    Workbench,
    accuracy,
    build_method,
    save_compressed,
)

MERGES = ("weight_sum", "ls_refit", "interpolative")  # no training: the budget is all it costs


@dataclass(frozen=True)
class Candidate:
    """One model the search evaluated: ``site`` cut to ``width``, the sites before it as chosen."""

    site: str
    width: int
    params: int
    val_acc: float
    accepted: bool


@dataclass
class SearchResult:
    network: SentimentLSTM  # the chosen model (the original when nothing met the budget)
    widths: dict[str, int]  # every site's width, in network order
    candidates: list[Candidate] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""  # what a reader should know: e.g. that no width met the budget


def check_budget(compress: DictConfig) -> None:
    """Refuse a budget or merge method that cannot work, before any work."""
    drop = compress.max_drop
    if not 0 <= drop < 1:
        raise CompressionConfigError(
            f"compress.max_drop={drop}: the validation accuracy the whole model may lose must "
            "be at least 0 and below 1 (0.01 is one point)"
        )
    if compress.merge not in MERGES:
        raise CompressionConfigError(
            f"compress.merge={compress.merge!r}: choose one of {', '.join(MERGES)}"
        )


def merge_method(compress: DictConfig) -> tuple[CompressStep, MergeMethod]:
    """The merge applied at every site: the method of ``compress.merge``'s file in
    conf/compress/, with no repair and no training (the budget is all the search spends)."""
    check_budget(compress)
    method = build_method(OmegaConf.load(COMPRESS_DIR / f"{compress.merge}.yaml"))
    return CompressStep(repair=False, epochs=0, lr=float(compress.lr)), method


def search(
    bench: Workbench, step: CompressStep, method: MergeMethod, max_drop: float
) -> SearchResult:
    """The cascade of the module docstring, from ``bench``'s network."""
    start = time.perf_counter()
    target = bench.baseline_scores()[schema.BASELINE_VAL_ACC] - max_drop
    labels = bench.states("validation").labels  # every cut model reads the same sentences
    current = bench
    result = SearchResult(bench.network, {s.name: s.width for s in sites_of(bench.network)})
    for name in list(result.widths):
        site = next(s for s in sites_of(current.network) if s.name == name)
        best = None
        low, high = 1, site.width - 1
        while low <= high:
            width = (low + high) // 2
            shrunk = current.compress(step, method, site, width)[0].network
            val_acc = validation_accuracy(bench, shrunk, labels)
            params = sum(p.numel() for p in shrunk.parameters())
            accepted = val_acc >= target
            result.candidates.append(Candidate(name, width, params, val_acc, accepted))
            if accepted:
                best, high = (width, shrunk), width - 1
            else:
                low = width + 1
        if best is not None:
            result.widths[name], result.network = best
            current = Workbench(result.network, bench.datamodule, bench.settings)
    result.seconds = time.perf_counter() - start
    if result.network is bench.network:
        result.note = (
            f"no site could be cut within compress.max_drop={max_drop}: the original model is kept"
        )
    return result


def sites_of(network: SentimentLSTM) -> list[Site]:
    return all_sites(ModelShape.of(network))


def validation_accuracy(bench: Workbench, network: SentimentLSTM, labels: Tensor) -> float:
    correct = accuracy(bench.logits(network, "validation"), labels)
    return correct.float().mean().item()


def search_metrics(bench: Workbench, result: SearchResult) -> dict[str, float | int | str]:
    """The chosen model against the baseline (the test split, read now), its widths, and what
    the search cost."""
    logits = {split: bench.logits(result.network, split) for split in ("validation", "test")}
    metrics, _ = bench.against_baseline(logits)
    metrics |= {
        schema.COMPRESSED_PARAMS: sum(p.numel() for p in result.network.parameters()),
        schema.COMPRESSED_WIDTHS: ",".join(f"{k}={v}" for k, v in result.widths.items()),
        schema.SEARCH_CANDIDATES: len(result.candidates),
        schema.SEARCH_SECONDS: result.seconds,
    }
    metrics |= {f"{schema.COMPRESSED_WIDTH}/{k}": v for k, v in result.widths.items()}
    if result.note:
        metrics[schema.SEARCH_NOTE] = result.note
    return metrics


def scratch_config(cfg: DictConfig, widths: dict[str, int]) -> DictConfig:
    """The run's config with the model's widths set to ``widths``: the same data, epochs and
    seed, a small model trained from scratch in ``<run>/scratch``."""
    scratch = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    lstm = [v for k, v in widths.items() if k.startswith("lstm")]
    heads = [v for k, v in widths.items() if k.startswith("head.")]
    scratch.model.embedding_dim = widths["embedding"]
    scratch.model.lstm.hidden_size = lstm[-1]
    if len(set(lstm)) > 1:
        scratch.model.lstm.widths = lstm  # layers of their own widths
    scratch.model.head_widths = heads
    scratch.output_dir = f"{cfg.output_dir}/scratch"
    scratch.ckpt_path = scratch.resume = None
    for node in scratch.callbacks.values():  # every file of the anchor in its own folder
        if "dirpath" in node:
            node.dirpath = f"{scratch.output_dir}/checkpoints"
    scratch.trainer.default_root_dir = scratch.output_dir
    return scratch


def train_from_scratch(cfg: DictConfig, widths: dict[str, int]) -> dict[str, float]:
    """The honest anchor: the chosen widths trained from scratch with the run's data, epochs and
    seed (cached like any baseline), scored like the baseline."""
    scratch = scratch_config(cfg, widths)
    L.seed_everything(scratch.seed, workers=True)
    datamodule = instantiate(scratch.data)
    callbacks = [instantiate(c) for c in scratch.callbacks.values()]
    trainer = instantiate(
        scratch.trainer,
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        plugins=[AtomicCheckpointIO()],
    )
    baseline = obtain_baseline(scratch, datamodule, trainer)
    bench = Workbench(baseline.model.network, datamodule, AnalysisSettings.of(scratch))
    scores = bench.baseline_scores()
    return {
        schema.SCRATCH_VAL_ACC: scores[schema.BASELINE_VAL_ACC],
        schema.SCRATCH_TEST_ACC: scores[schema.BASELINE_TEST_ACC],
        schema.SCRATCH_PARAMS: scores[schema.BASELINE_PARAMS],
        schema.SCRATCH_TRAIN_SECONDS: baseline.train_seconds,
    }


def shrink_whole_model(
    cfg: DictConfig,
    bench: Workbench,
    model: SentimentClassifier,
    loggers: list,
    step: CompressStep,
    method: MergeMethod,
) -> dict[str, float | int | str]:
    """A run's ``compress=whole_model`` with the merge of :func:`merge_method`: the search, its
    measures, its front (front.png, also in W&B), the chosen model as ``compressed.ckpt``, and
    the anchor trained from scratch."""
    result = search(bench, step, method, cfg.compress.max_drop)
    metrics = search_metrics(bench, result)
    if cfg.compress.scratch and result.note == "":  # before any file: a Ctrl-C leaves none
        metrics |= train_from_scratch(cfg, result.widths)
    scores = bench.baseline_scores()
    output = Path(cfg.output_dir)
    frame = pd.DataFrame([vars(c) for c in result.candidates])
    frame.to_csv(output / "search.csv", index=False)
    if not frame.empty:
        figure = front_figure(
            frame,
            scores[schema.BASELINE_PARAMS],
            scores[schema.BASELINE_VAL_ACC],
            scores[schema.BASELINE_VAL_ACC] - cfg.compress.max_drop,
        )
        figure.savefig(output / "front.png", dpi=110)
        plt.close(figure)
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("search/front", images=[str(output / "front.png")])
    if cfg.save_compressed:
        record = {"method": "whole_model", "widths": result.widths}
        save_compressed(model, result.network, output / "compressed.ckpt", record)
    return metrics
