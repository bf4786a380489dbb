"""Shared fixtures: the offline corpora beside the checkout, and a config composed once per test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from src.data import SentimentDataModule
from src.tokens import collate

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SENTIMENT_DATA_DIR") or ROOT.parent / "shared" / "data")
CONF_DIR = str(ROOT / "conf")

# Small and quick, yet learning for sure: 6000 rotten_tomatoes reviews, a narrow LSTM, 8 short
# epochs (about 20 s on 2 cores; 0.74 test accuracy measured, where chance is 0.5).
QUICK = [
    "data.limit=6000",
    "data.batch_size=32",
    "model.embedding_dim=32",
    "model.lstm.hidden_size=32",
    "model.optimizer.lr=0.003",
    "model.dropout=0.2",
    "trainer.max_epochs=8",
    "trainer.enable_progress_bar=false",
]


# Every test, and every app it starts, reads the offline corpora and never talks to W&B.
os.environ["SENTIMENT_DATA_DIR"] = str(DATA_DIR)
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"


@pytest.fixture(scope="session")
def quick_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One baseline cache for every end-to-end test with the QUICK settings and seed 42: the
    baseline they share is trained once per session."""
    return tmp_path_factory.mktemp("quick-cache")


def save_one_step_checkpoint(
    model: L.LightningModule, data: list[tuple[torch.Tensor, int]], path: Path, batch_size: int
) -> Path:
    """A real Lightning checkpoint of ``model`` after one training step on ``data``."""
    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=path.parent,
    )
    trainer.fit(model, DataLoader(data, batch_size=batch_size, collate_fn=collate))
    trainer.save_checkpoint(path)
    return path


def rotten_tomatoes_slice(limit: int, max_length: int, batch_size: int) -> SentimentDataModule:
    """The first ``limit`` rotten_tomatoes reviews of the offline copy, set up: a corpus small
    enough for a module's tests to share."""
    datamodule = SentimentDataModule(
        "rotten_tomatoes",
        "hub",
        root=str(DATA_DIR),
        limit=limit,
        max_length=max_length,
        batch_size=batch_size,
    )
    datamodule.setup()
    return datamodule


TINY_WORDS = {0: ["bad", "awful", "poor", "dull"], 1: ["good", "great", "fine", "lovely"]}
TINY = [  # a model and an analysis small enough for a corpus of tiny_corpus's size
    "data.name=tiny",
    "model.embedding_dim=8",
    "model.lstm.hidden_size=8",
    "model.head_widths=[8,8]",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "analysis.probe_sentences=20",
    "analysis.sentences=[good]",
    "target_width=2",
]


def tiny_corpus(root: Path, name: str = "tiny", rows: int = 40) -> Path:
    """``root/name/{train,validation,test}.parquet``: short sentences whose label a word gives,
    both classes in every split; returns ``root`` (what data.root takes)."""
    import pandas as pd

    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    filler = ["the", "film", "was", "a", "movie", "plot"]
    for split in ("train", "validation", "test"):
        texts = [
            f"{filler[i % 6]} {TINY_WORDS[i % 2][i % 4]} {filler[(i * 5) % 6]}" for i in range(rows)
        ]
        labels = [i % 2 for i in range(rows)]
        pd.DataFrame({"text": texts, "label": labels}).to_parquet(folder / f"{split}.parquet")
    return root


@contextmanager
def mount(folder: Path, *options: str) -> Iterator[Path]:
    """``folder`` with a file system mounted on it for the test (``mount OPTIONS``), unmounted
    after; skipped where mounting is not permitted (not root, or a container without the right):
    chmod does not stop root, so a read-only folder or a full disk needs a real mount."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *options, str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip() or done.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder``, as it is, read-only (a read-only bind mount of itself)."""
    with mount(folder, "--bind", str(folder)):
        done = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {done.stderr.strip()}")
        yield folder


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """An empty ``size`` tmpfs at ``folder``: a disk that fills up."""
    with mount(folder, "-t", "tmpfs", "-o", f"size={size}", "tmpfs"):
        yield folder


def compose_config(*overrides: str, output_dir: Path | str = "/tmp/unused") -> DictConfig:
    """The app's config as Hydra composes it, with the run folder pinned."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[f"output_dir={output_dir}", *overrides])


def app_command(*overrides: str, multirun: bool = False) -> list[str]:
    return [sys.executable, "-m", "src.run", *(["-m"] if multirun else []), *overrides]


APP_ENV = {**os.environ, "HYDRA_FULL_ERROR": "0"}


def with_ctrl_c() -> None:
    """Run in the app's process before it starts: Ctrl-C raises KeyboardInterrupt there even when
    the tests themselves run in the background, where a shell starts them ignoring SIGINT (and
    Python then leaves it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_app(
    *overrides: str, multirun: bool = False, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``python -m src.run`` in a subprocess, exactly as a user types it."""
    return subprocess.run(
        app_command(*overrides, multirun=multirun),
        cwd=ROOT,
        env=APP_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=with_ctrl_c,
    )


def read_metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def wandb_summary(run_dir: Path) -> dict:
    """Read the one offline W&B run under ``run_dir`` back with the W&B CLI itself."""
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run(
        [str(cli), "leet", "inspect", "--summary", "--json", str(offline)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)
