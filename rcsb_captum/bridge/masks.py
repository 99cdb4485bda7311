r"""Random free-form masks (strokes and boxes) for training inpainting bridges.

In the spirit of the free-form masks I2SB and Palette train with (Yu et al., "Free-Form Image
Inpainting with Gated Convolution", ICCV 2019: random thick strokes), drawn on the fly from a
``torch.Generator`` instead of a fixed file of 10 000 masks, so any image size works. Mask
convention as in I2SB: 1 = hole (to generate), 0 = keep.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._utils import as_generator

__all__ = ["random_freeform_masks"]


def _strokes(n: int, shapes: int, size: int, g: torch.Generator, device: torch.device) -> Tensor:
    """``n x shapes x size x size`` boolean maps, each a thick polyline of 2-5 segments."""
    vertices = 6
    start = torch.rand(n, shapes, 1, 2, generator=g, device=device) * size
    angle = torch.rand(n, shapes, vertices - 1, generator=g, device=device) * 2 * torch.pi
    length = (0.1 + 0.25 * torch.rand(n, shapes, vertices - 1, generator=g, device=device)) * size
    steps = torch.stack([angle.cos(), angle.sin()], -1) * length[..., None]
    points = torch.cat([start, start + steps.cumsum(2)], dim=2).clamp(0, size - 1)
    segments = torch.randint(2, vertices, (n, shapes, 1), generator=g, device=device)
    width = (0.06 + 0.1 * torch.rand(n, shapes, 1, 1, 1, generator=g, device=device)) * size
    a, b = points[:, :, :-1], points[:, :, 1:]  # n x s x (v-1) x 2
    coords = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    grid = torch.stack(torch.meshgrid(coords, coords, indexing="ij"), -1)  # H x W x 2 (row, col)
    ab = (b - a)[..., None, None, :]
    ap = grid - a[..., None, None, :]
    t = ((ap * ab).sum(-1) / ab.square().sum(-1).clamp_min(1e-6)).clamp(0, 1)
    dist = (ap - t[..., None] * ab).norm(dim=-1)  # n x s x (v-1) x H x W
    active = torch.arange(vertices - 1, device=device) < segments  # n x s x (v-1)
    hit = (dist <= width / 2) & active[..., None, None]
    return hit.any(dim=2)


def _boxes(n: int, shapes: int, size: int, g: torch.Generator, device: torch.device) -> Tensor:
    hw = (0.15 + 0.35 * torch.rand(n, shapes, 2, generator=g, device=device)) * size
    top_left = torch.rand(n, shapes, 2, generator=g, device=device) * (size - hw)
    coords = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    rows = (coords >= top_left[..., 0:1]) & (coords < top_left[..., 0:1] + hw[..., 0:1])
    cols = (coords >= top_left[..., 1:2]) & (coords < top_left[..., 1:2] + hw[..., 1:2])
    return rows[..., :, None] & cols[..., None, :]


def random_freeform_masks(
    n: int,
    size: int,
    area: tuple[float, float] = (0.1, 0.4),
    generator: torch.Generator | int | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    r"""Random masks of strokes and boxes covering a fraction of the image within ``area``.

    Args:
        n (int): Number of masks.
        size (int): Side of the square masks.
        area (tuple[float, float]): Smallest and largest fraction of the pixels in the hole.
        generator (torch.Generator or int, optional): Source of randomness: a generator, a
            seed, or ``None`` for a random draw (the package's seed rule, ``rcsb_captum._utils``).
        device: Where to build the masks.

    Returns:
        Tensor: ``n x 1 x size x size`` float masks of zeros and ones (1 = hole).
    """
    lo, hi = area
    if not 0 < lo <= hi < 1:
        raise ValueError(f"area must satisfy 0 < low <= high < 1, got {area!r}")
    device = torch.device(device)
    g = as_generator(generator, device)  # the package's seed rule (None: a random draw)
    out = torch.zeros(n, size, size, dtype=torch.bool, device=device)
    todo = torch.arange(n, device=device)
    for _ in range(20):  # rejection rounds; almost all masks land in range in the first one
        m = len(todo)
        shapes = torch.cat([_strokes(m, 4, size, g, device), _boxes(m, 2, size, g, device)], 1)
        order = torch.rand(m, shapes.shape[1], generator=g, device=device).argsort(1)
        shapes = shapes[torch.arange(m, device=device)[:, None], order]
        union = shapes.cummax(dim=1).values  # prefixes of growing unions
        fraction = union.flatten(2).float().mean(-1)  # m x shapes
        target = lo + (hi - lo) * torch.rand(m, 1, generator=g, device=device)
        ok = (fraction >= lo) & (fraction <= hi)
        score = torch.where(ok, (fraction - target).abs(), torch.full_like(fraction, 2.0))
        best = score.argmin(1)
        good = ok[torch.arange(m, device=device), best]
        out[todo[good]] = union[torch.arange(m, device=device), best][good]
        todo = todo[~good]
        if len(todo) == 0:
            break
    # A third of the masks are unions of grid cells, the shape of RCSB's attribution regions.
    cells = torch.rand(n, generator=g, device=device) < 1 / 3
    k = int(cells.sum())
    if k and size >= 8:
        grid = size // 8
        target = lo + (hi - lo) * torch.rand(k, 1, generator=g, device=device)
        scores = torch.rand(k, grid * grid, generator=g, device=device)
        rank = scores.argsort(1).argsort(1)  # 0 = smallest score
        keep = rank >= grid * grid - (target * grid * grid).round().clamp_min(1)
        cell_masks = keep.view(k, 1, grid, grid).float()
        cell_masks = torch.nn.functional.interpolate(cell_masks, size=(size, size), mode="nearest")
        out[cells] = cell_masks[:, 0].bool()
        todo = todo[~cells[todo]]
    if len(todo):  # fall back to centred squares of the middle area
        side = max(1, round(size * ((lo + hi) / 2) ** 0.5))
        start = (size - side) // 2
        out[todo, start : start + side, start : start + side] = True
    return out[:, None].float()
