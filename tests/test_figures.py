"""The analysis figures draw whatever the layer turned out to be, dead layers included."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from src.analysis.figures import cluster_panels, similarity_heatmap, word_traces

WORDS = ["i", "love", "this", "movie"]


def trace(n: int) -> tuple:
    return ("I love this movie", WORDS, torch.rand(len(WORDS), n), 0.9)


def test_one_panel_per_cluster_and_per_sentence() -> None:
    labels = torch.tensor([0, 0, 1, -1, 2, 2])
    figure = cluster_panels(trace(6), labels)
    drawn = [ax for ax in figure.axes if ax.lines]
    assert len(drawn) == 3
    assert [len(ax.lines) for ax in drawn] == [2, 1, 2]
    assert len(word_traces([trace(6), trace(6)], layer=2).axes) == 2
    plt.close("all")


def test_a_layer_with_no_live_neuron_still_draws() -> None:
    labels = torch.full((4,), -1)
    assert not [ax for ax in cluster_panels(trace(4), labels).axes if ax.lines]
    assert similarity_heatmap(torch.zeros(4, 4), labels).axes
    plt.close("all")
