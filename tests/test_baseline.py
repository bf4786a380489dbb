"""The baseline cache: keyed by what changes the weights, never trusting a damaged entry."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from src.baseline import (
    Baseline,
    BaselineCache,
    CheckpointError,
    cache_key,
    check_resume,
    load_checkpoint,
)
from src.model import SentimentClassifier
from tests.conftest import (
    ROOT,
    compose_config,
    read_only,
    save_one_step_checkpoint,
    small_disk,
)


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
    return save_one_step_checkpoint(model, data, tmp_path / "model.ckpt", batch_size=2)


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
    record = json.loads((tmp_path / "cache" / "key" / "baseline.json").read_text())
    assert record["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()


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


class RunsShell:
    """Pickles as a call of ``os.system(command)``: what a malicious checkpoint carries."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


def store(cache: BaselineCache, key: str, checkpoint: Path) -> Path:
    """A real cache entry holding ``checkpoint``."""
    cache.store(key, Baseline(load_checkpoint(checkpoint), 1.0, True, checkpoint), "a: 1\n")
    return cache.root / key


def plant(entry: Path, data: bytes) -> None:
    """Write ``data`` as the entry's model.ckpt, with its true sha256: a planted entry."""
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "model.ckpt").write_bytes(data)
    record = {"train_seconds": 1.0, "sha256": hashlib.sha256(data).hexdigest()}
    (entry / "baseline.json").write_text(json.dumps(record))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(
    checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ran = tmp_path / "ran"
    evil = torch.load(checkpoint, weights_only=True)
    evil["hyper_parameters"]["dropout"] = RunsShell(f"touch {ran}")
    path = tmp_path / "evil.ckpt"
    torch.save(evil, path)

    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    message = str(refused.value)
    assert message.startswith(f"ckpt_path={path} is refused") and "\n" not in message
    assert "system" in message  # what it would have run

    with pytest.raises(CheckpointError, match=r"^resume=.* is refused"):
        check_resume(compose_config(f"resume={path}"))

    entry = tmp_path / "cache" / "key"
    plant(entry, path.read_bytes())
    with caplog.at_level(logging.WARNING):
        assert BaselineCache(tmp_path / "cache").load("key") is None
    assert not entry.exists() and "system" in caplog.text
    assert not ran.exists()  # the command never ran


def test_a_file_that_is_not_a_checkpoint_gets_a_one_line_refusal() -> None:
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(ROOT / "README.md")
    assert str(refused.value) == (
        f"ckpt_path={ROOT / 'README.md'} is refused: it is not a PyTorch checkpoint "
        "(the zip archive torch.save writes)"
    )


def overwrite_weights(path: Path, value: float) -> None:
    """Write ``value`` over every tensor's bytes inside the checkpoint, in place, as a stray
    write or a bad disk would: the archive still reads (torch checks no CRC)."""
    with zipfile.ZipFile(path) as archive:
        tensors = [i for i in archive.infolist() if "/data/" in i.filename]
    with path.open("r+b") as file:
        for info in tensors:
            file.seek(info.header_offset + 26)  # the local header's name and extra lengths
            name, extra = struct.unpack("<HH", file.read(4))
            file.seek(info.header_offset + 30 + name + extra)
            file.write(struct.pack("<f", value) * (info.file_size // 4))


@pytest.mark.parametrize("value", [0.5, float("nan")], ids=["finite", "nan"])
def test_a_damaged_cache_entry_is_named_once_removed_and_rebuilt(
    checkpoint: Path, tmp_path: Path, value: float, caplog: pytest.LogCaptureFixture
) -> None:
    cache = BaselineCache(tmp_path / "cache")
    entry = store(cache, "key", checkpoint)
    overwrite_weights(entry / "model.ckpt", value)
    assert torch.load(entry / "model.ckpt", weights_only=True)["state_dict"]  # still reads
    with caplog.at_level(logging.WARNING):
        assert cache.load("key") is None
    assert not entry.exists()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.count(str(entry)) == 1 and "\n" not in warning
    assert "sha256" in warning


def test_non_finite_weights_are_refused_even_with_a_matching_hash(
    checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    overwrite_weights(checkpoint, float("nan"))  # e.g. a training that diverged
    with pytest.raises(CheckpointError, match=r"^ckpt_path=.* holds non-finite weights"):
        load_checkpoint(checkpoint)
    entry = tmp_path / "cache" / "key"
    plant(entry, checkpoint.read_bytes())
    with caplog.at_level(logging.WARNING):
        assert BaselineCache(tmp_path / "cache").load("key") is None
    assert not entry.exists() and "non-finite" in caplog.text


def test_an_entry_without_a_stored_hash_is_rebuilt(checkpoint: Path, tmp_path: Path) -> None:
    entry = store(BaselineCache(tmp_path), "key", checkpoint)
    (entry / "baseline.json").write_text('{"train_seconds": 1.0}')  # as entries used to be
    assert BaselineCache(tmp_path).load("key") is None
    assert not entry.exists()


def test_a_read_only_cache_holding_the_entry_is_read_without_a_lock(
    checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = BaselineCache(tmp_path / "cache")
    store(cache, "key", checkpoint)
    with read_only(cache.root), caplog.at_level(logging.WARNING):
        with cache.lock("key"):  # as obtain_baseline takes it
            loaded = cache.load("key")
        assert loaded is not None and not loaded.trained_now
        with cache.lock("other"):
            assert cache.load("other") is None  # trained now, then:
            cache.store("other", loaded, "a: 1\n")
    assert not (cache.root / "other").exists()
    assert f"cache_dir={cache.root} cannot be written" in caplog.text
    assert f"{cache.root / 'other'} cannot be written" in caplog.text


def test_a_full_cache_disk_names_the_entry_and_leaves_nothing_half_written(
    checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "cache"
    with small_disk(root, "16k"), caplog.at_level(logging.WARNING):
        baseline = Baseline(load_checkpoint(checkpoint), 1.0, True, checkpoint)
        assert checkpoint.stat().st_size > 16 * 1024
        BaselineCache(root).store("key", baseline, "a: 1\n")
        assert list(root.iterdir()) == []  # no entry, no temporary one
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(root / "key") in warning and "No space left" in warning
