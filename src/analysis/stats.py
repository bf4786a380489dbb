"""Statistics for comparing layers and methods honestly: feature similarity and paired tests.

Accuracies of compressed models sit within a point of each other, so a difference between two
methods is only read as an effect when a paired measure over the same test sentences says so.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import binomtest
from torch import Tensor


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA (Kornblith et al., 2019) between two layers' activations over the same words.

    ``x`` (words, N) and ``y`` (words, M). 1 for the same features up to rotation and isotropic
    scale, whatever N and M; 0 for features with no linear relation.
    """
    x = (x - x.mean(0)).double()
    y = (y - y.mean(0)).double()
    cross = (y.T @ x).square().sum()
    norm = (x.T @ x).square().sum().sqrt() * (y.T @ y).square().sum().sqrt()
    return float(cross / norm) if norm > 0 else 0.0


def matched_correlation(x: Tensor, y: Tensor) -> float:
    """Mean |Pearson r| of the best one-to-one matching between the neurons of ``x`` and ``y``
    (Hungarian assignment); constant neurons correlate 0 with everything."""
    xc, yc = (x - x.mean(0)).double(), (y - y.mean(0)).double()
    xs, ys = xc.norm(dim=0), yc.norm(dim=0)
    r = (xc.T @ yc) / (xs[:, None] * ys[None, :]).clamp_min(1e-300)
    r = r.abs().masked_fill((xs[:, None] == 0) | (ys[None, :] == 0), 0.0).numpy()
    rows, cols = linear_sum_assignment(-r)
    return float(r[rows, cols].mean())


def effective_rank(activations: Tensor) -> float:
    """exp of the entropy of the normalised singular values of the centred activations (Roy &
    Vetterli, 2007): how many directions the layer really uses."""
    centred = (activations - activations.mean(0)).double()
    s = torch.linalg.svdvals(centred)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def mcnemar_p(correct_a: Tensor, correct_b: Tensor) -> float:
    """Exact McNemar test: p-value that A and B are equally accurate on these paired sentences."""
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_bootstrap_interval(
    correct_a: Tensor, correct_b: Tensor, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of accuracy(A) - accuracy(B), resampling sentences with replacement.

    A sentence's difference is -1, 0 or +1, so a resample is fully described by how many of
    each it draws: one multinomial draw per resample, whatever the number of sentences.
    """
    rng = np.random.default_rng(seed)
    diff = correct_a.long() - correct_b.long()
    n = len(diff)
    counts = np.array([int((diff == -1).sum()), int((diff == 1).sum())])
    draws = rng.multinomial(n, [*(counts / n), 1 - counts.sum() / n], size=resamples)
    means = (draws[:, 1] - draws[:, 0]) / n
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)
