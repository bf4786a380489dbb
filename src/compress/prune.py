"""Baseline with no merging: keep the strongest neurons and drop the rest.

If merging similar neurons is worth anything, it has to beat simply keeping the k neurons that
matter most; this is that yardstick.

``criterion=group_norm`` is the magnitude pruning of Torch-Pruning (Fang et al., CVPR 2023,
"DepGraph: Towards Any Structural Pruning"), for one layer. Torch-Pruning groups every parameter
that must go with a unit (its row in the layer, its column in every layer that reads it) and ranks
groups by ``GroupMagnitudeImportance`` (``MagnitudeImportance``), whose defaults we match: p = 2,
each layer's slice scored by its sum of squares, ``group_reduction="mean"`` over the group's
layers, ``normalizer="mean"`` and ``bias=False``. Within one layer the mean over the group's
layers and the normaliser are the same constant for every unit, so the ranking is that of
``sqrt(||w_in[i]||^2 + ||w_out[:, i]||^2)``, the biases left out. At a head site that group is
the Linear's row and the next Linear's column. At the LSTM site it is what Torch-Pruning's
``LSTMPruner`` removes for a hidden unit (as written up to v1.1.6): the unit's rows in
``weight_ih`` and ``weight_hh`` for all four gates, its column of ``weight_hh``, and the head's
column; the LSTM site's pair view puts exactly these in ``w_in`` and ``w_out``. Two differences
from running the library, both where its code departs from its design: its importance has no
case for ``nn.LSTM`` (no version up to 1.6.1 has one), so an LSTM unit's own parameters never
enter its score and the head's column alone ranks it; and since v1.1.7 its ``LSTMPruner``
slices ``weight_ih``/``weight_hh`` along the wrong dimensions. Like the library, the criterion
reads no data, so it keeps dead units by their weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from src.analysis.neurons import neuron_status
from src.compress.base import LayerPair, check_choice

CRITERIA = ("activation", "weight_norm", "group_norm")


def neuron_strength(pair: LayerPair, activations: Tensor, criterion: str) -> Tensor:
    """How much each neuron matters, (N,).

    ``activation``: mean |activation| over the probe words times ``||w_out[:, i]||``, i.e. the
    size of the neuron's average contribution to the next layer (|h|, so a signed unit counts
    by its size). ``weight_norm``: ``||w_out[:, i]|| * ||w_in[i]||``, which needs no data but
    ignores how often the neuron fires. ``group_norm``: the L2 norm of ``w_in[i]`` and
    ``w_out[:, i]`` together, Torch-Pruning's group magnitude (see the module docstring).
    """
    check_choice(criterion, CRITERIA, "compress.method.criterion")
    out_norm = pair.w_out.norm(dim=0)
    if criterion == "activation":
        return activations.abs().mean(dim=0) * out_norm
    if criterion == "group_norm":
        return (pair.w_in.double().square().sum(1) + pair.w_out.double().square().sum(0)).sqrt()
    return pair.w_in.norm(dim=1) * out_norm


@dataclass(frozen=True)
class Prune:
    """:class:`~src.compress.base.MergeMethod` keeping the ``target_width`` strongest neurons.

    Ignores the labels. With the ``activation`` and ``weight_norm`` criteria, dead and nearly dead
    neurons (:func:`~src.analysis.neurons.neuron_status`) rank below every live one, so they are
    kept only when too few are alive to reach the width; ``group_norm`` reads the weights alone,
    as Torch-Pruning does.
    """

    criterion: str = "activation"

    def __post_init__(self) -> None:
        check_choice(self.criterion, CRITERIA, "compress.method.criterion")

    def __call__(
        self,
        pair: LayerPair,
        activations: Tensor,
        labels: Tensor | None,
        target_width: int,
        generator: torch.Generator,
    ) -> LayerPair:
        strength = neuron_strength(pair, activations, self.criterion)
        order = strength.argsort(descending=True, stable=True)
        if self.criterion != "group_norm":
            dead = ~neuron_status(activations, pair.w_out).alive
            order = order[dead[order].int().argsort(stable=True)]  # live first, each by strength
        return pair.select(order[:target_width].sort().values)
