"""The comparison statistics on synthetic data where the right answer is known."""

from __future__ import annotations

import pytest
import torch

from src.analysis.stats import (
    effective_rank,
    linear_cka,
    matched_correlation,
    mcnemar_p,
    paired_bootstrap_interval,
)


def features(words: int = 500, n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(words, n, generator=torch.Generator().manual_seed(seed))


def test_cka_of_a_layer_with_itself_is_one_and_ignores_rotation_and_scale() -> None:
    x = features()
    rotation, _ = torch.linalg.qr(features(6, 6, seed=1))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.5 * x @ rotation) == pytest.approx(1.0)


def test_cka_of_unrelated_features_is_near_zero() -> None:
    assert linear_cka(features(20000, seed=0), features(20000, seed=1)) < 0.01


def test_matched_correlation_finds_a_permutation_and_ignores_sign_and_scale() -> None:
    x = features()
    y = x[:, [3, 0, 5, 1, 4, 2]] * torch.tensor([2.0, -1, 0.5, 3, -4, 1])
    assert matched_correlation(x, y) == pytest.approx(1.0)
    assert matched_correlation(x, torch.zeros(500, 6)) == 0.0


def test_effective_rank_counts_the_directions_used() -> None:
    low = features(1000, 3) @ features(3, 16, seed=2)
    assert effective_rank(low) < 3.01
    assert effective_rank(features(5000, 8)) > 7.5
    assert effective_rank(torch.ones(10, 4)) == 0.0


def test_mcnemar_sees_no_difference_between_identical_predictions() -> None:
    correct = torch.rand(300, generator=torch.Generator().manual_seed(0)) > 0.3
    assert mcnemar_p(correct, correct) == 1.0


def test_mcnemar_sees_a_clear_difference() -> None:
    a = torch.ones(200, dtype=torch.bool)
    b = a.clone()
    b[:40] = False
    assert mcnemar_p(a, b) < 1e-6


def test_bootstrap_interval_contains_the_true_difference() -> None:
    gen = torch.Generator().manual_seed(3)
    a = torch.rand(2000, generator=gen) < 0.80
    b = torch.rand(2000, generator=gen) < 0.75
    low, high = paired_bootstrap_interval(a, b)
    assert low < 0.05 < high
    assert low > 0  # 5 points on 2000 sentences is not noise
