"""The maths the word methods share: a site whose units are the embedding's rows.

A word's unit is on (1) exactly at the words that are it, so traces never overlap and the trace
similarity the other sites use says nothing. What a word does is what the LSTM reads from it,
``W_ih e_w``; what it weighs is how often it occurs. The words site gives its methods the pair

- ``w_in`` (V, E): each word's row (all it owns), ``b_in`` zeros;
- ``w_out`` (4H, V): ``W_ih E^T``, what the LSTM reads from each word, ``b_out`` its ``bias_ih``;
- ``activations`` (1, V): each word's count in the training split (the sum of its one-hot
  activations over the training words).

A method returns a pair of k rows and ``merged_into`` (V,): the row every word now reads.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.cluster import AgglomerativeClustering, KMeans
from torch import Tensor

from src.compress.base import LayerPair
from src.tokens import SPECIAL_IDS

SPACES = ("sensitivity", "lstm_input", "embedding")  # where a word method counts its error
INITS = ("frequent", "k-means++")  # k-means' starts
# Points this close (every coordinate, as a share of the largest) are one word to the clustering:
# float32 noise sets twins (two words the LSTM reads alike) up to 6e-7 apart, and rounding to a
# grid of six digits parted 1-2 of 40 random twins. This leaves a margin over that noise and still
# merges only rows that agree to five digits, which a k-means would merge at no cost anyway.
ALIKE = 1e-5


def check_words_width(target_width: int, words: int) -> None:
    """A width that keeps the special tokens' rows and merges something."""
    if not len(SPECIAL_IDS) < target_width < words:
        raise ValueError(
            f"target_width={target_width}: the words site keeps [PAD] and [UNK] as rows of "
            f"their own, so it takes {len(SPECIAL_IDS) + 1}..{words - 1} rows"
        )


def frequencies(activations: Tensor) -> Tensor:
    """Each word's weight (V,), float64: its count, plus a little so that a word never seen
    still has a defined merged row."""
    return activations.sum(0).double() + 1e-3


def by_frequency(weights: Tensor) -> Tensor:
    """Every word id, the special tokens first, then the most frequent first."""
    order = weights.clone()
    order[list(SPECIAL_IDS)] = float("inf")
    return order.argsort(descending=True, stable=True)


def fold_words(pair: LayerPair, merged_into: Tensor, weights: Tensor) -> LayerPair:
    """The pair whose row r is the ``weights``-weighted mean of the words ``merged_into`` maps
    to r: the least-squares row for them in the embedding and in what the LSTM reads (one is a
    linear map of the other). Rows are numbered in order of their first word, so the special
    tokens (ids 0 and 1, each alone) keep their ids."""
    rows = int(merged_into.max()) + 1
    return LayerPair(
        weighted_means(pair.w_in, merged_into, weights),
        torch.zeros(rows, dtype=pair.b_in.dtype),
        weighted_means(pair.w_out.T, merged_into, weights).T.contiguous(),
        pair.b_out,
        merged_into=merged_into,
    )


def weighted_means(values: Tensor, groups: Tensor, weights: Tensor) -> Tensor:
    """(V, X) -> (groups, X): each group's ``weights``-weighted mean of its members' ``values``
    (computed in float64), group ``r`` the members ``groups`` maps to ``r``."""
    rows = int(groups.max()) + 1
    w = weights.double()
    total = torch.zeros(rows, dtype=torch.float64).index_add_(0, groups, w)
    summed = torch.zeros(rows, values.shape[1], dtype=torch.float64)
    summed.index_add_(0, groups, values.double() * w[:, None])
    return (summed / total[:, None]).to(values.dtype)


def renumber(groups: Tensor) -> Tensor:
    """Group labels (V,) as rows 0..k-1 in order of each group's first word, so that the
    special tokens (the first ids, each in a group of its own) keep their ids."""
    _, first = torch.unique(groups, return_inverse=True)
    order = torch.full((int(first.max()) + 1,), len(groups), dtype=torch.long)
    order.scatter_reduce_(0, first, torch.arange(len(groups)), "amin")
    rank = torch.empty_like(order)
    rank[order.argsort()] = torch.arange(len(order))
    return rank[first]


def alike_groups(points: np.ndarray, tolerance: float = ALIKE) -> np.ndarray:
    """A group per point (n,): points whose coordinates all agree to within ``tolerance`` of the
    largest coordinate are one group, as are chains of them (connected components), so that no
    grid boundary can part twins that float32 noise set a hair apart.

    Candidates come from a sweep along the widest coordinate (two points alike are alike there
    too), after exact duplicates are folded: O(n log n) for distinct words, 0.3 s at 50k x 128."""
    n = len(points)
    scale = float(np.abs(points).max()) if points.size else 0.0
    if scale == 0.0:  # every point is the origin (or has no coordinates): all alike
        return np.zeros(n, dtype=np.int64)
    distinct, inverse = np.unique(points, axis=0, return_inverse=True)  # (m, X), (n,)
    near = tolerance * scale
    axis = int(np.argmax(distinct.max(0) - distinct.min(0)))
    order = np.argsort(distinct[:, axis], kind="stable")
    swept = distinct[order]
    key = swept[:, axis]  # ascending: a gap only grows with the offset
    m = len(swept)
    start, offset, pairs = np.arange(m), 1, [np.zeros((2, 0), dtype=np.int64)]
    while True:
        start = start[start + offset < m]
        start = start[key[start + offset] - key[start] <= near]  # still close along the axis
        if not start.size:
            break
        close = start[np.abs(swept[start + offset] - swept[start]).max(1) <= near]
        pairs.append(np.stack([order[close], order[close + offset]]))
        offset += 1
    edges = np.concatenate(pairs, axis=1)  # (2, pairs alike)
    graph = coo_matrix((np.ones(edges.shape[1], dtype=bool), tuple(edges)), shape=(m, m))
    _, group = connected_components(graph, directed=False)
    return group[inverse.reshape(-1)]


def cluster_words(
    points: np.ndarray,
    weights: Tensor,
    clusters: int,
    generator: torch.Generator,
    clustering: str = "kmeans",
    init: str = "frequent",
    iterations: int = 30,
) -> np.ndarray:
    """A cluster per point (word), ``clusters`` of them, by ``weights`` (k-means). Words alike
    (:func:`alike_groups`: within :data:`ALIKE` of the largest coordinate) are one point before
    any clustering, so they always merge, and no start can keep them apart; k-means' ``frequent``
    start is the heaviest points."""
    alike = alike_groups(points)
    weight = np.bincount(alike, weights=weights.numpy())
    # one point per group of alike words, the most used first
    order = np.argsort(-weight, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    first = np.zeros(len(order), dtype=np.int64)
    first[alike[::-1]] = np.arange(len(alike))[::-1]  # a member of each group
    distinct, weight = points[first[order]], weight[order]
    if clusters >= len(distinct):
        return rank[alike]
    if clustering == "agglomerative":  # Ward's linkage: unweighted, O(V^2) memory
        return AgglomerativeClustering(clusters).fit_predict(distinct)[rank[alike]]
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    start = distinct[:clusters] if init == "frequent" else init
    kmeans = KMeans(clusters, init=start, n_init=1, max_iter=iterations, random_state=seed)
    labels = kmeans.fit(distinct, sample_weight=weight).labels_
    return labels[rank[alike]]
