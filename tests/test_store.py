"""The shared artefacts: read from a folder that cannot be written, never written half or
non-finite, and a refusal that never suggests loading code."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
import torch

from src.store import ArtefactStore
from tests.conftest import read_only, small_disk


def never() -> dict[str, torch.Tensor]:
    raise AssertionError("computed, though the folder holds it")


def test_a_read_only_folder_is_read_and_what_it_lacks_is_computed_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "shared"
    ArtefactStore(folder).get("states", lambda: {"x": torch.ones(3)})
    with read_only(folder), caplog.at_level(logging.WARNING):
        store = ArtefactStore(folder)
        assert torch.equal(store.get("states", never)["x"], torch.ones(3))
        assert torch.equal(store.get("scores", lambda: {"y": torch.zeros(2)})["y"], torch.zeros(2))
        assert store.computed == ["scores"]
        assert sorted(p.name for p in folder.iterdir()) == [
            "states.lock",
            "states.pt",
            "states.sha256",
        ]
    assert f"{folder} are read, not written" in caplog.text


def test_a_full_disk_stores_nothing_half_written_and_names_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "shared"
    with small_disk(folder, "64k"), caplog.at_level(logging.WARNING):
        store = ArtefactStore(folder)
        value = store.get("states", lambda: {"x": torch.ones(100_000)})  # 400 kB
        assert value["x"].shape == (100_000,)
        assert [p.name for p in folder.iterdir()] == ["states.lock"]  # no .pt, no temporary
    assert f"{folder / 'states.pt'} not stored" in caplog.text and "No space left" in caplog.text


def test_non_finite_values_are_not_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        ArtefactStore(tmp_path).get("states", lambda: {"x": torch.tensor([1.0, float("nan")])})
    assert not (tmp_path / "states.pt").exists()
    assert "x holds non-finite values" in caplog.text


def test_an_artefact_that_would_run_code_is_recomputed_without_suggesting_to_load_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "states.pt"
    torch.save({"x": torch.ones(2), "hook": print}, path)
    (tmp_path / "states.sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest())
    with caplog.at_level(logging.WARNING):
        value = ArtefactStore(tmp_path).get("states", lambda: {"x": torch.zeros(2)})
    assert torch.equal(value["x"], torch.zeros(2))
    assert "beyond tensors" in caplog.text and "weights_only" not in caplog.text
