"""The compression step on a real (small, untrained) network, every method and layer, no Trainer."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from src.analysis.layer import analyse_layer
from src.analysis.probe import probe_layer
from src.baseline import load_checkpoint
from src.compress.base import LayerPair
from src.compress.pipeline import (
    CompressionConfigError,
    Features,
    build_method,
    compress_layer,
    compression_metrics,
    head_logits,
    last_word_features,
    layer_pair,
    save_compressed,
    with_pair,
)
from src.data import collate
from src.model import SentimentClassifier, SentimentLSTM, last_word
from tests.conftest import compose_config
from tests.test_config import choices

METHODS = [c for c in choices("compress") if c != "none"]
WIDTHS = [24, 12, 8]


def network(seed: int = 0) -> SentimentLSTM:
    torch.manual_seed(seed)
    return SentimentLSTM(50, 8, 16, 1, WIDTHS, dropout=0.0).eval()


def sentences(n: int = 40, seed: int = 1) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    data = [
        (
            torch.randint(2, 50, (int(torch.randint(1, 9, (1,), generator=gen)),), generator=gen),
            i % 2,
        )
        for i in range(n)
    ]
    return DataLoader(data, batch_size=16, collate_fn=collate)


def analysed(net: SentimentLSTM, layer: int, k: int):
    pair = layer_pair(net, layer)
    probe = probe_layer(net, sentences(), layer)
    return analyse_layer(probe, pair.incoming(), pair.w_out, layer, k, seed=0)


# Methods that keep one neuron per cluster of live neurons: fewer when fewer are alive. The
# others always reach the width (prune keeps dead neurons last, the rest ignore deadness).
LIVE_ONLY = {"weight_sum", "ls_refit", "cluster_init", "keep_one"}


def test_the_saved_compressed_model_loads_and_predicts_what_was_measured(tmp_path) -> None:
    model = SentimentClassifier(50, 8, {"hidden_size": 16}, WIDTHS, dropout=0.0).eval()
    model.tokenizer_json = "{}"
    pair = layer_pair(model.network, 1).select(torch.tensor([0, 3, 5]))
    path = save_compressed(model, 1, pair, tmp_path / "compressed.ckpt")
    loaded = load_checkpoint(path)
    assert loaded.hparams["head_widths"] == [24, 3, 8]
    assert loaded.tokenizer_json == "{}"
    batch = next(iter(sentences()))
    features = last_word_features(model.network, sentences(), 1)
    expected = head_logits(model.network, 1, pair, features.inputs[:16])
    torch.testing.assert_close(loaded.eval()(batch["ids"], batch["lengths"]), expected)


def test_head_logits_with_the_original_pair_are_the_networks_own_prediction() -> None:
    net, loader = network(), sentences()
    for layer in range(len(WIDTHS)):
        features = last_word_features(net, loader, layer)
        batch = next(iter(DataLoader(loader.dataset, batch_size=40, collate_fn=collate)))
        expected = last_word(net(batch["ids"], batch["lengths"]), batch["lengths"])
        got = head_logits(net, layer, layer_pair(net, layer), features.inputs)
        torch.testing.assert_close(got, expected)


def test_with_pair_builds_the_network_that_head_logits_describes() -> None:
    net, loader = network(), sentences()
    pair = layer_pair(net, 1).select(torch.tensor([0, 3, 5]))
    shrunk = with_pair(net, 1, pair)
    assert shrunk.hidden_widths == [24, 3, 8]
    batch = next(iter(loader))
    features = last_word_features(net, loader, 1)
    expected = last_word(shrunk(batch["ids"], batch["lengths"]), batch["lengths"])
    torch.testing.assert_close(head_logits(net, 1, pair, features.inputs[:16]), expected)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_every_method_shrinks_every_layer_to_the_width_with_the_right_parameter_count(
    method: str, layer: int
) -> None:
    cfg = compose_config(f"compress={method}")
    net, k = network(), 4
    analysis = analysed(net, layer, k)
    result = compress_layer(cfg.compress, net, analysis, k, sentences(), seed=0)
    live = int(analysis.alive.sum())
    assert result.pair.width == (min(k, live) if method in LIVE_ONLY else k)
    assert result.pair.w_in.shape[1] == ([16, *WIDTHS][layer])
    assert result.pair.w_out.shape[0] == [*WIDTHS, 1][layer + 1]
    splits = {"test": last_word_features(net, sentences(seed=2), layer)}
    metrics = compression_metrics(net, layer, result.pair, splits)
    d = [16, *WIDTHS][layer]
    assert metrics["compressed/layer_params"] == result.pair.width * (d + 1)
    before = sum(p.numel() for p in net.parameters())
    removed = (WIDTHS[layer] - result.pair.width) * (d + 1 + [*WIDTHS, 1][layer + 1])
    assert metrics["compressed/params"] == before - removed
    assert 0 <= metrics["compressed/agreement"] <= 1


def test_weight_sum_of_exact_multiples_leaves_the_network_unchanged() -> None:
    """Neuron 2k+1 of the last hidden layer is 3x neuron 2k: merging each pair is exact."""
    net = network()
    last = net.head[2]
    with torch.no_grad():
        last.weight[1::2] = 3 * last.weight[0::2]
        last.bias[1::2] = 3 * last.bias[0::2]
    analysis = analysed(net, 2, 4)
    analysis.labels = torch.arange(8) // 2  # the pairs as the clusters
    cfg = compose_config("compress=weight_sum")
    result = compress_layer(cfg.compress, net, analysis, 4, sentences(), seed=0)
    features = last_word_features(net, sentences(seed=3), 2)
    before = head_logits(net, 2, layer_pair(net, 2), features.inputs)
    after = head_logits(net, 2, result.pair, features.inputs)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_metrics_of_an_unchanged_layer_are_perfect() -> None:
    net = network()
    features = last_word_features(net, sentences(), 2)
    metrics = compression_metrics(net, 2, layer_pair(net, 2), {"test": features})
    assert metrics["compressed/agreement"] == 1.0
    assert metrics["compressed/logit_rel_error"] == 0.0
    assert metrics["compressed/test_acc"] == metrics["baseline/recomputed_test_acc"]


def test_dead_neurons_counts_kept_neurons_that_never_fire() -> None:
    net = network()
    features = last_word_features(net, sentences(), 2)
    pair = layer_pair(net, 2)
    alive = int((pair.hidden(features.inputs) > 0).any(dim=0).sum())
    killed = LayerPair(
        pair.w_in,
        pair.b_in.clone().index_fill_(0, torch.tensor([0, 3]), -1e6),
        pair.w_out,
        pair.b_out,
    )
    metrics = compression_metrics(net, 2, killed, {"test": features})
    assert metrics["compressed/dead_neurons"] >= 2
    assert metrics["compressed/dead_neurons"] == pair.width - int(
        (killed.hidden(features.inputs) > 0).any(dim=0).sum()
    )
    assert compression_metrics(net, 2, pair, {"test": features})["compressed/dead_neurons"] == (
        pair.width - alive
    )


def test_retraining_a_lower_layer_leaves_no_gradient_in_the_baseline() -> None:
    net = network()
    cfg = compose_config("compress=cluster_init", "compress.epochs=1")
    compress_layer(cfg.compress, net, analysed(net, 1, 4), 4, sentences(64), seed=0)
    assert all(p.grad is None for p in net.parameters())


def test_retraining_changes_only_the_pair_and_lowers_the_training_loss() -> None:
    net, loader = network(), sentences(200)
    cfg = compose_config("compress=freeze_retrain", "compress.epochs=20", "compress.lr=0.01")
    analysis = analysed(net, 2, 4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = compress_layer(cfg.compress, net, analysis, 4, loader, seed=0)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    train: Features = last_word_features(net, loader, 2)
    loss = torch.nn.functional.binary_cross_entropy_with_logits
    untrained = compress_layer(
        compose_config("compress=freeze_retrain", "compress.epochs=0").compress,
        net,
        analysis,
        4,
        loader,
        seed=0,
    )
    trained_loss = loss(head_logits(net, 2, result.pair, train.inputs), train.labels)
    start_loss = loss(head_logits(net, 2, untrained.pair, train.inputs), train.labels)
    assert trained_loss < start_loss


def test_a_group_without_a_method_is_refused_by_name() -> None:
    with pytest.raises(CompressionConfigError, match="compress=none"):
        build_method(compose_config("compress=none").compress)


@pytest.mark.parametrize(
    ("override", "setting"),
    [
        ("compress.representative=best", "compress.representative"),
        ("compress.scale=cubic", "compress.scale"),
    ],
)
def test_bad_method_settings_name_the_setting(override: str, setting: str) -> None:
    with pytest.raises(CompressionConfigError, match=setting):
        build_method(compose_config("compress=weight_sum", override).compress)
