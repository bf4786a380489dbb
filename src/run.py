"""Entry point: train (or load) the baseline, look inside one site, shrink it, report.

python -m src.run                                   # baseline + analysis of head.2
python -m src.run compress=weight_sum target_width=4
python -m src.run -m compress=freeze_retrain,cluster_init,weight_sum target_width=1,2,4,8

One job is one cell of the :class:`~src.workbench.Workbench` built on its baseline, plus the files
it leaves in its folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import wandb
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src import schema
from src.artefacts import point_latest, write_site_analysis
from src.baseline import check_resume, obtain_baseline
from src.callbacks import progress_bar
from src.checkpoints import AtomicCheckpointIO
from src.data import locate_corpus
from src.errors import reported
from src.network import check_shape
from src.report import summary_table, write_metrics
from src.threads import use_job_cpu
from src.whole_model import merge_method, shrink_whole_model
from src.workbench import (
    AnalysisSettings,
    CompressStep,
    Workbench,
    build_method,
    check_step,
    run_site,
    save_compressed,
    shared_store,
)

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@reported
def main(cfg: DictConfig) -> dict:
    # Every setting is checked before any data, W&B run or training.
    check_shape(cfg.model.head_widths, cfg.model.lstm.hidden_size, cfg.model.embedding_dim)
    threads = use_job_cpu(cfg.threads)
    settings = AnalysisSettings.of(cfg)
    step, method = CompressStep.of(cfg.compress), build_method(cfg.compress)
    whole = cfg.compress.name == "whole_model"
    if whole:
        step, method = merge_method(cfg.compress)
    site = run_site(cfg)
    if method is not None:
        check_step(step, method, site)
    cfg.layer = site.name  # one name everywhere: W&B tags and logged settings say head.2, not -1
    check_resume(cfg)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.output_dir)
    datamodule = instantiate(cfg.data)
    locate_corpus(datamodule.name, datamodule.root)  # a data.root without the corpus: now
    loggers = [instantiate(c) for c in cfg.logger.values()]
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    bar = progress_bar(cfg.trainer.enable_progress_bar)
    trainer = instantiate(
        cfg.trainer,
        logger=loggers,
        callbacks=callbacks,
        enable_progress_bar=bar,
        plugins=[AtomicCheckpointIO()],  # not in the config: it would change the cache key
    )
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    exit_code = 1  # a failure or Ctrl-C marks the W&B run as failed, and still closes it
    try:
        baseline = obtain_baseline(cfg, datamodule, trainer)
        datamodule.tokenizer.save(str(output_dir / "tokenizer.json"))
        store = shared_store(cfg.cache_dir, baseline.checkpoint, datamodule)
        bench = Workbench(baseline.model.network, datamodule, settings, store, baseline.checkpoint)
        metrics = {
            schema.DATA: cfg.data.name,
            schema.SEED: cfg.seed,
            schema.METHOD: cfg.compress.name,
            schema.LAYER: site.name,
            schema.LAYER_WIDTH: site.width,
            schema.THREADS: threads,
            **bench.baseline_scores(),
            schema.BASELINE_TRAINED_NOW: int(baseline.trained_now),
            schema.CHECKPOINT: "baseline" if baseline.compressed is None else "compressed",
        }
        if baseline.compressed is None:
            metrics[schema.BASELINE_TRAIN_SECONDS] = baseline.train_seconds
        else:  # what is analysed is a shrunk model: say how it was shrunk, not a train time
            metrics[schema.CHECKPOINT_COMPRESSED_BY] = json.dumps(baseline.compressed)
        evaluation = None
        if whole:
            metrics |= shrink_whole_model(cfg, bench, baseline.model, loggers, step, method)
        elif method is not None:
            evaluation = bench.evaluate(step, method, site, cfg.target_width)
            metrics |= {schema.TARGET_WIDTH: cfg.target_width, **evaluation.metrics}
            np.save(output_dir / schema.ACTIVATIONS_FILE, evaluation.features.numpy())
            if cfg.save_compressed:
                record = {k: metrics[k] for k in schema.JOB if k in metrics}
                save_compressed(
                    baseline.model, evaluation.network, output_dir / "compressed.ckpt", record
                )
        analysis = bench.analyse(site, cfg.target_width)
        info = {k: str(metrics[k]) for k in schema.JOB if k in metrics}
        metrics |= write_site_analysis(
            output_dir / "analysis",
            bench,
            site,
            analysis,
            cfg.analysis.sentences,
            evaluation,
            loggers,
            info,
            figures=cfg.analysis.figures,
        )
        metrics[schema.COMPUTED] = ",".join(bench.store.computed)
        write_metrics(output_dir, metrics)
        for logger in loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if not isinstance(v, str)})
        print(summary_table(metrics, list(schema.CONSOLE)))
        if HydraConfig.get().mode == RunMode.RUN:
            point_latest(output_dir)
        exit_code = 0
        return metrics
    finally:
        wandb.finish(exit_code=exit_code)


if __name__ == "__main__":
    main()
