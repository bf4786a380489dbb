"""Merge the words that the LSTM reads alike: cluster the words site's rows, one row per cluster.

Each word is placed where it acts, ``W_ih e_w`` (``space: lstm_input``; ``embedding`` clusters
the rows themselves), and the words are clustered into the rows left after the special tokens
and the ``keep_exact`` most frequent words, which keep rows of their own. Each cluster's row is
its members' frequency-weighted mean: with ``weighted: true`` the k-means objective is then the
frequency-weighted squared error of what the LSTM reads over the training words, which that mean
minimises for any grouping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import AgglomerativeClustering, KMeans
from torch import Tensor

from src.compress.base import LayerPair, check_choice
from src.compress.words import (
    by_frequency,
    check_words_width,
    fold_words,
    frequencies,
    renumber,
)
from src.tokens import SPECIAL_IDS

CLUSTERINGS = ("kmeans", "agglomerative")
SPACES = ("lstm_input", "embedding")


@dataclass(frozen=True)
class WordMerge:
    """:class:`~src.compress.base.MergeMethod` for the words site."""

    clustering: str = "kmeans"
    space: str = "lstm_input"
    weighted: bool = True
    keep_exact: int = 0
    for_words = True

    def __post_init__(self) -> None:
        check_choice(self.clustering, CLUSTERINGS, "compress.method.clustering")
        check_choice(self.space, SPACES, "compress.method.space")
        if self.keep_exact < 0:
            raise ValueError(f"compress.method.keep_exact={self.keep_exact} must be >= 0")

    def __call__(
        self,
        pair: LayerPair,
        activations: Tensor,
        labels: Tensor | None,
        target_width: int,
        generator: torch.Generator,
    ) -> LayerPair:
        check_words_width(target_width, pair.width)
        weights = frequencies(activations)
        specials = len(SPECIAL_IDS)
        exact = min(self.keep_exact, target_width - specials - 1)
        ranked = by_frequency(weights)
        alone, rest = ranked[: specials + exact], ranked[specials + exact :]
        clusters = target_width - len(alone)
        groups = torch.empty(pair.width, dtype=torch.long)
        groups[alone] = alone
        found = self._cluster(self._features(pair)[rest], weights[rest], clusters, generator)
        groups[rest] = pair.width + torch.as_tensor(found, dtype=torch.long)
        return fold_words(pair, renumber(groups), weights)

    def _features(self, pair: LayerPair) -> np.ndarray:
        """Each word's point, (V, X): what the LSTM reads from it in coordinates of the same
        distances and rank-many columns (an SVD of the 4H-wide rows), or its row."""
        if self.space == "embedding":
            return pair.w_in.double().numpy()
        u, s, _ = torch.linalg.svd(pair.w_out.T.double(), full_matrices=False)
        rank = int((s > s[0] * 1e-10).sum())
        return (u[:, :rank] * s[:rank]).numpy()

    def _cluster(
        self, points: np.ndarray, weights: Tensor, clusters: int, generator: torch.Generator
    ) -> np.ndarray:
        if clusters >= len(points):
            return np.arange(len(points))
        if self.clustering == "agglomerative":  # Ward's linkage: unweighted, O(V^2) memory
            return AgglomerativeClustering(clusters).fit_predict(points)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        sample_weight = weights.numpy() if self.weighted else None
        kmeans = KMeans(clusters, n_init=1, random_state=seed)
        return kmeans.fit(points, sample_weight=sample_weight).labels_
