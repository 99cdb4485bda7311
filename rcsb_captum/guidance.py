r"""RCSB's classifier guidance: log-probability objective, Adam stabilisation, adaptive norm.

Sobieski et al., "Rethinking Visual Counterfactual Explanations Through Region Constraint"
(ICLR 2025), official code ``sobieskibj/rcsb`` ``src/guidance/``. State (Adam moments, the
first-step norms) lives in one :class:`ClassifierGuidance` object per sampling call and per
sample, not in module globals as upstream. The upstream LPIPS term has weight 0 in every shipped
config and is not computed here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ._utils import check_choice

__all__ = [
    "CLASSIFIER_INPUTS",
    "GUIDANCE_NORMS",
    "REFERENCE_NUMEL",
    "ClassifierGuidance",
    "gaussian_smooth",
    "to_unit_range",
]

CLASSIFIER_INPUTS = ("affine", "minmax")
GUIDANCE_NORMS = ("l2", "rms")
# elements of one image at the paper's setting (3 x 256 x 256, ImageNet): "rms" normalisation
# gives every resolution the per-element strength that "l2" gives there
REFERENCE_NUMEL = 3 * 256 * 256


def to_unit_range(x: Tensor, mode: str = "affine") -> Tensor:
    r"""Map an x̂0 estimate in ``[-1, 1]`` to the classifier's ``[0, 1]`` input.

    ``"affine"`` is ``(x + 1) / 2`` (this library's default: it keeps the estimate's absolute
    intensities, which matter for classifiers trained on fixed-range data).

    ``"minmax"`` is the official code's ``from_m1p1_to_01`` (RCSB_SPEC §2.3): when any sample
    of the batch has a negative minimum, every sample is min-max rescaled to ``[0, 1]`` on
    its own (``(x - min_b) / (max_b - min_b)``); when none has, the batch is returned
    unchanged. x̂0 almost always has negative values, so in practice it is a per-sample
    min-max. The branch is taken on the device (no host read).
    """
    if mode == "affine":
        return (x + 1) / 2
    if mode == "minmax":
        flat = x.flatten(1)
        lo = flat.min(1).values.view(-1, *[1] * (x.ndim - 1))
        hi = flat.max(1).values.view(-1, *[1] * (x.ndim - 1))
        rescaled = (x - lo) / (hi - lo).clamp_min(1e-12)
        return torch.where(lo.min() < 0, rescaled, x)
    raise ValueError(f"classifier_input must be one of {CLASSIFIER_INPUTS}, got {mode!r}")


def gaussian_smooth(x: Tensor, sigma: float) -> Tensor:
    r"""Each channel of ``N x C x H x W`` ``x`` blurred with a Gaussian of standard deviation
    ``sigma`` pixels (separable, truncated at ``ceil(3 sigma)``, zero padding: values near the
    border lose the part of their kernel outside the image). ``sigma == 0`` returns ``x``."""
    if sigma == 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), padding=(0, radius), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), padding=(radius, 0), groups=c)


class ClassifierGuidance:
    r"""Stateful guidance for one sampling run of a batch.

    Args:
        forward_func (callable): Classifier on ``[0, 1]`` images returning logits.
        counterfactual_target (Tensor, optional): Class per sample to reach; ``None`` pushes away
            from ``target`` (maximises ``log(1 - p(target))``).
        target (Tensor): Class per sample being explained.
        scale (float): Guidance scale ``s``.
        classifier_input (str): ``"affine"`` or ``"minmax"`` (see :func:`to_unit_range`).
        normalization (str): How the first update is sized. ``"l2"`` (the official): its L2
            norm per sample is ``scale``, so each element gets about ``scale / sqrt(D)`` for
            ``D = C·H·W`` (Adam's first step is the gradient's sign) and a 1 x 32 x 32 image
            gets 14 times the per-pixel push of a 3 x 256 x 256 one. ``"rms"``: its root mean
            square per element is ``scale / sqrt(3·256·256)`` whatever the size, the per-pixel
            strength ``"l2"`` has at the paper's resolution; the two are identical at
            3 x 256 x 256.
        smoothing (float): Standard deviation in pixels of a Gaussian blur of the classifier's
            gradient before Adam (0, the official: none). Adam's per-element normalisation
            turns a gradient into nearly its sign, a white-noise-like push on every pixel;
            blurring first makes the push spatially coherent (see
            ``benchmarks/results/guidance_variants.md``). In pixels, so scale it with the image.
        betas, eps: Adam stabilisation constants (0.9, 0.999, 1e-8 as upstream).
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        *,
        target: Tensor,
        counterfactual_target: Tensor | None,
        scale: float,
        classifier_input: str = "affine",
        normalization: str = "l2",
        smoothing: float = 0.0,
        additional_forward_args: tuple = (),
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.forward_func = forward_func
        self.target = target
        self.counterfactual_target = counterfactual_target
        self.scale = float(scale)
        self.classifier_input = classifier_input
        self.normalization = check_choice(
            normalization, "normalization (RCSB's guidance_norm)", GUIDANCE_NORMS
        )
        self.smoothing = float(smoothing)
        self.additional_forward_args = additional_forward_args
        self.betas = betas
        self.eps = eps
        self.m: Tensor | None = None
        self.v: Tensor | None = None
        self.k = 0
        self.norm0: Tensor | None = None

    def objective(self, x0_hat: Tensor) -> Tensor:
        r"""Summed log-probability of the counterfactual class (or of "not target")."""
        logits = self.forward_func(
            to_unit_range(x0_hat, self.classifier_input), *self.additional_forward_args
        )
        if not isinstance(logits, Tensor) or logits.shape[:1] != x0_hat.shape[:1]:
            raise TypeError(
                "forward_func must return a Tensor of logits N x K, got "
                f"{type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}"
            )
        logp = torch.log_softmax(logits.float(), dim=1)
        if self.counterfactual_target is not None:
            return logp.gather(1, self.counterfactual_target[:, None]).sum()
        lp_t = logp.gather(1, self.target[:, None]).squeeze(1)
        # log(1 - p) computed stably from log p
        return torch.log(-torch.expm1(lp_t.clamp(max=-1e-7))).sum()

    def step(self, grad: Tensor, weight: float = 1.0) -> Tensor:
        r"""Adam-stabilised, adaptively normalised and scaled update from a raw gradient;
        ``weight`` multiplies the scale at this step (a guidance schedule, 1 = the official)."""
        b1, b2 = self.betas
        self.k += 1
        grad = gaussian_smooth(grad, self.smoothing)
        if self.m is None or self.v is None:
            self.m = torch.zeros_like(grad)
            self.v = torch.zeros_like(grad)
        m, v = self.m, self.v
        m.mul_(b1).add_(grad, alpha=1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        m_hat = m / (1 - b1**self.k)
        v_hat: Tensor = v / (1 - b2**self.k)
        g = m_hat / (v_hat.sqrt() + self.eps)
        if self.norm0 is None:  # adaptive normalisation: first update has unit L2 norm per sample
            norm0 = g.flatten(1).norm(dim=1).clamp_min(1e-12)
            if self.normalization == "rms":  # unit L2 norm at REFERENCE_NUMEL elements
                norm0 = norm0 * (REFERENCE_NUMEL / g[0].numel()) ** 0.5
            self.norm0 = norm0.view(-1, *[1] * (g.ndim - 1))
        return (self.scale * weight) * g / self.norm0
