r"""In-fillers: replace the dropped pixels of an image (FIDO, Chang et al., ICLR 2019).

One interface: ``infiller(images, keep, generator=None)`` with ``images`` ``N x C x H x W`` in
``[0, 1]`` and ``keep`` ``N x 1 x H x W`` binary (1 = keep). The kept pixels come back bit for bit;
only the dropped ones are filled. ``generator`` is one ``torch.Generator`` for the call or, for the
in-fillers here (``per_row_generators``), one per row, so that a row's draws do not depend on the
other rows (FIDO and BBMP pass one per image, for a batch equal to its images one at a time). The heuristic in-fillers follow FIDO's
``arch/Inpainting/Baseline.py`` (``zzzace2000/FIDO-saliency``); :class:`BridgeInfiller` replaces
FIDO's generative in-filler (a TensorFlow CA-GAN) with unguided I2SB inpainting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor

from ._utils import check_int, check_number, format_images, gaussian_blur
from .bridge.bridge import Bridge
from .sampler import sample_rcsb

__all__ = [
    "BlurInfiller",
    "BridgeInfiller",
    "Infiller",
    "LocalMeanInfiller",
    "MeanInfiller",
    "RandomColorNoiseInfiller",
    "check_fill",
]


#: one generator for the call, one per row of the images, or none (torch's global generator)
Generators: TypeAlias = torch.Generator | Sequence[torch.Generator] | None


def check_fill(filled: object, images: Tensor, name: str = "infiller") -> Tensor:
    r"""An in-filler's output must be a finite tensor shaped like its ``images``."""
    if not isinstance(filled, Tensor):
        raise TypeError(f"{name} must return a Tensor, got {type(filled).__name__}")
    if filled.shape != images.shape:
        raise ValueError(
            f"{name} must return images shaped like its input {tuple(images.shape)}, got "
            f"{tuple(filled.shape)}"
        )
    if not bool(torch.isfinite(filled).all()):
        raise ValueError(f"{name} returned non-finite values (NaN or inf)")
    return filled


class Infiller:
    r"""Base class: subclasses implement :meth:`fill` (values for every pixel); ``__call__``
    checks the arguments and keeps the kept pixels exactly.

    A subclass whose :meth:`fill` accepts a sequence of generators, one per row, sets
    ``per_row_generators = True``; the others get one generator for the call."""

    #: whether :meth:`fill` takes one generator per row as well as one for the call
    per_row_generators: ClassVar[bool] = False

    def fill(self, images: Tensor, keep: Tensor, generator: Generators) -> Tensor:
        raise NotImplementedError

    def __call__(self, images: Tensor, keep: Tensor, generator: Generators = None) -> Tensor:
        images = format_images(images, "images")
        if not (generator is None or isinstance(generator, torch.Generator)):
            if not self.per_row_generators:
                raise TypeError(
                    f"generator: {type(self).__name__} takes one torch.Generator (it does not "
                    "set per_row_generators), got a sequence"
                )
            if len(generator) != images.shape[0]:
                raise ValueError(
                    f"generator: need one per row of images ({images.shape[0]}), got "
                    f"{len(generator)}"
                )
        if not isinstance(keep, Tensor):
            raise TypeError(f"keep must be a Tensor, got {type(keep).__name__}")
        if keep.shape != (images.shape[0], 1, *images.shape[-2:]):
            raise ValueError(
                f"keep must be N x 1 x H x W = {(images.shape[0], 1, *images.shape[-2:])}, got "
                f"{tuple(keep.shape)}"
            )
        keep = keep.to(images.device) != 0
        filled = check_fill(self.fill(images, keep.to(images.dtype), generator), images, repr(self))
        return torch.where(keep, images, filled.to(images.dtype))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class MeanInfiller(Infiller):
    r"""A constant: ``value`` (a float or one per channel), or by default each image's
    per-channel mean over its kept pixels (FIDO's ``MeanInpainter`` uses the dataset mean)."""

    per_row_generators = True  # draws nothing

    def __init__(self, value: float | Sequence[float] | None = None) -> None:
        self.value = value

    def fill(self, images: Tensor, keep: Tensor, generator: Generators) -> Tensor:
        if self.value is not None:
            v = torch.as_tensor(self.value, dtype=images.dtype, device=images.device)
            return v.view(1, -1, 1, 1).expand_as(images)
        kept = keep.sum((2, 3), keepdim=True)
        mean = (images * keep).sum((2, 3), keepdim=True) / kept.clamp_min(1)
        fallback = images.mean((2, 3), keepdim=True)  # nothing kept: the image's own mean
        return torch.where(kept > 0, mean, fallback).expand_as(images)


class LocalMeanInfiller(Infiller):
    r"""The mean of the kept pixels in a ``window`` x ``window`` neighbourhood (FIDO's
    ``LocalMeanInpainter``, window 15): ``box(x * keep) / box(keep)``; pixels with no kept
    neighbour get the image's kept-pixel mean."""

    def __init__(self, window: int = 15) -> None:
        window = check_int(window, "window", 1)
        if window % 2 == 0:
            raise ValueError(f"window must be a positive odd integer, got {window}")
        self.window = window

    per_row_generators = True  # draws nothing

    def fill(self, images: Tensor, keep: Tensor, generator: Generators) -> Tensor:
        k, c = self.window, images.shape[1]
        box = torch.ones(c + 1, 1, k, k, dtype=images.dtype, device=images.device)
        sums = F.conv2d(torch.cat([images * keep, keep], 1), box, padding=k // 2, groups=c + 1)
        local = sums[:, :c] / sums[:, c:].clamp_min(1e-8)
        glob = MeanInfiller().fill(images, keep, generator)
        return torch.where(sums[:, c:] > 0.5, local, glob)


class BlurInfiller(Infiller):
    r"""A Gaussian blur of the whole image (FIDO's ``BlurryInpainter``: σ = 10 at 224 px; pass
    a σ in proportion for smaller images). Kernel radius 3σ, reflected borders."""

    def __init__(self, sigma: float = 10.0) -> None:
        self.sigma = check_number(sigma, "sigma", 0, low_open=True)

    per_row_generators = True  # draws nothing

    def fill(self, images: Tensor, keep: Tensor, generator: Generators) -> Tensor:
        return gaussian_blur(images, self.sigma, "reflect")


class RandomColorNoiseInfiller(Infiller):
    r"""One uniform random colour per image plus Gaussian noise (FIDO's
    ``RandomColorWithNoiseInpainter``: noise σ 0.2 in ImageNet-normalised units, about 0.045 in
    ``[0, 1]`` pixel units, the default here), clipped to ``[0, 1]``."""

    def __init__(self, noise_std: float = 0.045) -> None:
        self.noise_std = check_number(noise_std, "noise_std", 0)

    per_row_generators = True

    def fill(self, images: Tensor, keep: Tensor, generator: Generators) -> Tensor:
        if not (generator is None or isinstance(generator, torch.Generator)):
            # one generator per row: each row's colour, then its noise, from its own
            rows = [
                self.fill(images[i : i + 1], keep[i : i + 1], g) for i, g in enumerate(generator)
            ]
            return torch.cat(rows)
        n, c = images.shape[:2]
        # drawn where the generator lives, as in sample_rcsb
        device = generator.device if generator is not None else images.device
        colour = torch.rand(n, c, 1, 1, generator=generator, device=device)
        noise = torch.randn(images.shape, generator=generator, device=device) * self.noise_std
        return (colour + noise).clamp(0, 1).to(images.device, images.dtype)


class BridgeInfiller(Infiller):
    r"""Unguided I2SB inpainting of the dropped pixels with any :class:`~rcsb_captum.Bridge`:
    the generative in-filler FIDO found to give the most compact masks, here a bridge.

    The trajectory starts at the end of the bridge (``start_step = interval``), where the
    dropped pixels are pure noise, so nothing of the dropped content leaks into the fill.

    Args:
        bridge (Bridge, optional): Default: :meth:`Bridge.default_for` the images (the shipped
            Fashion-MNIST bridge for 1 x 32 x 32 images), chosen at the first call.
        nfe (int): Sampling steps (20).
        start_step (int, optional): Truncation; default the whole bridge.
    """

    def __init__(
        self, bridge: Bridge | None = None, nfe: int = 20, start_step: int | None = None
    ) -> None:
        if bridge is not None and not isinstance(bridge, Bridge):
            raise TypeError(f"bridge must be a rcsb_captum.Bridge, got {type(bridge).__name__}")
        self.bridge = bridge
        self.nfe = check_int(nfe, "nfe", 1)
        self.start_step = None if start_step is None else check_int(start_step, "start_step", 2)

    def __repr__(self) -> str:
        return f"BridgeInfiller(nfe={self.nfe}, start_step={self.start_step})"

    per_row_generators = True  # sample_rcsb takes one generator per image

    def fill(self, images: Tensor, keep: Tensor, generator: Generators) -> Tensor:
        if self.bridge is None:
            self.bridge = Bridge.default_for(images)
        b = self.bridge
        b.check_inputs(images, "images")
        start = self.start_step or b.schedule.interval
        with torch.no_grad():
            return sample_rcsb(
                b.to(images.device), images.float(), 1 - keep, None, start, self.nfe, generator
            )
