r"""A dataset run's folder kept sound through what machines do to runs: durable atomic writes,
verified results on resume, one run per folder, stop signals, environment errors in one line.

- :func:`atomic_write`: the bytes go to ``<path>.tmp<pid>``, are flushed and ``fsync``\ ed, the
  file is renamed over ``path`` and the folder is ``fsync``\ ed (where the platform allows), so
  a power cut leaves the old file or the new one, never a truncated one; a failed write
  removes its temporary file.
- :func:`finished`: an image counts as done only when its record parses, its tensor file loads
  (``weights_only``) and its PNGs exist.
- :class:`RunLock`: an exclusive lock on the folder for the run's lifetime (``filelock``, the
  OS's lock: released when the process dies, so a crashed run never blocks the next one).
- :class:`StopSignals`: SIGTERM (what Slurm and Kubernetes send before killing), and SIGUSR1
  under Slurm (the signal Lightning's Slurm environment requeues on), set a flag that the run
  checks between batches; the handler does no I/O.
- :func:`describe_os_error`: no space left, permission denied, read-only file system, a file
  where a folder should be: one line that says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "RunLock",
    "RunStopped",
    "StopSignals",
    "atomic_write",
    "describe_os_error",
    "finished",
    "remove_stale_temporaries",
]

#: the suffix of a temporary file: ``<name>.tmp<pid>``
TMP_MARK = ".tmp"


def _fsync_dir(folder: Path) -> None:
    # the rename is durable only once the folder's entry is on disk (POSIX); Windows cannot
    # open a folder for fsync, and some file systems refuse it: skipped there
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    r"""Write ``path`` through ``write(file)`` durably and atomically (see the module
    docstring). Any error, an interrupt included, removes the temporary file and propagates."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def torch_bytes(obj: object) -> Callable[[BinaryIO], object]:
    r"""A writer of ``obj`` serialised by ``torch.save`` in memory first: a full disk then
    fails in Python's own ``write`` with ``OSError(ENOSPC)``, not inside torch's zip writer."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    return lambda f: f.write(data)


def text_bytes(text: str) -> Callable[[BinaryIO], object]:
    r"""A writer of ``text`` as UTF-8."""
    data = text.encode("utf-8")
    return lambda f: f.write(data)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    r"""Remove the temporary files (``*.tmp<pid>``) a killed run left under ``folder``; only
    call this while holding the folder's :class:`RunLock`. Returns the removed paths."""
    removed = []
    for p in Path(folder).rglob(f"*{TMP_MARK}*"):
        stem, _, pid = p.name.rpartition(TMP_MARK)
        if stem and pid.isdigit() and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def finished(record: Path, tensors: Path, pngs: tuple[Path, ...]) -> bool:
    r"""Whether an image's outputs are whole: ``record`` parses as a JSON object, ``tensors``
    loads with ``weights_only=True`` and every one of ``pngs`` exists and is not empty."""
    import torch

    try:
        if not isinstance(json.loads(record.read_text()), dict):
            return False
        torch.load(tensors, weights_only=True)
    except Exception:  # missing, truncated, empty or garbled: redone
        return False
    return all(p.is_file() and p.stat().st_size > 0 for p in pngs)


def describe_os_error(e: OSError, what: str) -> str:
    r"""One line for an environment error while ``what`` (e.g. ``"writing out/records"``):
    the cause and what to do."""
    # the file the OS names, unless ``what`` names it already (a full disk names none)
    name = os.fsdecode(e.filename) if e.filename is not None else None
    at = f" ({name})" if name and name not in what else ""
    if e.errno == errno.ENOSPC:
        return (
            f"no space left on the device while {what}{at}: free some space and rerun "
            "the same command; finished images are kept and the run resumes"
        )
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied while {what}{at}: choose an out-dir you can write to"
    if e.errno == errno.EROFS:
        return f"read-only file system while {what}{at}: choose another out-dir"
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{name or what} is a file where a folder is needed while {what}: choose another out-dir"
    return f"{e.strerror or e} while {what}{at}"


class RunStopped(Exception):
    r"""A run stopped by a signal after finishing its current batch; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class StopSignals:
    r"""While active (a context manager), SIGTERM, and SIGUSR1 when running under Slurm
    (``SLURM_JOB_ID`` set), set :attr:`received` instead of ending the process; the run checks
    it between batches and raises :class:`RunStopped`. Installed only in the main thread
    (Python delivers signals there); the previous handlers are restored on exit."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._before: dict[int, Any] = {}

    def signals(self) -> list[int]:
        out: list[int] = [signal.SIGTERM]
        if os.environ.get("SLURM_JOB_ID") and hasattr(signal, "SIGUSR1"):
            out.append(signal.SIGUSR1)
        return out

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signum  # a flag only: no I/O in a handler

    def check(self) -> None:
        r"""Raise :class:`RunStopped` when a signal came."""
        if self.received is not None:
            raise RunStopped(self.received)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals():
                self._before[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._before.items():
            signal.signal(s, h)
        self._before.clear()


class RunLock:
    r"""An exclusive lock on a run's folder (``<folder>/.run.lock``, ``filelock``), held for the
    run's lifetime; who holds it is written beside it (``.run.lock.json``: pid, host, start
    time). A second run on the same folder raises ``RuntimeError`` at once naming the holder.
    The OS releases the lock when the holding process dies."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / ".run.lock"
        self.info = self.folder / ".run.lock.json"
        self._lock: Any = None

    def acquire(self) -> None:
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            holder = "another process"
            with contextlib.suppress(Exception):
                h = json.loads(self.info.read_text())
                holder = f"pid {h['pid']} on {h['host']}, started {h['started']}"
            raise RuntimeError(
                f"out_dir {str(self.folder)!r} is in use by another run ({holder}); wait for it "
                "to finish or use another out-dir"
            ) from None
        self._lock = lock
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
        atomic_write(self.info, text_bytes(json.dumps(me) + "\n"))

    def release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self.info.unlink()
            self._lock.release()
            self._lock = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()
