"""The run's pictures: per-word traces, the similarity heatmap by cluster, one panel per cluster.

Pure drawing: tensors and strings in, a matplotlib figure out. Every unit keeps one colour across
the figures of a run (its id picks it), and dead or nearly dead units are drawn thin, grey and
dashed, so the eye goes to the units that carry the signal.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402

from src.analysis.clustering import cluster_order  # noqa: E402

LEGEND_UNITS = 20  # at most this many units named in a legend; more would hide the lines


@dataclass
class Trace:
    """One sentence through the site: its words, the activations after each word, P(positive)."""

    sentence: str
    words: list[str]
    activations: Tensor  # (T, N)
    prob: float
    label: int | None = None  # the sentence's true label when it comes from the data

    @property
    def title(self) -> str:
        predicted = "positive" if self.prob > 0.5 else "negative"
        verdict = f"predicted {predicted}"
        if self.label is not None:
            truth = "positive" if self.label else "negative"
            verdict += " (correct)" if (self.prob > 0.5) == bool(self.label) else f", is {truth}"
        return f"{self.sentence!r}\nP(positive) = {self.prob:.2f}, {verdict}"


def unit_colour(unit: int, units: int) -> tuple:
    """A colour per unit id: 20 distinct ones for small sites, a smooth map beyond."""
    if units <= LEGEND_UNITS:  # tab20's dark shades for ids 0-9, then its light ones
        return plt.get_cmap("tab20")((2 * unit) % 20 + (2 * unit) // 20)
    return plt.get_cmap("turbo")(unit / max(units - 1, 1))


def _draw_units(ax: Axes, acts: Tensor, units: list[int], quiet: set[int], total: int) -> None:
    """One line per unit in ``units``; the ``quiet`` ones (dead or nearly dead) grey."""
    x = np.arange(acts.shape[0])
    for unit in units:
        values = acts[:, unit].numpy()
        if unit in quiet:
            ax.plot(x, values, color="0.7", linestyle="--", linewidth=0.8)
        else:
            ax.plot(x, values, color=unit_colour(unit, total), marker="o", ms=3, label=str(unit))


def _loudest(acts: Tensor, units: list[int], count: int) -> list[int]:
    """The ``count`` units of ``units`` with the largest |activation| on this sentence."""
    peak = acts.abs().amax(dim=0)
    return sorted(units, key=lambda u: -float(peak[u]))[:count]


def word_traces(traces: list[Trace], site: str, quiet: Set[int] = frozenset()) -> Figure:
    """One panel per sentence, one line per unit along the words, units named in the legend.

    ``quiet``: dead and nearly dead units, drawn grey. A site with more than
    :data:`LEGEND_UNITS` units names only its loudest live ones on each sentence.
    """
    fig, axes = plt.subplots(1, len(traces), figsize=(5.2 * len(traces), 4.4), squeeze=False)
    for ax, trace in zip(axes[0], traces, strict=True):
        total = trace.activations.shape[1]
        live = [u for u in range(total) if u not in quiet]
        named = live if total <= LEGEND_UNITS else _loudest(trace.activations, live, 8)
        _draw_units(ax, trace.activations, sorted(quiet), set(quiet), total)
        _draw_units(ax, trace.activations, named, set(), total)
        ax.set_xticks(range(len(trace.words)), trace.words, rotation=30)
        ax.set_title(trace.title, fontsize=9)
        ax.set_ylabel(f"{site} activation")
        ax.axhline(0, color="0.85", linewidth=0.6, zorder=0)
        if named:
            title = "unit" if total <= LEGEND_UNITS else "loudest units"
            ax.legend(title=title, fontsize=6, title_fontsize=7, ncol=2, loc="best")
    if quiet:
        fig.text(0.01, 0.01, f"grey dashed: dead or nearly dead units {sorted(quiet)}", fontsize=7)
    fig.tight_layout()
    return fig


def cluster_boundaries(labels: Tensor) -> list[float]:
    """Positions between clusters in :func:`cluster_order`'s order (left-out units form the
    last block)."""
    ordered = labels[cluster_order(labels)].tolist()
    return [i - 0.5 for i in range(1, len(ordered)) if ordered[i] != ordered[i - 1]]


def similarity_heatmap(dissimilarity: Tensor, labels: Tensor, site: str, measure: str) -> Figure:
    """The dissimilarity with units grouped by cluster, the clusters' borders drawn (the dead and
    nearly dead, label -1, in the last block)."""
    order = cluster_order(labels)
    fig, ax = plt.subplots(figsize=(5.6, 5))
    image = ax.imshow(dissimilarity[order][:, order].numpy(), cmap="viridis")
    for edge in cluster_boundaries(labels):
        ax.axhline(edge, color="white", linewidth=1.2)
        ax.axvline(edge, color="white", linewidth=1.2)
    ticks = order.tolist() if len(order) <= 32 else []
    ax.set_xticks(range(len(ticks)), ticks, fontsize=6)
    ax.set_yticks(range(len(ticks)), ticks, fontsize=6)
    ax.set_xlabel("unit, ordered by cluster (left-out units last)")
    ax.set_ylabel("unit, ordered by cluster")
    ax.set_title(f"{site}: how unlike two units' traces are", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.85, label=f"dissimilarity ({measure}; 0 = same shape)")
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


def cluster_panels(traces: list[Trace], labels: Tensor, max_clusters: int = 8) -> Figure:
    """A row per sentence, a column per cluster: the cluster's units along the sentence's words.

    Sites with more than ``max_clusters`` clusters show their largest ones.
    """
    sizes = {c: int((labels == c).sum()) for c in sorted(set(labels.tolist()) - {-1})}
    clusters = sorted(sizes, key=lambda c: -sizes[c])[:max_clusters]
    clusters.sort()
    columns = max(1, len(clusters))
    fig, axes = plt.subplots(
        len(traces), columns, figsize=(3.4 * columns, 2.9 * len(traces)), squeeze=False
    )
    total = len(labels)
    for row, trace in zip(axes, traces, strict=True):
        for ax, cluster in zip(row, clusters, strict=False):
            members = (labels == cluster).nonzero().squeeze(1).tolist()
            _draw_units(ax, trace.activations, members, set(), total)
            ax.set_xticks(range(len(trace.words)), trace.words, rotation=30, fontsize=7)
            ax.set_title(f"cluster {cluster}: {len(members)} units", fontsize=9)
            ax.legend(fontsize=6, ncol=2)
        if not clusters:
            row[0].set_title("no live unit to cluster", fontsize=9)
        row[0].set_ylabel(f"{trace.sentence!r}"[:40], fontsize=8)
    fig.tight_layout()
    return fig
