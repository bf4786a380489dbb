"""Training throughput: the Lightning module under a real Trainer against a plain PyTorch loop.

Both train the same network, from the same initial weights, on the same batches (same seed, same
order), with the same optimiser and gradient clipping, for one epoch each, repeated; the fastest
repeat of each is reported, in words (real tokens, padding not counted) per second.

    make bench-train                      # rotten_tomatoes, default model
    python benchmarks/bench_train.py --data sst2 --repeats 2
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from src.data import SentimentDataModule
from src.model import SentimentClassifier

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def plain_epoch(model: SentimentClassifier, loader, clip: float, lr: float) -> float:
    """One epoch the way it is written without a framework; returns the seconds it took."""
    network = model.network.train()
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    start = time.perf_counter()
    for batch in loader:
        optimizer.zero_grad(set_to_none=True)
        logits = model(batch["ids"], batch["lengths"])
        loss_fn(logits, batch["labels"]).backward()
        nn.utils.clip_grad_norm_(network.parameters(), clip)
        optimizer.step()
    return time.perf_counter() - start


def lightning_epoch(model: SentimentClassifier, datamodule: L.LightningDataModule, clip: float):
    """One epoch under the project's Trainer settings, minus validation and checkpoint files."""
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        gradient_clip_val=clip,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="rotten_tomatoes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.batch_size=32")
    args = parser.parse_args()

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"data={args.data}", *args.overrides])
    datamodule: SentimentDataModule = instantiate(cfg.data)
    datamodule.setup()
    words = sum(len(ids) for ids, _ in datamodule.splits["train"])
    torch.manual_seed(cfg.seed)
    initial = instantiate(cfg.model, vocab_size=datamodule.tokenizer.get_vocab_size())
    clip, lr = cfg.trainer.gradient_clip_val, cfg.model.optimizer.lr

    times: dict[str, list[float]] = {"plain PyTorch": [], "Lightning": []}
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
        torch.manual_seed(cfg.seed)
        times["plain PyTorch"].append(
            plain_epoch(copy.deepcopy(initial), datamodule.train_dataloader(), clip, lr)
        )
        torch.manual_seed(cfg.seed)
        times["Lightning"].append(lightning_epoch(copy.deepcopy(initial), datamodule, clip))

    print(
        f"\n{args.data}: {len(datamodule.splits['train'])} sentences, {words} words per epoch, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} cores, best of {args.repeats}"
    )
    print(f"{'loop':<14} {'seconds':>8} {'words/s':>10}")
    best = {name: min(t) for name, t in times.items()}
    for name, seconds in best.items():
        print(f"{name:<14} {seconds:>8.2f} {words / seconds:>10.0f}")
    overhead = best["Lightning"] / best["plain PyTorch"] - 1
    print(f"Lightning overhead: {overhead:+.1%} of the plain loop's time (target < 15 %)")


if __name__ == "__main__":
    main()
