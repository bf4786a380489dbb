"""Train the baseline once, cache it, and load it back: a sweep of compressions never retrains.

A cache entry is a folder named by a hash of every setting that changes the trained weights
(data, model, trainer, early stopping, seed). It is written under a temporary name and renamed
into place, so a half-written entry is never read, and a file lock makes parallel jobs that need
the same baseline train it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from filelock import FileLock
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer

from src.data import SentimentDataModule
from src.model import SentimentClassifier

log = logging.getLogger(__name__)

# Settings that do not change the trained weights, left out of the cache key.
NOT_IN_KEY = {
    "data": ("root", "num_workers"),
    "trainer": (
        "default_root_dir",
        "enable_progress_bar",
        "enable_model_summary",
        "log_every_n_steps",
    ),
}
CHECKPOINT, METRICS = "model.ckpt", "baseline.json"


class CheckpointError(ValueError):
    """A checkpoint that does not load; the message names the setting or file to change."""


def cache_key(cfg: DictConfig) -> str:
    """Hash of the settings that decide the baseline's weights."""
    parts = {
        "seed": cfg.seed,
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "early_stopping": OmegaConf.to_container(
            cfg.callbacks.get("early_stopping", {}), resolve=True
        ),
    }
    for group, dropped in NOT_IN_KEY.items():
        settings = OmegaConf.to_container(cfg[group], resolve=True)
        parts[group] = {k: v for k, v in settings.items() if k not in dropped}
    blob = json.dumps(parts, sort_keys=True, default=str)
    return f"{cfg.data.name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def load_checkpoint(path: str | Path, setting: str = "ckpt_path") -> SentimentClassifier:
    """Load a trained classifier; a file that does not load gets a message naming ``setting``."""
    try:
        return SentimentClassifier.load_from_checkpoint(
            str(path), map_location="cpu", weights_only=False
        )
    except Exception as error:  # torch raises many kinds for a damaged or foreign file
        raise CheckpointError(
            f"{setting}={path} does not load as a trained model: {error}"
        ) from error


@dataclass
class Baseline:
    model: SentimentClassifier
    train_seconds: float
    trained_now: bool  # False when it came from the cache or from ckpt_path
    checkpoint: Path


def fit_baseline(
    model: SentimentClassifier,
    datamodule: L.LightningDataModule,
    trainer: L.Trainer,
    resume: str | Path | None = None,
) -> Baseline:
    """Fit (continuing from the ``resume`` checkpoint if given), then reload the best checkpoint
    by validation accuracy."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        # OnExceptionCheckpoint makes fit look for a "last" checkpoint to resume from (there is
        # one only after a Ctrl-C in the same run folder) and warn about it on every fresh run.
        warnings.filterwarnings("ignore", message=r".*ckpt_path.*")
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
    seconds = time.perf_counter() - start
    best = Path(trainer.checkpoint_callback.best_model_path)
    return Baseline(load_checkpoint(best, "the best checkpoint"), seconds, True, best)


class BaselineCache:
    """Folders of trained baselines under ``root``, one per :func:`cache_key`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def load(self, key: str) -> Baseline | None:
        """The cached baseline, or None; a damaged entry is removed so that it gets rebuilt."""
        entry = self.root / key
        if not entry.is_dir():
            return None
        try:
            model = load_checkpoint(entry / CHECKPOINT, f"the cache entry {entry}")
            seconds = json.loads((entry / METRICS).read_text())["train_seconds"]
        except (CheckpointError, OSError, ValueError, KeyError) as error:
            log.warning("baseline cache entry %s is damaged (%s): rebuilding it", entry, error)
            shutil.rmtree(entry, ignore_errors=True)
            return None
        log.info("loaded the baseline from the cache: %s", entry)
        return Baseline(model, seconds, False, entry / CHECKPOINT)

    def store(self, key: str, baseline: Baseline, config_yaml: str) -> None:
        """Write the entry under a temporary name, then rename it into place in one step."""
        entry = self.root / key
        tmp = self.root / f".{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copy2(baseline.checkpoint, tmp / CHECKPOINT)
        (tmp / METRICS).write_text(json.dumps({"train_seconds": baseline.train_seconds}))
        (tmp / "config.yaml").write_text(config_yaml)
        shutil.rmtree(entry, ignore_errors=True)
        tmp.rename(entry)

    def lock(self, key: str) -> FileLock:
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / f"{key}.lock"))


def obtain_baseline(
    cfg: DictConfig, datamodule: SentimentDataModule, trainer: L.Trainer
) -> Baseline:
    """The baseline from ``ckpt_path``, else from the cache, else trained now (and cached).

    The datamodule ends up set up with the baseline's own tokenizer.
    """
    check_resume(cfg)
    if cfg.ckpt_path:
        baseline = Baseline(load_checkpoint(cfg.ckpt_path), 0.0, False, Path(cfg.ckpt_path))
        widths = list(baseline.model.hparams["head_widths"])
        if widths != list(cfg.model.head_widths):
            raise CheckpointError(
                f"ckpt_path={cfg.ckpt_path} has head widths {widths}: set "
                f"model.head_widths={widths} (the analysis checks layer and target_width on them)"
            )
    elif cfg.cache_dir:
        cache, key = BaselineCache(cfg.cache_dir), cache_key(cfg)
        with cache.lock(key):
            baseline = cache.load(key)
            if baseline is None:
                baseline = train_baseline(cfg, datamodule, trainer)
                cache.store(key, baseline, OmegaConf.to_yaml(cfg, resolve=True))
    else:
        baseline = train_baseline(cfg, datamodule, trainer)
    if datamodule.tokenizer is None:
        if baseline.model.tokenizer_json is None:
            raise CheckpointError(f"{baseline.checkpoint} holds no tokenizer: retrain it")
        datamodule.tokenizer = Tokenizer.from_str(baseline.model.tokenizer_json)
    datamodule.setup()
    return baseline


def check_resume(cfg: DictConfig) -> None:
    """Refuse a ``resume`` that cannot be honoured before any data is read."""
    resume = cfg.get("resume")
    if not resume:
        return
    if cfg.ckpt_path:
        raise CheckpointError(
            f"resume={resume} continues a training, ckpt_path={cfg.ckpt_path} skips training: "
            "set only one of them"
        )
    if not Path(resume).is_file():
        raise CheckpointError(
            f"resume={resume} is not a file: give an interrupted run's "
            "<run>/checkpoints/interrupted.ckpt (or last.ckpt)"
        )


def train_baseline(
    cfg: DictConfig, datamodule: SentimentDataModule, trainer: L.Trainer
) -> Baseline:
    datamodule.setup()
    model = instantiate(cfg.model, vocab_size=datamodule.tokenizer.get_vocab_size())
    model.tokenizer_json = datamodule.tokenizer.to_str()
    if cfg.get("resume"):
        log.info("continuing the training from resume=%s", cfg.resume)
    return fit_baseline(model, datamodule, trainer, cfg.get("resume"))


def baseline_metrics(
    baseline: Baseline, datamodule: SentimentDataModule, trainer: L.Trainer
) -> dict[str, float]:
    """Validation and test scores of the baseline, under the ``baseline/`` keys of metrics.json."""
    val = trainer.validate(baseline.model, datamodule=datamodule, verbose=False)[0]
    test = trainer.test(baseline.model, datamodule=datamodule, verbose=False)[0]
    return {
        "baseline/val_acc": val["val/acc"],
        "baseline/test_acc": test["test/acc"],
        "baseline/test_f1": test["test/f1"],
        "baseline/test_auroc": test["test/auroc"],
        "baseline/params": sum(p.numel() for p in baseline.model.network.parameters()),
        "baseline/train_seconds": baseline.train_seconds,
        "baseline/trained_now": int(baseline.trained_now),  # 0: from the cache or ckpt_path
    }
