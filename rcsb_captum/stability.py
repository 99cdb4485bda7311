r"""How well a counterfactual's new class survives small changes of the image: the criterion
that grows RCSB's adaptive region (``RCSBConfig.area_steps``) without any judge.

A change made of the classifier's non-robust features (single-pixel patterns, speckle) is
undone by a one-pixel shift or a slight blur; a change to the garment's shape is not. The
stability of a counterfactual is the classifier's probability of the counterfactual class (of
"not the target" when none is named) averaged over ten such transformations: the eight one-pixel
shifts (border pixels repeated) and Gaussian blurs of 0.5 and 1 px. On the shipped Fashion-MNIST
models it ranks counterfactuals by whether an independent, adversarially trained judge agrees
with them (AUC 0.81-0.91 over 200 images per setting, and no targeted PGD flip inside the
region reaches 0.95: ``docs/speed_and_realism.md``), though it
uses only the guided classifier. Expectation over transformations as a robustness test: Athalye
et al., "Synthesizing Robust Adversarial Examples" (ICML 2018).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ._utils import check_logits, gaussian_blur, per_input

__all__ = ["STABILITY_BLURS", "STABILITY_SHIFTS", "stability_transforms", "transform_stability"]

#: one-pixel offsets (rows, columns): the 4- and the diagonal neighbours
STABILITY_SHIFTS = ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1))
#: standard deviations (pixels) of the Gaussian blurs
STABILITY_BLURS = (0.5, 1.0)


def _shift(x: Tensor, dy: int, dx: int) -> Tensor:
    # moved by (dy, dx), the border row / column repeated (no black edge on natural images)
    h, w = x.shape[-2:]
    p = F.pad(x, (abs(dx), abs(dx), abs(dy), abs(dy)), mode="replicate")
    top, left = abs(dy) - dy, abs(dx) - dx
    return p[..., top : top + h, left : left + w]


def stability_transforms(images: Tensor) -> Tensor:
    r"""The ``T = 10`` transformed copies of ``N x C x H x W`` ``images``, transformation-major
    (``T·N x C x H x W``): the eight shifts, then the blurs (reflected borders)."""
    copies = [_shift(images, dy, dx) for dy, dx in STABILITY_SHIFTS]
    copies += [gaussian_blur(images, s, "reflect") for s in STABILITY_BLURS]
    return torch.cat(copies)


def transform_stability(
    forward_func: Callable[..., Tensor],
    images: Tensor,
    target: Tensor,
    counterfactual_target: Tensor | None = None,
    additional_forward_args: tuple = (),
    batch_size: int | None = None,
) -> Tensor:
    r"""Per image, the classifier's mean probability of ``counterfactual_target`` (of any class
    but ``target`` when it is ``None``) over :func:`stability_transforms`.

    Args:
        forward_func (callable): Classifier on ``[0, 1]`` images returning logits.
        images (Tensor): ``N x C x H x W`` in ``[0, 1]`` (counterfactuals).
        target (Tensor): ``N`` classes explained.
        counterfactual_target (Tensor, optional): ``N`` classes to reach.
        additional_forward_args (tuple): Extra arguments of ``forward_func``; tensors with
            ``N`` rows are repeated for the copies.
        batch_size (int, optional): Images per classifier call (all copies of all images at
            once by default).

    Returns:
        Tensor: ``N`` floats in ``[0, 1]``.

    Examples::

        >>> s = transform_stability(model, res.counterfactuals, res.target, res.counterfactual_target)
        >>> stable = s >= 0.95
    """
    n = images.shape[0]
    k = len(STABILITY_SHIFTS) + len(STABILITY_BLURS)
    cls = (counterfactual_target if counterfactual_target is not None else target).repeat(k)
    step = (batch_size or n) * k
    probs = []
    copies = per_input(additional_forward_args, n, lambda a: a.repeat(k, *[1] * (a.ndim - 1)))
    with torch.no_grad():
        x = stability_transforms(images.float())
        for i in range(0, n * k, step):
            rows = slice(i, i + step)
            extra = per_input(copies, n * k, lambda a: a[rows])  # noqa: B023 (used at once)
            chunk = x[rows]
            logits = check_logits(forward_func(chunk, *extra), chunk.shape[0]).float()
            p = torch.softmax(logits, 1).gather(1, cls[rows, None].to(logits.device))[:, 0]
            probs.append(p if counterfactual_target is not None else 1 - p)
    return torch.cat(probs).view(k, n).mean(0)
