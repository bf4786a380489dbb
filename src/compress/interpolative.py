"""Interpolative decomposition (Chee et al., NeurIPS 2022, "Model Preserving Compression for
Neural Networks").

Data-driven: a column-pivoted QR of the recorded activations ``H`` (probe words x N) picks the k
neurons whose traces span the others best, and the interpolation matrix ``T`` (k x N) with
``H ~ H[:, keep] @ T`` says how to rebuild every neuron from them. The next layer reads
``H @ W_out^T ~ H[:, keep] @ (W_out @ T^T)^T``, so ``T`` is folded into its weights. Exact on the
probe words when ``H`` has rank k.

Adaptation: the paper compresses every layer of a network in turn; here it is applied to the one
hidden layer of the head, on its post-ReLU activations as the probe words record them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from src.compress.base import LayerPair
from src.compress.ls_refit import refit_next_layer


def interpolative_decomposition(h: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Kept columns ``keep`` (k,) and ``T`` (k, N) float64 with ``h ~ h[:, keep] @ T``.

    ``keep`` are the first k pivots of a column-pivoted QR, ``H P = Q [R11 R12]``; then
    ``T P = [I, R11^+ R12]``. The pseudo-inverse (least squares) keeps ``T`` finite when k
    exceeds the rank of ``h``, e.g. when dead neurons are among the pivots.

    The pivoting runs on the (N, N) triangle ``R0`` of an unpivoted QR of ``h``: ``h = Q0 R0``
    gives ``h^T h = R0^T R0``, so both have the same column norms at every step, hence the same
    pivots and ``R`` up to row signs, which ``T`` does not see. A tall ``h`` (460k probe words of
    an IMDB site) is then factored by the blocked QR, 7x faster than a pivoted one.
    """
    k = min(k, *h.shape)
    triangle = torch.linalg.qr(h.double(), mode="r").R.numpy()
    _, r, perm = scipy.linalg.qr(triangle, mode="economic", pivoting=True)
    rebuilt = np.linalg.pinv(r[:k, :k]) @ r[:k, k:]
    t = np.empty((k, h.shape[1]))
    t[:, perm] = np.hstack([np.eye(k), rebuilt])
    return torch.from_numpy(perm[:k]).long(), torch.from_numpy(t)


@dataclass(frozen=True)
class InterpolativeDecomposition:
    """:class:`~src.compress.base.MergeMethod` for the interpolative decomposition.

    Ignores the labels: the pivoting picks the neurons, and neurons that never fire come last.
    ``refit``: instead of folding ``T`` in, refit the next layer (weights and bias) to the kept
    neurons by least squares against the original next-layer input (as ``ls_refit`` does): it
    fits the M outputs the next layer computes rather than all N activations, so it is never
    worse on the probe words. Our addition, for wide layers read by a narrower one (a
    transformer's MLP: 1,536 units read by 384 outputs).
    """

    refit: bool = False
    ridge: float = 1e-6  # with refit: relative ridge of the least squares (src.compress.ls_refit)

    def __call__(
        self,
        pair: LayerPair,
        activations: Tensor,
        labels: Tensor | None,
        target_width: int,
        generator: torch.Generator,
    ) -> LayerPair:
        keep, t = interpolative_decomposition(activations, target_width)
        if self.refit:
            return refit_next_layer(pair, activations, keep, self.ridge)
        w_out = (pair.w_out.double() @ t.T).to(pair.w_out.dtype)
        return pair.select(keep, w_out)
