"""One definition of a dead neuron: by what it contributes to the next layer, whatever its scale."""

from __future__ import annotations

import pytest
import torch

from src.analysis.layer import Probe, cluster_layer, probe_dissimilarity
from src.analysis.neurons import neuron_status
from src.compress.base import LayerPair
from src.compress.keep_one import KeepOne
from src.compress.prune import Prune
from src.compress.weight_sum import WeightSum

D, M = 8, 3
SMALL = 0.005  # the copy's scale: 0.5 % of the neuron it copies


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def inputs(words: int = 400, seed: int = 1) -> torch.Tensor:
    return torch.randn(words, D, generator=gen(seed))


def live_pair(n: int = 5, seed: int = 0) -> LayerPair:
    """n neurons that fire on most words, outgoing weights of norm about 1."""
    g = gen(seed)
    return LayerPair(
        torch.randn(n, D, generator=g),
        torch.rand(n, generator=g) + 1.0,
        torch.randn(M, n, generator=g) / M**0.5,
        torch.randn(M, generator=g),
    )


def with_neuron(pair: LayerPair, w_in: torch.Tensor, b_in: float, w_out: torch.Tensor) -> LayerPair:
    """``pair`` with one more neuron, appended last."""
    return LayerPair(
        torch.cat([pair.w_in, w_in[None]]),
        torch.cat([pair.b_in, torch.tensor([b_in])]),
        torch.cat([pair.w_out, w_out[:, None]], dim=1),
        pair.b_out,
    )


def small_copy_pair() -> LayerPair:
    """Neuron 5 fires exactly 0.5 % as much as neuron 0 and writes 400 times as strongly."""
    pair = live_pair()
    return with_neuron(
        pair, SMALL * pair.w_in[0], SMALL * float(pair.b_in[0]), 400 * pair.w_out[:, 1]
    )


def test_status_splits_the_layer_into_dead_nearly_dead_and_alive() -> None:
    h = torch.tensor([[1.0, 0.0, 0.0, 2.0, 0.0], [2.0, 0.0, 0.0, 3.0, 0.0]]).repeat(1000, 1)
    h[0, 1] = 5.0  # neuron 1 fires on one word in 2000: under 0.1 %
    h[:, 2] = 0.01  # neuron 2 fires everywhere, under 1 % of the layer's largest contribution
    h[:4, 4] = 1.0  # neuron 4 fires on 4 words in 2000: rarely, but enough
    w_out = torch.ones(M, 5)
    status = neuron_status(h, w_out)
    assert status.dead.tolist() == [False, False, False, False, False]
    assert status.nearly_dead.tolist() == [False, True, True, False, False]
    assert status.alive.tolist() == [True, False, False, True, True]
    h[:, 4] = 0.0
    status = neuron_status(h, w_out)
    assert status.dead.tolist() == [False, False, False, False, True]
    assert (status.dead.int() + status.nearly_dead.int() + status.alive.int()).tolist() == [1] * 5
    assert status.indices(status.dead) == [4]
    assert status.names() == ["alive", "nearly dead", "nearly dead", "alive", "dead"]


def test_a_small_exact_multiple_that_writes_strongly_is_alive() -> None:
    pair, x = small_copy_pair(), inputs()
    h = pair.hidden(x)
    torch.testing.assert_close(h[:, 5], SMALL * h[:, 0])
    status = neuron_status(h, pair.w_out)
    assert status.alive.all()


def test_status_is_magnitude_invariant() -> None:
    """Scaling a neuron's incoming weights by c and its outgoing ones by 1 / c changes nothing
    downstream, so it must not change the neuron's status either."""
    pair, x = live_pair(), inputs()
    before = neuron_status(pair.hidden(x), pair.w_out)
    for c in (1e-4, 1e-2, 1e2):
        scale = torch.ones(pair.width)
        scale[2] = c
        scaled = LayerPair(
            scale[:, None] * pair.w_in, scale * pair.b_in, pair.w_out / scale, pair.b_out
        )
        after = neuron_status(scaled.hidden(x), scaled.w_out)
        assert torch.equal(after.alive, before.alive) and torch.equal(after.dead, before.dead)


@pytest.mark.parametrize(("activation_scale", "out_scale"), [(SMALL, 1.0), (1.0, SMALL)])
def test_a_genuinely_negligible_neuron_is_nearly_dead(activation_scale, out_scale) -> None:
    """Under 1 % of the layer's largest contribution, by firing weakly or by writing weakly."""
    pair = live_pair()
    pair = with_neuron(
        pair,
        activation_scale * pair.w_in[3],
        activation_scale * float(pair.b_in[3]),
        out_scale * pair.w_out[:, 3],
    )
    status = neuron_status(pair.hidden(inputs()), pair.w_out)
    assert status.nearly_dead.tolist() == [False] * 5 + [True]
    assert status.alive.tolist() == [True] * 5 + [False]


def test_weight_sum_of_a_small_exact_multiple_stays_exact() -> None:
    """The multiple shares neuron 0's cluster and is folded into it; dropping it as "nearly dead"
    (its peak is 0.5 % of the layer's) lost its strong outgoing weights."""
    pair, x = small_copy_pair(), inputs()
    probe = Probe(x, pair.hidden(x))
    analysis = cluster_layer(
        probe, probe_dissimilarity(probe), pair.incoming(), pair.w_out, "head.2", 5, "agglomerative"
    )
    assert analysis.alive.all() and analysis.labels[5] == analysis.labels[0]
    merged = WeightSum()(pair, probe.activations, analysis.labels, 5, gen())
    fresh = inputs(500, seed=2)
    torch.testing.assert_close(merged.forward(fresh), pair.forward(fresh), atol=1e-4, rtol=1e-5)


def test_cluster_layer_leaves_the_dead_and_nearly_dead_out() -> None:
    pair = live_pair(4)
    pair = with_neuron(pair, pair.w_in[1], float(pair.b_in[1]), SMALL * pair.w_out[:, 1])
    pair = with_neuron(pair, torch.zeros(D), -1.0, pair.w_out[:, 0])  # never fires
    x = inputs()
    probe = Probe(x, pair.hidden(x))
    analysis = cluster_layer(
        probe, probe_dissimilarity(probe), pair.incoming(), pair.w_out, "head.2", 2, "agglomerative"
    )
    assert analysis.status.indices(analysis.status.nearly_dead) == [4]
    assert analysis.status.indices(analysis.status.dead) == [5]
    assert analysis.labels[4:].tolist() == [-1, -1] and (analysis.labels[:4] >= 0).all()


def test_prune_ranks_the_small_strong_multiple_by_what_it_writes() -> None:
    pair, x = small_copy_pair(), inputs()
    kept = Prune()(pair, pair.hidden(x), None, 5, gen())
    assert any(torch.equal(row, pair.w_in[5]) for row in kept.w_in)


def test_keep_one_leaves_out_a_neuron_that_fires_strongly_but_writes_nothing() -> None:
    pair = live_pair()
    w_in = torch.randn(D, generator=gen(7))
    pair = with_neuron(pair, w_in, 1.5, SMALL * pair.w_out[:, 0])
    merged = KeepOne()(pair, pair.hidden(inputs()), None, 5, gen())
    assert not any(torch.equal(row, pair.w_in[5]) for row in merged.w_in)
    assert merged.width == 5


def test_shapes_must_agree() -> None:
    with pytest.raises(ValueError, match=r"\(words, 4\).*\(M, 4\)"):
        neuron_status(torch.rand(10, 4), torch.rand(2, 5))
