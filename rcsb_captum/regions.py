r"""Region sources: where RCSB may change the image (binary masks ``N x 1 x H x W``, 1 = edit)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from captum._utils.common import (
    _expand_and_update_additional_forward_args,
    _expand_and_update_target,
)
from captum.attr import (
    Attribution,
    IntegratedGradients,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import Tensor

from ._utils import (
    check_choice,
    check_int,
    check_number,
    image_generator,
    per_input,
    seeded_global_rng,
)

__all__ = [
    "AttributionRegion",
    "MaskRegion",
    "RandomRegion",
    "RegionSource",
    "SegmentationRegion",
    "TextRegion",
    "TextSegmenter",
    "attribution_to_region",
    "auto_cell_size",
    "binarize_masks",
    "default_region",
    "named_region",
    "DEFAULT_TEXT_MODELS",
    "REGION_NAMES",
]

#: The region sources by name (``named_region``, the CLI's ``--region``).
REGION_NAMES = ("ig", "saliency", "gradcam", "occlusion", "random", "text")

#: Hub ids of the text region's default detector and segmenter (as LangSAM: GroundingDINO
#: Swin-T, then a SAM ViT-B), used by ``rcsb_captum.integrations.grounded_sam``.
DEFAULT_TEXT_MODELS = ("IDEA-Research/grounding-dino-tiny", "facebook/sam-vit-base")

CellSize = int | str | None


def auto_cell_size(height: int, width: int) -> int:
    r"""The ``cell_size="auto"`` rule: 16 px (the paper's) for images of 128 px and more, else
    an eighth of the shorter side (at least 1), so that the grid keeps at least 8 x 8 cells:
    4 at 32 px, 3 at 28 px."""
    return min(16, max(1, min(height, width) // 8))


def _check_cell_size(cell_size: CellSize, name: str = "cell_size") -> CellSize:
    if cell_size is None or cell_size == "auto":
        return cell_size
    if isinstance(cell_size, str):
        raise ValueError(f"{name} must be a positive integer, 'auto' or None, got {cell_size!r}")
    return check_int(cell_size, name, 1)


def _resolve_cell_size(cell_size: CellSize, height: int, width: int) -> int:
    if cell_size == "auto":
        return auto_cell_size(height, width)
    c = 1 if cell_size is None else int(cell_size)
    if c > min(height, width):
        # one cell would cover the whole image: the region could not be smaller than it
        raise ValueError(
            f"cell_size {c} is larger than the {height} x {width} image; use at most "
            f"{min(height, width)} (or 'auto': {auto_cell_size(height, width)})"
        )
    return c


def binarize_masks(masks: Any, n: int, size: Sequence[int], name: str = "region") -> Tensor:
    r"""The one rule for region masks: ``N x 1 x H x W`` (bool, or numbers in ``[0, 1]``),
    finite; a pixel is in the region when its value is ``>= 0.5``. Numpy arrays are accepted;
    anything else, NaN, values outside ``[0, 1]`` or another shape raise an error naming
    ``name``."""
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(np.ascontiguousarray(masks))
    if not isinstance(masks, Tensor):
        raise TypeError(
            f"{name} must be a Tensor of N x 1 x H x W masks, got {type(masks).__name__}"
        )
    expected = (n, 1, *size)
    if tuple(masks.shape) != expected:
        raise ValueError(
            f"{name} masks must be N x 1 x H x W = {expected}, got {tuple(masks.shape)}"
        )
    if masks.dtype == torch.bool:
        return masks.float()
    if masks.is_complex():
        raise TypeError(f"{name} masks must be real numbers in [0, 1], got {masks.dtype}")
    m = masks.float()
    if not bool(torch.isfinite(m).all()):
        raise ValueError(f"{name} masks contain NaN or inf")
    if m.numel() and (m.min() < 0 or m.max() > 1):
        raise ValueError(
            f"{name} masks must hold values in [0, 1] (1 = may change; binarised at 0.5), got "
            f"values in [{float(m.min()):.4g}, {float(m.max()):.4g}]"
        )
    return (m >= 0.5).float()


class RegionSource:
    r"""Base class of the package's region sources: ``source(inputs, target,
    additional_forward_args=None, seeds=None) -> N x 1 x H x W`` masks of 0 and 1.

    ``seeds`` (one int per image, given by :class:`~rcsb_captum.RCSB`) fix every random draw
    the source makes for that image, whatever the batch. Any callable ``(inputs, target) ->
    masks`` works as a region too; RCSB seeds torch's global generator around such a call.
    """

    def __call__(
        self,
        inputs: Tensor,
        target: Tensor | None = None,
        additional_forward_args: Any = None,
        seeds: Sequence[int] | None = None,
    ) -> Tensor:
        raise NotImplementedError


def _outlier_normalise(a: Tensor, outlier_perc: float = 2.0) -> Tensor:
    # Captum's visualisation normalisation (_cumulative_sum_threshold), batched: the threshold is
    # the value where the ascending cumulative sum first reaches (100 - outlier_perc) % of the total.
    flat = a.flatten(1)
    values, _ = flat.sort(dim=1)
    cums = values.cumsum(1)
    idx = (cums < cums[:, -1:] * (1 - outlier_perc / 100)).sum(1).clamp(max=flat.shape[1] - 1)
    tau = values.gather(1, idx[:, None]).clamp_min(1e-12)
    return (flat / tau).clamp(-1, 1).view_as(a)


def _cell_pixels(h: int, w: int, c: int) -> Tensor:
    # pixels per cell of the grid of c x c cells over h x w (the last row and column may be cut)
    rows = torch.full((-(-h // c),), c, dtype=torch.long)
    cols = torch.full((-(-w // c),), c, dtype=torch.long)
    rows[-1], cols[-1] = h - c * (len(rows) - 1), w - c * (len(cols) - 1)
    return (rows[:, None] * cols[None, :]).flatten()


def _top_cells(scores: Tensor, pixels: Tensor, area: float, positive_only: bool) -> Tensor:
    r"""``N x cells`` bool: per row the highest-scoring cells whose pixels together stay within
    ``area`` of the image (a prefix of the ranking; at least one cell). On a grid that divides
    the image this is the top ``floor(area * cells)`` cells, the official rule; a grid cut by
    the border counts the cut cells by the pixels they hold, so the cap is on pixels."""
    budget = area * float(pixels.sum()) + 1e-6
    order = scores.argsort(dim=1, descending=True, stable=True)
    taken = pixels.to(scores.device)[order].cumsum(1) <= budget
    taken[:, 0] = True
    if positive_only:
        taken &= scores.gather(1, order) > 0
    return torch.zeros_like(taken).scatter_(1, order, taken)


def attribution_to_region(
    attributions: Tensor, size: Sequence[int], cell_size: CellSize = 16, area: float = 0.3
) -> Tensor:
    r"""RCSB's post-processing (official ``sobieskibj/rcsb``): ``|Σ_c A|``, 98 % outlier normalisation, sum over
    ``cell_size`` cells, keep the top ``floor(area * cells)`` cells with positive score, binarise.

    Cells need not divide the image: the last row and column of cells are cut by the border
    (their scores are sums over the pixels they hold), and then the top cells are taken while
    their pixels stay within ``area`` of the image, so ``area`` always caps the fraction of
    pixels that may change (on a grid that divides the image the two rules agree).

    Args:
        attributions (Tensor): ``N x C x h x w`` maps (upsampled bilinearly to ``size`` if smaller).
        size (sequence of int): ``(H, W)`` of the images.
        cell_size (int, str or None): Side of the square cells; ``"auto"``: see
            :func:`auto_cell_size`; ``None``: single pixels.
        area (float): Largest fraction of the image's pixels in the region, in ``(0, 1]``.
    """
    area = check_number(area, "area", 0, 1, low_open=True)
    cell_size = _check_cell_size(cell_size)
    if not isinstance(attributions, Tensor):
        raise TypeError(
            f"attributions must be a Tensor, got {type(attributions).__name__} (a region "
            "source's attribution method must return one tensor shaped like its inputs)"
        )
    a = attributions.detach().float()
    if a.ndim != 4:
        raise ValueError(f"attributions must be N x C x H x W, got shape {tuple(a.shape)}")
    # NaN attributions (a NaN gradient) would make top-k arbitrary: count them as no evidence
    a = torch.nan_to_num(a.sum(1, keepdim=True).abs(), nan=0.0, posinf=0.0)
    h, w = (int(v) for v in size)
    if tuple(a.shape[-2:]) != (h, w):
        a = F.interpolate(a, size=(h, w), mode="bilinear", align_corners=False)
    a = _outlier_normalise(a)
    c = _resolve_cell_size(cell_size, h, w)
    ph, pw = -h % c, -w % c
    cells = F.avg_pool2d(F.pad(a, (0, pw, 0, ph)), c) * (c * c)
    keep = _top_cells(cells.flatten(1), _cell_pixels(h, w, c), area, positive_only=True)
    region = keep.view_as(cells).float()
    return region.repeat_interleave(c, 2).repeat_interleave(c, 3)[..., :h, :w].contiguous()


#: NoiseTunnel options that :func:`_noise_tunnel_with_generator` reproduces; with any other
#: option of NoiseTunnel (baselines drawn from a distribution, sample batches, per-input
#: deviations) the region seeds torch's global generator instead
_NT_OWN = ("nt_type", "nt_samples", "stdevs")
_NT_OTHER = ("nt_samples_batch_size", "draw_baseline_from_distrib", "return_convergence_delta")


def _noise_tunnel_with_generator(
    tunnel: NoiseTunnel,
    inputs: Tensor,
    target: Any,
    kwargs: dict[str, Any],
    generator: torch.Generator,
) -> Tensor | None:
    r"""Captum's ``NoiseTunnel.attribute`` for one tensor input, the noise drawn from
    ``generator`` instead of torch's global generator; ``None`` where the options are not the
    plain ones this reproduces (then the caller seeds the global generator).

    Bit for bit the NoiseTunnel's result under ``torch.manual_seed(s)`` when ``generator`` is
    seeded with ``s``: the same draw (``torch.normal`` with a tensor of ``stdevs`` of the
    expanded input's shape), the same expansion of ``target`` and tensor forward arguments
    (each input's copies next to each other, Captum's helpers), the same sums and scaling
    (Captum 0.9, ``captum/attr/_core/noise_tunnel.py``). With no global state, concurrent
    calls need no lock."""
    inner = tunnel.attribution_method
    if not hasattr(inner.attribute, "__wrapped__"):  # not decorated as Captum's methods are
        return None
    if any(k in kwargs for k in _NT_OTHER) or not isinstance(kwargs.get("stdevs", 1.0), float):
        return None
    rest = {k: v for k, v in kwargs.items() if k not in _NT_OWN}
    if any(k in rest for k in ("baselines", "feature_mask")):
        return None  # expanded by NoiseTunnel in ways not reproduced here
    nt_type = kwargs.get("nt_type", "smoothgrad")
    n = int(kwargs.get("nt_samples", 5))
    stdev = float(kwargs.get("stdevs", 1.0))
    with torch.no_grad():
        size = (inputs.shape[0] * n, *inputs.shape[1:])
        std = torch.tensor(stdev, device=inputs.device).repeat(size)
        noisy = inputs.repeat_interleave(n, dim=0) + torch.normal(0, std, generator=generator)
        noisy.requires_grad_()  # a leaf for the gradient methods (no warning that they set it)
        rest["target"] = target
        _expand_and_update_additional_forward_args(n, rest)  # as NoiseTunnel expands them
        _expand_and_update_target(n, rest)
        attr = inner.attribute.__wrapped__(inner, noisy, **rest)  # unlogged, as NoiseTunnel
        if isinstance(attr, tuple):
            (attr,) = attr
        per = attr.view(inputs.shape[0], n, *attr.shape[1:])
        mean = per.sum(dim=1, keepdim=False) * 1 / n
        if nt_type == "smoothgrad":
            return mean
        mean_sq = torch.sum(torch.pow(per, 2), dim=1, keepdim=False) * 1 / n
        return mean_sq if nt_type == "smoothgrad_sq" else mean_sq - mean * mean


class AttributionRegion(RegionSource):
    r"""A region from ANY Captum attribution method, as in RCSB's automated region extraction.

    Args:
        method (captum.attr.Attribution): e.g. ``NoiseTunnel(IntegratedGradients(model))``,
            ``Saliency(model)``, ``LayerGradCam(model, model.layer4)``, ``Occlusion(model)``.
        cell_size (int, "auto" or None): Side of the cells (default ``"auto"``: 16 px, the
            paper's, for images of 128 px and more; an eighth of the side below, see
            :func:`auto_cell_size`); cells need not divide the image. ``None``: single pixels.
        area (float): Largest fraction of the image in the region (default 0.3).
        per_image (bool, optional): Call ``method`` one image at a time, each under its own
            seed, so that a random method's region of an image does not depend on the batch.
            Default: on for :class:`~captum.attr.NoiseTunnel`, off otherwise. A NoiseTunnel's
            noise is then drawn from the image's own generator (bit for bit what Captum draws
            under ``torch.manual_seed`` of that seed), with no global state; with
            ``nt_samples_batch_size``, ``baselines``, ``feature_mask``,
            ``draw_baseline_from_distrib`` or per-input ``stdevs`` torch's global generator is
            seeded and restored around the call instead (one thread at a time).
        **attribute_kwargs: Passed to ``method.attribute`` (e.g. ``nt_samples``,
            ``sliding_window_shapes``).

    Examples::

        >>> region = AttributionRegion(Saliency(model), cell_size=4, area=0.25)
        >>> masks = region(images, target=labels)   # N x 1 x H x W of 0/1
    """

    def __init__(
        self,
        method: Attribution,
        cell_size: CellSize = "auto",
        area: float = 0.3,
        per_image: bool | None = None,
        **attribute_kwargs: Any,
    ) -> None:
        if not callable(getattr(method, "attribute", None)):
            raise TypeError(
                f"method must be a captum Attribution (with .attribute), got {type(method).__name__}"
            )
        self.method = method
        self.cell_size = _check_cell_size(cell_size)
        self.area = check_number(area, "area", 0, 1, low_open=True)
        self.per_image = isinstance(method, NoiseTunnel) if per_image is None else bool(per_image)
        self.attribute_kwargs = attribute_kwargs

    def __repr__(self) -> str:
        return (
            f"AttributionRegion({type(self.method).__name__}, cell_size={self.cell_size!r}, "
            f"area={self.area})"
        )

    def _attribute(self, inputs: Tensor, target: Tensor | None, kwargs: dict) -> Tensor:
        # a leaf that requires grad, so gradient methods don't warn about setting it themselves
        x = inputs.detach().requires_grad_(True)
        attr = self.method.attribute(x, target=target, **kwargs)
        if isinstance(attr, tuple) and len(attr) == 1:
            attr = attr[0]
        if not isinstance(attr, Tensor):
            raise TypeError(
                f"{type(self.method).__name__}.attribute must return a Tensor, got "
                f"{type(attr).__name__}"
            )
        return attr.detach()

    def __call__(
        self,
        inputs: Tensor,
        target: Tensor | None = None,
        additional_forward_args: Any = None,
        seeds: Sequence[int] | None = None,
    ) -> Tensor:
        maps = self.attributions(inputs, target, additional_forward_args, seeds)
        return self.masks_from(maps, inputs.shape[-2:])

    def masks_from(
        self, attributions: Tensor, size: Sequence[int], area: float | None = None
    ) -> Tensor:
        r"""The region of :meth:`attributions`' maps at this source's cells and ``area`` (or
        another ``area``: regions of growing area from one ranking are nested)."""
        return attribution_to_region(
            attributions, size, self.cell_size, self.area if area is None else area
        )

    def attributions(
        self,
        inputs: Tensor,
        target: Tensor | None = None,
        additional_forward_args: Any = None,
        seeds: Sequence[int] | None = None,
    ) -> Tensor:
        r"""The method's raw attribution maps (``N x C x H x W``), each image under its own
        seed when ``per_image``: what the region ranks its cells by."""
        kwargs = dict(self.attribute_kwargs)
        if additional_forward_args is not None:
            kwargs["additional_forward_args"] = additional_forward_args
        if not (self.per_image and seeds is not None):
            attr = self._attribute(inputs, target, kwargs)
        else:
            if len(seeds) != inputs.shape[0]:
                raise ValueError(f"seeds must give one seed per input, got {len(seeds)}")
            parts = []
            for i, seed in enumerate(seeds):
                kw = dict(kwargs)
                if "additional_forward_args" in kw:
                    (kw["additional_forward_args"],) = per_input(
                        (kw["additional_forward_args"],),
                        inputs.shape[0],
                        lambda a: a[i : i + 1],  # noqa: B023 (used at once)
                    )
                t = target[i : i + 1] if isinstance(target, Tensor) and target.ndim else target
                own = None
                if isinstance(self.method, NoiseTunnel):
                    own = _noise_tunnel_with_generator(
                        self.method,
                        inputs[i : i + 1].detach(),
                        t,
                        kw,
                        image_generator(seed, inputs.device),
                    )
                if own is None:
                    with seeded_global_rng(seed, inputs.device):
                        own = self._attribute(inputs[i : i + 1], t, kw)
                parts.append(own.detach())
            attr = torch.cat(parts)
        return attr


def default_region(
    forward_func: Callable[..., Tensor],
    cell_size: CellSize = "auto",
    area: float = 0.3,
    n_steps: int = 50,
) -> AttributionRegion:
    r"""The paper's default: Integrated Gradients (``n_steps`` 50, Captum's default) in a
    SmoothGrad NoiseTunnel (5 samples, σ 0.05), run one image at a time (each image's noise from
    its own seed) in batches of 64 passes. ``n_steps=8`` is the cheaper choice of the
    ``near_paper_4x`` and ``fast`` presets (docs: "Speed and realism")."""
    return AttributionRegion(
        NoiseTunnel(IntegratedGradients(forward_func)),
        cell_size=cell_size,
        area=area,
        nt_type="smoothgrad",
        nt_samples=5,
        stdevs=0.05,
        internal_batch_size=64,
        n_steps=check_int(n_steps, "n_steps", 1),
    )


def named_region(
    name: str,
    forward_func: Callable[..., Tensor],
    cell_size: CellSize = "auto",
    area: float = 0.3,
    *,
    image_shape: Sequence[int] | None = None,
    layer: Any = None,
    seed: int = 0,
    ig_steps: int = 50,
    prompt: str | None = None,
    segmenter: TextSegmenter | None = None,
) -> RegionSource:
    r"""A region source by name, for command lines and dataset runs.

    ``"ig"``: the default (Integrated Gradients of ``ig_steps`` steps in a NoiseTunnel, see
    :func:`default_region`); ``"saliency"``;
    ``"gradcam"``: ``LayerGradCam`` on ``layer`` (a module of the model, or its dotted name
    such as ``"layer4"`` when ``forward_func`` is an ``nn.Module``); ``"occlusion"``: windows of
    one cell, stride half a cell, over all channels (``image_shape`` ``C x H x W`` is needed to
    size them); ``"random"``: random cells; ``"text"``: the pixels a text ``prompt`` names,
    scored by ``segmenter`` (a :class:`TextSegmenter`), the top ``area`` of them
    (:class:`TextRegion`).
    """
    check_choice(name, "region", REGION_NAMES)
    ig_steps = check_int(ig_steps, "ig_steps", 1)
    if name != "ig" and ig_steps != 50:
        raise ValueError(f"ig_steps sets the 'ig' region's steps; region is {name!r}")
    if name != "text" and prompt is not None:
        raise ValueError(f"prompt applies to the 'text' region; region is {name!r}")
    if name == "ig":
        return default_region(forward_func, cell_size, area, n_steps=ig_steps)
    if name == "saliency":
        return AttributionRegion(Saliency(forward_func), cell_size, area)
    if name == "gradcam":
        if isinstance(layer, str):
            if not isinstance(forward_func, torch.nn.Module):
                raise ValueError("layer: a dotted layer name needs forward_func to be an nn.Module")
            try:
                layer = forward_func.get_submodule(layer)
            except AttributeError as e:
                raise ValueError(f"layer: the model has no module {layer!r}") from e
        if not isinstance(layer, torch.nn.Module):
            raise ValueError("the 'gradcam' region needs layer= (a module or its dotted name)")
        return AttributionRegion(LayerGradCam(forward_func, layer), cell_size, area)
    if name == "occlusion":
        if image_shape is None or len(image_shape) != 3:
            raise ValueError("the 'occlusion' region needs image_shape=(C, H, W)")
        c, h, w = (int(v) for v in image_shape)
        cell = _resolve_cell_size(_check_cell_size(cell_size), h, w)
        stride = max(1, cell // 2)
        return AttributionRegion(
            Occlusion(forward_func),
            cell_size,
            area,
            sliding_window_shapes=(c, cell, cell),
            strides=(c, stride, stride),
        )
    if name == "random":
        return RandomRegion("auto" if cell_size is None else cell_size, area, seed)
    if name == "text":
        if not prompt or segmenter is None:
            raise ValueError("the 'text' region needs prompt= and segmenter= (a TextSegmenter)")
        return TextRegion(segmenter, prompt, area=area)
    raise AssertionError(f"unreachable: {name!r} is in REGION_NAMES")


class MaskRegion(RegionSource):
    r"""User-given masks: ``H x W``, ``1 x H x W``, ``N x H x W`` or ``N x 1 x H x W`` (a single
    mask is broadcast over the batch),
    bool or numbers in ``[0, 1]``; a pixel may change where the mask is ``>= 0.5`` (see
    :func:`binarize_masks`)."""

    def __init__(self, masks: Tensor | np.ndarray) -> None:
        if isinstance(masks, np.ndarray):
            masks = torch.from_numpy(np.ascontiguousarray(masks))
        if not isinstance(masks, Tensor):
            raise TypeError(f"masks must be a Tensor or numpy array, got {type(masks).__name__}")
        if masks.ndim == 3 and masks.shape[0] > 1:  # N x H x W: one mask per input
            masks = masks[:, None]
        while masks.ndim < 4:
            masks = masks[None]
        if masks.ndim != 4 or masks.shape[1] != 1:
            raise ValueError(
                f"masks must be H x W, 1 x H x W or N x 1 x H x W, got shape {tuple(masks.shape)}"
            )
        self.masks = binarize_masks(masks, masks.shape[0], masks.shape[-2:], "masks")

    def __call__(
        self,
        inputs: Tensor,
        target: Tensor | None = None,
        additional_forward_args: Any = None,
        seeds: Sequence[int] | None = None,
    ) -> Tensor:
        m = self.masks.to(inputs.device)
        if m.shape[-2:] != inputs.shape[-2:] or m.shape[0] not in (1, inputs.shape[0]):
            raise ValueError(
                f"masks of shape {tuple(m.shape)} do not fit inputs of shape {tuple(inputs.shape)}"
            )
        return m.expand(inputs.shape[0], 1, *inputs.shape[-2:]).clone()


class SegmentationRegion(RegionSource):
    r"""The pixels of chosen segments (STEEX's region-targeted setting).

    Args:
        segmentation (Tensor or callable): Integer label maps ``N x H x W`` (or ``N x 1 x H x W``),
            or a segmenter ``images -> label maps`` (logits ``N x K x H x W`` are arg-maxed).
        labels (sequence of int): The segment labels that may change.
    """

    def __init__(
        self, segmentation: Tensor | Callable[[Tensor], Tensor], labels: Sequence[int]
    ) -> None:
        if isinstance(labels, (int, np.integer)):
            labels = [int(labels)]
        if not labels:
            raise ValueError("labels must name at least one segment label")
        self.segmentation = segmentation
        self.labels = torch.as_tensor(list(labels))
        if self.labels.is_floating_point():
            raise TypeError(f"labels must be integers, got {list(labels)}")

    def __call__(
        self,
        inputs: Tensor,
        target: Tensor | None = None,
        additional_forward_args: Any = None,
        seeds: Sequence[int] | None = None,
    ) -> Tensor:
        seg = (
            self.segmentation(inputs)
            if callable(self.segmentation)
            else torch.as_tensor(self.segmentation)
        )
        if not isinstance(seg, Tensor):
            raise TypeError(f"segmentation must give a Tensor, got {type(seg).__name__}")
        seg = seg.to(inputs.device)
        if seg.ndim == 4 and seg.shape[1] > 1:
            seg = seg.argmax(1)
        if seg.ndim == 4:
            seg = seg[:, 0]
        if seg.ndim != 3 or seg.shape[-2:] != inputs.shape[-2:] or seg.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"segmentation of shape {tuple(seg.shape)} does not fit inputs {tuple(inputs.shape)}"
            )
        if seg.is_floating_point():
            raise TypeError(
                f"segmentation label maps must be integers, got {seg.dtype} (pass logits as "
                "N x K x H x W to have them arg-maxed)"
            )
        return torch.isin(seg, self.labels.to(seg.device))[:, None].float()


class RandomRegion(RegionSource):
    r"""Random cells covering ``area`` of the image: the chance baseline for region sources
    (same cell grid and area as :class:`AttributionRegion`, no look at the model).

    Args:
        cell_size (int or "auto"): Side of the square cells (default ``"auto"``, see
            :func:`auto_cell_size`); cells need not divide the image.
        area (float): Largest fraction of the image's pixels chosen, in ``(0, 1]`` (on a grid
            that divides the image: ``floor(area * cells)`` cells, at least 1).
        seed (int, optional): Used when no per-image seeds are passed: every call with the same
            inputs gives the same region (default 0). Inside :class:`~rcsb_captum.RCSB` the
            call's ``seed`` decides, image by image.
    """

    def __init__(self, cell_size: CellSize = "auto", area: float = 0.3, seed: int = 0) -> None:
        if cell_size is None:
            raise ValueError("cell_size must be a positive integer or 'auto', got None")
        self.cell_size = _check_cell_size(cell_size)
        self.area = check_number(area, "area", 0, 1, low_open=True)
        self.seed = check_int(seed, "seed", 0)

    def __call__(
        self,
        inputs: Tensor,
        target: Tensor | None = None,
        additional_forward_args: Any = None,
        seeds: Sequence[int] | None = None,
    ) -> Tensor:
        h, w = inputs.shape[-2:]
        c = _resolve_cell_size(self.cell_size, h, w)
        gh, gw = -(-h // c), -(-w // c)
        n, cells = inputs.shape[0], gh * gw
        if seeds is None:  # one generator for the call: the same region on every call
            g = torch.Generator().manual_seed(self.seed)
            scores = torch.rand(n, cells, generator=g)
        else:
            scores = torch.stack(
                [torch.rand(cells, generator=torch.Generator().manual_seed(s)) for s in seeds]
            )
        keep = _top_cells(scores, _cell_pixels(h, w, c), self.area, positive_only=False)
        region = keep.view(n, 1, gh, gw).float().to(inputs.device)
        return region.repeat_interleave(c, 2).repeat_interleave(c, 3)[..., :h, :w].contiguous()


@runtime_checkable
class TextSegmenter(Protocol):
    r"""What :class:`TextRegion` needs from a text-prompted segmenter: a callable
    ``segmenter(images, prompts) -> masks`` taking ``N x C x H x W`` images in ``[0, 1]`` and one
    prompt per image, returning ``N x 1 x H x W`` masks in ``[0, 1]`` (soft scores or 0/1)
    on the images' grid. :class:`rcsb_captum.integrations.grounded_sam.GroundedSAM`
    (GroundingDINO boxes, then SAM masks, from ``transformers``) is one."""

    def __call__(self, images: Tensor, prompts: Sequence[str]) -> Tensor: ...


class TextRegion(RegionSource):
    r"""The region a text prompt names ("the sleeves", "the dog's head"), as RCSB's LangSAM
    regions: a :class:`TextSegmenter` scores the pixels, and the region is

    - with ``area=None``: the pixels scored at least ``threshold``;
    - with ``area``: the ``area`` fraction of the image's pixels with the highest scores among
      those scored above 0 (the official wrapper keeps the top ``area`` of the soft mask), so
      a prompt can also be asked for "the most sleeve-like 20 % of the image".

    An image where the prompt selects nothing raises a ``ValueError`` naming it (an empty
    region cannot change anything).

    Args:
        segmenter (TextSegmenter): ``(images, prompts) -> N x 1 x H x W`` scores in ``[0, 1]``.
        prompt (str or sequence of str): One prompt for every image, or one per image.
        area (float, optional): Fraction of the pixels to keep by score, in ``(0, 1]``.
        threshold (float): Score from which a pixel is in the region when ``area`` is None.

    Examples::

        >>> from rcsb_captum.integrations.grounded_sam import GroundedSAM
        >>> region = TextRegion(GroundedSAM.from_pretrained(), "the sleeves")
        >>> RCSB(model, bridge, region=region).generate(images, target=6, seed=0)
    """

    def __init__(
        self,
        segmenter: TextSegmenter,
        prompt: str | Sequence[str],
        area: float | None = None,
        threshold: float = 0.5,
    ) -> None:
        if not callable(segmenter):
            raise TypeError(
                "segmenter must be callable (images, prompts) -> masks, got "
                f"{type(segmenter).__name__}"
            )
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError(f"prompt must be a non-empty string or strings, got {prompt!r}")
        self.segmenter = segmenter
        self.prompts = prompts
        self.area = None if area is None else check_number(area, "area", 0, 1, low_open=True)
        self.threshold = check_number(threshold, "threshold", 0, 1, low_open=True)

    def __repr__(self) -> str:
        return f"TextRegion(prompt={self.prompts!r}, area={self.area}, threshold={self.threshold})"

    def __call__(
        self,
        inputs: Tensor,
        target: Tensor | None = None,
        additional_forward_args: Any = None,
        seeds: Sequence[int] | None = None,
    ) -> Tensor:
        n = inputs.shape[0]
        if len(self.prompts) not in (1, n):
            raise ValueError(
                f"prompt: {len(self.prompts)} prompts for {n} images (give one, or one per image)"
            )
        prompts = self.prompts * n if len(self.prompts) == 1 else self.prompts
        with torch.no_grad():
            scores = self.segmenter(inputs, prompts)
        if not isinstance(scores, Tensor) or tuple(scores.shape) != (n, 1, *inputs.shape[-2:]):
            raise ValueError(
                f"segmenter must return N x 1 x H x W = {(n, 1, *inputs.shape[-2:])} masks, got "
                f"{tuple(getattr(scores, 'shape', ())) or type(scores).__name__}"
            )
        scores = scores.detach().float().to(inputs.device)
        if torch.isnan(scores).any() or scores.min() < 0 or scores.max() > 1:
            raise ValueError("segmenter must return scores in [0, 1] (no NaN)")
        if self.area is None:
            region = (scores >= self.threshold).float()
        else:  # the cells' rule with one-pixel cells: the top area of the scored pixels
            flat = scores.flatten(1)
            ones = torch.ones(flat.shape[1], dtype=torch.long)
            region = _top_cells(flat, ones, self.area, positive_only=True).float().view_as(scores)
        empty = [i for i in range(n) if not bool(region[i].any())]
        if empty:
            raise ValueError(
                f"region: the prompt selects nothing in image(s) {empty} "
                f"({[prompts[i] for i in empty]!r}); lower the segmenter's thresholds or "
                "rephrase the prompt"
            )
        return region
