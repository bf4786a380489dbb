"""The anchor at the words site: keep the most frequent words, send the rest to ``[UNK]``.

FastText.zip's vocabulary pruning (Joulin et al. 2016) without its retraining step. By default
``[UNK]`` keeps its trained row; ``unk_row: mean`` makes it the frequency-weighted mean of it and
every word cut (one merge, no search).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from src.compress.base import LayerPair, check_choice
from src.compress.words import (
    by_frequency,
    check_words_width,
    fold_words,
    frequencies,
    renumber,
)
from src.tokens import UNK_ID

UNK_ROWS = ("trained", "mean")


@dataclass(frozen=True)
class FrequencyCutoff:
    """:class:`~src.compress.base.MergeMethod` for the words site."""

    unk_row: str = "trained"
    for_words = True

    def __post_init__(self) -> None:
        check_choice(self.unk_row, UNK_ROWS, "compress.method.unk_row")

    def __call__(
        self,
        pair: LayerPair,
        activations: Tensor,
        labels: Tensor | None,
        target_width: int,
        generator: torch.Generator,
    ) -> LayerPair:
        check_words_width(target_width, pair.width)
        weights = frequencies(activations)
        kept = by_frequency(weights)[:target_width]  # the special tokens always keep their rows
        groups = torch.full((pair.width,), UNK_ID, dtype=torch.long)
        groups[kept] = kept
        if self.unk_row == "trained":  # the cut words weigh nothing: [UNK] keeps its own row
            cut = torch.ones(pair.width, dtype=torch.bool)
            cut[kept] = False
            weights = weights.masked_fill(cut, 0.0)
        return fold_words(pair, renumber(groups), weights)
