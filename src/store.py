"""Tensors computed once from a trained baseline and shared by every job that uses it.

The LSTM states of each split, the baseline's scores, the probe words' states and each site's
dissimilarity do not depend on the compression method, so a sweep's first job computes them and
the others load them. The rules are the baseline cache's (:mod:`src.baseline`): each artefact is
written under a temporary name and renamed into place, its sha256 is stored beside it and checked
on every load, it is loaded with ``weights_only=True``, and its floating tensors must be finite. An
artefact that fails any check is computed again, with one warning that names it. A file lock per
artefact makes parallel jobs compute it once.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock
from torch import Tensor

log = logging.getLogger(__name__)

Tensors = dict[str, Tensor]


class ArtefactStore:
    """A folder of named tensor dicts (``<name>.pt`` with ``<name>.sha256``).

    ``computed`` lists the artefacts this store computed rather than loaded, in order: what a
    job paid for (written into metrics.json, so a test can count the work a job did).
    """

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = None if folder is None else Path(folder)
        self.computed: list[str] = []
        self._memory: dict[str, Tensors] = {}

    def get(self, name: str, compute: Callable[[], Tensors]) -> Tensors:
        """The artefact ``name``: from memory, else from the folder when intact, else computed
        (and stored). With no folder it lives in memory only."""
        if name in self._memory:
            return self._memory[name]
        if self.folder is None:
            value = self._compute(name, compute)
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.folder / f"{name}.lock")):
                value = self._load(name)
                if value is None:
                    value = self._compute(name, compute)
                    self._save(name, value)
        self._memory[name] = value
        return value

    def _compute(self, name: str, compute: Callable[[], Tensors]) -> Tensors:
        self.computed.append(name)
        return compute()

    def _load(self, name: str) -> Tensors | None:
        path, digest = self.folder / f"{name}.pt", self.folder / f"{name}.sha256"
        if not path.is_file():
            return None
        try:
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != digest.read_text().strip():
                raise ValueError(f"its bytes do not match {digest.name}")
            value = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            if not isinstance(value, dict) or not all(map(torch.is_tensor, value.values())):
                raise ValueError("it is not a dict of tensors")
            bad = [k for k, t in value.items() if t.is_floating_point() and not t.isfinite().all()]
            if bad:
                raise ValueError(f"{bad[0]} holds non-finite values")
        except Exception as error:  # damaged bytes make torch raise many kinds
            log.warning("shared artefact %s is damaged (%s): computing it again", path, error)
            return None
        return value

    def _save(self, name: str, value: Tensors) -> None:
        buffer = io.BytesIO()
        torch.save({k: t.detach().cpu().contiguous() for k, t in value.items()}, buffer)
        data = buffer.getvalue()
        tmp = self.folder / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        (self.folder / f"{name}.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
        tmp.replace(self.folder / f"{name}.pt")
