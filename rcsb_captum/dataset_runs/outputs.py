r"""A dataset run's per-image outputs: where each file lives, durable writes that report an
environment error in one line, the out-dir lock, and the check that an image is finished."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from ..durable import (
    RunLock,
    atomic_write,
    describe_os_error,
    finished,
)

__all__ = [
    "RunEnvironmentError",
    "claim_folder",
    "is_done",
    "output_paths",
    "record_path",
    "save_png",
    "write_durably",
]


class RunEnvironmentError(OSError):
    r"""An environment error of a dataset run (no space, no permission, ...), in one line that
    says what to do (:func:`~rcsb_captum.durable.describe_os_error`)."""

    def __str__(self) -> str:
        return str(self.args[0])


def write_durably(path: Path, write: Callable[[Any], object]) -> None:
    try:
        atomic_write(path, write)
    except RunEnvironmentError:
        raise
    except OSError as e:
        raise RunEnvironmentError(describe_os_error(e, f"writing {path}")) from None


def save_png(image: Tensor, path: Path) -> None:
    import io

    from PIL import Image

    arr = (image.detach().float().clamp(0, 1) * 255).round().byte().cpu()
    arr = arr[0] if arr.shape[0] == 1 else arr.permute(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(arr.numpy()).save(buf, format="PNG")
    data = buf.getvalue()
    write_durably(path, lambda f: f.write(data))


def record_path(out: Path, index: int) -> Path:
    return out / "records" / f"{index:07d}.json"


def output_paths(out: Path, index: int) -> tuple[Path, Path, tuple[Path, Path]]:
    stem = f"{index:07d}"
    pngs = (
        out / "images" / f"{stem}_counterfactual.png",
        out / "images" / f"{stem}_region.png",
    )
    return record_path(out, index), out / "tensors" / f"{stem}.pt", pngs


def is_done(out: Path, index: int) -> bool:
    # finished only when its record parses, its tensors load and its PNGs exist
    return finished(*output_paths(out, index))


def claim_folder(out: Path) -> RunLock:
    r"""Make the layout's folders and take the out-dir lock (one writer per folder, released
    by the OS if the process dies); returns the held lock. A failure is one
    :class:`RunEnvironmentError` line: the OS error, or the run that holds the folder."""
    try:
        for sub in ("images", "tensors", "records"):
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunEnvironmentError(describe_os_error(e, f"creating {out}")) from None
    lock = RunLock(out)
    try:
        lock.acquire()
    except RuntimeError as e:  # another run holds it: the message names the holder
        raise RunEnvironmentError(str(e)) from None
    except OSError as e:
        raise RunEnvironmentError(describe_os_error(e, f"locking {out}")) from None
    return lock
