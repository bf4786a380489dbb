"""The claims study's driver, end to end on a slice of rotten_tomatoes: one seed, two methods,
two widths, and its settings refused before any training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from src.claims import CLAIMS
from tests.conftest import APP_ENV, QUICK, ROOT, wandb_summary

VERDICTS = {"holds", "does not hold", "depends", "not measured"}


def run_study(*overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "src.study", *overrides],
        cwd=ROOT,
        env=APP_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def quick_study(output: Path, cache: Path, *overrides: str) -> subprocess.CompletedProcess:
    run_overrides = ",".join(f'"{o}"' for o in [*QUICK, f"cache_dir={cache}"])
    return run_study(
        "corpora=[rotten_tomatoes]",
        "seeds=[0]",
        f"overrides=[{run_overrides}]",
        f"output_dir={output}",
        f"runs_dir={output / 'runs'}",
        *overrides,
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("study")
    result = quick_study(
        output,
        tmp_path_factory.mktemp("cache"),
        "methods=[weight_sum,freeze_retrain]",
        "layers=[{layer: -1, widths: [2, 4]}]",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output


@pytest.mark.slow
def test_the_study_writes_one_row_per_claim(study: Path) -> None:
    claims = pd.read_csv(study / "claims.csv")
    assert claims["claim"].tolist() == list(range(1, len(CLAIMS) + 1))
    assert set(claims["verdict"]) <= VERDICTS
    # cluster_init was left out, so the claim about it is marked, not guessed
    assert claims.loc[claims["claim"] == 4, "verdict"].item() == "not measured"
    measured = claims[claims["claim"] != 4]
    assert (measured["verdict"] != "not measured").all()
    assert measured["rotten_tomatoes"].str.contains(r"\((?:holds|does not hold|depends)\)").all()
    markdown = (study / "claims.md").read_text()
    header = markdown.splitlines()[0]
    assert header.startswith("|") and "statement" in header and "rotten_tomatoes" in header
    assert "Thresholds:" in markdown and "python -m src.study" in markdown


@pytest.mark.slow
def test_the_study_measures_every_method_width_and_pair(study: Path) -> None:
    runs = pd.read_csv(study / "runs.csv")
    assert len(runs) == 4 and set(runs["method"]) == {"weight_sum", "freeze_retrain"}
    assert set(runs["target_width"]) == {2, 4} and set(runs["layer"]) == {"head.2"}
    assert runs["baseline/test_acc"].nunique() == 1  # one baseline, trained once
    assert runs["compressed/test_acc"].between(0, 1).all()
    assert (runs["compressed/width"] <= runs["target_width"]).all()
    pairs = pd.read_csv(study / "comparisons.csv")
    assert len(pairs) == 2 and (pairs[["a", "b"]].values == ["weight_sum", "freeze_retrain"]).all()
    assert ((pairs["ci_low"] <= pairs["diff"]) & (pairs["diff"] <= pairs["ci_high"])).all()
    similarity = pd.read_csv(study / "similarity.csv")
    assert len(similarity) == 2 and similarity["cka"].between(0, 1 + 1e-9).all()
    layers = pd.read_csv(study / "layers.csv")
    assert layers["width"].tolist() == [16] and 0 <= layers["dead"].item() <= 16
    assert list((study / "runs").glob("rotten_tomatoes-seed0/csv/metrics.csv"))  # runs_dir
    for figure in ("accuracy.png", "cka.png"):
        assert (study / figure).stat().st_size > 0


@pytest.mark.slow
def test_the_study_leaves_a_wandb_summary_run(study: Path) -> None:
    run = wandb_summary(study)
    summary = run["summary"]
    assert {"claims", "runs", "baselines", "accuracy", "cka"} <= set(summary)
    assert summary["claims"]["nrows"] == len(CLAIMS)
    assert run["config"]["command"].startswith("python -m src.study")  # how to regenerate it
    assert run["config"]["seconds"] > 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("methods=[weight_sum,no_such_method]", "methods: no_such_method is not in conf/compress"),
        ("methods=[none]", "methods: none shrinks nothing"),
        ("layers=[{layer: 2, widths: [16]}]", "layers: target_width=16"),
        ("layers=[{layer: 7, widths: [2]}]", "layers: layer=7"),
    ],
)
def test_bad_study_settings_fail_before_training(
    tmp_path: Path, override: str, message: str
) -> None:
    result = quick_study(tmp_path / "out", tmp_path / "cache", override)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "cache").exists()  # nothing was trained


@pytest.mark.slow
def test_claims_are_judged_again_from_the_tables(study: Path) -> None:
    before = (study / "claims.csv").read_text()
    (study / "claims.csv").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "src.claims", str(study)],
        cwd=ROOT,
        env=APP_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (study / "claims.csv").read_text() == before
    assert "statement" in result.stdout
