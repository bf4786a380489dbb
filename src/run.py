"""Entry point: train (or load) the baseline, look inside one layer, shrink it, report.

python -m src.run                                   # baseline + analysis
python -m src.run compress=weight_sum target_width=4
python -m src.run -m compress=freeze_retrain,cluster_init,weight_sum target_width=1,2,4,8
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
import wandb
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.baseline import baseline_metrics, obtain_baseline
from src.callbacks import find_analysis
from src.compress.pipeline import compress_and_evaluate
from src.model import check_shape
from src.report import summary_table, write_metrics
from src.threads import use_job_threads

log = logging.getLogger(__name__)

SUMMARY_KEYS = [
    "data",
    "seed",
    "method",
    "layer",
    "target_width",
    "baseline/test_acc",
    "compressed/test_acc",
    "delta_acc",
    "compressed/agreement",
    "compressed/logit_rel_error",
    "baseline/params",
    "compressed/params",
    "baseline/train_seconds",
    "compress_seconds",
]


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    check_shape(cfg.model.head_widths, cfg.model.lstm.hidden_size, cfg.model.embedding_dim)
    threads = use_job_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.output_dir)
    datamodule = instantiate(cfg.data)
    loggers = [instantiate(c) for c in cfg.logger.values()]
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    trainer = instantiate(cfg.trainer, logger=loggers, callbacks=callbacks)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    exit_code = 1  # a failure or Ctrl-C marks the W&B run as failed, and still closes it
    try:
        baseline = obtain_baseline(cfg, datamodule, trainer)
        datamodule.tokenizer.save(str(output_dir / "tokenizer.json"))
        metrics = {"data": cfg.data.name, "seed": cfg.seed, "method": cfg.compress.name}
        metrics["threads"] = threads
        metrics |= baseline_metrics(baseline, datamodule, trainer)
        if cfg.compress.name != "none":
            metrics |= compress_and_evaluate(
                cfg, baseline.model, find_analysis(callbacks), datamodule
            )
        write_metrics(output_dir, metrics)
        for logger in loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if not isinstance(v, str)})
        print(summary_table(metrics, SUMMARY_KEYS))
        exit_code = 0
        return metrics
    finally:
        wandb.finish(exit_code=exit_code)


if __name__ == "__main__":
    main()
