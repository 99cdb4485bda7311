r"""Fashion-MNIST from Debian's IDX files, for the scripts that train and sample the shipped
demo assets (nothing is downloaded; the library itself never reads datasets)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "class_mean_direction",
    "classified_right",
    "load_diffae",
    "load_fashion_mnist",
    "read_idx",
]

# Debian's dataset-fashion-mnist package (MIT licence, Zalando Research).
DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    r"""Read an IDX file (the MNIST format), gzipped or not."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path!r} is not an IDX file")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise ValueError(f"{path!r}: unknown IDX type code {raw[2]:#x}")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=dtypes[raw[2]], offset=4 + 4 * ndim)
    return data.reshape(shape)


def load_fashion_mnist(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    pad_to: int | None = 32,
) -> tuple[Tensor, Tensor]:
    r"""Fashion-MNIST images ``N x 1 x H x W`` in ``[0, 1]`` and labels, from local IDX files.

    Args:
        split (str): ``"train"`` (60 000 images) or ``"test"`` (10 000).
        root (str, optional): Folder of the IDX files (default: Debian's
            ``/usr/share/datasets/fashion-mnist``, package ``dataset-fashion-mnist``, or the
            ``FASHION_MNIST_ROOT`` environment variable).
        pad_to (int, optional): Zero-pad the 28-pixel images to this side (default 32, the size
            of the demo models); ``None`` keeps 28.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root or os.environ.get("FASHION_MNIST_ROOT", DEFAULT_FASHION_MNIST_ROOT))
    prefix = "train" if split == "train" else "t10k"
    images_path = next(iter(sorted(root.glob(f"{prefix}-images-idx3-ubyte*"))), None)
    labels_path = next(iter(sorted(root.glob(f"{prefix}-labels-idx1-ubyte*"))), None)
    if images_path is None or labels_path is None:
        raise FileNotFoundError(
            f"Fashion-MNIST {split} IDX files not found in {str(root)!r}; on Debian install the "
            "package dataset-fashion-mnist, or pass root="
        )
    images = torch.from_numpy(read_idx(images_path).copy()).float().div_(255)[:, None]
    labels = torch.from_numpy(read_idx(labels_path).astype(np.int64))
    if pad_to is not None and pad_to != images.shape[-1]:
        total = pad_to - images.shape[-1]
        if total < 0:
            raise ValueError(f"pad_to must be at least {images.shape[-1]}, got {pad_to}")
        images = F.pad(images, (total // 2, total - total // 2, total // 2, total - total // 2))
    return images, labels


@torch.no_grad()
def class_mean_direction(
    autoencoder, images: Tensor, labels: Tensor, source: int, target: int, n: int = 200
) -> Tensor:
    r"""The class-mean direction of an autoencoder's latent (not normalised): the mean code of
    the first ``n`` images of ``target`` minus that of ``source`` (a labelled diagnostic the
    GCD benchmarks compare GCD's directions with)."""
    mean = [autoencoder.encode(images[labels == k][:n]).mean(0) for k in (target, source)]
    return mean[0] - mean[1]


@torch.no_grad()
def classified_right(model, images: Tensor, labels: Tensor, batch_size: int = 1000) -> Tensor:
    r"""Which of ``images`` the classifier ``model`` puts in their ``labels`` (a bool per image,
    in batches of ``batch_size``): the GCD benchmarks' selection of source and held-out images."""
    pred = torch.cat(
        [model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
    )
    return pred == labels


def load_diffae(path: str | os.PathLike[str] | None, encode_steps: int, decode_steps: int):
    r"""The DiffAE file at ``path`` (e.g. a candidate being compared), or the shipped
    Fashion-MNIST one when ``path`` is ``None``, inverting with ``encode_steps`` and rendering
    with ``decode_steps`` DDIM steps: the GCD benchmarks' ``--autoencoder`` option."""
    from rcsb_captum import DiffusionAutoencoder

    kw = {"encode_steps": encode_steps, "decode_steps": decode_steps}
    if path:
        return DiffusionAutoencoder.load(path, **kw)
    return DiffusionAutoencoder.pretrained("fashion-mnist", **kw)
