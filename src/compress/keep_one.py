"""Correlation clustering, keep one (Dalvi et al., EMNLP 2020, "Analyzing Redundancy in Pretrained
Transformer Models"; NeuroX's ``extract_independent_neurons``).

Neurons are clustered by average-linkage agglomerative clustering on ``1 - |corr|`` of their
activations over the probe words, and one neuron per cluster stays as it is. The others are dropped
with their outgoing weights and nothing compensates for them, which makes it the control for what
the weight-sum step of the project's own merge buys.

Adaptation: the paper cuts the dendrogram at a distance threshold; here it is cut at the target
width. Dead and nearly dead neurons (:func:`~src.analysis.neurons.neuron_status`) are left out
first: they carry nothing, and their traces, uncorrelated with anything, would each take a cluster.
At a signed site (the LSTM) ``|corr|`` already puts a unit and its negation together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sklearn.cluster import AgglomerativeClustering
from torch import Tensor

from src.analysis.neurons import neuron_status
from src.compress.base import REPRESENTATIVES, LayerPair, check_choice, choose_representatives


def correlation_clusters(activations: Tensor, k: int) -> Tensor:
    """Cluster ids 0..k-1 (N,) from average linkage on ``1 - |corr|`` between neurons' traces.

    A neuron with constant activation has no correlation, so it is set to 0 with every other one.
    """
    n = activations.shape[1]
    if n <= k:
        return torch.arange(n)
    corr = torch.corrcoef(activations.double().T).nan_to_num(0.0).fill_diagonal_(1.0)
    clustering = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average")
    return torch.from_numpy(clustering.fit_predict((1 - corr.abs()).numpy())).long()


@dataclass(frozen=True)
class KeepOne:
    """:class:`~src.compress.base.MergeMethod` keeping one uncompensated neuron per correlation
    cluster; ignores the configured labels and clusters by itself.

    ``representative``: which member stays, one of ``REPRESENTATIVES`` from
    :mod:`src.compress.base`; ``random`` is the paper's choice.
    """

    representative: str = "random"

    def __post_init__(self) -> None:
        check_choice(self.representative, REPRESENTATIVES, "compress.method.representative")

    def __call__(
        self,
        pair: LayerPair,
        activations: Tensor,
        labels: Tensor | None,
        target_width: int,
        generator: torch.Generator,
    ) -> LayerPair:
        alive = neuron_status(activations, pair.w_out).alive.nonzero().squeeze(1)
        clusters = correlation_clusters(activations[:, alive], target_width)
        reps = choose_representatives(
            activations[:, alive], clusters, self.representative, generator
        )
        return pair.select(alive[reps].sort().values)
