"""The one kind of error a user fixes by changing a setting, and how an entry point reports it.

Every module's configuration error derives from :class:`SettingError`, whose message is one line
naming the setting. :func:`reported` prints that line alone (``HYDRA_FULL_ERROR=1`` shows the
traceback) and leaves no run folder behind when the run had written nothing of its own; a Ctrl-C
or a SIGTERM (what a scheduler sends before it kills a job) gets one line too, a non-zero exit
status, and marks what the run had written as partial.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TypeVar

T = TypeVar("T")
HYDRA_OWN = {".hydra"}  # what Hydra writes into every run folder before the task starts
INTERRUPTED = "INTERRUPTED"  # left in a run folder whose files a Ctrl-C or SIGTERM cut short


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


class Terminated(BaseException):
    """A SIGTERM, raised where the program is, as Ctrl-C raises KeyboardInterrupt: so a training
    saves its ``interrupted.ckpt``, the W&B run is finished as failed and the exit status says
    so. Not a KeyboardInterrupt: Lightning answers one of those with exit status 1 and a line of
    its own."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread while the block runs (Lightning's
    own handler, set during a fit, calls this one too)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # a launcher's worker thread: signals reach the main thread only
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# How an interruption is reported: what stopped the run, the message's first word, and the exit
# status (128 + the signal's number, as a shell reports a process the signal killed).
STOPPED = {"Ctrl-C": ("Interrupted", 130), "SIGTERM": ("Terminated", 143)}


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
            with sigterm_raises():
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
        except (KeyboardInterrupt, Terminated) as stop:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or not HydraConfig.initialized():
                raise
            by = "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C"
            said, status = STOPPED[by]
            folder = Path(HydraConfig.get().runtime.output_dir)
            discard_untouched(folder)
            where = ""
            if folder.is_dir():
                where = f": the files in {folder} are partial"
                try:
                    (folder / INTERRUPTED).write_text(
                        f"{by} stopped this run: its files are partial and hold no result\n"
                    )
                    where += f" (marked by {INTERRUPTED})"
                except OSError:  # a read-only or full run folder: the message says it all
                    pass
            print(f"{said}{where}", file=sys.stderr)
            sys.exit(status)

    return run
