"""The comparison statistics on synthetic data where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.analysis.stats import (
    effective_rank,
    linear_cka,
    matched_correlation,
    mcnemar_exact_interval,
    mcnemar_p,
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


def paired(b: int, c: int, n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Correctness of A and B on n sentences: b right only for A, c only for B, the rest both."""
    a = torch.ones(n, dtype=torch.bool)
    other = a.clone()
    other[:b] = False
    a[b : b + c] = False
    return a, other


def test_interval_contains_the_true_difference_and_excludes_zero_for_a_clear_one() -> None:
    gen = torch.Generator().manual_seed(3)
    a = torch.rand(2000, generator=gen) < 0.80
    b = torch.rand(2000, generator=gen) < 0.75
    low, high = mcnemar_exact_interval(a, b)
    assert low < 0.05 < high
    assert low > 0  # 5 points on 2000 sentences is not noise
    diff = (a.float().mean() - b.float().mean()).item()
    assert low <= diff <= high


def test_five_flips_one_way_are_not_significant_and_the_interval_says_so() -> None:
    # the percentile bootstrap gave [0.0009, 0.0094] here, excluding 0, while p = 0.0625
    a, b = paired(5, 0)
    assert mcnemar_p(a, b) == pytest.approx(0.0625)
    low, high = mcnemar_exact_interval(a, b)
    assert low < 0 < high
    assert high == pytest.approx(5 / 1000)  # all discordant sentences go A's way at most
    low_b, high_b = mcnemar_exact_interval(b, a)  # swapping A and B mirrors it
    assert (low_b, high_b) == pytest.approx((-high, -low))


def test_no_discordant_sentence_gives_the_point_zero() -> None:
    assert mcnemar_exact_interval(*paired(0, 0)) == (0.0, 0.0)


@pytest.mark.parametrize("level", [0.95, 0.99])
def test_interval_excludes_zero_exactly_when_the_exact_test_rejects(level: float) -> None:
    for b in range(0, 41):
        for c in range(0, 41, 3):
            a_correct, b_correct = paired(b, c, n=200)
            low, high = mcnemar_exact_interval(a_correct, b_correct, level=level)
            rejects = mcnemar_p(a_correct, b_correct) < 1 - level
            assert (not low <= 0 <= high) == rejects, (b, c)
            assert low <= (b - c) / 200 <= high


def test_interval_at_many_counts_agrees_with_the_binomial_tails() -> None:
    # every discordant sentence one way: the lower end is d (2 pi_low - 1) / n with
    # pi_low = (alpha / 2) ** (1 / d), the Clopper-Pearson bound for d successes out of d
    for d in (1, 3, 10, 40):
        low, high = mcnemar_exact_interval(*paired(d, 0, n=500))
        assert high == pytest.approx(d / 500)
        assert low == pytest.approx(d * (2 * 0.025 ** (1 / d) - 1) / 500)
    assert np.isfinite(mcnemar_exact_interval(*paired(500, 0, n=500))).all()
