"""The source's merge: each cluster keeps one neuron, which takes over the others' outgoing weights.

A member m whose activation is close to ``a * h_r`` (r its cluster's representative) contributes
``w_out[:, m] * h_m ~ (a * w_out[:, m]) * h_r`` to the next layer, so adding ``a * w_out[:, m]``
onto r's column keeps the next layer's input roughly unchanged. ``a`` is fitted on the probe words.
It may be negative: at a signed site (the LSTM) a unit and its negation merge exactly, with
``a = -1`` (``scale=ls`` or ``affine``; the source's plain sum assumes ``a = 1``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from src.compress.base import REPRESENTATIVES, LayerPair, check_choice, cluster_representatives

SCALES = ("ls", "none", "affine")


def _fit_members(h_m: Tensor, h_r: Tensor, scale: str) -> tuple[Tensor, Tensor]:
    """Per member, ``(a, c)`` with ``h_m ~ a * h_r + c`` over the words (columns are members)."""
    tiny = torch.finfo(h_r.dtype).tiny
    zeros = h_m.new_zeros(h_m.shape[1])
    if scale == "none":
        return torch.ones_like(zeros), zeros
    if scale == "ls":  # through the origin; a = 0 when the representative never fires
        return (h_m * h_r).sum(0) / (h_r * h_r).sum(0).clamp_min(tiny), zeros
    d_m, d_r = h_m - h_m.mean(0), h_r - h_r.mean(0)
    a = (d_m * d_r).sum(0) / (d_r * d_r).sum(0).clamp_min(tiny)
    return a, h_m.mean(0) - a * h_r.mean(0)


def merge_by_weight_sum(
    pair: LayerPair,
    activations: Tensor,
    labels: Tensor,
    representatives: Tensor,
    scale: str = "ls",
) -> LayerPair:
    """Shrink ``pair`` to one neuron per cluster, folding members into their representative.

    ``representatives[c]`` is the neuron kept for cluster ``c``; it keeps its incoming weights.
    ``scale`` is how a member's outgoing weights are scaled before being added onto the
    representative's column: ``none`` adds them as they are (the source), ``ls`` by the
    least-squares factor ``<h_m, h_r> / <h_r, h_r>``, ``affine`` by the slope of
    ``h_m ~ a h_r + c`` with the constant ``c * w_out[:, m]`` moved into ``b_out``, except for
    the outputs that also read an all-zero state (``pair.reads_zero_state``), where ``c`` would
    be wrong: those keep their bias and take the ``ls`` factor. Neurons labelled -1 are dead and
    their outgoing weights are dropped. Fits run in float64.
    """
    check_choice(scale, SCALES, "compress.method.scale")
    k = representatives.numel()
    if not torch.equal(labels[representatives], torch.arange(k, device=labels.device)):
        raise ValueError("representatives[c] must be a member of cluster c")
    members = (labels >= 0).nonzero().squeeze(1)
    owner = representatives[labels[members]]
    is_rep = members == owner  # a representative keeps its own column as it is
    h_m, h_r = activations.double()[:, members], activations.double()[:, owner]
    w_members = pair.w_out[:, members].double()

    def folded(scale: str) -> tuple[Tensor, Tensor]:
        """The merged outgoing weights (M, k) and bias (M,) with members fitted by ``scale``."""
        factor, offset = _fit_members(h_m, h_r, scale)
        factor, offset = factor.masked_fill(is_rep, 1.0), offset.masked_fill(is_rep, 0.0)
        w_out = w_members.new_zeros(pair.w_out.shape[0], k)
        w_out.index_add_(1, labels[members], w_members * factor)
        return w_out, pair.b_out.double() + w_members @ offset

    w_out, b_out = folded(scale)
    at_zero = pair.zero_state_rows()
    if scale == "affine" and at_zero.any():
        w_out[at_zero], b_out[at_zero] = folded("ls")[0][at_zero], pair.b_out.double()[at_zero]
    dtype = pair.w_out.dtype
    return pair.select(representatives, w_out.to(dtype), b_out.to(dtype))


@dataclass(frozen=True)
class WeightSum:
    """:class:`~src.compress.base.MergeMethod` that merges each cluster into one neuron.

    The clustering has already fixed the width (one neuron per cluster), so ``target_width`` is
    only checked against it.
    """

    representative: str = "max_activation"
    scale: str = "ls"

    def __post_init__(self) -> None:
        check_choice(self.representative, REPRESENTATIVES, "compress.method.representative")
        check_choice(self.scale, SCALES, "compress.method.scale")

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
        return merge_by_weight_sum(pair, activations, labels, reps, self.scale)
