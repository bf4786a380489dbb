"""Neuron Merging (Kim et al., NeurIPS 2020, "Neuron Merging: Compensating for Pruned Neurons").

Data-free: prune by a weight criterion, then let each pruned neuron's outgoing weights live on in
the kept neuron it resembles most. Since ReLU is positively homogeneous, a neuron whose incoming
weights and bias are ``c * f_i`` (c > 0) fires exactly ``c * h_i``, so adding ``c * w_out[:, j]``
onto kept neuron i's column reproduces the next layer exactly; for merely similar neurons it is an
approximation whose quality the cosine threshold controls.

Adaptation to this layer: a neuron's feature is its incoming weights with the bias appended (the
paper's fully connected case; its batch-norm variant does not apply, there is no batch norm), and
``c`` is the paper's norm ratio ``||f_j|| / ||f_i||``.

Against the authors' code (github.com/friendshipkim/neuron-merging, ``decompose.py``:
``get_output_channel_index`` and ``create_scaling_mat_ip_thres_bias``, the LeNet-300-100 branch that
appends the bias): the same pruning criteria and scaling matrix, and the default criterion is
theirs, ``l1`` (``--criterion l1-norm``, the one their README's results use). One difference: they
skip the threshold test when the threshold is 0 (``if threshold and max_cos < threshold``), so
there every pruned neuron is merged into its most similar kept neuron even when that cosine is
negative, scaled by the positive norm ratio. That adds a neuron pointing away from the kept one
as if it pointed along it, so here the threshold must be in (0, 1] and 0 is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from src.compress.base import LayerPair, check_choice

# The paper's pruning criteria: l2-norm, l1-norm, l2-GM (geometric median, as in FPGM); the
# authors' code names them l2-norm, l1-norm, l2-GM.
KEEP_CRITERIA = ("norm", "l1", "gm")


def keep_scores(features: Tensor, criterion: str) -> Tensor:
    """Per neuron (N,), how much it deserves to stay; the k highest are kept.

    ``norm``/``l1``: the feature's l2/l1 norm. ``gm``: the summed Euclidean distance to all
    other features, so neurons nearest the geometric median (the most replaceable) go first.
    """
    check_choice(criterion, KEEP_CRITERIA, "compress.method.keep")
    if criterion == "norm":
        return features.norm(dim=1)
    if criterion == "l1":
        return features.norm(p=1, dim=1)
    return torch.cdist(features, features).sum(dim=1)


def scaling_matrix(features: Tensor, keep: Tensor, threshold: float) -> Tensor:
    """The paper's (N, k) matrix Z, with the merged next layer ``w_out @ Z``.

    Kept neuron ``keep[r]`` maps to column r with weight 1. A pruned neuron j goes to the kept
    neuron i of highest cosine similarity with weight ``||f_j|| / ||f_i||`` when that cosine is at
    least ``threshold`` (> 0, so the weight is a finite positive number), else its row is zero.
    """
    norms = features.norm(dim=1)
    unit = features / norms.clamp_min(torch.finfo(features.dtype).tiny)[:, None]
    best_cos, best = (unit @ unit[keep].T).max(dim=1)  # (N,): most similar kept neuron
    merge = best_cos >= threshold
    z = torch.zeros(features.shape[0], keep.numel(), dtype=features.dtype)
    rows = merge.nonzero().squeeze(1)
    z[rows, best[rows]] = norms[rows] / norms[keep][best[rows]]
    z[keep] = torch.eye(keep.numel(), dtype=features.dtype)
    return z


@dataclass(frozen=True)
class NeuronMerging:
    """:class:`~src.compress.base.MergeMethod` for Neuron Merging; ignores activations and labels.

    ``keep``: pruning criterion, one of :data:`KEEP_CRITERIA` (``l1``: l1-norm of incoming weights
    and bias, the authors' default; ``norm``: the l2-norm). ``threshold``: least cosine similarity
    for a pruned neuron to be merged rather than dropped; 0.45 is what the paper's code uses for
    its fully connected LeNet-300-100.
    """

    keep: str = "l1"
    threshold: float = 0.45

    def __post_init__(self) -> None:
        check_choice(self.keep, KEEP_CRITERIA, "compress.method.keep")
        if not 0 < self.threshold <= 1:
            raise ValueError(
                f"compress.method.threshold must be in (0, 1], got {self.threshold!r} (the "
                "official code's 0 merges every pruned neuron, even at a negative cosine; not "
                "offered here)"
            )

    def __call__(
        self,
        pair: LayerPair,
        activations: Tensor,
        labels: Tensor | None,
        target_width: int,
        generator: torch.Generator,
    ) -> LayerPair:
        features = pair.incoming().double()
        scores = keep_scores(features, self.keep)
        keep = scores.argsort(descending=True, stable=True)[:target_width].sort().values
        z = scaling_matrix(features, keep, self.threshold)
        w_out = (pair.w_out.double() @ z).to(pair.w_out.dtype)
        return pair.select(keep, w_out)
