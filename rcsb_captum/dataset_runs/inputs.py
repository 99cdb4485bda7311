r"""The images of a dataset run: listing a folder or list file (stable indices, ImageFolder
labels), checking that every file decodes, loading a batch at the bridge's size."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..bridge.bridge import Bridge
from ..bridge.training import IMAGE_SUFFIXES, load_images

__all__ = ["DatasetItem", "list_images", "load_batch", "readable_items", "unreadable_images"]


# -- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetItem:
    r"""One image of a run: its global ``index``, file ``path`` and optional ``label``."""

    index: int
    path: str
    label: int | None


def list_images(
    source: str | os.PathLike[str], class_names: Sequence[str] | None = None
) -> tuple[list[DatasetItem], list[str] | None]:
    r"""The images of a run and, for ImageFolder-style folders, the class names.

    ``source`` is a folder of image files (flat: no labels), or a folder with one sub-folder
    per class, or a text file listing one image per line as ``path`` or ``path label``
    (relative paths are relative to the list file). Files are sorted by path, so the index of
    an image is stable across runs.

    Labels of class sub-folders must be the classifier's class indices: sub-folders named by
    integers are those indices; otherwise, with ``class_names`` (the classifier's classes in
    order) a folder's label is the position of its name there; without it, torchvision's
    ``ImageFolder`` rule (classes sorted by name, label = position), which is right for a
    model trained with ``ImageFolder`` on the same classes.
    """
    src = Path(source)
    items: list[DatasetItem] = []
    if src.is_file():
        for n, line in enumerate(src.read_text().splitlines()):
            parts = line.strip().rsplit(maxsplit=1)
            if not parts or line.lstrip().startswith("#"):
                continue
            label = None
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                path, label = parts[0], int(parts[1])
            else:
                path = line.strip()
            p = Path(path) if Path(path).is_absolute() else src.parent / path
            if not p.is_file():
                raise ValueError(f"images: line {n + 1} of {str(src)!r} names no file: {path!r}")
            items.append(DatasetItem(len(items), str(p), label))
        if not items:
            raise ValueError(f"images: the list file {str(src)!r} names no image")
        return items, None
    if not src.is_dir():
        raise ValueError(f"images: {str(src)!r} is neither a folder nor a list file")
    subdirs = sorted(d for d in src.iterdir() if d.is_dir())
    flat = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if subdirs and not flat:
        names = [d.name for d in subdirs]
        numeric = all(n.isdigit() for n in names)
        if class_names is not None and not numeric:
            unknown = sorted(set(names) - set(class_names))
            if unknown:
                raise ValueError(f"images: sub-folders {unknown} are not in class_names")
        files = []
        for k, d in enumerate(subdirs):
            if numeric:
                label = int(d.name)
            elif class_names is not None:
                label = list(class_names).index(d.name)
            else:
                label = k
            files += [
                (str(p), label)
                for p in sorted(d.rglob("*"))
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            ]
        items = [DatasetItem(i, p, label) for i, (p, label) in enumerate(files)]
        classes = list(class_names) if class_names is not None else (None if numeric else names)
    else:
        items = [DatasetItem(i, str(p), None) for i, p in enumerate(flat)]
        classes = None
    if not items:
        raise ValueError(f"images: no image files in {str(src)!r}")
    return items, classes


def unreadable_images(items: Sequence[DatasetItem]) -> list[tuple[DatasetItem, str]]:
    r"""The items whose file Pillow cannot decode (empty, truncated, not an image), each with
    the reason; every file is opened and fully decoded once."""
    from PIL import Image

    bad = []
    for it in items:
        try:
            with Image.open(it.path) as im:
                im.load()
        except Exception as e:  # PIL raises OSError, ValueError, SyntaxError... for bad files
            bad.append((it, f"{type(e).__name__}: {e}"))
    return bad


def readable_items(items: list[DatasetItem], skip: bool) -> tuple[list[DatasetItem], list[str]]:
    # every unreadable file named in one message (the first 20 and a count), or skipped
    bad = unreadable_images(items)
    if not bad:
        return items, []
    if not skip:
        listed = "; ".join(f"{it.path} ({why})" for it, why in bad[:20])
        more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise ValueError(
            f"images: {len(bad)} unreadable file(s): {listed}{more}; fix or remove them, or "
            "pass --skip-unreadable (skip_unreadable=True) to explain the others"
        )
    skipped = {it.index for it, _ in bad}
    return [it for it in items if it.index not in skipped], [it.path for it, _ in bad]


def load_batch(items: Sequence[DatasetItem], bridge: Bridge) -> Tensor:
    size, channels = bridge.image_size, bridge.channels
    return torch.cat([load_images(it.path, image_size=size, channels=channels) for it in items])
