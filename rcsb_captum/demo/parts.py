r"""Semantic part maps of the Fashion-MNIST garments, by rule (STEEX's question on the demo).

STEEX (Jacob et al., ECCV 2022) asks which semantic part of an image must change for the model
to change its mind. Fashion-MNIST has no part annotations; its garments are centred, upright
and drawn the same way (tops facing the viewer, shoes pointing left), so a rule on the
garment's bounding box gives parts a person would name:

- tops (T-shirt/top, pullover, coat, shirt): ``sleeves`` (the outer 22 % of the columns on
  each side, below the shoulder line), ``collar`` (collar and neckline: the middle 40 % of the
  columns in the top 20 % of the rows), ``hem`` (the bottom 20 % of the body between the
  sleeves) and ``torso`` (the rest between the sleeves);
- shoes (sandal, sneaker, ankle boot): ``toe`` (the front 30 % of the columns), ``shaft``
  (the top 45 % of the rows behind the toe), ``heel`` (the back 30 % below the shaft) and
  ``vamp`` (the rest: the middle of the shoe above the sole);
- the other classes (trouser, dress, bag): ``garment``, the whole of it.

Each pixel of the garment (intensity above ``threshold``) gets one part; the background is 0.
Use a part as a region with :class:`~rcsb_captum.SegmentationRegion`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._utils import format_images

__all__ = ["PART_NAMES", "PARTS_OF_CLASS", "garment_parts"]

#: Label -> part name (0: background).
PART_NAMES = {
    0: "background",
    1: "sleeves",
    2: "collar",
    3: "torso",
    4: "hem",
    5: "toe",
    6: "shaft",
    7: "heel",
    8: "vamp",
    9: "garment",
}
TOPS, SHOES = (0, 2, 4, 6), (5, 7, 9)
#: Fashion-MNIST class -> the part labels it has.
PARTS_OF_CLASS = {
    k: (1, 2, 3, 4) if k in TOPS else (5, 6, 7, 8) if k in SHOES else (9,) for k in range(10)
}


def _bbox(mask: Tensor) -> tuple[int, int, int, int] | None:
    rows = mask.any(1).nonzero()
    cols = mask.any(0).nonzero()
    if len(rows) == 0:
        return None
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def garment_parts(
    images: Tensor,
    classes: Tensor | list[int],
    threshold: float = 0.1,
    zones: bool = False,
) -> Tensor:
    r"""``N x H x W`` part labels (:data:`PART_NAMES`) of Fashion-MNIST images.

    Args:
        images (Tensor): ``N x 1 x H x W`` in ``[0, 1]`` (the shipped 32 px images).
        classes (Tensor or list of int): The class of each image (0-9), which decides its parts.
        threshold (float): Intensity above which a pixel belongs to the garment.
        zones (bool): Label the part's zone instead of the garment's pixels: every pixel of
            the garment's bounding box (for shoes, extended up to the top of the image, where
            a shaft would be), so that a part may grow into the background (a short sleeve
            into a long one, a sneaker's collar into a boot's shaft), as a counterfactual
            between the paired classes needs.

    Returns:
        Tensor: ``N x H x W`` int64; 0 off the garment (off its zones with ``zones=True``).
    """
    images = format_images(images, "images")
    classes = torch.as_tensor(classes).long().view(-1)
    if classes.numel() != images.shape[0]:
        raise ValueError(f"classes: need one per image ({images.shape[0]}), got {classes.numel()}")
    if ((classes < 0) | (classes > 9)).any():
        raise ValueError(f"classes must be Fashion-MNIST classes 0-9, got {classes.tolist()}")
    n, _, h, w = images.shape
    out = torch.zeros(n, h, w, dtype=torch.long)
    rows = torch.arange(h)[:, None].expand(h, w)
    cols = torch.arange(w)[None, :].expand(h, w)
    for i in range(n):
        garment = images[i].amax(0).cpu() > threshold
        box = _bbox(garment)
        if box is None:
            continue
        t, b, left, r = box
        hh, ww = b - t + 1, r - left + 1
        k = int(classes[i])
        part = torch.full((h, w), 9, dtype=torch.long)
        if k in TOPS:
            side = 0.22 * ww
            outer = (cols < left + side) | (cols > r - side)
            below_shoulder = rows >= t + 0.12 * hh
            middle = (cols >= left + 0.3 * ww) & (cols <= r - 0.3 * ww)
            part = torch.full((h, w), 3, dtype=torch.long)  # torso
            # the hem: the bottom fifth of the body between the sleeves (long sleeves may hang
            # below it)
            body = (garment & ~outer).any(1).nonzero()
            low = int(body[-1]) if len(body) else b
            part[rows > low - 0.2 * (low - t + 1)] = 4
            part[(rows < t + 0.2 * hh) & middle] = 2  # collar and neckline
            part[outer & below_shoulder] = 1  # sleeves
        elif k in SHOES:
            front = cols < left + 0.3 * ww
            back = cols > r - 0.3 * ww
            top = rows < t + 0.45 * hh
            part = torch.full((h, w), 8, dtype=torch.long)  # vamp
            part[top] = 6  # shaft
            part[back & ~top] = 7  # heel
            part[front] = 5  # toe
        if zones:
            top_row = 0 if k in SHOES else t
            inside = (rows >= top_row) & (rows <= b) & (cols >= left) & (cols <= r)
        else:
            inside = garment
        out[i] = torch.where(inside, part, torch.zeros_like(part))
    return out
