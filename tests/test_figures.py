"""The analysis figures draw whatever the site turned out to be, dead sites included, and say
which unit is which."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from src.analysis.figures import (
    Trace,
    cluster_boundaries,
    cluster_panels,
    similarity_heatmap,
    unit_colour,
    word_traces,
)

WORDS = ["i", "love", "this", "movie"]


def trace(n: int, label: int | None = None) -> Trace:
    return Trace("I love this movie", WORDS, torch.rand(len(WORDS), n), 0.9, label)


def test_one_panel_per_cluster_and_per_sentence() -> None:
    labels = torch.tensor([0, 0, 1, -1, 2, 2])
    figure = cluster_panels([trace(6), trace(6)], labels)
    drawn = [ax for ax in figure.axes if ax.lines]
    assert [len(ax.lines) for ax in drawn] == [2, 1, 2, 2, 1, 2]  # both sentences
    assert len(word_traces([trace(6), trace(6)], "head.2 (6)").axes) == 2
    plt.close("all")


def test_word_traces_name_every_live_unit_and_grey_out_the_quiet_ones() -> None:
    figure = word_traces([trace(16)], "head.2 (16)", quiet={3, 7})
    (ax,) = figure.axes
    named = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(map(int, named)) == [u for u in range(16) if u not in (3, 7)]
    colours = {tuple(line.get_color()) for line in ax.lines if line.get_label() in named}
    assert len(colours) == 14  # no two live units share a colour
    assert "grey dashed" in figure.texts[0].get_text()
    assert len({unit_colour(u, 20) for u in range(20)}) == 20
    plt.close("all")


def test_a_sentence_with_a_label_says_whether_it_was_classified_right() -> None:
    assert "(correct)" in trace(2, label=1).title
    assert "is negative" in trace(2, label=0).title
    assert "predicted positive" in trace(2).title and "correct" not in trace(2).title


def test_the_heatmap_draws_cluster_borders_and_labels_its_axes_and_colour_bar() -> None:
    labels = torch.tensor([1, 0, 1, -1, 0, 2])
    assert cluster_boundaries(labels) == [1.5, 3.5, 4.5]
    figure = similarity_heatmap(torch.rand(6, 6), labels, "head.2 (6)", "shape")
    ax, bar = figure.axes
    assert "ordered by cluster" in ax.get_xlabel() and "ordered by cluster" in ax.get_ylabel()
    assert "dissimilarity" in bar.get_ylabel()
    assert len(ax.lines) == 2 * 3  # a horizontal and a vertical border per boundary
    plt.close("all")


def test_a_site_with_no_live_unit_still_draws() -> None:
    labels = torch.full((4,), -1)
    assert not [ax for ax in cluster_panels([trace(4)], labels).axes if ax.lines]
    assert similarity_heatmap(torch.zeros(4, 4), labels, "head.2 (4)", "shape").axes
    plt.close("all")
