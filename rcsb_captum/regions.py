r"""Region sources: where RCSB may change the image (binary masks ``N x 1 x H x W``, 1 = edit)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import Attribution, IntegratedGradients, NoiseTunnel
from torch import Tensor

__all__ = [
    "AttributionRegion",
    "MaskRegion",
    "RandomRegion",
    "SegmentationRegion",
    "attribution_to_region",
    "default_region",
]


def _outlier_normalise(a: Tensor, outlier_perc: float = 2.0) -> Tensor:
    # Captum's visualisation normalisation (_cumulative_sum_threshold), batched: the threshold is
    # the value where the ascending cumulative sum first reaches (100 - outlier_perc) % of the total.
    flat = a.flatten(1)
    values, _ = flat.sort(dim=1)
    cums = values.cumsum(1)
    idx = (cums < cums[:, -1:] * (1 - outlier_perc / 100)).sum(1).clamp(max=flat.shape[1] - 1)
    tau = values.gather(1, idx[:, None]).clamp_min(1e-12)
    return (flat / tau).clamp(-1, 1).view_as(a)


def attribution_to_region(
    attributions: Tensor, size: Sequence[int], cell_size: int | None = 16, area: float = 0.3
) -> Tensor:
    r"""RCSB's post-processing (spec §2.2): ``|Σ_c A|``, 98 % outlier normalisation, sum over
    ``cell_size`` cells, keep the top ``floor(area * cells)`` cells with positive score, binarise.

    Args:
        attributions (Tensor): ``N x C x h x w`` maps (upsampled bilinearly to ``size`` if smaller).
        size (sequence of int): ``(H, W)`` of the images.
        cell_size (int, optional): Side of the square cells (``None``: single pixels).
        area (float): Largest fraction of cells in the region, in ``(0, 1]``.
    """
    if not 0 < area <= 1:
        raise ValueError(f"area must be in (0, 1], got {area}")
    a = attributions.detach().float()
    if a.ndim != 4:
        raise ValueError(f"attributions must be N x C x H x W, got shape {tuple(a.shape)}")
    a = a.sum(1, keepdim=True).abs()
    if tuple(a.shape[-2:]) != tuple(size):
        a = F.interpolate(a, size=tuple(size), mode="bilinear", align_corners=False)
    a = _outlier_normalise(a)
    c = cell_size or 1
    h, w = size
    if h % c or w % c:
        raise ValueError(f"cell_size {c} must divide the image size {h} x {w}")
    cells = F.avg_pool2d(a, c) * (c * c)
    flat = cells.flatten(1)
    k = max(1, int(area * flat.shape[1] + 1e-9))
    top = flat.topk(k, dim=1)
    keep = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, top.indices, top.values > 0)
    region = keep.view_as(cells).float()
    return region.repeat_interleave(c, 2).repeat_interleave(c, 3)


class AttributionRegion:
    r"""A region from ANY Captum attribution method, as in RCSB's automated region extraction.

    Args:
        method (captum.attr.Attribution): e.g. ``NoiseTunnel(IntegratedGradients(model))``,
            ``Saliency(model)``, ``LayerGradCam(model, model.layer4)``, ``Occlusion(model)``.
        cell_size (int, optional): Side of the cells (default 16, the paper's).
        area (float): Largest fraction of the image in the region (default 0.3).
        **attribute_kwargs: Passed to ``method.attribute`` (e.g. ``nt_samples``,
            ``sliding_window_shapes``).

    Examples::

        >>> region = AttributionRegion(Saliency(model), cell_size=4, area=0.25)
        >>> masks = region(images, target=labels)   # N x 1 x H x W of 0/1
    """

    def __init__(
        self,
        method: Attribution,
        cell_size: int | None = 16,
        area: float = 0.3,
        **attribute_kwargs: Any,
    ) -> None:
        if not hasattr(method, "attribute"):
            raise TypeError(f"method must be a captum Attribution, got {type(method).__name__}")
        if not 0 < area <= 1:
            raise ValueError(f"area must be in (0, 1], got {area}")
        if cell_size is not None and cell_size < 1:
            raise ValueError(f"cell_size must be a positive integer or None, got {cell_size}")
        self.method = method
        self.cell_size = cell_size
        self.area = area
        self.attribute_kwargs = attribute_kwargs

    def __call__(
        self, inputs: Tensor, target: Tensor, additional_forward_args: Any = None
    ) -> Tensor:
        kwargs = dict(self.attribute_kwargs)
        if additional_forward_args is not None:
            kwargs["additional_forward_args"] = additional_forward_args
        # a leaf that requires grad, so gradient methods don't warn about setting it themselves
        x = inputs.detach().requires_grad_(True)
        attr = self.method.attribute(x, target=target, **kwargs)
        return attribution_to_region(attr, inputs.shape[-2:], self.cell_size, self.area)


def default_region(
    forward_func: Callable[..., Tensor], cell_size: int | None = 16, area: float = 0.3
) -> AttributionRegion:
    r"""The paper's default: Integrated Gradients in a SmoothGrad NoiseTunnel (5 samples, σ 0.05)."""
    return AttributionRegion(
        NoiseTunnel(IntegratedGradients(forward_func)),
        cell_size=cell_size,
        area=area,
        nt_type="smoothgrad",
        nt_samples=5,
        stdevs=0.05,
        internal_batch_size=64,
    )


class MaskRegion:
    r"""User-given masks: ``H x W``, ``1 x H x W`` or ``N x 1 x H x W`` (broadcast over the batch);
    non-zero = may change."""

    def __init__(self, masks: Tensor) -> None:
        masks = torch.as_tensor(masks)
        while masks.ndim < 4:
            masks = masks[None]
        if masks.shape[1] != 1:
            raise ValueError(f"masks must have one channel, got shape {tuple(masks.shape)}")
        self.masks = (masks != 0).float()

    def __call__(
        self, inputs: Tensor, target: Tensor | None = None, additional_forward_args: Any = None
    ) -> Tensor:
        m = self.masks.to(inputs.device)
        if m.shape[-2:] != inputs.shape[-2:] or m.shape[0] not in (1, inputs.shape[0]):
            raise ValueError(
                f"masks of shape {tuple(m.shape)} do not fit inputs of shape {tuple(inputs.shape)}"
            )
        return m.expand(inputs.shape[0], 1, *inputs.shape[-2:]).clone()


class SegmentationRegion:
    r"""The pixels of chosen segments (STEEX's region-targeted setting).

    Args:
        segmentation (Tensor or callable): Integer label maps ``N x H x W`` (or ``N x 1 x H x W``),
            or a segmenter ``images -> label maps`` (logits ``N x K x H x W`` are arg-maxed).
        labels (sequence of int): The segment labels that may change.
    """

    def __init__(
        self, segmentation: Tensor | Callable[[Tensor], Tensor], labels: Sequence[int]
    ) -> None:
        if not labels:
            raise ValueError("labels must name at least one segment label")
        self.segmentation = segmentation
        self.labels = torch.as_tensor(list(labels))

    def __call__(
        self, inputs: Tensor, target: Tensor | None = None, additional_forward_args: Any = None
    ) -> Tensor:
        seg = (
            self.segmentation(inputs)
            if callable(self.segmentation)
            else torch.as_tensor(self.segmentation)
        )
        seg = seg.to(inputs.device)
        if seg.ndim == 4 and seg.shape[1] > 1:
            seg = seg.argmax(1)
        if seg.ndim == 4:
            seg = seg[:, 0]
        if seg.ndim != 3 or seg.shape[-2:] != inputs.shape[-2:] or seg.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"segmentation of shape {tuple(seg.shape)} does not fit inputs {tuple(inputs.shape)}"
            )
        return torch.isin(seg, self.labels.to(seg.device))[:, None].float()


class RandomRegion:
    r"""Random cells covering ``area`` of the image: the chance baseline for region sources
    (same cell grid and area as :class:`AttributionRegion`, no look at the model).

    Args:
        cell_size (int): Side of the square cells (default 16).
        area (float): Fraction of cells chosen, in ``(0, 1]`` (``floor(area * cells)``, at least 1).
        seed (int or torch.Generator, optional): Makes the draw repeatable.
    """

    def __init__(
        self, cell_size: int = 16, area: float = 0.3, seed: int | torch.Generator | None = None
    ) -> None:
        if not 0 < area <= 1:
            raise ValueError(f"area must be in (0, 1], got {area}")
        if cell_size < 1:
            raise ValueError(f"cell_size must be a positive integer, got {cell_size}")
        self.cell_size = cell_size
        self.area = area
        self.generator = (
            seed
            if isinstance(seed, torch.Generator)
            else torch.Generator().manual_seed(seed if seed is not None else 0)
        )

    def __call__(
        self, inputs: Tensor, target: Tensor | None = None, additional_forward_args: Any = None
    ) -> Tensor:
        h, w = inputs.shape[-2:]
        c = self.cell_size
        if h % c or w % c:
            raise ValueError(f"cell_size {c} must divide the image size {h} x {w}")
        n, cells = inputs.shape[0], (h // c) * (w // c)
        k = max(1, int(self.area * cells + 1e-9))
        scores = torch.rand(n, cells, generator=self.generator, device=self.generator.device)
        keep = torch.zeros(n, cells, device=scores.device).scatter_(
            1, scores.topk(k, dim=1).indices, 1.0
        )
        region = keep.view(n, 1, h // c, w // c).to(inputs.device)
        return region.repeat_interleave(c, 2).repeat_interleave(c, 3)
