"""Lightning glue that only checks, reports and shares: the example sentences, one log line per
epoch, and the cores other processes leave free.

A progress bar redraws itself with carriage returns, which a log file keeps as one endless line;
when the output is not a terminal the run turns the bar off, and this line is what the log holds.
"""

from __future__ import annotations

import logging
import sys
import time

import lightning as L

from src.threads import CoreShare
from src.tokens import check_known_words

log = logging.getLogger(__name__)

SHOWN = ("train/loss", "val/loss", "val/acc", "val/f1", "val/auroc")


def progress_bar(wanted: bool) -> bool:
    """The progress bar only where it can redraw itself: on a terminal."""
    return wanted and sys.stderr.isatty()


class EpochLog(L.Callback):
    """``epoch 3/10: train/loss 0.412, val/acc 0.781, ... (41 s)`` after every training epoch."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        shown = ", ".join(f"{k} {float(metrics[k]):.4f}" for k in SHOWN if k in metrics)
        log.info(
            "epoch %d/%d: %s (%.0f s)",
            trainer.current_epoch + 1,
            trainer.max_epochs,
            shown,
            time.perf_counter() - self._start,
        )


class KnownWords(L.Callback):
    """Refuse an example sentence with no known word as soon as the tokenizer exists: before the
    training, not after it."""

    def __init__(self, sentences: list[str]) -> None:
        self.sentences = list(sentences)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for sentence in self.sentences:
            # Lightning sets Trainer.datamodule at run time; its class does not declare it
            check_known_words(trainer.datamodule.tokenizer, sentence)  # type: ignore[attr-defined]


class FairShare(L.Callback):
    """During fit, torch's threads follow the cores other processes leave free, measured once a
    second (:class:`src.threads.CoreShare`), from the job's share up to every core: a job whose
    sibling jobs have finished takes their cores. ``threads`` (the top-level setting) fixes
    them."""

    def __init__(self, threads: int | None = None) -> None:
        self.fixed = threads is not None
        self.share: CoreShare | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.fixed:
            self.share = CoreShare()

    def on_train_batch_start(self, *args: object) -> None:
        if self.share is not None:
            self.share.update()

    def on_validation_batch_start(self, *args: object) -> None:
        if self.share is not None:
            self.share.update()

    @property
    def changes(self) -> int:
        """How often the last fit set a new thread count (0 with ``threads`` fixed)."""
        return 0 if self.share is None else self.share.changes

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.changes:
            assert self.share is not None  # only a share counts changes
            log.info(
                "the fair share changed torch's threads %d times (down to %d) while other "
                "processes were busy: the weights may differ in their last bits from a run on a "
                "quiet machine (threads=<n> fixes the count)",
                self.changes,
                self.share.fewest,
            )
