"""Group a layer's neurons into ``target_width`` clusters, each later merged into one neuron.

Every method returns long labels (N,) numbered 0..k-1 in order of each cluster's smallest neuron
index, so the same partition always gets the same labels whatever the algorithm's internal ids.
Label -1 marks a neuron left out of clustering (e.g. dead); the summaries below ignore it.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.cluster import AgglomerativeClustering, KMeans, SpectralClustering
from sklearn.metrics import silhouette_score
from torch import Tensor


def _check_n_clusters(n_clusters: int, n: int) -> None:
    if not 1 <= n_clusters < n:
        raise ValueError(
            f"target_width={n_clusters} must be at least 1 and below the layer's width {n}"
        )


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _relabel(labels: np.ndarray, n_clusters: int) -> Tensor:
    """Renumber clusters 0..k-1 by their smallest member, so labellings are comparable."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    if len(first) < n_clusters:
        warnings.warn(
            f"found only {len(first)} non-empty clusters for target_width={n_clusters}",
            stacklevel=3,
        )
    rank = np.argsort(np.argsort(first))
    return torch.as_tensor(rank[inverse], dtype=torch.long)


def _split_duplicates(rows: np.ndarray, n_clusters: int) -> np.ndarray | None:
    """A labelling for when there are fewer distinct neurons than clusters, else None.

    Identical neurons cannot be told apart, so each distinct neuron gets its own cluster and
    later copies are peeled off into clusters of their own until there are ``n_clusters``.
    """
    _, group = np.unique(rows, axis=0, return_inverse=True)
    group = group.reshape(-1)
    n_distinct = group.max() + 1
    if n_distinct >= n_clusters:
        return None
    warnings.warn(
        f"only {n_distinct} distinct neurons for target_width={n_clusters}; "
        "splitting identical neurons across clusters",
        stacklevel=3,
    )
    labels, seen, next_label = group.copy(), set(), n_distinct
    for i, g in enumerate(group):
        if g in seen and next_label < n_clusters:
            labels[i], next_label = next_label, next_label + 1
        seen.add(g)
    return labels


def spectral_clusters(affinity: Tensor, n_clusters: int, seed: int) -> Tensor:
    """Spectral clustering of a precomputed (N, N) affinity; identical neurons share a cluster."""
    a = _numpy(affinity)
    _check_n_clusters(n_clusters, len(a))
    if n_clusters == 1:
        return torch.zeros(len(a), dtype=torch.long)
    # Rows equal up to float noise are the same neuron, whatever order the sums were taken in.
    labels = _split_duplicates(a.round(9), n_clusters)
    if labels is None:
        labels = SpectralClustering(
            n_clusters=n_clusters,
            affinity="precomputed",
            assign_labels="cluster_qr",
            random_state=seed,
        ).fit_predict(a)
    return _relabel(labels, n_clusters)


def agglomerative_clusters(dissimilarity: Tensor, n_clusters: int) -> Tensor:
    """Average-linkage clustering of a precomputed dissimilarity (deterministic, no seed)."""
    d = _numpy(dissimilarity)
    _check_n_clusters(n_clusters, len(d))
    model = AgglomerativeClustering(n_clusters=n_clusters, metric="precomputed", linkage="average")
    return _relabel(model.fit_predict(d), n_clusters)


def kmeans_clusters(features: Tensor, n_clusters: int, seed: int) -> Tensor:
    """k-means on per-neuron feature rows (e.g. incoming weights), best of 10 restarts."""
    x = _numpy(features)
    _check_n_clusters(n_clusters, len(x))
    labels = _split_duplicates(x, n_clusters)
    if labels is None:
        labels = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(x)
    return _relabel(labels, n_clusters)


def silhouette(dissimilarity: Tensor, labels: Tensor) -> float | None:
    """Mean silhouette over clustered neurons; None where it is undefined.

    It needs 2 <= clusters < neurons: with one cluster there is nothing to separate from, and
    with all singletons every neuron's score is 0 by convention, which says nothing.
    """
    keep = (labels >= 0).numpy()
    kept = labels.numpy()[keep]
    n_clusters = len(np.unique(kept))
    if not 2 <= n_clusters < len(kept):
        return None
    d = _numpy(dissimilarity)[np.ix_(keep, keep)]
    return float(silhouette_score(d, kept, metric="precomputed"))


def cluster_order(labels: Tensor) -> Tensor:
    """Neuron indices grouped by cluster, left-out neurons last: the heatmap order."""
    key = torch.where(labels < 0, labels.max() + 1, labels)
    return torch.argsort(key, stable=True)


def cluster_sizes(labels: Tensor) -> list[int]:
    """Number of neurons in each cluster 0..k-1."""
    return torch.bincount(labels[labels >= 0]).tolist()
