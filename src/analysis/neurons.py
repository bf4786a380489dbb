"""Which neurons of a layer are dead, nearly dead or alive: the one definition every part uses.

The clustering, the methods that pick neurons (prune, keep_one), the statistics repair,
``clusters.json``, the study's ``layers.csv`` and the viewer all read it from :func:`neuron_status`.

A neuron matters by what it adds to the next layer, ``h_i * w_out[:, i]``, not by its activation
alone: scaling a neuron's incoming weights and bias by c > 0 and its outgoing weights by 1 / c
leaves the network's function unchanged (ReLU is positively homogeneous), so a definition must
not change either. Judging by the activation's peak against the layer's (an earlier rule) dropped
an exact multiple of a live neuron at 0.5 % scale together with its large outgoing weights.

Signed units (the LSTM's, h = o * tanh(c)) have the other symmetry: negating a unit (its gate
rows feeding c, and every column that reads it) leaves the network unchanged, so only the size
|h| may count. A unit *fires* on a word where its activation is non-zero, and its contribution
uses its largest |h|; on post-ReLU activations that is exactly the rule above.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

MIN_ACTIVE_FRACTION = 1e-3  # fires on under 0.1 % of the probe words: nearly dead
MIN_RELATIVE_CONTRIBUTION = 1e-2  # under 1 % of the layer's largest contribution: nearly dead
STATUSES = ("alive", "nearly dead", "dead")  # each neuron's status by name, as the viewer shows it


@dataclass(frozen=True)
class NeuronStatus:
    """Boolean masks (N,): ``dead`` and ``nearly_dead`` are disjoint; ``alive`` is the rest."""

    dead: Tensor
    nearly_dead: Tensor
    contribution: Tensor  # (N,) float64, largest |activation| x ||outgoing weights||
    active_fraction: Tensor  # (N,) float64, share of the probe words it fires on (non-zero)

    @property
    def alive(self) -> Tensor:
        return ~(self.dead | self.nearly_dead)

    @staticmethod
    def indices(mask: Tensor) -> list[int]:
        """The neurons a mask marks, as the list ``clusters.json`` writes."""
        return mask.nonzero().flatten().tolist()

    def names(self) -> list[str]:
        """Per neuron one of :data:`STATUSES`: the viewer's per-neuron badges."""
        alive, nearly_dead, dead = STATUSES
        return [
            dead if d else nearly_dead if nd else alive
            for d, nd in zip(self.dead.tolist(), self.nearly_dead.tolist(), strict=True)
        ]


def neuron_status(
    activations: Tensor,
    w_out: Tensor,
    min_active_fraction: float = MIN_ACTIVE_FRACTION,
    min_relative_contribution: float = MIN_RELATIVE_CONTRIBUTION,
) -> NeuronStatus:
    """Every neuron's status from its ``activations`` on the probe words (words, N; post-ReLU or
    signed) and the next layer's weights ``w_out`` (M, N).

    *Dead*: never fires (is never non-zero) on the probe words. *Nearly dead*: fires on under
    ``min_active_fraction`` of them, or its largest contribution to the next layer (largest
    |activation| times the norm of its outgoing weight column) is under
    ``min_relative_contribution`` of the layer's largest. *Alive*: the rest. Nearly dead neurons
    are left out of the clustering with the dead: normalising their traces for magnitude turns
    noise into a trace unlike any other, which would make a singleton cluster and waste one of
    the kept neurons.
    """
    if activations.ndim != 2 or w_out.ndim != 2 or activations.shape[1] != w_out.shape[1]:
        raise ValueError(
            f"activations must be (words, {activations.shape[-1]}) and w_out "
            f"(M, {activations.shape[-1]}): got {tuple(activations.shape)} and "
            f"{tuple(w_out.shape)}"
        )
    h = activations.detach()  # read in its own precision: a float64 copy of every probe word
    fires = h != 0  # cost more than the rest (the peak and the counts are exact either way)
    active_fraction = fires.sum(dim=0).double() / max(len(h), 1)
    peak = (h.abs().amax(dim=0) if len(h) else h.new_zeros(h.shape[1])).double()
    contribution = peak * w_out.detach().double().norm(dim=0)
    dead = ~fires.any(dim=0)
    weak = contribution < min_relative_contribution * contribution.max()
    nearly_dead = ~dead & ((active_fraction < min_active_fraction) | weak)
    return NeuronStatus(dead, nearly_dead, contribution, active_fraction)
