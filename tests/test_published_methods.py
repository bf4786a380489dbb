"""Published no-training methods and the statistics repair, on hand-built layer pairs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from src.compress.base import LayerPair
from src.compress.interpolative import InterpolativeDecomposition, interpolative_decomposition
from src.compress.keep_one import KeepOne
from src.compress.model_folding import ModelFolding, fold
from src.compress.neuron_merging import NeuronMerging, scaling_matrix
from src.compress.repair import assign_groups, repair_statistics
from src.compress.weight_sum import merge_by_weight_sum

D, M = 5, 3


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_pair(n: int, seed: int = 0) -> LayerPair:
    g = gen(seed)
    return LayerPair(
        torch.randn(n, D, generator=g),
        torch.randn(n, generator=g),
        torch.randn(M, n, generator=g),
        torch.randn(M, generator=g),
    )


def inputs(words: int = 300, seed: int = 1) -> torch.Tensor:
    return torch.randn(words, D, generator=gen(seed))


# neurons 3..5 are neurons 0..2 scaled down by COPY_SCALE, bias included
COPY_SCALE = torch.tensor([0.3, 0.5, 0.8])


def scaled_copies_pair() -> LayerPair:
    base = random_pair(6)
    w_in = torch.cat([base.w_in[:3], COPY_SCALE[:, None] * base.w_in[:3]])
    b_in = torch.cat([base.b_in[:3], COPY_SCALE * base.b_in[:3]])
    return LayerPair(w_in, b_in, base.w_out, base.b_out)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol, check_dtype=False)


METHODS = [NeuronMerging(), ModelFolding(), InterpolativeDecomposition(), KeepOne()]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: type(m).__name__)
def test_output_shapes(method) -> None:
    pair, x = random_pair(10), inputs()
    merged = method(pair, pair.hidden(x), None, 4, gen())
    shapes = [tuple(t.shape) for t in (merged.w_in, merged.b_in, merged.w_out, merged.b_out)]
    assert shapes == [(4, D), (4,), (M, 4), (M,)]


@pytest.mark.parametrize(
    ("build", "setting"),
    [
        (lambda: NeuronMerging(keep="l3"), "compress.method.keep"),
        (lambda: NeuronMerging(threshold=0.0), "compress.method.threshold"),
        (lambda: KeepOne(representative="first"), "compress.method.representative"),
    ],
)
def test_unknown_options_name_the_setting(build, setting: str) -> None:
    with pytest.raises(ValueError, match=setting):
        build()


def test_neuron_merging_is_exact_for_positive_multiples() -> None:
    pair, x = scaled_copies_pair(), inputs()
    h = pair.hidden(x)
    assert_close(h[:, 3:], COPY_SCALE * h[:, :3], atol=1e-6)
    merged = NeuronMerging()(pair, h, None, 3, gen())
    assert torch.equal(merged.w_in, pair.w_in[:3])  # the larger norms stay
    assert_close(merged.forward(x), pair.forward(x), atol=1e-5)


def test_neuron_merging_drops_dissimilar_neurons() -> None:
    f = torch.randn(2, D + 1, generator=gen(), dtype=torch.float64)
    features = torch.cat([f, -f[:1], 2 * f[1:]])  # neuron 2 opposes 0, neuron 3 doubles 1
    z = scaling_matrix(features, torch.tensor([0, 1]), threshold=0.45)
    expected = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    assert_close(z, expected, atol=1e-12)


@pytest.mark.parametrize("repair", [True, False])
def test_model_folding_at_full_width_changes_nothing(repair: bool) -> None:
    pair, x = random_pair(6), inputs()
    merged = ModelFolding(norm_repair=repair)(pair, pair.hidden(x), None, 6, gen())
    assert_close(merged.forward(x), pair.forward(x), atol=1e-5)


def test_fold_means_in_sums_out_and_repairs_norms() -> None:
    pair = random_pair(5)
    members = [[0, 3], [1, 2, 4]]
    merged = fold(pair, torch.tensor([0, 1, 1, 0, 1]), repair=True)
    for c, m in enumerate(members):
        mean = pair.w_in[m].mean(dim=0)
        assert_close(merged.w_in[c] / merged.w_in[c].norm(), mean / mean.norm(), atol=1e-6)
        assert_close(merged.w_in[c].norm(), pair.w_in[m].norm(dim=1).mean(), atol=1e-6)
        assert_close(merged.b_in[c], pair.b_in[m].mean(), atol=1e-6)
        assert_close(merged.w_out[:, c], pair.w_out[:, m].sum(dim=1), atol=1e-6)


def test_interpolative_decomposition_is_exact_at_rank_k() -> None:
    g = gen()
    h = torch.rand(200, 3, generator=g) @ torch.rand(3, 8, generator=g)  # rank 3, nonnegative
    keep, t = interpolative_decomposition(h, 3)
    assert_close(h[:, keep].double() @ t, h.double(), atol=1e-4)
    pair = random_pair(8)
    merged = InterpolativeDecomposition()(pair, h, None, 3, g)
    assert torch.equal(merged.w_in, pair.w_in[keep])
    assert_close(merged.next_preactivation(h[:, keep]), pair.next_preactivation(h), atol=1e-4)


def test_interpolative_decomposition_pivots_as_a_pivoted_qr_of_the_activations() -> None:
    """The pivoting runs on an unpivoted QR's triangle: the same neurons and ``T`` as pivoting
    the (words, N) activations themselves, on a tall matrix and on a wide one."""
    g = gen()
    for words in (500, 6):
        h = torch.relu(torch.randn(words, 12, generator=g) + 0.3)
        keep, t = interpolative_decomposition(h, 5)
        _, r, perm = scipy.linalg.qr(h.double().numpy(), mode="economic", pivoting=True)
        k = min(5, words)
        assert keep.tolist() == perm[:k].tolist()
        expected = np.empty((k, 12))
        expected[:, perm] = np.hstack([np.eye(k), np.linalg.pinv(r[:k, :k]) @ r[:k, k:]])
        np.testing.assert_allclose(t.numpy(), expected, atol=1e-9)


def test_keep_one_keeps_one_per_correlated_group_uncompensated() -> None:
    g = gen()
    traces = torch.rand(200, 3, generator=g)
    activations = traces.repeat_interleave(3, dim=1) * torch.rand(9, generator=g)  # 3 groups of 3
    pair = random_pair(9)
    merged = KeepOne()(pair, activations, None, 3, g)
    kept = (merged.w_in[:, None] == pair.w_in[None]).all(dim=-1).nonzero()[:, 1]
    assert sorted((kept // 3).tolist()) == [0, 1, 2]
    assert torch.equal(merged.w_out, pair.w_out[:, kept])
    assert torch.equal(merged.b_out, pair.b_out)


def test_repair_matches_group_statistics() -> None:
    pair, x = random_pair(8), inputs()
    merged = ModelFolding(norm_repair=False)(pair, pair.hidden(x), None, 3, gen())
    groups = assign_groups(pair, merged)
    repaired = repair_statistics(pair, merged, x, groups)
    for name in ("w_in", "b_in", "w_out", "b_out"):
        assert getattr(repaired, name).shape == getattr(merged, name).shape, name
    assert torch.equal(repaired.w_out, merged.w_out)

    z_orig = x @ pair.w_in.T + pair.b_in
    z_before = x @ merged.w_in.T + merged.b_in
    z_after = x @ repaired.w_in.T + repaired.b_in
    std_gap_before = []
    for k in range(merged.width):
        members = (groups == k).nonzero().squeeze(1)
        w_k = merged.w_out[:, k]
        target = z_orig[:, members] @ (w_k @ pair.w_out[:, members] / w_k.square().sum())
        assert_close(z_after[:, k].mean(), target.mean(), atol=1e-4)
        assert_close(z_after[:, k].std(), target.std(), atol=1e-4)
        std_gap_before.append(float((z_before[:, k].std() - target.std()).abs()))
    assert max(std_gap_before) > 0.1  # a merged cluster had lost variance


def test_repair_leaves_an_exact_merge_alone() -> None:
    pair, x = scaled_copies_pair(), inputs()
    merged = NeuronMerging()(pair, pair.hidden(x), None, 3, gen())
    repaired = repair_statistics(pair, merged, x)
    assert_close(repaired.w_in, merged.w_in, atol=1e-5)
    assert_close(repaired.b_in, merged.b_in, atol=1e-5)


def twin_and_silent_pair(silent_bias: float) -> LayerPair:
    """Neuron 3 is twice neuron 0; neuron 4 has real incoming and outgoing weights, but its bias
    ``silent_bias`` keeps it (nearly) silent on the probe words."""
    base = random_pair(5)
    w_in, b_in = base.w_in.clone(), base.b_in.clone()
    b_in[:3] = b_in[:3].abs() + 0.5  # 0..2 fire on most words
    w_in[3], b_in[3] = 2 * w_in[0], 2 * b_in[0]
    w_in[4], b_in[4] = 3 * w_in[1], silent_bias
    return LayerPair(w_in, b_in, base.w_out, base.b_out)


def test_repair_keeps_an_exact_merge_exact_beside_a_dead_neuron() -> None:
    """A neuron that never fires reaches the next layer with nothing, so it has no share in any
    kept neuron's target; with one, repair turned an exact merge into an error of about 8."""
    pair, x = twin_and_silent_pair(silent_bias=-100.0), inputs()
    h = pair.hidden(x)
    assert (h[:, 4] == 0).all() and (h[:, :4] > 0).float().mean() > 0.5
    labels = torch.tensor([0, 1, 2, 0, -1])
    merged = merge_by_weight_sum(pair, h, labels, torch.tensor([0, 1, 2]))
    fresh = inputs(500, seed=2)
    assert_close(merged.forward(fresh), pair.forward(fresh), atol=1e-5)
    repaired = repair_statistics(pair, merged, x)
    assert_close(repaired.forward(fresh), pair.forward(fresh), atol=1e-5)


def test_repair_gives_no_share_to_a_nearly_dead_neuron() -> None:
    """Firing on under 0.1 % of the words, its pre-activation is almost all below zero and
    never reaches the next layer: as a share it would drag the target's mean and std."""
    pair, x = twin_and_silent_pair(silent_bias=-24.6), inputs(4000)
    h = pair.hidden(x)
    fires = (h[:, 4] > 0).float().mean()
    assert 0 < fires < 1e-3
    labels = torch.tensor([0, 1, 2, 0, -1])
    merged = merge_by_weight_sum(pair, h, labels, torch.tensor([0, 1, 2]))
    repaired = repair_statistics(pair, merged, x)
    assert_close(repaired.w_in, merged.w_in, atol=1e-5)
    assert_close(repaired.b_in, merged.b_in, atol=1e-5)


def test_repair_leaves_a_kept_neuron_that_stands_for_no_live_one_alone() -> None:
    pair, x = twin_and_silent_pair(silent_bias=-100.0), inputs()
    kept = pair.select(torch.tensor([0, 1, 2, 4]))  # the silent neuron 4 kept as it is
    repaired = repair_statistics(pair, kept, x, groups=torch.tensor([0, 1, 2, 0, 3]))
    assert torch.equal(repaired.w_in[3], kept.w_in[3]) and repaired.b_in[3] == kept.b_in[3]


def test_neuron_merging_keeps_the_largest_l1_norms_by_default() -> None:
    """The official code's default criterion (``--criterion l1-norm``), and its README's."""
    f = torch.zeros(3, D + 1)
    f[0] = 1.0  # l1 6, l2 2.45
    f[1, 0] = 2.6  # l1 2.6, l2 2.6: first by l2, last by l1
    f[2, :3] = 1.2  # l1 3.6, l2 2.08
    pair = LayerPair(f[:, :D], f[:, D], torch.randn(M, 3, generator=gen()), torch.zeros(M))
    assert torch.equal(
        NeuronMerging()(pair, pair.hidden(inputs()), None, 2, gen()).w_in, f[[0, 2], :D]
    )
    assert torch.equal(
        NeuronMerging("norm")(pair, pair.hidden(inputs()), None, 1, gen()).w_in, f[[1], :D]
    )


def test_a_threshold_of_zero_is_refused_and_the_official_meaning_explained() -> None:
    with pytest.raises(
        ValueError, match=r"compress.method.threshold.*official code.*every pruned neuron"
    ):
        NeuronMerging(threshold=0.0)


def crossed_pair() -> LayerPair:
    """Incoming weights pair 0 with 1 and 2 with 3; the larger outgoing weights pair 0 with 2 and
    1 with 3."""
    g = gen(5)
    a, b = torch.randn(2, D + 1, generator=g)
    noise = 0.05 * torch.randn(4, D + 1, generator=g)
    incoming = torch.stack([a, a, b, b]) + noise
    c, e = 10 * torch.randn(2, M, generator=g)
    w_out = torch.stack([c, e, c, e], dim=1) + 0.05 * torch.randn(M, 4, generator=g)
    return LayerPair(incoming[:, :D], incoming[:, D], w_out, torch.zeros(M))


def folded_groups(pair: LayerPair, merged: LayerPair) -> set[frozenset[int]]:
    """Which original neurons each folded neuron summed, read back from its outgoing weights."""
    groups = set()
    for column in merged.w_out.T:
        for members in ([0, 1], [2, 3], [0, 2], [1, 3], [0, 3], [1, 2]):
            if torch.allclose(column, pair.w_out[:, members].sum(dim=1), atol=1e-5):
                groups.add(frozenset(members))
    return groups


def test_model_folding_clusters_on_incoming_bias_and_outgoing_weights_as_the_official_code() -> (
    None
):
    pair, x = crossed_pair(), inputs()
    merged = ModelFolding()(pair, pair.hidden(x), None, 2, gen())
    assert folded_groups(pair, merged) == {frozenset({0, 2}), frozenset({1, 3})}
    incoming_only = ModelFolding(features="incoming")(pair, pair.hidden(x), None, 2, gen())
    assert folded_groups(pair, incoming_only) == {frozenset({0, 1}), frozenset({2, 3})}


def test_model_folding_features_name_the_setting() -> None:
    with pytest.raises(ValueError, match="compress.method.features"):
        ModelFolding(features="activations")
