"""Model Folding (Wang et al., ICLR 2025, "Forget the Data and Fine-Tuning! Just Fold the Network
to Compress").

Data-free: k-means groups neurons by their weights; each cluster becomes one neuron with the
members' mean incoming weights and bias, and the next layer sums the members' outgoing weights (the
paper's projection onto cluster means, folded into the two layers). Neurons are clustered on their
incoming weights with the bias appended.

Averaging members that are not identical shrinks the pre-activation's variance; the paper repairs
that from batch-norm statistics (Fold-DIR) or from the members' weight correlations (Fold-AR,
rescaling by ``sqrt(n / (1 + (n - 1) rho))``). This layer has no batch norm, so the repair is the
Fold-AR idea made exact for inputs with isotropic covariance ``s^2 I``: then a neuron's
pre-activation std is ``s ||w||`` and the mean is ``b`` (for zero-mean inputs), so scaling the
merged incoming weights (not the bias) to the norm ``mean_m ||w_m||`` gives the merged neuron the
members' average std while keeping the mean. With equal member norms and ``rho`` the mean pairwise
cosine this is exactly Fold-AR's factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sklearn.cluster import KMeans
from torch import Tensor

from src.compress.base import LayerPair


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

    ``norm_repair``: rescale merged neurons to the members' average weight norm (the data-free
    variance repair above; ``compress.repair`` is the data-driven REPAIR, open to every method).
    k-means runs with 10 restarts, seeded from ``generator``.
    """

    norm_repair: bool = True

    def __call__(
        self,
        pair: LayerPair,
        activations: Tensor,
        labels: Tensor | None,
        target_width: int,
        generator: torch.Generator,
    ) -> LayerPair:
        features = pair.incoming().double().numpy()
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        k = min(target_width, pair.width)
        clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(features)
        return fold(pair, torch.from_numpy(clusters).long(), self.norm_repair)
