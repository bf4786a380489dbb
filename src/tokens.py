"""Words to ids and back: the special tokens, the tokenizer, and padded batches of ids.

Kept apart from :mod:`src.data` (Hugging Face ``datasets``, Lightning) so that asking a trained
checkpoint about a sentence (``src.predict``) imports only torch and ``tokenizers``.
"""

from __future__ import annotations

import torch
from tokenizers import Encoding, Tokenizer, models, normalizers, pre_tokenizers, trainers
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from src.errors import SettingError

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID = 0  # the first special token; the model's embedding uses it as padding_idx
UNK_ID = 1  # the second: every word the tokenizer does not know
SPECIAL_IDS = (PAD_ID, UNK_ID)  # a merge of words keeps each one its own row


class SentenceError(SettingError):
    """A sentence the tokenizer reads no word of; the message names the setting."""


def train_tokenizer(texts: list[str], vocab_size: int, min_frequency: int) -> Tokenizer:
    """A lower-casing word-level tokenizer; words it never saw (or saw too rarely) map to [UNK]."""
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Replace("<br />", " "), normalizers.NFKC(), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[PAD, UNK]
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def kept(length: int, max_length: int, truncation_side: str = "right") -> slice:
    """The tokens a sentence of ``length`` keeps at ``max_length``. ``truncation_side`` follows
    Hugging Face: "right" keeps the first words, "left" the last ones (where a long review
    usually gives its verdict, and what a left-to-right LSTM sees last)."""
    if length <= max_length:
        return slice(0, length)
    return (
        slice(0, max_length) if truncation_side == "right" else slice(length - max_length, length)
    )


def collate(batch: list[tuple[Tensor, int]]) -> dict[str, Tensor]:
    """Pad to the longest sentence of this batch only."""
    ids, labels = zip(*batch, strict=True)
    return {
        "ids": pad_sequence(list(ids), batch_first=True, padding_value=PAD_ID),  # (B, T)
        "lengths": torch.tensor([len(x) for x in ids]),  # (B,)
        "labels": torch.tensor(labels, dtype=torch.float),  # (B,)
    }


def check_known_words(
    tokenizer: Tokenizer, sentence: str, setting: str = "analysis.sentences"
) -> Encoding:
    """The sentence's encoding, refused when it has no word the tokenizer knows."""
    encoding = tokenizer.encode(sentence)
    unk = tokenizer.token_to_id(UNK)
    if not encoding.ids or all(i == unk for i in encoding.ids):
        raise SentenceError(
            f"{setting}: {sentence!r} has no word the tokenizer knows; choose another"
        )
    return encoding
