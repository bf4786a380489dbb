"""Statistics repair after any no-training merge (after Jordan et al., ICLR 2023, "REPAIR:
REnormalizing Permuted Activations for Interpolation Repair").

REPAIR observes that averaging neurons collapses their variance, and resets each merged neuron's
pre-activation mean and std to the ones it should have. Here that runs on the merged pair with the
layer's inputs over the probe words, and the affine correction ``z -> a z + c`` is folded into the
incoming weights and bias, so the shape is unchanged and no layer is added.

What each kept neuron k "should have" needs the original neurons it stands for (its group; from
:func:`assign_groups` when the method does not say) and how much of each it carries. The merged
next layer reads ``w'_k h_k`` where the original read ``sum_m w_m h_m`` over the group; the trace
``h_k`` that best reproduces that (least squares over the next layer's outputs) is
``sum_m s_m h_m`` with shares ``s_m = <w'_k, w_m> / ||w'_k||^2``. The target is the mean and std of
the same combination of the members' pre-activations, ``sum_m s_m z_m``. For a weight-sum merge
(``w'_k = sum_m w_m``) of identical members this is their common trace; for Neuron Merging's exact
case (``z_j = c z_i``, ``w'_i = w_i + c w_j``) it is ``z_i`` itself, so repair leaves exact merges
alone. Pre-activations rather than activations, because that is where a rescale can be folded.

Only live neurons (:func:`~src.analysis.neurons.neuron_status`) get a share. A neuron that never
fires on the probe words, or almost never, sends (next to) nothing to the next layer, yet its
pre-activation, mostly below zero, would drag the target's mean and std, and repair would spoil
an exact merge that merely has a dead neuron beside it. A kept neuron that stands for no live
neuron is left as it is.
"""

from __future__ import annotations

import torch
from torch import Tensor

from src.analysis.neurons import neuron_status
from src.compress.base import LayerPair


def _directions(pair: LayerPair) -> Tensor:
    """Unit-length incoming weights with the bias appended, (width, D + 1), float64."""
    f = pair.incoming().double()
    return f / f.norm(dim=1, keepdim=True).clamp_min(torch.finfo(f.dtype).eps)


def assign_groups(original: LayerPair, merged: LayerPair) -> Tensor:
    """Per original neuron (N,), the kept neuron whose incoming weights and bias point most its
    way (cosine).

    This is Neuron Merging's own matching (bar its threshold). Model Folding clusters on incoming
    and outgoing weights, and its neurons are the members' mean incoming weights, so this is close
    to its clusters but not always the same. For methods that group by activations (correlation
    clustering) or do not group at all (interpolative), it is a weight-based stand-in.
    """
    return (_directions(original) @ _directions(merged).T).argmax(dim=1)


def repair_statistics(
    original: LayerPair, merged: LayerPair, inputs: Tensor, groups: Tensor | None = None
) -> LayerPair:
    """``merged`` with each kept neuron's pre-activation matched in mean and std, over ``inputs``
    (words, D), to its group's target (module docstring).

    ``groups`` (N,): the kept neuron each original neuron stands in for, -1 for none; defaults to
    :func:`assign_groups`. Dead and nearly dead neurons stand for nothing. A kept neuron whose
    pre-activation is constant is only shifted.
    """
    groups = assign_groups(original, merged) if groups is None else groups
    f64 = torch.float64
    x = inputs.double()
    z_orig = x @ original.w_in.double().T + original.b_in.double()  # (words, N)
    z_kept = x @ merged.w_in.double().T + merged.b_in.double()  # (words, k)
    w_kept = merged.w_out.double()
    out_norm2 = w_kept.square().sum(dim=0).clamp_min(torch.finfo(f64).eps)
    shares = (w_kept.T @ original.w_out.double()) / out_norm2[:, None]  # (k, N)
    live = neuron_status(torch.relu(z_orig), original.w_out).alive
    shares = shares * (groups[None, :] == torch.arange(merged.width)[:, None]) * live[None, :]
    target = z_orig @ shares.T  # (words, k)
    stands_for = (shares != 0).any(dim=1)  # the kept neurons with a target at all
    kept_std = z_kept.std(dim=0)
    rescale = stands_for & (kept_std > torch.finfo(f64).eps)
    scale = torch.where(rescale, target.std(dim=0) / kept_std, 1.0)
    shift = torch.where(stands_for, target.mean(dim=0) - scale * z_kept.mean(dim=0), 0.0)
    w_in = scale[:, None] * merged.w_in.double()
    b_in = scale * merged.b_in.double() + shift
    dtype = merged.w_in.dtype
    return LayerPair(w_in.to(dtype), b_in.to(dtype), merged.w_out, merged.b_out)
