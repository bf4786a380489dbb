"""Shrink one layer of a trained network with any method, and measure what it cost.

A method only sees the layer and the next one (:class:`~src.compress.base.LayerPair`), so the
network around them is untouched. The sentence's prediction is read at its last real word and
everything below the shrunk layer is unchanged, so each split's input to that layer is computed
once (:func:`last_word_features`) and every method is evaluated on the head alone: the baseline's
and the compressed logits come from the same numbers.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader

from src.analysis.layer import LayerAnalysis
from src.analysis.stats import mcnemar_exact_interval, mcnemar_p
from src.compress.base import LayerPair, MergeMethod
from src.compress.repair import repair_statistics
from src.compress.retrain import Features, train_pair
from src.data import SentimentDataModule
from src.model import SentimentClassifier, SentimentLSTM, last_word

# Settings of the compression step itself; the other keys of ``compress`` build the method.
STEP_KEYS = ("name", "epochs", "lr", "repair")
ACTIVATIONS_FILE = "compressed_activations.npy"  # (test sentences, width), post-ReLU


class CompressionConfigError(ValueError):
    """A compression setting that cannot work; the message names the setting to change."""


def build_method(cfg: DictConfig) -> MergeMethod:
    """The method from the ``compress`` group: its ``_target_`` and its own keys."""
    if "_target_" not in cfg:
        raise CompressionConfigError(
            f"compress={cfg.get('name')} names no method (_target_); choose one from conf/compress/"
        )
    settings = {k: v for k, v in OmegaConf.to_container(cfg).items() if k not in STEP_KEYS}
    try:
        return instantiate(settings)
    except Exception as error:  # hydra wraps the method's own ValueError
        raise CompressionConfigError(str(error.__cause__ or error)) from error


def layer_pair(network: SentimentLSTM, layer: int) -> LayerPair:
    """The hidden layer ``layer`` of the head and the layer that reads it, detached."""
    this, after = network.head[layer], network.head[layer + 1]
    return LayerPair(*(t.detach() for t in (this.weight, this.bias, after.weight, after.bias)))


def with_pair(network: SentimentLSTM, layer: int, pair: LayerPair) -> SentimentLSTM:
    """A copy of ``network`` whose layer ``layer`` (and the next) are ``pair``."""
    shrunk = copy.deepcopy(network)
    for index, (w, b) in ((layer, (pair.w_in, pair.b_in)), (layer + 1, (pair.w_out, pair.b_out))):
        linear = nn.Linear(w.shape[1], w.shape[0])
        linear.weight.data.copy_(w)
        linear.bias.data.copy_(b)
        shrunk.head[index] = linear
    return shrunk


@torch.no_grad()
def last_word_states(network: SentimentLSTM, loader: DataLoader) -> Features:
    """The LSTM's state at each sentence's last real word (dropout off): every head layer's
    input follows from it (:func:`layer_features`), so one pass serves every layer."""
    network.eval()
    states, labels = [], []
    for batch in loader:
        states.append(last_word(network.states(batch["ids"], batch["lengths"]), batch["lengths"]))
        labels.append(batch["labels"])
    return Features(torch.cat(states), torch.cat(labels))


@torch.no_grad()
def layer_features(network: SentimentLSTM, states: Features, layer: int) -> Features:
    """The input of head layer ``layer`` from the last-word states."""
    network.eval()
    return Features(network.layer_input(states.inputs, layer), states.labels)


def last_word_features(network: SentimentLSTM, loader: DataLoader, layer: int) -> Features:
    """The input of head layer ``layer`` at each sentence's last real word (dropout off)."""
    return layer_features(network, last_word_states(network, loader), layer)


def head_logits(network: SentimentLSTM, layer: int, pair: LayerPair, x: Tensor) -> Tensor:
    """Sentence logits from the layer's input ``x`` (sentences, D), with ``pair`` in place."""
    y = pair.forward(x)
    if layer + 2 == len(network.head):  # the pair's second layer is the output layer
        return y.squeeze(-1)
    return network.head_from(layer + 2, torch.relu(y))


@dataclass
class Compression:
    pair: LayerPair
    seconds: float


def compress_layer(
    cfg: DictConfig,
    network: SentimentLSTM,
    analysis: LayerAnalysis,
    target_width: int,
    train: DataLoader | Features,
    seed: int,
    batch_size: int | None = None,
) -> Compression:
    """Run the ``compress`` group's method on ``analysis.layer``. ``train`` feeds the training
    epochs (``compress.epochs``), if any: the training sentences, or their features at the
    layer's input when the caller has them already, with ``batch_size`` (else the loader's)."""
    method = build_method(cfg)
    generator = torch.Generator().manual_seed(seed)
    layer, original = analysis.layer, layer_pair(network, analysis.layer)
    probe = analysis.probe
    start = time.perf_counter()
    pair = method(original, probe.activations, analysis.labels, target_width, generator)
    if cfg.get("repair", False):
        pair = repair_statistics(original, pair, probe.inputs)
    if cfg.get("epochs", 0) > 0:
        if isinstance(train, DataLoader):
            batch_size = batch_size or train.batch_size
            train = last_word_features(network, train, layer)
        if batch_size is None:
            raise ValueError("compress_layer: training on features needs their batch_size")
        frozen = copy.deepcopy(network).requires_grad_(False)  # the layers above the pair
        with torch.enable_grad():
            pair = train_pair(
                pair,
                lambda p, x: head_logits(frozen, layer, p, x),
                train,
                cfg.epochs,
                cfg.lr,
                batch_size,
                generator,
            )
    return Compression(pair, time.perf_counter() - start)


def pair_params(pair: LayerPair) -> tuple[int, int]:
    """Parameters of the shrunk layer, and of it plus the next layer."""
    layer = pair.w_in.numel() + pair.b_in.numel()
    return layer, layer + pair.w_out.numel() + pair.b_out.numel()


@torch.no_grad()
def compression_metrics(
    network: SentimentLSTM,
    layer: int,
    compressed: LayerPair,
    splits: Mapping[str, Features],
) -> dict[str, float]:
    """Accuracy, agreement with the baseline and logit fidelity; ``splits``: validation, test."""
    original = layer_pair(network, layer)
    metrics: dict[str, float] = {}
    for split, features in splits.items():
        short = "val" if split == "validation" else split
        before = head_logits(network, layer, original, features.inputs)
        after = head_logits(network, layer, compressed, features.inputs)
        correct = (after > 0).float() == features.labels
        metrics[f"compressed/{short}_acc"] = correct.float().mean().item()
        if split == "test":
            baseline_correct = (before > 0).float() == features.labels
            low, high = mcnemar_exact_interval(correct, baseline_correct)
            metrics["compressed/delta_acc_ci_low"] = low  # 95 % exact (McNemar) interval
            metrics["compressed/delta_acc_ci_high"] = high
            metrics["compressed/mcnemar_p"] = mcnemar_p(correct, baseline_correct)
            metrics["baseline/recomputed_test_acc"] = baseline_correct.float().mean().item()
            metrics["compressed/agreement"] = ((after > 0) == (before > 0)).float().mean().item()
            # Kept neurons that never fire at a test sentence's last word: a fresh layer can die.
            fired = compressed.hidden(features.inputs) > 0
            metrics["compressed/dead_neurons"] = int((~fired.any(dim=0)).sum())
            metrics["compressed/logit_rel_error"] = (
                (after - before).norm() / before.norm().clamp_min(1e-12)
            ).item()
    total = sum(p.numel() for p in network.parameters())
    (old_layer, old_pair), (new_layer, new_pair) = pair_params(original), pair_params(compressed)
    metrics |= {
        "baseline/layer_params": old_layer,
        "compressed/layer_params": new_layer,
        "compressed/params": total - old_pair + new_pair,
        "compressed/width": compressed.width,
    }
    return metrics


def save_compressed(
    model: SentimentClassifier, layer: int, pair: LayerPair, path: str | Path
) -> Path:
    """A checkpoint of the shrunk model that loads like any other (``ckpt_path=...``): the same
    hyperparameters but for the new width of ``layer``, and the same tokenizer."""
    hparams = dict(model.hparams)
    hparams["head_widths"] = [
        pair.width if i == layer else w for i, w in enumerate(hparams["head_widths"])
    ]
    shrunk = SentimentClassifier(**hparams)
    shrunk.network.load_state_dict(with_pair(model.network, layer, pair).state_dict())
    checkpoint = {
        "state_dict": shrunk.state_dict(),
        "hyper_parameters": hparams,
        "pytorch-lightning_version": L.__version__,
        "tokenizer": model.tokenizer_json,
    }
    torch.save(checkpoint, path)
    return Path(path)


def compress_and_evaluate(
    cfg: DictConfig,
    model: SentimentClassifier,
    analysis: LayerAnalysis | None,
    datamodule: SentimentDataModule,
) -> dict[str, float | int | str]:
    """The run's compression step: the ``compress`` group applied to ``analysis``' layer, the
    ``compressed/...`` keys of metrics.json, and ``compressed.ckpt`` (``save_compressed``)."""
    network = model.network
    if analysis is None:
        raise CompressionConfigError(
            f"compress={cfg.compress.name} merges what the neuron analysis found, but it did not "
            "run: keep callbacks.neuron_analysis in the callbacks config"
        )
    compression = compress_layer(
        cfg.compress, network, analysis, cfg.target_width, datamodule.loader("train"), cfg.seed
    )
    splits = {
        split: last_word_features(network, datamodule.loader(split), analysis.layer)
        for split in ("validation", "test")
    }
    metrics = compression_metrics(network, analysis.layer, compression.pair, splits)
    # The shrunk layer's features at each test sentence's last word: the sweep summary compares
    # siblings (same data, seed, layer and width) by CKA on them.
    features = compression.pair.hidden(splits["test"].inputs)
    np.save(Path(cfg.output_dir) / ACTIVATIONS_FILE, features.numpy().astype(np.float32))
    if cfg.save_compressed:
        path = Path(cfg.output_dir) / "compressed.ckpt"
        save_compressed(model, analysis.layer, compression.pair, path)
    baseline_test = metrics.pop("baseline/recomputed_test_acc")
    return {
        "layer": analysis.layer,
        "target_width": cfg.target_width,
        **metrics,
        "delta_acc": metrics["compressed/test_acc"] - baseline_test,
        "compress_seconds": compression.seconds,
    }
