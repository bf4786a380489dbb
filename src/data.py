"""Movie-review corpora as a LightningDataModule: local Parquet copies or the Hugging Face hub.

Where a corpus comes from (:func:`locate_corpus`): ``data.root`` when it is set (its default is
``$SENTIMENT_DATA_DIR``); else a ``shared/data`` folder beside the checkout that holds it; else the
copy embedded in the package (``src/corpora/``, rotten_tomatoes only); else the hub. So a fresh
machine with no data folder and no internet still runs the default corpus, and no setting or
Makefile variable is needed where the shared folder sits beside the checkout.

Text is tokenised by a WordLevel model from Hugging Face ``tokenizers`` trained on the train split
only, and batches are padded to their own longest sentence. With length bucketing
(``data.bucket_pool``) a batch holds sentences of similar length, so little of it is padding: the
LSTM's cost is batch x longest sentence.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import pyarrow.parquet as pq
import torch
from datasets import Dataset, DatasetDict, load_dataset
from tokenizers import Tokenizer
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, Subset

from src.errors import SettingError
from src.tokens import collate, kept, train_tokenizer

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
VALIDATION_SEED = 1234  # fixed, so a carved validation split never depends on the run's seed


class DataConfigError(SettingError):
    """A data setting that cannot work; the message names the setting to change."""


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """One quick TCP connect, so an offline machine fails in seconds, not minutes of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


TEXT_COLUMNS = ("text", "sentence")  # SST-2 on the hub calls its text "sentence"
DATA_DIR_ENV = "SENTIMENT_DATA_DIR"  # data.root's default
CHECKOUT = Path(__file__).resolve().parents[1]
BESIDE_CHECKOUT = CHECKOUT.parent / "shared" / "data"  # corpora found with no setting at all
EMBEDDED = Path(__file__).resolve().parent / "corpora"  # shipped with the package


def holds_corpus(folder: Path, name: str) -> bool:
    return (folder / name / "train.parquet").is_file()


def locate_corpus(name: str, root: str | None) -> Path | None:
    """The folder of ``name``'s Parquet files, or None for the hub.

    ``root`` (data.root), else ``$SENTIMENT_DATA_DIR``: a folder that must hold the corpus, since
    a setting someone gave that finds nothing is a mistake to report, not to route around. With
    neither: ``shared/data`` beside the checkout when it holds the corpus, then the embedded copy.
    """
    root = root or os.environ.get(DATA_DIR_ENV) or None
    if root:
        folder = Path(root).expanduser()
        if not holds_corpus(folder, name):
            raise DataConfigError(
                f"no {folder / name}/train.parquet: data.root (default: ${DATA_DIR_ENV}) must be "
                f"a folder with one sub-folder per data set, like ../shared/data/{name}/"
            )
        return folder / name
    for folder in (BESIDE_CHECKOUT, EMBEDDED):
        if holds_corpus(folder, name):
            return folder / name
    return None


def check_parquet(path: Path) -> None:
    """Refuse, naming the file, a corpus file that is not Parquet or lacks a text or label column
    (else datasets fails deep inside its builder)."""
    try:
        columns, rows = pq.read_schema(path).names, pq.read_metadata(path).num_rows
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ... for damaged bytes
        reason = " ".join(str(error).split())[:120]
        raise DataConfigError(
            f"{path} is not a readable Parquet file ({reason}): replace it under data.root"
        ) from None
    if "label" not in columns or not any(c in columns for c in TEXT_COLUMNS):
        raise DataConfigError(
            f"{path} has the columns {columns}: a corpus file needs text (or sentence) and label"
        )
    if rows == 0:
        raise DataConfigError(f"{path} holds no rows: a corpus file needs labelled texts")


def sources_in(folder: Path | None, hub_name: str) -> dict[str, str]:
    """Where each split is read from, for messages: its Parquet file in ``folder``, or the hub's
    split."""
    if folder is None:
        return {split: f"{hub_name} ({split})" for split in SPLITS}
    return {split: str(folder / f"{split}.parquet") for split in SPLITS}


def load_raw_splits(name: str, root: str | None, hub_name: str) -> DatasetDict:
    """The corpus from the folder :func:`locate_corpus` finds, else from the hub."""
    return read_corpus(name, locate_corpus(name, root), hub_name)


def read_corpus(name: str, folder: Path | None, hub_name: str) -> DatasetDict:
    """The Parquet files in ``folder``, or ``hub_name`` from the hub when it is None."""
    if folder is not None:
        paths = {split: folder / f"{split}.parquet" for split in SPLITS}
        files = {split: str(path) for split, path in paths.items() if path.is_file()}
        for path in files.values():
            check_parquet(Path(path))
        log.info("%s: loading the Parquet files in %s", name, folder)
        raw = load_dataset("parquet", data_files=files)
    else:
        if not hub_reachable():
            raise DataConfigError(
                f"{name} is found nowhere (data.root is not set, {BESIDE_CHECKOUT} does not hold "
                f"it, the Hugging Face hub is unreachable): set data.root=... (or "
                f"{DATA_DIR_ENV}) to a folder holding {name}/train.parquet"
            )
        log.info("%s: loading %s from the Hugging Face hub", name, hub_name)
        raw = load_dataset(hub_name)
    text_column = next(c for c in TEXT_COLUMNS if c in raw["train"].column_names)
    if text_column != "text":
        raw = raw.rename_column(text_column, "text")
    return DatasetDict({split: raw[split].select_columns(["text", "label"]) for split in raw})


LABELS = (0, 1)  # negative, positive


def clean_split(split: Dataset, split_name: str) -> Dataset:
    """Drop empty texts and labels outside {0, 1}, and say how many went."""
    keep = split.filter(
        lambda row: (
            isinstance(row["text"], str) and row["text"].strip() != "" and row["label"] in LABELS
        )
    )
    if dropped := len(split) - len(keep):
        log.warning(
            "%s: dropped %d rows with an empty text or a label outside {0,1}", split_name, dropped
        )
    return keep


def other_labels(split: Dataset) -> str:
    """The rows of ``split`` whose label is not 0 or 1, for a message: "; 4265 rows labelled 2
    were dropped" (empty when there are none)."""
    labels = split.to_dict()["label"]
    other = sorted({label for label in labels if label not in LABELS}, key=str)
    if not other:
        return ""
    count = sum(label not in LABELS for label in labels)
    shown = ", ".join(str(label) for label in other[:5]) + (", ..." if len(other) > 5 else "")
    return f"; {count} rows labelled {shown} were dropped"


def complete_splits(
    raw: DatasetDict, val_fraction: float, sources: Mapping[str, str] | None = None
) -> DatasetDict:
    """Clean every split; carve a fixed validation split from train where there is none.

    A test split with no usable labels (SST-2 on the hub hides them as -1) is replaced by the
    validation split, and a new validation split is carved from train. Any other split left
    with no rows, or with one class (accuracy on it says nothing), is refused naming its source
    (``sources``: split -> file).
    """
    splits = {name: clean_split(split, name) for name, split in raw.items()}
    for name, split in splits.items():
        source = (sources or {}).get(name, f"the {name} split")
        hidden = name == "test" and set(raw[name].unique("label")) == {-1}
        if len(split) == 0 and not hidden:
            raise DataConfigError(
                f"no usable rows in {source}: every text is empty or not text, or every label "
                f"is outside {{0,1}}{other_labels(raw[name])}: labels must be 0 (negative) and "
                "1 (positive)"
            )
        if len(classes := set(split.unique("label"))) == 1:
            raise DataConfigError(
                f"{source} holds one class (every usable row has label {classes.pop()}"
                f"{other_labels(raw[name])}): labels must be 0 (negative) and 1 (positive), "
                "and a split needs both"
            )
    if len(splits.get("test", [])) == 0 and "validation" in splits:
        log.warning("test split has no labelled rows: testing on the validation split instead")
        splits["test"] = splits.pop("validation")
    if len(splits.get("validation", [])) == 0:
        carved = splits["train"].train_test_split(test_size=val_fraction, seed=VALIDATION_SEED)
        splits["train"], splits["validation"] = carved["train"], carved["test"]
    return DatasetDict(splits)


def check_truncation_side(truncation_side: str) -> None:
    if truncation_side not in ("right", "left"):
        raise DataConfigError(
            f'data.truncation_side must be "right" or "left", got {truncation_side!r}'
        )


def encode(
    tokenizer: Tokenizer, texts: list[str], max_length: int, truncation_side: str = "right"
) -> tuple[list[Tensor], int]:
    """Token ids per text, at most ``max_length`` (:func:`~src.tokens.kept`), and how many
    texts were cut."""
    check_truncation_side(truncation_side)
    ids, truncated = [], 0
    for e in tokenizer.encode_batch(texts):
        truncated += len(e.ids) > max_length
        ids.append(
            torch.tensor(e.ids[kept(len(e.ids), max_length, truncation_side)], dtype=torch.long)
        )
    return ids, truncated


def data_digest(splits: Mapping[str, Dataset]) -> str:
    """sha256 of every split's texts and labels in order: what results computed on this data are
    keyed by, so other data (another folder, a file edited in place) never reuses them."""
    digest = hashlib.sha256()
    for name in sorted(splits):
        columns = splits[name].to_dict()
        digest.update(json.dumps([name, columns["text"], columns["label"]]).encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class CorpusKey:
    """What the cleaned splits depend on: where they are read from (``folder``; None: the hub),
    with every file's size and modification time, so that a file edited in place is read again."""

    name: str
    hub_name: str
    folder: Path | None
    files: tuple[tuple[str, int, int], ...]
    val_fraction: float
    limit: int | None

    @classmethod
    def of(
        cls, name: str, root: str | None, hub_name: str, val_fraction: float, limit: int | None
    ) -> CorpusKey:
        folder = locate_corpus(name, root)
        paths = sorted(folder.glob("*.parquet")) if folder else []
        files = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
        return cls(name, hub_name, folder, files, val_fraction, limit)


@functools.lru_cache(maxsize=4)
def cleaned_splits(key: CorpusKey) -> tuple[DatasetDict, str]:
    """The cleaned splits of ``key`` and their :func:`data_digest`.

    Kept per process: a sweep's jobs in one process (Hydra's basic launcher, a joblib worker) read,
    clean and hash the corpus once instead of once a job."""
    raw = complete_splits(
        read_corpus(key.name, key.folder, key.hub_name),
        key.val_fraction,
        sources_in(key.folder, key.hub_name),
    )
    if key.limit is not None:  # a slice for tests and quick looks
        raw = DatasetDict(
            {
                k: v.shuffle(seed=VALIDATION_SEED).select(range(min(key.limit, len(v))))
                for k, v in raw.items()
            }
        )
    return raw, data_digest(raw)


@dataclass(frozen=True)
class EncodedSplit:
    """One split's kept texts and (token ids, label) rows: tuples, shared between the jobs of a
    process, so no job can change another's."""

    texts: tuple[str, ...]
    rows: tuple[tuple[Tensor, int], ...]


@dataclass(frozen=True)
class TokenizerKey:
    """A tokenizer, compared by what it does: its serialised form and its whole vocabulary. The
    vocabulary is needed too: a tokenizer whose merged words share an id serialises one word per
    id (``to_str`` drops the others), so two tokenizers that read words differently can
    serialise alike."""

    fingerprint: str
    tokenizer: Tokenizer = field(compare=False, hash=False)

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> TokenizerKey:
        vocab = json.dumps(sorted(tokenizer.get_vocab(with_added_tokens=True).items()))
        digest = hashlib.sha256(tokenizer.to_str().encode() + vocab.encode()).hexdigest()
        return cls(digest, tokenizer)


@functools.lru_cache(maxsize=2)
def encoded_splits(
    key: CorpusKey, tokenizer: TokenizerKey, max_length: int, truncation_side: str
) -> dict[str, EncodedSplit]:
    """Every split of ``key`` tokenised; texts with no tokens are dropped. Kept per process like
    :func:`cleaned_splits` (two entries: a baseline's tokenizer and a scratch model's)."""
    encoded = {}
    for name, split in cleaned_splits(key)[0].items():
        # Plain lists: indexing a datasets Column one row at a time costs ~1 ms a row.
        columns = split.to_dict()
        texts, labels = columns["text"], columns["label"]
        ids, truncated = encode(tokenizer.tokenizer, texts, max_length, truncation_side)
        read = [i for i, x in enumerate(ids) if len(x) > 0]
        if truncated:
            log.info("%s: %d texts cut to data.max_length=%d words", name, truncated, max_length)
        if dropped := len(ids) - len(read):
            log.warning("%s: dropped %d texts that have no tokens", name, dropped)
        encoded[name] = EncodedSplit(
            tuple(texts[i] for i in read), tuple((ids[i], int(labels[i])) for i in read)
        )
    return encoded


class LengthBatchSampler(Sampler[list[int]]):
    """Batches of sentences of similar length (length bucketing).

    Shuffled (training): each epoch the sentences are shuffled, cut into pools of ``pool`` batches,
    each pool is sorted by length and cut into batches, and the batches are shuffled; so batches
    stay random in content and order while padding almost vanishes (``pool=None``: the shuffled
    sentences cut into batches, as a shuffled DataLoader batches them). Not shuffled (evaluation):
    every sentence sorted by length, the batches in that order, the same every time.
    The shuffle draws its seed from torch's global generator, as a shuffled DataLoader does, so a
    seeded run repeats. ``start`` (a seed and a number of batches) makes the first epoch go on
    with that epoch's shuffle past the batches already trained: a training resumed mid-epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        pool: int | None,
        shuffle: bool = True,
        start: tuple[int, int] | None = None,
    ) -> None:
        self.lengths = torch.as_tensor(lengths)
        self.batch_size, self.pool, self.shuffle, self.start = batch_size, pool, shuffle, start
        self.seed: int | None = None  # the seed of the current epoch's shuffle

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            order = torch.argsort(self.lengths, stable=True)
            yield from (batch.tolist() for batch in order.split(self.batch_size))
            return
        if self.start is None:
            self.seed, done = int(torch.empty((), dtype=torch.int64).random_()), 0
        else:
            (self.seed, done), self.start = self.start, None
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(self.lengths), generator=generator)
        if self.pool is None:
            yield from (batch.tolist() for batch in order.split(self.batch_size)[done:])
            return
        batches = []
        for pool in order.split(self.batch_size * self.pool):
            by_length = pool[torch.argsort(self.lengths[pool], stable=True)]
            batches += by_length.split(self.batch_size)
        for index in torch.randperm(len(batches), generator=generator)[done:]:
            yield batches[index].tolist()


class SentimentDataModule(L.LightningDataModule):
    """Reviews with a 0/1 label, tokenised once in ``setup`` and batched with dynamic padding."""

    name: str  # the corpus, always given (LightningDataModule's own may be None)

    def __init__(
        self,
        name: str,
        hub_name: str,
        root: str | None = None,
        vocab_size: int = 20_000,
        min_frequency: int = 2,
        max_length: int = 64,
        truncation_side: str = "right",
        batch_size: int = 32,
        bucket_pool: int | None = 100,
        val_fraction: float = 0.1,
        limit: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if max_length < 1:
            raise DataConfigError(f"data.max_length must be >= 1, got {max_length}")
        check_truncation_side(truncation_side)
        if batch_size < 1:
            raise DataConfigError(f"data.batch_size must be >= 1, got {batch_size}")
        if limit is not None and limit < 1:
            raise DataConfigError(
                f"data.limit={limit}: the rows kept of each split, at least 1; null keeps them all"
            )
        if bucket_pool is not None and bucket_pool < 1:
            raise DataConfigError(
                f"data.bucket_pool={bucket_pool}: length bucketing sorts pools of this many "
                "batches; use at least 1, or null to turn it off"
            )
        self.bucket_pool = bucket_pool
        self.name, self.hub_name, self.root = name, hub_name, root
        self.vocab_size, self.min_frequency, self.max_length = vocab_size, min_frequency, max_length
        self.batch_size, self.val_fraction, self.limit = batch_size, val_fraction, limit
        self.num_workers, self.truncation_side = num_workers, truncation_side
        self.tokenizer: Tokenizer | None = None  # set before setup() to reuse a trained one
        self.splits: dict[str, list[tuple[Tensor, int]]] = {}
        self.texts: dict[str, list[str]] = {}
        self.shuffle_start: tuple[int, int] | None = None  # the next training loader's start
        self.raw: DatasetDict | None = None  # the cleaned splits, read once by read()
        self.digest: str | None = None  # data_digest of raw
        self.corpus: CorpusKey | None = None  # the files raw was read from, as read() found them

    def read(self) -> DatasetDict:
        """The cleaned splits (a slice with data.limit), read once, and their :attr:`digest`:
        known before any tokenizer or training, so a cached baseline can be keyed by it."""
        if self.raw is None:
            self.corpus = CorpusKey.of(
                self.name, self.root, self.hub_name, self.val_fraction, self.limit
            )
            self.raw, self.digest = cleaned_splits(self.corpus)
        return self.raw

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        raw = self.read()
        if self.tokenizer is None:
            self.tokenizer = train_tokenizer(
                raw["train"].to_dict()["text"], self.vocab_size, self.min_frequency
            )
        encoded = encoded_splits(  # the files read() read, not those on disk now
            self.corpus,
            TokenizerKey.of(self.tokenizer),
            self.max_length,
            self.truncation_side,
        )
        self.texts = {name: list(split.texts) for name, split in encoded.items()}
        self.splits = {name: list(split.rows) for name, split in encoded.items()}
        log.info(
            "%s: %s sentences, vocabulary %d",
            self.name,
            {k: len(v) for k, v in self.splits.items()},
            self.tokenizer.get_vocab_size(),
        )

    def loader(self, split: str, shuffle: bool = False, rows: Tensor | None = None) -> DataLoader:
        """Batches of ``split``. With length bucketing on, an unshuffled loader yields its batches
        in order of length, not in the split's order (labels travel with their sentences).
        ``rows``: only the sentences at these places of the unshuffled order, in that order (a
        search that reads part of validation reads no more)."""
        sentences = self.splits[split]
        if rows is not None:
            unshuffled = self.loader(split).batch_sampler
            assert unshuffled is not None  # every loader here batches
            order = torch.tensor([i for batch in unshuffled for i in batch])[rows]
            batches = order.split(self.batch_size)
            return DataLoader(
                sentences,  # type: ignore[arg-type]  # a list is a map-style dataset
                collate_fn=collate,
                num_workers=self.num_workers,
                batch_sampler=[batch.tolist() for batch in batches],
            )
        batching: dict[str, Any]
        if self.bucket_pool is None and not shuffle:
            batching = {"batch_size": self.batch_size}
        else:  # shuffled: one sampler whose place in an epoch a resume can go back to
            lengths = [len(ids) for ids, _ in sentences]
            start = None
            if shuffle:
                start, self.shuffle_start = self.shuffle_start, None
            sampler = LengthBatchSampler(lengths, self.batch_size, self.bucket_pool, shuffle, start)
            batching = {"batch_sampler": sampler}
        return DataLoader(
            sentences,  # type: ignore[arg-type]  # a list is a map-style dataset
            collate_fn=collate,
            num_workers=self.num_workers,
            **batching,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")


def probe_sample(sentences: Sequence, size: int, seed: int) -> Subset:
    """A seeded random sample of ``size`` sentences (all of them when there are fewer).

    Not the first ones: corpora on disk are often sorted by label (rotten_tomatoes puts its
    positives first), and a one-class probe set would skew every measure taken on it.
    """
    order = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(seed))
    return Subset(sentences, order[:size].tolist())  # type: ignore[arg-type]  # map-style


def probe_loader(sentences: Sequence, size: int, seed: int) -> DataLoader:
    """Batches of :func:`probe_sample`, in the sample's order."""
    return DataLoader(probe_sample(sentences, size, seed), batch_size=256, collate_fn=collate)
