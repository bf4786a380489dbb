"""Tensors computed once from a trained baseline and shared by every job that uses it.

The LSTM states of each split, the baseline's scores, the probe words' states and each site's
dissimilarity do not depend on the compression method, so a sweep's first job computes them and
the others load them. The rules are the baseline cache's (:mod:`src.baseline`): each artefact is
written under a temporary name and renamed into place, its sha256 is stored beside it and checked
on every load, it is loaded with ``weights_only=True``, and its floating tensors must be finite. An
artefact that fails any check is computed again, with one warning that names it. A file lock per
artefact makes parallel jobs compute it once. A read-only folder is still read (each file was
renamed into place whole, so no lock is needed) and what it lacks is computed in memory; a write
that fails (a full disk) or a value with non-finite entries is not stored, with one warning.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
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
        self._read_only: bool | None = None  # known after the first get

    def get(self, name: str, compute: Callable[[], Tensors]) -> Tensors:
        """The artefact ``name``: from memory, else from the folder when intact, else computed
        (and stored). With no folder it lives in memory only."""
        if name in self._memory:
            return self._memory[name]
        value: Tensors | None
        if self.folder is None:
            value = self._compute(name, compute)
        elif not self._writable():
            value = self._load(name) or self._compute(name, compute)
        else:
            with FileLock(str(self.folder / f"{name}.lock")):
                value = self._load(name)
                if value is None:
                    value = self._compute(name, compute)
                    self._save(name, value)
        self._memory[name] = value
        return value

    def _writable(self) -> bool:
        """Whether the folder can take locks and files; warns once when it cannot."""
        assert self.folder is not None  # only a store with a folder writes
        if self._read_only is None:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._read_only = not os.access(self.folder, os.W_OK)
                why = "it is not writable"
            except OSError as error:
                self._read_only, why = True, error.strerror or str(error)
            if self._read_only:
                log.warning(
                    "shared artefacts in %s are read, not written (%s): what is missing is "
                    "computed for this run only",
                    self.folder,
                    why,
                )
        return not self._read_only

    def _compute(self, name: str, compute: Callable[[], Tensors]) -> Tensors:
        self.computed.append(name)
        return compute()

    def _load(self, name: str) -> Tensors | None:
        assert self.folder is not None  # only a store with a folder reads files
        path, digest = self.folder / f"{name}.pt", self.folder / f"{name}.sha256"
        if not path.is_file():
            return None
        try:
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != digest.read_text().strip():
                raise ValueError(f"its bytes do not match {digest.name}")
            try:
                value = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:  # torch's message suggests weights_only=False: never
                raise ValueError("it holds Python objects beyond tensors") from None
            if not isinstance(value, dict) or not all(map(torch.is_tensor, value.values())):
                raise ValueError("it is not a dict of tensors")
            if bad := non_finite(value):
                raise ValueError(f"{bad[0]} holds non-finite values")
        except Exception as error:  # damaged bytes make torch raise many kinds
            log.warning("shared artefact %s is damaged (%s): computing it again", path, error)
            return None
        return value

    def _save(self, name: str, value: Tensors) -> None:
        """Store ``value`` unless a later load would refuse it (non-finite) or the disk does."""
        assert self.folder is not None  # only a store with a folder writes
        path = self.folder / f"{name}.pt"
        if bad := non_finite(value):
            log.warning("shared artefact %s not stored: %s holds non-finite values", path, bad[0])
            return
        buffer = io.BytesIO()
        torch.save({k: t.detach().cpu().contiguous() for k, t in value.items()}, buffer)
        data = buffer.getvalue()
        tmp = self.folder / f".{name}.{os.getpid()}.tmp"
        try:
            tmp.write_bytes(data)
            (self.folder / f"{name}.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
            tmp.replace(path)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            log.warning("shared artefact %s not stored: %s", path, error.strerror or error)


def non_finite(value: Tensors) -> list[str]:
    """The names of ``value``'s floating tensors that hold a NaN or an infinity."""
    return [k for k, t in value.items() if t.is_floating_point() and not t.isfinite().all()]
