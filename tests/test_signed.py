"""Signed units (the LSTM's h = o * tanh(c)): a unit and its negation are as mergeable as a unit
and its double, and everything that reads an activation's size reads |h|.

The layers here are tanh layers, ``h = tanh(x @ w_in.T + b_in)``: odd like the LSTM's units, so a
unit whose incoming weights and bias are negated is the exact negation of the original on any
input.
"""

from __future__ import annotations

import pytest
import torch

from src.analysis.layer import Probe, cluster_layer, probe_dissimilarity
from src.analysis.neurons import neuron_status
from src.analysis.similarity import dissimilarity_matrix, shape_dissimilarity, trace_stats
from src.compress.base import LayerPair, choose_representatives
from src.compress.interpolative import InterpolativeDecomposition
from src.compress.ls_refit import LeastSquaresRefit
from src.compress.prune import Prune
from src.compress.spectral_pruning import SpectralPruning
from src.compress.weight_sum import WeightSum, merge_by_weight_sum

D, M = 6, 3
R, NEG = 1, 4  # unit 4 is the negation of unit 1


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def inputs(words: int = 400, seed: int = 1) -> torch.Tensor:
    return torch.randn(words, D, generator=gen(seed))


def hidden(pair: LayerPair, x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x @ pair.w_in.T + pair.b_in)


def forward(pair: LayerPair, x: torch.Tensor) -> torch.Tensor:
    return pair.next_preactivation(hidden(pair, x))


def source(h: torch.Tensor):
    return lambda: iter(h.split(128))


def random_pair(n: int, seed: int = 0) -> LayerPair:
    g = gen(seed)
    return LayerPair(
        torch.randn(n, D, generator=g) / D**0.5,
        torch.randn(n, generator=g) * 0.5,
        torch.randn(M, n, generator=g),
        torch.randn(M, generator=g),
    )


def negation_pair() -> LayerPair:
    """Six tanh units; unit 4 is unit 1 negated (incoming weights and bias), on every input."""
    pair = random_pair(6)
    w_in, b_in = pair.w_in.clone(), pair.b_in.clone()
    w_in[NEG], b_in[NEG] = -w_in[R], -b_in[R]
    return LayerPair(w_in, b_in, pair.w_out, pair.b_out)


def negated(pair: LayerPair, unit: int) -> LayerPair:
    """The same network with one unit's sign flipped: its incoming and outgoing weights negated."""
    sign = torch.ones(pair.width)
    sign[unit] = -1.0
    return LayerPair(sign[:, None] * pair.w_in, sign * pair.b_in, pair.w_out * sign, pair.b_out)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=atol, check_dtype=False)


# --- similarity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("measure", ["shape", "correlation"])
def test_a_unit_and_its_negation_are_at_dissimilarity_zero(measure: str) -> None:
    pair = negation_pair()
    h = hidden(pair, inputs())
    assert_close(h[:, NEG], -h[:, R], atol=1e-6)
    d = dissimilarity_matrix(source(h), measure, chunk_size=100)
    assert d[R, NEG] < 1e-6 and d[NEG, R] < 1e-6
    assert (d[R, [0, 2, 3, 5]] > 1e-2).all()  # the measure still tells the others apart


def test_a_negative_multiple_is_at_dissimilarity_zero() -> None:
    h = hidden(random_pair(5), inputs())
    h[:, 3] = -0.5 * h[:, 0]
    assert shape_dissimilarity(source(h))[0, 3] < 1e-6


def test_signedness_is_read_from_the_data() -> None:
    h = hidden(random_pair(7), inputs())
    assert trace_stats(source(h)).signed and not trace_stats(source(h.relu())).signed
    assert torch.equal(shape_dissimilarity(source(h)), shape_dissimilarity(source(h), signed=True))
    unsigned = shape_dissimilarity(source(h), signed=False)
    assert (shape_dissimilarity(source(h)) <= unsigned).all()
    relu = source(h.relu())
    assert torch.equal(shape_dissimilarity(relu), shape_dissimilarity(relu, signed=False))


def test_clustering_puts_a_negation_with_its_unit() -> None:
    pair, x = negation_pair(), inputs()
    probe = Probe(x, hidden(pair, x))
    analysis = cluster_layer(
        probe, probe_dissimilarity(probe), pair.incoming(), pair.w_out, "lstm", 5, "agglomerative"
    )
    assert analysis.labels[NEG] == analysis.labels[R]
    assert len(set(analysis.labels.tolist())) == 5


# --- what reads a size reads |h| ------------------------------------------------------------------


def test_a_unit_that_is_always_negative_is_alive() -> None:
    h = hidden(random_pair(4), inputs())
    h[:, 2] = -(h[:, 2].abs() + 0.1)
    status = neuron_status(h, torch.ones(M, 4))
    assert status.alive.all()
    assert status.active_fraction[2] == 1.0


def test_status_does_not_change_when_a_unit_changes_sign() -> None:
    """Negating a tanh unit's incoming and outgoing weights changes nothing downstream."""
    pair, x = random_pair(5), inputs()
    w_in, b_in = pair.w_in.clone(), pair.b_in.clone()
    b_in[3] = 2.0  # mostly positive: its negation is mostly negative
    pair = LayerPair(w_in, b_in, pair.w_out, pair.b_out)
    flipped = negated(pair, 3)
    assert_close(forward(flipped, x), forward(pair, x))
    before, after = (
        neuron_status(hidden(pair, x), pair.w_out),
        neuron_status(hidden(flipped, x), flipped.w_out),
    )
    assert before.alive.all()
    assert torch.equal(after.alive, before.alive) and torch.equal(after.dead, before.dead)
    assert torch.equal(after.contribution, before.contribution)


def test_representatives_read_the_size_and_not_the_sign() -> None:
    g = gen(3)
    base = torch.tanh(torch.randn(300, 1, generator=g))
    noise = 0.05 * torch.randn(300, 4, generator=g)
    h = base + noise * torch.tensor([0.2, 1.0, 3.0, 6.0])  # one cluster, four noise levels
    labels = torch.zeros(4, dtype=torch.long)
    medoid = choose_representatives(h, labels, "medoid")  # the same whatever the signs
    for sign in ([1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, 1.0, 1.0], [1.0, 1.0, -1.0, -1.0]):
        assert torch.equal(choose_representatives(h * torch.tensor(sign), labels, "medoid"), medoid)
    scaled = h * torch.tensor([1.0, -5.0, 2.0, 0.5])
    assert choose_representatives(scaled, labels, "max_activation").tolist() == [1]


def test_prune_keeps_a_strong_unit_whatever_its_sign() -> None:
    pair, x = random_pair(4), inputs()
    b_in, w_out = pair.b_in.clone(), pair.w_out.clone()
    b_in[0], w_out[:, 0] = 2.0, 3.0  # the strongest unit, mostly positive
    pair = LayerPair(pair.w_in, b_in, w_out, pair.b_out)
    flipped = negated(pair, 0)  # the same network, unit 0 mostly negative
    for criterion in ("activation", "weight_norm", "group_norm"):
        kept = [Prune(criterion)(p, hidden(p, x), None, 2, gen()) for p in (pair, flipped)]
        assert torch.equal(kept[0].w_in.abs(), kept[1].w_in.abs()), criterion
    assert Prune()(flipped, hidden(flipped, x), None, 1, gen()).b_in.tolist() == [-2.0]


# --- exact merges of a negation -----------------------------------------------------------------


@pytest.mark.parametrize("scale", ["ls", "affine"])
@pytest.mark.parametrize("rep", [R, NEG])
def test_weight_sum_merges_a_negation_exactly_with_a_negative_factor(scale: str, rep: int) -> None:
    pair = negation_pair()
    labels = torch.tensor([1, 0, 2, 3, 0, 4])
    reps = torch.tensor([rep, 0, 2, 3, 5])
    merged = merge_by_weight_sum(pair, hidden(pair, inputs()), labels, reps, scale)
    other = NEG if rep == R else R
    assert_close(merged.w_out[:, 0], pair.w_out[:, rep] - pair.w_out[:, other])
    fresh = inputs(500, seed=2)
    assert_close(forward(merged, fresh), forward(pair, fresh))


@pytest.mark.parametrize(
    "method",
    [WeightSum(), WeightSum("max_activation", "affine"), LeastSquaresRefit()],
    ids=["weight_sum", "weight_sum_affine", "ls_refit"],
)
def test_clustered_merges_of_a_negation_are_exact(method) -> None:
    """From the analysis to the merge: the negation shares its unit's cluster and is folded in."""
    pair, x = negation_pair(), inputs()
    probe = Probe(x, hidden(pair, x))
    analysis = cluster_layer(
        probe, probe_dissimilarity(probe), pair.incoming(), pair.w_out, "lstm", 5, "agglomerative"
    )
    merged = method(pair, probe.activations, analysis.labels, 5, gen())
    assert merged.width == 5
    fresh = inputs(500, seed=2)
    assert_close(forward(merged, fresh), forward(pair, fresh), atol=1e-4)


@pytest.mark.parametrize("method", [InterpolativeDecomposition(), SpectralPruning(ridge=0.0)])
def test_data_driven_methods_drop_a_negation_exactly(method) -> None:
    pair, x = negation_pair(), inputs()
    merged = method(pair, hidden(pair, x), None, 5, gen())
    assert merged.width == 5
    fresh = inputs(500, seed=2)
    assert_close(forward(merged, fresh), forward(pair, fresh), atol=1e-4)


def test_a_negative_multiple_is_merged_exactly_on_the_probe_words() -> None:
    """tanh is bounded, so a negative multiple exists on given activations only."""
    pair = random_pair(5)
    h = hidden(pair, inputs())
    h[:, 3] = -0.5 * h[:, 0]
    labels = torch.tensor([0, 1, 2, 0, 3])
    d = shape_dissimilarity(source(h))
    assert d[0, 3] < 1e-6
    for rep in (0, 3):
        reps = torch.tensor([rep, 1, 2, 4])
        merged = merge_by_weight_sum(pair, h, labels, reps, "ls")
        assert_close(merged.next_preactivation(h[:, reps]), pair.next_preactivation(h))
