"""The sweep summary from a folder of metrics.json files, without running any job."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from src.compress.pipeline import ACTIVATIONS_FILE
from src.report import summarise_sweep, write_metrics


def fake_sweep(folder: Path) -> None:
    """Two methods x two widths x two seeds; accuracy = 0.7 + width/100 + seed/1000."""
    for method in ("weight_sum", "ls_refit"):
        for width in (2, 4):
            for seed in (0, 1):
                job = folder / f"compress={method},seed={seed},target_width={width}"
                job.mkdir()
                write_metrics(
                    job,
                    {
                        "data": "rotten_tomatoes",
                        "layer": 2,
                        "method": method,
                        "target_width": width,
                        "seed": seed,
                        "baseline/test_acc": 0.8,
                        "compressed/test_acc": 0.7 + width / 100 + seed / 1000,
                        "delta_acc": -0.1 + width / 100 + seed / 1000,
                        "compress_seconds": 0.01,
                    },
                )


def test_summary_has_one_row_per_job_and_mean_and_spread_per_cell(tmp_path: Path) -> None:
    fake_sweep(tmp_path)
    jobs = summarise_sweep(tmp_path)
    assert len(jobs) == 8
    assert len(pd.read_csv(tmp_path / "summary.csv")) == 8
    table = (tmp_path / "summary.md").read_text()
    # width 4: seeds give 0.740 and 0.741 -> mean 0.7405, sample std 0.0007
    assert re.search(r"ls_refit\s*\|\s*0\.7205 ± 0\.0007\s*\|\s*0\.7405 ± 0\.0007\s*\|", table)
    assert table.count("weight_sum") == 1 + 2  # one row in the width table, two in the full one
    assert (tmp_path / "accuracy.png").stat().st_size > 0


def test_siblings_are_compared_by_cka_on_their_saved_features(tmp_path: Path) -> None:
    fake_sweep(tmp_path)
    rotation = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))[0]
    for job in sorted(tmp_path.iterdir(), key=lambda job: "ls_refit" in job.name):
        features = torch.rand(50, 3, generator=torch.Generator().manual_seed(len(job.name)))
        if "ls_refit" in job.name:  # the same features as weight_sum's, rotated and scaled
            twin = job.name.replace("ls_refit", "weight_sum")
            features = 2 * torch.from_numpy(np.load(tmp_path / twin / ACTIVATIONS_FILE)) @ rotation
        np.save(job / ACTIVATIONS_FILE, features.numpy())
    summarise_sweep(tmp_path)
    pairs = pd.read_csv(tmp_path / "cka.csv")
    assert len(pairs) == 4  # one pair per width and seed
    assert set(zip(pairs["a"], pairs["b"], strict=True)) == {("ls_refit", "weight_sum")}
    assert pairs["cka"].to_numpy() == pytest.approx(1.0, abs=1e-6)
    assert (tmp_path / "cka.png").stat().st_size > 0


def test_one_seed_shows_the_mean_alone(tmp_path: Path) -> None:
    fake_sweep(tmp_path)
    for job in tmp_path.glob("*seed=1*"):
        (job / "metrics.json").unlink()
    summarise_sweep(tmp_path)
    table = (tmp_path / "summary.md").read_text()
    assert re.search(r"\|\s*0\.7400\s*\|", table) and "0.7400 ±" not in table


def test_an_empty_folder_writes_nothing(tmp_path: Path) -> None:
    assert summarise_sweep(tmp_path).empty
    assert not (tmp_path / "summary.csv").exists()
