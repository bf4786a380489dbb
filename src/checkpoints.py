"""The checkpoints a training writes, made fit to resume from.

- :class:`RunCheckpoint`: ``best.ckpt`` by the monitored score and ``last.ckpt`` after *every*
  epoch (Lightning 2.6's ``save_last=True`` rewrites it only when the score improved), and the
  best score and file carried into a new run folder when a training is resumed there.
- :class:`InterruptedCheckpoint`: ``interrupted.ckpt`` only when a fit stopped after it trained,
  never for an error before training or while testing.
- :class:`TrainingSettings`: the settings that decide the weights, written into every checkpoint
  so that a resume can be checked against them before anything is loaded.
- :class:`AtomicCheckpointIO`: every checkpoint file written whole or not at all.
"""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from src.errors import write_atomically

log = logging.getLogger(__name__)

SETTINGS_KEY = "training_settings"  # the checkpoint key TrainingSettings writes


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is the end of the last finished epoch, and whose
    best survives a resume into another folder."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        due = self._saves_now(trainer, at_train_epoch_end=False)
        super().on_validation_end(trainer, pl_module)
        if due:
            self._save_last_if_missed(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        due = self._saves_now(trainer, at_train_epoch_end=True)
        super().on_train_epoch_end(trainer, pl_module)
        if due:
            self._save_last_if_missed(trainer)

    def _saves_now(self, trainer: L.Trainer, at_train_epoch_end: bool) -> bool:
        """Whether the parent's hook considers saving at this point (asked before it runs)."""
        on_epoch_end = self._should_save_on_train_epoch_end(trainer)
        return not self._should_skip_saving_checkpoint(trainer) and (
            on_epoch_end == at_train_epoch_end
        )

    def _save_last_if_missed(self, trainer: L.Trainer) -> None:
        """The parent writes ``last`` only together with a new best; write it when it did not."""
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resuming into a new folder: copy the best files here and keep their scores, so the
        best is chosen over every epoch, not only the resumed ones (the parent forgets them)."""
        previous = state_dict.get("dirpath")
        if previous is None or self.dirpath is None or _same(previous, self.dirpath):
            super().load_state_dict(state_dict)
            return
        kept: dict[str, Any] = {}
        for path, score in state_dict.get("best_k_models", {}).items():
            source = Path(path)
            if source.is_file():
                target = Path(self.dirpath) / source.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
                kept[str(target)] = score
        missing = len(state_dict.get("best_k_models", {})) - len(kept)
        if missing:
            log.warning(
                "%d best checkpoint(s) of the resumed training are gone from %s: the best is "
                "chosen among what is left and the epochs from here on",
                missing,
                previous,
            )
        self.best_model_path, self.best_model_score = "", None
        if not kept:
            return
        best, worst = (max, min) if self.mode == "max" else (min, max)
        self.best_k_models = kept
        self.best_model_path = best(kept, key=kept.get)
        self.best_model_score = kept[self.best_model_path]
        self.kth_best_model_path = worst(kept, key=kept.get)
        self.kth_value = kept[self.kth_best_model_path]
        self.current_score = state_dict.get("current_score")
        log.info(
            "resumed with the best so far (%s=%.4f), copied to %s",
            self.monitor,
            float(self.best_model_score),
            self.best_model_path,
        )


def _same(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


class InterruptedCheckpoint(OnExceptionCheckpoint):
    """``interrupted.ckpt`` only for a fit stopped after at least one training step of its own:
    an error before training (a bad setting) or after it (testing) leaves nothing to resume."""

    def __init__(self, dirpath: str | Path, filename: str = "interrupted") -> None:
        super().__init__(dirpath, filename)
        self._first_step: int | None = None  # global step when this fit began training

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first_step = trainer.global_step

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        trained = self._first_step is not None and trainer.global_step > self._first_step
        if trainer.state.fn == TrainerFn.FITTING and trained:
            # the full state, said outright: the parent leaves weights_only unset, and Lightning
            # then logs that it defaulted it
            trainer.save_checkpoint(self.ckpt_path, weights_only=False)
            log.info("training stopped: resume=%s goes on from where it stopped", self.ckpt_path)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        self._first_step = None


class TrainingSettings(L.Callback):
    """Writes ``settings`` (what decides the weights) into every checkpoint the trainer saves."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[SETTINGS_KEY] = self.settings


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writing, through a temporary file renamed into place: a full disk
    leaves the previous ``best.ckpt`` (or none), never a truncated one that a resume, the cache
    or ``src.predict`` would read, and the failure is one line naming the file."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_atomically(path, buffer.getvalue(), "hydra.run.dir")
