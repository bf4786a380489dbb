"""The baseline cache: keyed by what changes the weights, never trusting a damaged entry."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from src.baseline import Baseline, BaselineCache, CheckpointError, cache_key, load_checkpoint
from src.data import collate
from src.model import SentimentClassifier
from tests.conftest import compose_config


@pytest.mark.parametrize(
    ("override", "same"),
    [
        ("seed=7", False),
        ("model.lstm.hidden_size=64", False),
        ("trainer.max_epochs=2", False),
        ("data=sst2", False),
        ("compress=weight_sum", True),
        ("target_width=2", True),
        ("layer=0", True),
        ("data.root=/elsewhere", True),
        ("trainer.enable_progress_bar=false", True),
    ],
)
def test_cache_key_follows_only_the_settings_that_change_the_weights(
    override: str, same: bool
) -> None:
    assert (cache_key(compose_config(override)) == cache_key(compose_config())) is same


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A real (one-step) Lightning checkpoint of a tiny classifier."""
    torch.manual_seed(0)
    model = SentimentClassifier(vocab_size=20, embedding_dim=4, lstm={"hidden_size": 4})
    model.tokenizer_json = "{}"
    data = [(torch.tensor([2, 3, 4]), 1), (torch.tensor([5, 6]), 0)]
    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, DataLoader(data, batch_size=2, collate_fn=collate))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_a_stored_baseline_loads_back_with_its_weights_and_tokenizer(
    checkpoint: Path, tmp_path: Path
) -> None:
    cache = BaselineCache(tmp_path / "cache")
    cache.store("key", Baseline(load_checkpoint(checkpoint), 12.5, True, checkpoint), "a: 1\n")
    loaded = cache.load("key")
    assert loaded is not None and not loaded.trained_now and loaded.train_seconds == 12.5
    assert loaded.model.tokenizer_json == "{}"
    original = load_checkpoint(checkpoint).state_dict()
    assert all(torch.equal(v, original[k]) for k, v in loaded.model.state_dict().items())


def test_a_corrupt_cache_entry_is_removed_so_it_gets_rebuilt(tmp_path: Path) -> None:
    entry = tmp_path / "key"
    entry.mkdir()
    (entry / "model.ckpt").write_bytes(b"not a checkpoint")
    (entry / "baseline.json").write_text('{"train_seconds": 1.0}')
    assert BaselineCache(tmp_path).load("key") is None
    assert not entry.exists()


def test_a_checkpoint_that_does_not_load_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "x.ckpt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="ckpt_path="):
        load_checkpoint(tmp_path / "x.ckpt")
