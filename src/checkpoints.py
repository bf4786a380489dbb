"""The checkpoints a training writes, made fit to resume from.

- :class:`RunCheckpoint`: ``best.ckpt`` by the monitored score and ``last.ckpt`` after *every*
  epoch (Lightning 2.6's ``save_last=True`` rewrites it only when the score improved), and the
  best score and file carried into a new run folder when a training is resumed there.
- :class:`InterruptedCheckpoint`: ``interrupted.ckpt`` only when a fit stopped after it trained,
  never for an error before training or while testing.
- :class:`TrainingSettings`: the settings that decide the weights, written into every checkpoint
  so that a resume can be checked against them before anything is loaded.
- :class:`RandomState`: the random generators and the training shuffle's place, written into
  every checkpoint and put back on resume, so a resumed training is the uninterrupted one.
- :class:`AtomicCheckpointIO`: every checkpoint file written whole or not at all.
"""

from __future__ import annotations

import io
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from src.errors import write_atomically
from src.loading import SETTINGS_KEY

log = logging.getLogger(__name__)

RANDOM_KEY = "random_state"  # the checkpoint key RandomState writes


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

    def _update_best_and_save(self, current: torch.Tensor, trainer: L.Trainer, *args: Any) -> None:
        """An interruption while the new best is written leaves the record of the old best (the
        interrupted.ckpt written next holds it), never one naming a file that was not written."""
        fields = ("best_k_models", "best_model_path", "best_model_score", "kth_best_model_path")
        before = {name: getattr(self, name) for name in (*fields, "kth_value", "current_score")}
        before["best_k_models"] = dict(self.best_k_models)
        try:
            super()._update_best_and_save(current, trainer, *args)
        except BaseException:
            for name, value in before.items():
                setattr(self, name, value)
            raise

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        """Written under a temporary name and renamed: an interruption never leaves a half-written
        best.ckpt or last.ckpt, and the previous one stays whole until the new one is."""
        partial = f"{filepath}.partial"
        super()._save_checkpoint(trainer, partial)
        os.replace(partial, filepath)
        self._last_checkpoint_saved = filepath

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
        self.best_model_path = best(kept, key=kept.__getitem__)
        self.best_model_score = kept[self.best_model_path]
        self.kth_best_model_path = worst(kept, key=kept.__getitem__)
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


class InterruptedCheckpoint(L.Callback):
    """``interrupted.ckpt`` only for a fit stopped after at least one training step of its own:
    an error before training (a bad setting) or after it (testing) leaves nothing to resume.

    Not an ``OnExceptionCheckpoint``: with one of those, Lightning turns every ``fit`` without a
    ``ckpt_path`` into ``ckpt_path="last"`` and silently goes on from whatever last checkpoint
    the folder holds, another run's included (a study's anchor, trained again in the same
    folder, took an older anchor's weights of another shape). A fit here goes on only from an
    explicit ``resume=``."""

    def __init__(self, dirpath: str | Path, filename: str = "interrupted") -> None:
        self.dirpath, self.filename = Path(dirpath), filename
        self._first_step: int | None = None  # global step when this fit began training

    @property
    def ckpt_path(self) -> str:
        return str(self.dirpath / f"{self.filename}.ckpt")

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
        """A run that ends normally leaves no interrupted.ckpt behind (an older one included):
        Lightning tears callbacks down only then, not after an exception."""
        trainer.strategy.remove_checkpoint(self.ckpt_path)
        self._first_step = None


class TrainingSettings(L.Callback):
    """Writes ``settings`` (what decides the weights) into every checkpoint the trainer saves."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[SETTINGS_KEY] = self.settings


def generator_states() -> dict[str, Any]:
    """torch's (CPU and CUDA), numpy's and Python's global generators, as tensors and plain
    data (a checkpoint is loaded with ``weights_only=True``)."""
    # the global generator is MT19937, whose legacy state is this tuple, never a dict
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    kind, keys, position, has_gauss, gauss = legacy
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "python": random.getstate(),
    }


def set_generator_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))


class RandomState(L.Callback):
    """Writes the random generators, and the training shuffle's seed and place, into every
    checkpoint and puts them back on resume: the resumed training draws the batches and dropout
    masks the uninterrupted one drew, so its weights are the same.

    Saved at an epoch's end, the generators are put back at once: the next epoch's loader draws
    its shuffle from them. Saved inside an epoch (Ctrl-C), they are the generators as the
    unfinished batch began, put back right before that batch is trained again; the sampler goes
    on with the epoch's own shuffle past the batches already trained (through the datamodule's
    ``shuffle_start``, which the next training loader's sampler starts from).
    """

    def __init__(self) -> None:
        self._batch_start: tuple[int, dict[str, Any]] | None = None  # (batches done, generators)
        self._pending: dict[str, Any] | None = None  # generators to put back before next step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is not None:
            set_generator_states(self._pending)
            self._pending = None
        self._batch_start = (_batches_done(trainer), generator_states())

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._batch_start = None

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        done = _batches_done(trainer)
        state: dict[str, Any] = {"generators": generator_states(), "shuffle": None}
        if self._batch_start is not None and done < trainer.num_training_batches:  # mid-epoch
            if self._batch_start[0] == done:  # stopped inside a batch: it is trained again
                state["generators"] = self._batch_start[1]
            loader = trainer.train_dataloader
            assert loader is not None  # mid-epoch: the fit's loader
            seed = getattr(loader.batch_sampler, "seed", None)
            state["shuffle"] = None if seed is None else [seed, done]
        checkpoint[RANDOM_KEY] = state

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state = checkpoint.get(RANDOM_KEY)
        if state is None:
            log.warning("the checkpoint holds no random state: the resumed training draws anew")
            return
        set_generator_states(state["generators"])
        if state["shuffle"] is not None:
            self._pending = state["generators"]
            # Lightning sets Trainer.datamodule at run time; its class does not declare it
            trainer.datamodule.shuffle_start = tuple(state["shuffle"])  # type: ignore[attr-defined]


def _batches_done(trainer: L.Trainer) -> int:
    """Training batches of the current epoch whose step was taken: a batch stopped after its step
    (in its end hooks) is not trained again on resume, one stopped before it is."""
    # declared a _ReadyCompletedTracker, a batch's progress holds a _ProcessedTracker
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed  # type: ignore[attr-defined]


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
