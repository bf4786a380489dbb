"""Clustering neurons: duplicates, degenerate requests, and well-separated groups."""

from __future__ import annotations

import pytest
import torch

from src.analysis.clustering import (
    agglomerative_clusters,
    cluster_order,
    cluster_sizes,
    kmeans_clusters,
    silhouette,
    spectral_clusters,
)
from src.analysis.similarity import affinity_from_dissimilarity, shape_dissimilarity


def two_groups(n_per_group: int = 5, seed: int = 0) -> torch.Tensor:
    """Rows near one of two far-apart points: neurons 0..n-1 and n..2n-1."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0, 0.0], [10.0, 10.0, 10.0]]).repeat_interleave(n_per_group, 0)
    return centres + 0.1 * torch.randn(2 * n_per_group, 3, generator=g)


def split(labels: torch.Tensor) -> list[int]:
    return labels.tolist()


def test_exact_duplicates_share_a_spectral_cluster() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(500, 8, generator=g))
    x = torch.cat([x, x[:, :3], 2 * x[:, :1]], dim=1)  # 8..10 copy 0..2, 11 is 2x neuron 0
    d = shape_dissimilarity(lambda: iter([x]))
    labels = spectral_clusters(affinity_from_dissimilarity(d), n_clusters=5, seed=0)
    assert labels[8] == labels[0] == labels[11] and labels[9] == labels[1]
    assert labels[10] == labels[2]
    assert sorted(set(split(labels))) == list(range(5)) and labels[0] == 0


def test_fewer_distinct_neurons_than_clusters_warns_and_splits_copies() -> None:
    d = torch.tensor([[0.0, 0, 0, 1, 1, 1]] * 3 + [[1.0, 1, 1, 0, 0, 0]] * 3).double()
    with pytest.warns(UserWarning, match="2 distinct neurons"):
        labels = spectral_clusters(affinity_from_dissimilarity(d), n_clusters=4, seed=0)
    assert sorted(set(split(labels))) == [0, 1, 2, 3]
    groups = [{int(i) < 3 for i in (labels == k).nonzero()} for k in range(4)]
    assert all(len(g) == 1 for g in groups)  # copies may be split, distinct neurons never mixed
    with pytest.warns(UserWarning, match="distinct"):
        assert len(set(split(kmeans_clusters(torch.zeros(5, 2), 3, seed=0)))) == 3


@pytest.mark.parametrize("n_clusters", [0, 6, -1])
def test_out_of_range_width_names_the_setting(n_clusters: int) -> None:
    d = torch.rand(6, 6)
    for call in (
        lambda: spectral_clusters(d, n_clusters, seed=0),
        lambda: agglomerative_clusters(d, n_clusters),
        lambda: kmeans_clusters(d, n_clusters, seed=0),
    ):
        with pytest.raises(ValueError, match="target_width"):
            call()


def test_one_cluster_is_everything() -> None:
    assert split(spectral_clusters(torch.ones(4, 4), 1, seed=0)) == [0, 0, 0, 0]
    assert split(agglomerative_clusters(torch.rand(4, 4), 1)) == [0, 0, 0, 0]


def test_two_separated_groups_are_recovered() -> None:
    x = two_groups()
    d = torch.cdist(x, x)
    expected = [0] * 5 + [1] * 5
    assert split(agglomerative_clusters(d, 2)) == expected
    assert split(kmeans_clusters(x, 2, seed=0)) == expected
    assert split(spectral_clusters(affinity_from_dissimilarity(d), 2, seed=0)) == expected


def test_silhouette_is_none_where_undefined() -> None:
    x = two_groups()
    d = torch.cdist(x, x)
    good = torch.tensor([0] * 5 + [1] * 5)
    assert silhouette(d, good) > 0.9
    assert silhouette(d, torch.zeros(10, dtype=torch.long)) is None
    assert silhouette(d, torch.arange(10)) is None
    assert silhouette(d, torch.tensor([-1] * 2 + [0] * 3 + [1] * 5)) > 0.9


def test_order_and_sizes() -> None:
    labels = torch.tensor([1, 0, -1, 1, 0])
    assert split(cluster_order(labels)) == [1, 4, 0, 3, 2]
    assert cluster_sizes(labels) == [2, 2]
