"""Record what one head layer does at every real word: its inputs and its post-ReLU outputs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tokenizers import Encoding, Tokenizer
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from src.data import collate
from src.model import SentimentLSTM, last_word


class AnalysisConfigError(ValueError):
    """An analysis setting that cannot work; the message names the setting to change."""


def resolve_layer(layer: int | str, hidden_widths: list[int]) -> int:
    """A hidden layer's 0-based index: an index, negative from the end, or "head.i"."""
    n = len(hidden_widths)
    valid = ", ".join(str(i) for i in [*range(n), *range(-1, -n - 1, -1)])
    choose = (
        f"choose a hidden layer: one of {valid} (or head.0..head.{n - 1}), widths {hidden_widths}"
    )
    try:
        index = int(layer.removeprefix("head.")) if isinstance(layer, str) else int(layer)
    except ValueError:
        raise AnalysisConfigError(f"layer={layer} is not a layer index; {choose}") from None
    if index == n:  # head.n is the output Linear: the head has n + 1 layers
        raise AnalysisConfigError(f"layer={layer} is the output layer; {choose}")
    if not -n <= index < n:
        raise AnalysisConfigError(f"layer={layer} is out of range; {choose}")
    return index % n


def check_target_width(target_width: int, width: int, layer: int) -> None:
    if not 1 <= target_width < width:
        raise AnalysisConfigError(
            f"target_width={target_width} must be between 1 and {width - 1}: layer={layer} has "
            f"{width} neurons"
        )


def probe_sample(sentences: Dataset, size: int, seed: int) -> Subset:
    """A seeded random sample of ``size`` sentences (all of them when there are fewer).

    Not the first ones: corpora on disk are often sorted by label (rotten_tomatoes puts its
    positives first), and a one-class probe set would skew every measure taken on it.
    """
    order = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(seed))
    return Subset(sentences, order[:size].tolist())


def probe_loader(sentences: Dataset, size: int, seed: int) -> DataLoader:
    """Batches of :func:`probe_sample`, ready for :func:`probe_layer`."""
    return DataLoader(probe_sample(sentences, size, seed), batch_size=256, collate_fn=collate)


@torch.no_grad()
def layer_io(
    network: SentimentLSTM, loader: DataLoader, layer: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """Per batch: the layer's inputs (words, D) and outputs (words, N) at real words only."""
    network.eval()
    for batch in loader:
        states = network.states(batch["ids"], batch["lengths"])  # (B, T, H)
        mask = torch.arange(states.shape[1])[None, :] < batch["lengths"][:, None]  # (B, T)
        x = network.layer_input(states, layer)
        yield x[mask], torch.relu(network.head[layer](x[mask]))


@dataclass
class Probe:
    """What the layer saw and did on the probe words."""

    inputs: Tensor  # (words, D)
    activations: Tensor  # (words, N), post-ReLU


def probe_layer(network: SentimentLSTM, loader: DataLoader, layer: int) -> Probe:
    inputs, outputs = zip(*layer_io(network, loader, layer), strict=True)
    if not inputs:
        raise AnalysisConfigError("the probe set is empty: raise analysis.probe_sentences")
    return Probe(torch.cat(inputs), torch.cat(outputs))


def check_known_words(tokenizer: Tokenizer, sentence: str) -> Encoding:
    """The sentence's encoding, refused when no word of it is in the vocabulary."""
    encoding = tokenizer.encode(sentence)
    unk = tokenizer.token_to_id("[UNK]")
    if not encoding.ids or all(i == unk for i in encoding.ids):
        raise AnalysisConfigError(
            f"analysis.sentences: {sentence!r} has no word the tokenizer knows; choose another"
        )
    return encoding


@torch.no_grad()
def sentence_trace(
    network: SentimentLSTM, tokenizer: Tokenizer, sentence: str, layer: int
) -> tuple[list[str], Tensor, float]:
    """Words, the layer's activations after each word (T, N), and P(positive) for one sentence."""
    encoding = check_known_words(tokenizer, sentence)
    network.eval()
    ids = torch.tensor([encoding.ids])
    lengths = torch.tensor([len(encoding.ids)])
    states = network.states(ids, lengths)
    activations = network.activations(states)[layer][0]  # (T, N)
    prob = torch.sigmoid(last_word(network.head_from(0, states), lengths))[0].item()
    return encoding.tokens, activations, prob
