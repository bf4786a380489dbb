"""The source's pictures: per-word traces, the ordered similarity heatmap, one panel per cluster."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402

from src.analysis.clustering import cluster_order  # noqa: E402

Trace = tuple[str, list[str], Tensor, float]  # sentence, words, activations (T, N), P(positive)


def word_traces(traces: list[Trace], layer: int) -> Figure:
    """One panel per sentence, one line per neuron, the words along the x axis."""
    fig, axes = plt.subplots(1, len(traces), figsize=(5 * len(traces), 4), squeeze=False)
    for ax, (sentence, words, acts, prob) in zip(axes[0], traces, strict=True):
        ax.plot(acts.numpy(), marker="o", linewidth=1)
        ax.set_xticks(range(len(words)), words, rotation=30)
        ax.set_title(f"{sentence!r}\nP(positive)={prob:.2f}, max activation {acts.max():.2f}")
        ax.set_ylabel(f"layer {layer} activation")
    fig.tight_layout()
    return fig


def similarity_heatmap(dissimilarity: Tensor, labels: Tensor) -> Figure:
    """The dissimilarity with neurons grouped by cluster (dead neurons, label -1, last)."""
    order = cluster_order(labels)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    image = ax.imshow(dissimilarity[order][:, order].numpy(), cmap="viridis")
    ticks = order.tolist() if len(order) <= 32 else []
    ax.set_xticks(range(len(ticks)), ticks, fontsize=6)
    ax.set_yticks(range(len(ticks)), ticks, fontsize=6)
    ax.set_title("neuron dissimilarity, ordered by cluster")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def panel_grid(
    panels: int, width: float, height: float, per_row: int = 4
) -> tuple[Figure, list[Axes]]:
    """Up to ``per_row`` panels a row, each ``width`` x ``height`` inches; the spare ones hidden,
    and one empty panel when there is nothing to draw."""
    cols = max(1, min(per_row, panels))
    rows = max(1, -(-panels // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[panels:]:
        ax.axis("off")
    return fig, list(axes.flat)


def cluster_panels(trace: Trace, labels: Tensor) -> Figure:
    """One panel per cluster with its neurons' activations on one sentence."""
    sentence, words, acts, _ = trace
    clusters = sorted(set(labels.tolist()) - {-1})
    fig, axes = panel_grid(len(clusters), 3.5, 2.8)
    for ax, cluster in zip(axes, clusters, strict=False):
        members = (labels == cluster).nonzero().squeeze(1).tolist()
        for neuron in members:
            ax.plot(acts[:, neuron].numpy(), marker=".", label=str(neuron))
        ax.set_xticks(range(len(words)), words, rotation=30, fontsize=7)
        ax.set_title(f"cluster {cluster}: {len(members)} neurons", fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle(f"{sentence!r}")
    fig.tight_layout()
    return fig
