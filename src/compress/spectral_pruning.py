"""Spectral pruning (Furuya et al., AISTATS 2022, "Spectral Pruning for Recurrent Neural Networks",
after Suzuki et al., IJCAI 2020, "Spectral Pruning: Compressing Deep Neural Networks via Spectral
Analysis and its Generalization Error").

Data-driven, no training. The units' time-averaged second moment over the probe words,
``Sigma = H^T H / words`` (N x N; the papers' uncentred "covariance", averaged over every word of
every probe sentence), says how well a subset J of units can rebuild all of them linearly: the
ridge regression of every unit on the units of J has the reconstruction matrix
``A_J = Sigma_FJ (Sigma_JJ + lambda I)^-1`` (N x k, F every unit) and leaves the *input
information loss* ``L(J) = Tr[Sigma_FF - Sigma_FJ (Sigma_JJ + lambda I)^-1 Sigma_JF]``. The kept
units are a J of size k with small ``L(J)``, and the next weights read the rebuilt units:
``w_out <- w_out @ A_J``. At the LSTM site that consumer is the head's first layer stacked over
``weight_hh`` (every gate reads the rebuilt previous state), which is the paper's compressed RNN
(``W_hh[J] A_J``, ``W_out A_J``); at a head site it is the next Linear. Exact on the probe words
when the activations have rank k and lambda = 0.

Adaptations: the exact minimiser of ``L`` is a search over subsets; J is grown greedily instead,
each step adding the unit that lowers ``L`` most, which a rank-one update of the residual
``Sigma - Sigma_FJ (Sigma_JJ + lambda I)^-1 Sigma_JF`` makes O(N^2) per unit. ``ridge`` is the
papers' lambda relative to the mean of ``diag(Sigma)``, so one setting serves sites whose
activations differ in size. Only the input information loss chooses J (the papers also define an
output-side loss weighted by the next layer's weights). The paper averages over sequences of one
length; the probe's sentences differ in length, so longer sentences weigh more.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from src.compress.base import LayerPair


def second_moment(activations: Tensor) -> Tensor:
    """``Sigma = H^T H / words`` (N, N) float64: the time-averaged uncentred covariance."""
    h = activations.detach().double()
    return h.T @ h / max(len(h), 1)


def absolute_ridge(sigma: Tensor, ridge: float) -> float:
    """The papers' lambda for a ``ridge`` relative to the mean second moment of a unit."""
    return ridge * float(sigma.diagonal().mean()) if len(sigma) else 0.0


def information_loss(sigma: Tensor, keep: Tensor, lam: float) -> float:
    """``Tr[Sigma_FF - Sigma_FJ (Sigma_JJ + lam I)^+ Sigma_JF]``: what J leaves unexplained."""
    return float(sigma.trace() - (sigma[:, keep] * reconstruction_matrix(sigma, keep, lam)).sum())


def reconstruction_matrix(sigma: Tensor, keep: Tensor, lam: float) -> Tensor:
    """``A_J = Sigma_FJ (Sigma_JJ + lam I)^+`` (N, k): every unit as a combination of J's.

    The pseudo-inverse (minimum-norm least squares) keeps ``A_J`` finite when lam = 0 and J holds
    dead or dependent units.
    """
    gram = sigma[keep][:, keep] + lam * torch.eye(len(keep), dtype=sigma.dtype)
    return torch.linalg.lstsq(gram, sigma[keep], driver="gelsd").solution.T


def select_units(sigma: Tensor, k: int, lam: float) -> Tensor:
    """k unit indices (in the order chosen), grown greedily to lower the information loss.

    With ``R`` the residual second moment of the units given J so far, adding unit j lowers the
    loss by ``||R[:, j]||^2 / (R[j, j] + lam)``; the chosen unit's column ``v = R[:, j] /
    sqrt(R[j, j] + lam)`` then leaves ``R - v v^T``. A unit with nothing left to explain (a dead
    one, or, when lam = 0, one already spanned by J) gains 0 and is chosen only when no unit gains.
    """
    n = len(sigma)
    residual = sigma.clone()
    scale = float(sigma.diagonal().max()) if n else 0.0
    floor = torch.finfo(sigma.dtype).eps * n * scale
    chosen = torch.zeros(n, dtype=torch.bool)
    order = []
    for _ in range(min(k, n)):
        pivot = residual.diagonal() + lam
        empty = pivot <= floor
        gain = residual.square().sum(dim=0) / torch.where(empty, 1.0, pivot)
        gain = gain.masked_fill(empty, 0.0).masked_fill(chosen, -torch.inf)
        j = int(gain.argmax())
        chosen[j] = True
        order.append(j)
        if not empty[j]:
            v = residual[:, j] / pivot[j].sqrt()
            residual -= torch.outer(v, v)
    return torch.tensor(order, dtype=torch.long)


@dataclass(frozen=True)
class SpectralPruning:
    """:class:`~src.compress.base.MergeMethod` for spectral pruning; ignores the labels.

    ``ridge``: lambda relative to the mean of ``diag(Sigma)``; 0 gives the plain least-squares
    reconstruction, exact when the activations have rank ``target_width``.
    """

    ridge: float = 1e-6

    def __post_init__(self) -> None:
        if not self.ridge >= 0:
            raise ValueError(f"compress.method.ridge={self.ridge} must be at least 0")

    def __call__(
        self,
        pair: LayerPair,
        activations: Tensor,
        labels: Tensor | None,
        target_width: int,
        generator: torch.Generator,
    ) -> LayerPair:
        sigma = second_moment(activations)
        lam = absolute_ridge(sigma, self.ridge)
        keep = select_units(sigma, target_width, lam).sort().values
        a = reconstruction_matrix(sigma, keep, lam)
        w_out = (pair.w_out.double() @ a).to(pair.w_out.dtype)
        return pair.select(keep, w_out)
