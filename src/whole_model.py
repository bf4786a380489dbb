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

from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from src import schema
from src.compress.base import MergeMethod
from src.network import SentimentLSTM
from src.sites import ModelShape, Site, all_sites
from src.workbench import (
    COMPRESS_DIR,
    CompressionConfigError,
    CompressStep,
    Workbench,
    accuracy,
    build_method,
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
    """Refuse a budget, merge method or step that cannot work, before any work."""
    if compress.repair or compress.epochs:
        raise CompressionConfigError(
            "compress=whole_model merges every site with no repair and no training: drop "
            "compress.repair and compress.epochs"
        )
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
    return CompressStep.of(compress), method


def search(
    bench: Workbench, step: CompressStep, method: MergeMethod, max_drop: float
) -> SearchResult:
    """The cascade of the module docstring, from ``bench``'s network."""
    start = time.perf_counter()
    target = bench.baseline_scores()[schema.BASELINE_VAL_ACC] - max_drop
    labels = bench.last_states("validation").labels  # every cut model reads the same sentences
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


def scratch_config(cfg: DictConfig, shape: ModelShape) -> DictConfig:
    """The run's config with the model's widths set to ``shape``'s: the same data, epochs and
    seed, a small model trained from scratch in ``<run>/scratch``."""
    scratch = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    scratch.model = OmegaConf.merge(scratch.model, shape.model_settings())
    scratch.output_dir = f"{cfg.output_dir}/scratch"
    scratch.ckpt_path = scratch.resume = None
    for node in scratch.callbacks.values():  # every file of the anchor in its own folder
        if "dirpath" in node:
            node.dirpath = f"{scratch.output_dir}/checkpoints"
    scratch.trainer.default_root_dir = scratch.output_dir
    return scratch
