"""Keep one neuron per cluster and refit the next layer to them in closed form.

Weight summing fixes the new outgoing weights by a rule; here they (and the next layer's bias) are
whatever reproduces the original next-layer input best from the kept neurons over the probe words.
Any weight-sum merge with the same kept neurons is one candidate of that least-squares problem,
so the refit is never worse on the probe words.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from src.compress.base import REPRESENTATIVES, LayerPair, check_choice, cluster_representatives


def refit_next_layer(
    pair: LayerPair, activations: Tensor, keep: Tensor, ridge: float = 1e-6
) -> LayerPair:
    """Keep the neurons at ``keep`` and refit ``w_out``, ``b_out`` by least squares.

    Minimises ``|| [H_keep, 1] [W^T; b^T] - (H W_out^T + b_out) ||^2`` over the probe words, in
    float64. ``ridge`` shrinks the weights (not the bias) for kept neurons that are nearly
    collinear; it is relative to the kept activations' mean squared column norm, so unit-free.
    """
    f64 = torch.float64
    h = activations.to(f64)
    target = h @ pair.w_out.to(f64).T + pair.b_out.to(f64)  # (words, M)
    h_keep = h[:, keep]
    words, k = h_keep.shape
    design = torch.cat([h_keep, h.new_ones(words, 1)], dim=1)
    lam = ridge * h_keep.square().sum() / max(k, 1)
    penalty = torch.cat(
        [lam.sqrt() * torch.eye(k, dtype=f64, device=h.device), h.new_zeros(k, 1)], 1
    )
    solution = torch.linalg.lstsq(
        torch.cat([design, penalty]), torch.cat([target, target.new_zeros(k, target.shape[1])])
    ).solution  # (k + 1, M): weights of the kept neurons, then the bias
    dtype = pair.w_out.dtype
    return LayerPair(
        pair.w_in[keep], pair.b_in[keep], solution[:k].T.to(dtype), solution[k].to(dtype)
    )


@dataclass(frozen=True)
class LeastSquaresRefit:
    """:class:`~src.compress.base.MergeMethod`: one representative per cluster, next layer refit."""

    representative: str = "max_activation"
    ridge: float = 1e-6

    def __post_init__(self) -> None:
        check_choice(self.representative, REPRESENTATIVES, "compress.representative")

    def __call__(
        self,
        pair: LayerPair,
        activations: Tensor,
        labels: Tensor | None,
        target_width: int,
        generator: torch.Generator,
    ) -> LayerPair:
        reps = cluster_representatives(
            activations, labels, target_width, self.representative, generator
        )
        return refit_next_layer(pair, activations, reps, self.ridge)
