"""Model Folding (Wang et al., ICLR 2025, "Forget the Data and Fine-Tuning! Just Fold the Network
to Compress").

Data-free: k-means groups neurons by their weights; each cluster becomes one neuron with the
members' mean incoming weights and bias, and the next layer sums the members' outgoing weights (the
paper's projection onto cluster means, folded into the two layers).

What a neuron is clustered on follows the authors' code (github.com/marza96/ModelFolding,
``utils/weight_clustering.py``): ``concat_weights`` takes every tensor that the layer's neuron
permutation touches, moves the neuron axis first, flattens and stacks them side by side, as they
are (no block is normalised). For a linear layer without batch norm that is ``[w_in | b_in |
w_out^T]``: incoming weights, bias **and outgoing weights** (``compress.method.features=
incoming_outgoing``, the default; ``incoming`` drops the outgoing block). Their
``WeightClustering`` then runs PCA with as many components as neurons, a rotation of the centred
rows that leaves k-means' distances as they are, and Hartigan's k-means (``hkmeans``, 10 restarts);
only with their data-free repair do they first standardise each column (``RobustScaler``). Here:
scikit-learn's k-means (Lloyd, 10 restarts) on the raw rows, as their code without that repair.

Averaging members that are not identical shrinks the pre-activation's variance. The paper repairs
that from batch-norm statistics (Fold-DIR), or data-free by Fold-AR: the merged batch-norm scale
times ``sqrt(n / (1 + (n - 1) rho))``, with ``rho`` the members' mean pairwise cosine over the same
stacked weights (the authors' ``get_average_correlation``). This layer has no batch norm to
rescale, so ``norm_repair`` is our own adaptation, not the paper's Fold-AR. It makes the Fold-AR
idea exact for inputs with isotropic covariance ``s^2 I``: then a neuron's pre-activation std is
``s ||w||`` and the mean is ``b`` (for zero-mean inputs), so scaling the merged incoming weights
(not the bias) to the norm ``mean_m ||w_m||`` gives the merged neuron the members' average std
while keeping the mean. With equal member norms and ``rho`` the mean pairwise cosine of the
incoming weights this is Fold-AR's factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from sklearn.cluster import KMeans
from torch import Tensor

from src.compress.base import LayerPair, check_choice

FEATURES = ("incoming_outgoing", "incoming")


def folding_features(pair: LayerPair, features: str = "incoming_outgoing") -> Tensor:
    """What k-means sees of each neuron, (N, D + 1 [+ M]), float64 (module docstring)."""
    check_choice(features, FEATURES, "compress.method.features")
    if features == "incoming":
        return pair.incoming().double()
    return torch.column_stack([pair.w_in, pair.b_in, pair.w_out.T]).double()


def fold(pair: LayerPair, labels: Tensor, repair: bool = True) -> LayerPair:
    """Fold each cluster of ``labels`` (N,) into one neuron, in ascending order of cluster id.

    Unused ids are skipped. ``repair``: rescale to the members' mean weight norm (module docstring).
    """
    labels = labels.unique(return_inverse=True)[1]
    f64 = torch.float64
    members = torch.nn.functional.one_hot(labels).to(f64)  # (N, k)
    mean = members / members.sum(dim=0)
    w_in, b_in = mean.T @ pair.w_in.double(), mean.T @ pair.b_in.double()
    if repair:
        target_norm = mean.T @ pair.w_in.double().norm(dim=1)
        w_in = w_in * (target_norm / w_in.norm(dim=1).clamp_min(torch.finfo(f64).eps))[:, None]
    w_out = pair.w_out.double() @ members
    dtype = pair.w_in.dtype
    return LayerPair(w_in.to(dtype), b_in.to(dtype), w_out.to(pair.w_out.dtype), pair.b_out)


@dataclass(frozen=True)
class ModelFolding:
    """:class:`~src.compress.base.MergeMethod` for Model Folding; ignores activations and labels.

    ``features``: what neurons are clustered on, one of :data:`FEATURES` (module docstring).
    ``norm_repair``: rescale merged neurons to the members' average weight norm (the data-free
    variance repair above; ``compress.repair`` is the data-driven REPAIR, open to every method).
    k-means runs with 10 restarts, seeded from ``generator``.
    """

    features: str = "incoming_outgoing"
    norm_repair: bool = True
    builds_units: ClassVar[bool] = True  # averaged rows: no site inside the LSTM can hold them

    def __post_init__(self) -> None:
        check_choice(self.features, FEATURES, "compress.method.features")

    def __call__(
        self,
        pair: LayerPair,
        activations: Tensor,
        labels: Tensor | None,
        target_width: int,
        generator: torch.Generator,
    ) -> LayerPair:
        features = folding_features(pair, self.features).numpy()
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        k = min(target_width, pair.width)
        clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(features)
        return fold(pair, torch.from_numpy(clusters).long(), self.norm_repair)
