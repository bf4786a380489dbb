"""The probe set: a seeded random sample, not the corpus's first (often one-class) sentences."""

from __future__ import annotations

from src.analysis.probe import probe_sample


def test_probe_sample_of_a_label_sorted_corpus_holds_both_labels() -> None:
    labels = [1] * 500 + [0] * 500  # positives first, as rotten_tomatoes is stored
    sample = probe_sample(labels, 100, seed=0)
    picked = [labels[i] for i in sample.indices]
    assert len(picked) == 100 and len(set(sample.indices)) == 100
    assert 30 < sum(picked) < 70


def test_probe_sample_is_seeded_and_capped_at_the_corpus() -> None:
    labels = list(range(50))
    assert probe_sample(labels, 10, seed=1).indices == probe_sample(labels, 10, seed=1).indices
    assert probe_sample(labels, 10, seed=1).indices != probe_sample(labels, 10, seed=2).indices
    assert sorted(probe_sample(labels, 80, seed=0).indices) == labels
