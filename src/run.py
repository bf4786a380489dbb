"""Entry point: train (or load) the baseline, look inside one site, shrink it, report.

python -m src.run                                   # baseline + analysis of head.2
python -m src.run compress=weight_sum target_width=4
python -m src.run -m compress=freeze_retrain,cluster_init,weight_sum target_width=1,2,4,8

One job is one cell of the :class:`~src.workbench.Workbench` built on its baseline, plus the files
it leaves in its folder.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import hydra
import numpy as np
import wandb
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src import schema
from src.artefacts import (
    point_latest,
    run_loggers,
    single_run,
    wanted,
    write_search,
    write_site_analysis,
    write_word_groups,
)
from src.baseline import check_resume
from src.encoder_run import is_encoder
from src.errors import SettingError, reported
from src.loading import READING
from src.model import save_compressed
from src.network import check_shape
from src.pipeline import Opened, open_workbench, shrink_whole
from src.report import summary_table, write_metrics
from src.sites import ModelShape, Site, check_target_width, resolve_site
from src.threads import use_job_cpu
from src.whole_model import check_budget
from src.workbench import (
    Compression,
    Evaluation,
    Workbench,
    analysis_device,
    check_step,
    run_site,
)

log = logging.getLogger(__name__)

CONFIG = Path(__file__).resolve().parents[1] / "conf" / "config.yaml"  # the settings a run has


@dataclass(frozen=True)
class Plan:
    """A job, every setting checked before any data, W&B run or training."""

    cfg: DictConfig  # the config with the site named as sites name it (head.2, not -1)
    site: Site  # the site it analyses (and shrinks, for a one-site method)
    width: int  # its target width, as checked against the site
    compression: Compression


def check_keys(cfg: DictConfig) -> None:
    """Refuse a top-level key that no run has: Hydra lets a typo in with a ``+``
    (``+compres=weight_sum``), and the run would go on without what it asked for."""
    primary = cast(DictConfig, OmegaConf.load(CONFIG))  # the primary config: a mapping
    groups = {next(iter(entry)) for entry in primary.defaults if isinstance(entry, Mapping)}
    known = cast(set[str], {key for key in primary if key != "defaults"} | groups)  # its keys
    for key in sorted(set(cfg) - known):
        near = difflib.get_close_matches(str(key), known, n=1)
        hint = f": did you mean {near[0]}?" if near else f" (they are those of {CONFIG.name})"
        raise SettingError(f"{key} is not a setting of src.run{hint}")


def plan(cfg: DictConfig) -> Plan:
    """The job ``cfg`` asks for, refused in one line naming the setting that cannot work; the
    corpus is read and checked too, so a refusal leaves no run folder and no W&B run."""
    check_shape(cfg.model.head_widths, cfg.model.lstm.hidden_size, cfg.model.embedding_dim)
    compression = Compression.of(cfg.compress)
    site, width = run_site(cfg)
    if cfg.compress.scope == "model":
        check_budget(cfg.compress)
    elif compression.method is not None:
        check_step(compression.step, compression.method, site)
    check_resume(cfg)
    epochs = cfg.trainer.max_epochs
    if not cfg.ckpt_path and epochs is not None and (epochs == 0 or epochs < -1):
        raise SettingError(
            f"trainer.max_epochs={epochs} trains nothing: give at least 1 (-1: until early "
            "stopping), or ckpt_path=... to analyse a trained model"
        )
    analysis_device(cfg.analysis.device)  # a GPU the machine lacks: now, not after training
    instantiate(cfg.data).read()  # its settings checked as it is built, then every split read
    job = cast(DictConfig, OmegaConf.merge(cfg, {"layer": site.name, "target_width": width}))
    return Plan(job, site, width, compression)


def baseline_metrics(plan: Plan, opened: Opened, threads: int) -> dict:
    """What every job reports: its settings, and the model it analyses."""
    cfg, baseline = plan.cfg, opened.baseline
    metrics = {
        schema.DATA: cfg.data.name,
        schema.SEED: cfg.seed,
        schema.METHOD: cfg.compress.name,
        schema.LAYER: plan.site.name,
        schema.LAYER_WIDTH: plan.site.width,
        schema.THREADS: threads,
        **opened.bench.baseline_scores(),
        schema.BASELINE_TRAINED_NOW: int(baseline.trained_now),
        schema.CHECKPOINT: "baseline" if baseline.compressed is None else "compressed",
    }
    if baseline.compressed is None:
        metrics[schema.BASELINE_TRAIN_SECONDS] = baseline.train_seconds
    else:  # what is analysed is a shrunk model: say how it was shrunk, not a train time
        metrics[schema.CHECKPOINT_COMPRESSED_BY] = json.dumps(baseline.compressed)
    if baseline.thread_changes is not None:
        metrics[schema.BASELINE_THREAD_CHANGES] = baseline.thread_changes
    return metrics


def shrink(plan: Plan, opened: Opened, metrics: dict, loggers: list) -> Evaluation | None:
    """The job's compression into ``metrics`` and its files: the whole model to a budget, or
    one site to its width; the site's evaluation (None when no one site was shrunk)."""
    cfg, bench, output = plan.cfg, opened.bench, Path(plan.cfg.output_dir)
    step, method = plan.compression.step, plan.compression.method
    if cfg.compress.scope == "model":
        found, result = shrink_whole(cfg, cfg.compress, bench)
        metrics |= found
        write_search(output, result, bench.baseline_scores(), cfg.compress.max_drop, loggers)
        record = {"method": cfg.compress.name, "widths": result.widths}
        shrunk, evaluation = result.network, None
    elif method is not None:
        evaluation = bench.evaluate(step, method, plan.site, plan.width)
        metrics |= {schema.TARGET_WIDTH: plan.width, **evaluation.metrics}
        if evaluation.features is not None:  # the units at the last word (not at the words)
            np.save(output / schema.ACTIVATIONS_FILE, evaluation.features.numpy())
        shrunk, record = evaluation.network, {k: metrics[k] for k in schema.JOB if k in metrics}
    else:
        return None
    if cfg.save_compressed:
        data = opened.bench.datamodule  # how the test split was read: src.predict reads so too
        reading = {key: getattr(data, key) for key in READING}
        save_compressed(opened.baseline.model, shrunk, output / "compressed.ckpt", record, reading)
    return evaluation


def on_network(job: Plan, opened: Opened) -> Plan:
    """The job with its site as the network has it: the words site's rows are known only once
    the tokenizer is trained, so its width is checked again now."""
    site = resolve_site(job.site.name, ModelShape.of(opened.bench.network))
    check_target_width(job.width, site)
    return replace(job, site=site)


def write_analysis(
    job: Plan, bench: Workbench, evaluation: Evaluation | None, metrics: dict, loggers: list
) -> dict:
    """The site's analysis files (``<run>/analysis``): its clusters, matrices, figures and viewer;
    at the words site, the words each row holds."""
    folder = Path(job.cfg.output_dir) / "analysis"
    if not job.site.traced:
        viewer = wanted(job.cfg.analysis.viewer)
        return write_word_groups(folder, bench, job.site, evaluation, loggers, viewer)
    info = {k: str(metrics[k]) for k in schema.JOB if k in metrics}
    return write_site_analysis(
        folder,
        bench,
        job.site,
        bench.analyse(job.site, job.width),
        job.cfg.analysis.sentences,
        evaluation,
        loggers,
        info,
        figures=wanted(job.cfg.analysis.figures),
        viewer=wanted(job.cfg.analysis.viewer),
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@reported
def main(cfg: DictConfig) -> dict:
    check_keys(cfg)
    if is_encoder(cfg):  # model=minilm: a pretrained encoder's MLP sites (src.encoder_run)
        from src.encoder_run import main as encoder_main

        return encoder_main(cfg)
    job = plan(cfg)
    cfg = job.cfg
    threads = use_job_cpu(cfg.threads)
    output_dir = Path(cfg.output_dir)
    loggers = run_loggers(cfg.logger)
    for logger in loggers:
        logger.log_hyperparams(cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True)))
    exit_code = 1  # a failure or Ctrl-C marks the W&B run as failed, and still closes it
    try:
        opened = open_workbench(cfg, loggers)
        job = on_network(job, opened)
        # the checkpoint's own JSON: Tokenizer.save keeps one word per id, not merged words
        tokenizer_json = opened.baseline.model.tokenizer_json
        assert tokenizer_json is not None  # a model without one is refused as it is opened
        (output_dir / "tokenizer.json").write_text(tokenizer_json)
        metrics = baseline_metrics(job, opened, threads)
        evaluation = shrink(job, opened, metrics, loggers)
        metrics |= write_analysis(job, opened.bench, evaluation, metrics, loggers)
        metrics[schema.COMPUTED] = ",".join(opened.bench.store.computed)
        write_metrics(output_dir, metrics)
        for logger in loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if not isinstance(v, str)})
        print(summary_table(metrics, list(schema.CONSOLE)))
        if single_run():
            point_latest(output_dir)
        exit_code = 0
        return metrics
    finally:
        wandb.finish(exit_code=exit_code)


if __name__ == "__main__":
    main()
