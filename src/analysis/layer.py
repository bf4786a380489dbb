"""Look inside one site: which of its units are alive, how alike they are, and their clusters."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from src.analysis.clustering import (
    agglomerative_clusters,
    kmeans_clusters,
    silhouette,
    spectral_clusters,
)
from src.analysis.neurons import NeuronStatus, neuron_status
from src.analysis.similarity import affinity_from_dissimilarity, dissimilarity_matrix

CLUSTERINGS = ("spectral", "agglomerative", "kmeans")


@dataclass
class Probe:
    """What a site saw and did on the probe words."""

    inputs: Tensor  # (words, D): what the site reads
    activations: Tensor  # (words, N): what its units output


@dataclass
class LayerAnalysis:
    layer: str  # the site's name
    probe: Probe
    dissimilarity: Tensor  # (N, N), every neuron
    status: NeuronStatus  # dead, nearly dead and alive neurons (src.analysis.neurons)
    labels: Tensor  # (N,) long, cluster 0..k-1, -1 for the dead and nearly dead left out
    silhouette: float | None

    @property
    def alive(self) -> Tensor:
        """(N,) bool: the neurons that were clustered."""
        return self.status.alive


def check_clustering(clustering: str) -> None:
    """Fail early, naming the setting (the analysis package does not import src.compress)."""
    if clustering not in CLUSTERINGS:
        raise ValueError(
            f"unknown analysis.clustering={clustering!r}; choose one of {', '.join(CLUSTERINGS)}"
        )


def cluster_alive(
    dissimilarity: Tensor,
    weights: Tensor,
    alive: Tensor,
    n_clusters: int,
    clustering: str,
    seed: int,
) -> Tensor:
    """Cluster the live neurons only; the dead and nearly dead get -1 and never take a kept
    neuron's place."""
    check_clustering(clustering)
    labels = torch.full((len(alive),), -1, dtype=torch.long)
    live = alive.nonzero().squeeze(1)
    if len(live) <= n_clusters:
        warnings.warn(
            f"only {len(live)} live neurons for target_width={n_clusters}: keeping each one",
            stacklevel=2,
        )
        labels[live] = torch.arange(len(live))
        return labels
    sub = dissimilarity[live][:, live]
    if clustering == "spectral":
        labels[live] = spectral_clusters(affinity_from_dissimilarity(sub), n_clusters, seed)
    elif clustering == "agglomerative":
        labels[live] = agglomerative_clusters(sub, n_clusters)
    else:
        labels[live] = kmeans_clusters(weights[live], n_clusters, seed)
    return labels


def probe_dissimilarity(
    probe: Probe,
    measure: str = "shape",
    chunk_size: int = 8192,
    device: torch.device | str = "cpu",
) -> Tensor:
    """(N, N) dissimilarity of every neuron on the probe words, float32, computed on
    ``device``."""
    acts = probe.activations
    d = dissimilarity_matrix(lambda: acts.split(chunk_size), measure, chunk_size, device=device)
    return d.float()


def cluster_layer(
    probe: Probe,
    dissimilarity: Tensor,
    weights: Tensor,
    outgoing: Tensor,
    layer: str,
    n_clusters: int,
    clustering: str = "spectral",
    seed: int = 0,
    status: NeuronStatus | None = None,
) -> LayerAnalysis:
    """Cluster a layer whose dissimilarity is known: one dissimilarity serves every width.

    ``outgoing``: the next layer's weights (M, N), which decide with the activations which
    neurons are alive (:func:`~src.analysis.neurons.neuron_status`); ``status``: that status when
    the caller has it (it does not depend on the width).
    """
    if status is None:
        status = neuron_status(probe.activations, outgoing)
    labels = cluster_alive(dissimilarity, weights, status.alive, n_clusters, clustering, seed)
    score = silhouette(dissimilarity, labels)  # over the clustered (live) neurons
    return LayerAnalysis(layer, probe, dissimilarity, status, labels, score)
