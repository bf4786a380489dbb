"""Baseline with no merging: keep the strongest neurons and drop the rest.

If merging similar neurons is worth anything, it has to beat simply keeping the k neurons that
matter most; this is that yardstick.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from src.analysis.neurons import neuron_status
from src.compress.base import LayerPair, check_choice

CRITERIA = ("activation", "weight_norm")


def neuron_strength(pair: LayerPair, activations: Tensor, criterion: str) -> Tensor:
    """How much each neuron matters, (N,).

    ``activation``: mean activation over the probe words times ``||w_out[:, i]||``, i.e. the size
    of the neuron's average contribution to the next layer. ``weight_norm``: ``||w_out[:, i]|| *
    ||w_in[i]||``, which needs no data but ignores how often the neuron fires.
    """
    check_choice(criterion, CRITERIA, "compress.criterion")
    out_norm = pair.w_out.norm(dim=0)
    if criterion == "activation":
        return activations.mean(dim=0) * out_norm
    return pair.w_in.norm(dim=1) * out_norm


@dataclass(frozen=True)
class Prune:
    """:class:`~src.compress.base.MergeMethod` keeping the ``target_width`` strongest neurons.

    Ignores the labels. Dead and nearly dead neurons (:func:`~src.analysis.neurons.neuron_status`)
    rank below every live one, so they are kept only when too few are alive to reach the width.
    """

    criterion: str = "activation"

    def __post_init__(self) -> None:
        check_choice(self.criterion, CRITERIA, "compress.criterion")

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
        dead = ~neuron_status(activations, pair.w_out).alive
        order = order[dead[order].int().argsort(stable=True)]  # live first, each by strength
        return pair.select(order[:target_width].sort().values)
