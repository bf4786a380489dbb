"""The one kind of error a user fixes by changing a setting, and how an entry point reports it.

Every module's configuration error derives from :class:`SettingError`, whose message is one line
naming the setting. :func:`reported` prints that line alone (``HYDRA_FULL_ERROR=1`` shows the
traceback) and leaves no run folder behind when the run had written nothing of its own; a Ctrl-C
after training gets one line too, and marks what the run had written as partial.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
HYDRA_OWN = {".hydra"}  # what Hydra writes into every run folder before the task starts
INTERRUPTED = "INTERRUPTED"  # left in a run folder whose files a Ctrl-C cut short


class SettingError(ValueError):
    """A setting that cannot work; the message is one line that names it."""


class WriteError(SettingError):
    """A file that cannot be written (full disk, read-only folder); the message names the path
    and the setting that puts it there."""


def write_atomically(path: str | Path, data: bytes, setting: str) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed into place, so that a full
    disk or a kill leaves the old file or none, never a truncated one that a later run reads."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise WriteError(
            f"{path} cannot be written ({error.strerror or error}): free space there or set "
            f"{setting} to a writable folder"
        ) from None


def discard_untouched(folder: Path) -> None:
    """Remove a run folder that holds only Hydra's own files (its config and log)."""
    if folder.is_dir() and all(p.name in HYDRA_OWN or p.suffix == ".log" for p in folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)


def reported(task: Callable[..., T]) -> Callable[..., T]:
    """A Hydra task whose :class:`SettingError` ends a single run with its one-line message and
    exit status 2. In a multirun the error goes to Hydra, which records the job as failed and
    goes on with the others (the sweep summary lists it)."""

    @functools.wraps(task)
    def run(*args: object, **kwargs: object) -> T:
        from hydra.core.hydra_config import HydraConfig  # here: src.predict needs no Hydra
        from hydra.errors import InstantiationException
        from hydra.types import RunMode

        try:
            return task(*args, **kwargs)
        except (SettingError, InstantiationException) as error:
            # instantiate() wraps a constructor's own refusal (data.batch_size=0) in three lines
            setting = error if isinstance(error, SettingError) else error.__cause__
            hydra = HydraConfig.get() if HydraConfig.initialized() else None
            full = os.environ.get("HYDRA_FULL_ERROR") == "1"
            if not isinstance(setting, SettingError) or full or hydra is None:
                raise
            if hydra.mode == RunMode.MULTIRUN:
                raise setting from None
            print(f"Error: {setting}", file=sys.stderr)
            discard_untouched(Path(hydra.runtime.output_dir))
            sys.exit(2)
        except KeyboardInterrupt:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or not HydraConfig.initialized():
                raise
            folder = Path(HydraConfig.get().runtime.output_dir)
            discard_untouched(folder)
            where = ""
            if folder.is_dir():
                where = f": the files in {folder} are partial"
                try:
                    (folder / INTERRUPTED).write_text(
                        "Ctrl-C stopped this run: its files are partial and hold no result\n"
                    )
                    where += f" (marked by {INTERRUPTED})"
                except OSError:  # a read-only or full run folder: the message says it all
                    pass
            print(f"Interrupted{where}", file=sys.stderr)
            sys.exit(130)

    return run
