"""The probe set: a seeded random sample, not the corpus's first (often one-class) sentences."""

from __future__ import annotations

import pytest

from src.analysis.probe import AnalysisConfigError, probe_sample, resolve_layer


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


@pytest.mark.parametrize("layer", [-4, -7, 4, "head.5"])
def test_a_layer_out_of_range_says_so_and_lists_the_valid_values(layer) -> None:
    with pytest.raises(AnalysisConfigError) as error:
        resolve_layer(layer, [256, 64, 16])
    message = str(error.value)
    assert f"layer={layer} is out of range" in message and "output layer" not in message
    assert "0, 1, 2, -1, -2, -3" in message


@pytest.mark.parametrize("layer", [3, "head.3"])
def test_the_output_layer_is_named_as_such(layer) -> None:
    with pytest.raises(AnalysisConfigError, match="is the output layer.*0, 1, 2, -1, -2, -3"):
        resolve_layer(layer, [256, 64, 16])


def test_valid_layers_resolve_to_their_index() -> None:
    widths = [256, 64, 16]
    assert [resolve_layer(i, widths) for i in (0, 1, 2, -1, -2, -3)] == [0, 1, 2, 2, 1, 0]
    assert resolve_layer("head.1", widths) == 1
