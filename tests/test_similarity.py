"""Neuron similarity measures against naive references, on small random activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.analysis.similarity import (
    affinity_from_dissimilarity,
    correlation_dissimilarity,
    degenerate_neurons,
    dissimilarity_matrix,
    shape_dissimilarity,
    trace_scales,
    trace_stats,
)


def activations(words: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(words, n, generator=g, dtype=torch.float64))


def source(x: torch.Tensor, sizes: list[int]):
    """A re-iterable source yielding ``x`` in batches of the given (uneven) sizes."""
    return lambda: iter(x.float().split(sizes))


def naive_shape(x: torch.Tensor, signed: bool = False) -> np.ndarray:
    """The definition, one pair at a time, in float64; ``signed`` also against -y_j."""
    x = x.double().numpy()
    peak = np.abs(x).max(0)
    y = x / np.where(peak > 0, peak, 1.0)
    n = y.shape[1]

    def pair(i: int, j: int) -> float:
        apart = np.abs(y[:, i] - y[:, j]).mean()
        return min(apart, np.abs(y[:, i] + y[:, j]).mean()) if signed and i != j else apart

    return np.array([[pair(i, j) for j in range(n)] for i in range(n)])


@pytest.mark.parametrize(("n", "chunk_size"), [(1, 8192), (7, 50), (13, 64), (100, 8192)])
def test_shape_matches_naive_pairs(n: int, chunk_size: int) -> None:
    x = activations(301, n, seed=n)
    d = shape_dissimilarity(source(x, [100, 37, 1, 163]), chunk_size=chunk_size)
    assert d.shape == (n, n)
    np.testing.assert_allclose(d.numpy(), naive_shape(x), atol=1e-5)
    assert torch.equal(d, d.T)
    assert torch.all(d.diagonal() == 0)


@pytest.mark.parametrize(("n", "chunk_size"), [(1, 8192), (7, 50), (49, 64), (100, 8192)])
def test_signed_shape_matches_naive_pairs(n: int, chunk_size: int) -> None:
    """Signed traces against the definition, across the tile boundary (48) of the -y block."""
    x = torch.tanh(torch.randn(301, n, generator=torch.Generator().manual_seed(n)))
    if n > 3:
        x[:, 3] = -0.7 * x[:, 0]
        x[:, 1] = 0.0
    d = shape_dissimilarity(source(x, [100, 37, 1, 163]), chunk_size=chunk_size)
    assert d.shape == (n, n)
    np.testing.assert_allclose(d.numpy(), naive_shape(x, signed=True), atol=1e-5)
    assert torch.equal(d, d.T)
    assert torch.all(d.diagonal() == 0)


def test_signed_measure_on_non_negative_traces_is_the_unsigned_one() -> None:
    """mean(y_i + y_j) >= mean|y_i - y_j| for y >= 0, so forcing ``signed`` changes nothing."""
    src = source(activations(300, 60), [300])
    d = shape_dissimilarity(src)
    assert torch.equal(d, shape_dissimilarity(src, signed=False))
    np.testing.assert_allclose(shape_dissimilarity(src, signed=True).numpy(), d.numpy(), atol=1e-7)


def test_given_scales_are_used_and_checked() -> None:
    x = activations(200, 6)
    src = source(x, [200])
    assert torch.allclose(
        shape_dissimilarity(src, scales=trace_scales(src)), shape_dissimilarity(src)
    )
    with pytest.raises(ValueError, match="5 scales"):
        shape_dissimilarity(src, scales=torch.ones(5))


def test_measures_ignore_scale() -> None:
    x = activations(400, 5)
    x[:, 4] = 3 * x[:, 0]
    src = source(x, [128, 128, 144])
    assert shape_dissimilarity(src)[0, 4] < 1e-6
    assert correlation_dissimilarity(src)[0, 4] < 1e-5


def test_dead_and_constant_neurons_are_finite_and_reported() -> None:
    x = activations(300, 6)
    x[:, 1] = 0.0
    x[:, 3] = 2.5
    src = source(x, [150, 150])
    for measure in ("shape", "correlation"):
        d = dissimilarity_matrix(src, measure, chunk_size=64)
        assert torch.isfinite(d).all() and torch.all(d >= 0)
    corr = correlation_dissimilarity(src)
    assert torch.all(corr[1, [0, 2, 3, 4, 5]] == 1) and corr[1, 1] == 0
    assert torch.all(trace_scales(src) > 0)
    report = degenerate_neurons(src)
    assert (report.dead, report.constant) == ([1], [3])
    assert degenerate_neurons(trace_stats(src)) == report


def test_correlation_matches_numpy() -> None:
    x = activations(500, 9)
    x[:, 2] += 1000.0  # a large mean must not cost precision
    d = correlation_dissimilarity(source(x, [200, 300]), chunk_size=128)
    np.testing.assert_allclose(d.numpy(), 1 - np.abs(np.corrcoef(x.numpy().T)), atol=1e-5)


def test_unknown_measure_names_the_setting() -> None:
    with pytest.raises(ValueError, match=r"analysis\.measure.*shape, correlation"):
        dissimilarity_matrix(source(activations(10, 3), [10]), "cosine")


def test_empty_source_is_an_error() -> None:
    with pytest.raises(ValueError, match="no words"):
        shape_dissimilarity(lambda: iter([]))


def test_affinity_is_a_valid_kernel() -> None:
    d = shape_dissimilarity(source(activations(200, 8), [200]))
    a = affinity_from_dissimilarity(d)
    assert torch.equal(a, a.T) and torch.all(a.diagonal() == 1)
    assert torch.all((a > 0) & (a <= 1))
    assert torch.equal(affinity_from_dissimilarity(torch.zeros(4, 4)), torch.ones(4, 4).double())
