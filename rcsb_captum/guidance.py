r"""RCSB's classifier guidance: log-probability objective, Adam stabilisation, adaptive norm.

Sobieski et al., "Rethinking Visual Counterfactual Explanations Through Region Constraint"
(ICLR 2025), official code ``sobieskibj/rcsb`` ``src/guidance/``. State (Adam moments, the
first-step norms) lives in one :class:`ClassifierGuidance` object per sampling call and per
sample, not in module globals as upstream. The upstream LPIPS term has weight 0 in every shipped
config and is not computed here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from ._utils import check_choice, check_number, gaussian_blur, per_input
from .config import AdamMode, ClassifierInput, GuidanceNorm

if TYPE_CHECKING:
    from .config import RCSBConfig

__all__ = [
    "ADAM_MODES",
    "CLASSIFIER_INPUTS",
    "GUIDANCE_NORMS",
    "REFERENCE_NUMEL",
    "ClassifierGuidance",
    "gaussian_smooth",
    "guidance_for_steps",
    "to_unit_range",
]

#: How the sample is mapped into the classifier's input range (``classifier_input``; the
#: choices are the config's type).
CLASSIFIER_INPUTS: tuple[str, ...] = get_args(ClassifierInput)
#: How the guidance gradient is normalised (``guidance_norm``).
GUIDANCE_NORMS: tuple[str, ...] = get_args(GuidanceNorm)
#: Adam's moment statistics per pixel or per image (``guidance_adam``).
ADAM_MODES: tuple[str, ...] = get_args(AdamMode)
# whole-pixel offsets (rows, columns) of the shifted copies the objective is averaged over:
# the identity first, then the 4- and the diagonal neighbours
SHIFTS = ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1))
#: Elements of one image at the paper's setting (3 x 256 x 256, ImageNet): ``"rms"``
#: normalisation gives every resolution the per-element strength that ``"l2"`` gives there.
REFERENCE_NUMEL = 3 * 256 * 256


def to_unit_range(x: Tensor, mode: str = "affine") -> Tensor:
    r"""Map an x̂0 estimate in ``[-1, 1]`` to the classifier's ``[0, 1]`` input.

    ``"affine"`` is ``(x + 1) / 2`` (this library's default: it keeps the estimate's absolute
    intensities, which matter for classifiers trained on fixed-range data).

    ``"minmax"`` is the official code's ``from_m1p1_to_01`` (``sobieskibj/rcsb``): when any sample
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
    r"""The gradient blur of ``smoothing``: :func:`rcsb_captum._utils.gaussian_blur` with zero
    borders (values near the border lose the part of their kernel outside the image)."""
    return gaussian_blur(x, sigma, "zeros")


def shift_image(x: Tensor, dy: int, dx: int) -> Tensor:
    r"""``N x C x H x W`` ``x`` moved by ``dy`` rows and ``dx`` columns, zero-filled (not
    wrapped); differentiable."""
    if dy == 0 and dx == 0:
        return x
    h, w = x.shape[-2:]
    p = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return p[..., top : top + h, left : left + w]


def guidance_for_steps(config: RCSBConfig) -> tuple[float, tuple[float, float]]:
    r"""The guidance scale and Adam's betas for ``config.nfe`` steps. With
    ``guidance_reference_nfe = R`` the loop of ``nfe`` steps gets the push and the memory of
    R steps: the scale is multiplied by ``R / nfe`` (the update is normalised per step, so
    the total push is about ``nfe * scale``) and Adam's betas ``(0.9, 0.999)`` (upstream's,
    tuned for 100 steps) are raised to the power ``R / nfe``, so that their averaging windows
    cover the same fraction of the trajectory (``beta^k`` decays over ``k`` steps as
    ``beta^(k R / nfe)`` over ``k R / nfe``). 0 keeps the official values."""
    ref = config.guidance_reference_nfe
    r = ref / config.nfe if ref else 1.0
    return config.guidance_scale * r, (0.9**r, 0.999**r)


class ClassifierGuidance:
    r"""Stateful guidance for one sampling run of a batch.

    Args:
        forward_func (callable): Classifier on ``[0, 1]`` images returning logits.
        counterfactual_target (Tensor, optional): Class per sample to reach; ``None`` pushes away
            from ``target`` (maximises ``log(1 - p(target))``).
        target (Tensor): Class per sample being explained.
        scale (float): Guidance scale ``s``.
        classifier_input (str): ``"affine"`` or ``"minmax"`` (see :func:`to_unit_range`).
        norm (str): How the first update is sized (RCSB's ``guidance_norm``). ``"l2"`` (the official): its L2
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
        shifts (int): Average the objective over this many copies of x̂0: the identity and
            then its whole-pixel shifts to the 4- and diagonal neighbours (1, the official:
            x̂0 only; at most 9), in one batched classifier call. The gradient of a classifier
            smoothed over small translations follows features that survive them (Kaur et al.,
            "Are perceptually-aligned gradients a general property of robust classifiers?",
            2019), not single-pixel patterns.
        adam (str): ``"pixel"`` (the official: Adam's second moment per element, so each
            element's update is about the sign of its gradient) or ``"image"`` (one second
            moment per sample, the mean over its elements: the update keeps the gradient's
            spatial shape, so a smooth gradient gives a smooth change).
        until (float): Guide a sample only while the classifier's probability of the
            counterfactual class on x̂0 (of "not target" when none is named) is below this
            (1, the official: always). Once a sample has crossed it, its update is zero and the
            bridge alone carries the step, repairing what the push left; if the prior pulls the
            sample back below the threshold, guidance resumes. Adam's moments keep
            accumulating either way. Decided on the device, per sample (no host read).
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
        norm: str = "l2",
        smoothing: float = 0.0,
        shifts: int = 1,
        adam: str = "pixel",
        until: float = 1.0,
        additional_forward_args: tuple = (),
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.forward_func = forward_func
        self.target = target
        self.counterfactual_target = counterfactual_target
        self.scale = float(scale)
        self.classifier_input = classifier_input
        self.norm = check_choice(norm, "norm (RCSB's guidance_norm)", GUIDANCE_NORMS)
        self.smoothing = float(smoothing)
        if isinstance(shifts, bool) or not isinstance(shifts, int) or not 1 <= shifts <= 9:
            raise ValueError(
                f"shifts (RCSB's guidance_shifts) must be an int in [1, 9], got {shifts!r}"
            )
        self.shifts = shifts
        self.adam = check_choice(adam, "adam (RCSB's guidance_adam)", ADAM_MODES)
        self.until = check_number(until, "until (RCSB's guidance_until)", 0, 1, low_open=True)
        self.reached: Tensor | None = None  # per sample: p >= until at the latest objective
        self.additional_forward_args = additional_forward_args
        self.betas = betas
        self.eps = eps
        self.m: Tensor | None = None
        self.v: Tensor | None = None
        self.k = 0
        self.norm0: Tensor | None = None

    @classmethod
    def from_config(
        cls,
        forward_func: Callable[..., Tensor],
        config: RCSBConfig,
        *,
        target: Tensor,
        counterfactual_target: Tensor | None,
        additional_forward_args: tuple = (),
    ) -> ClassifierGuidance:
        r"""The guidance of one sampling run as ``config`` sets it: its ``guidance`` section
        (the only place the config's option names meet this class's), with the scale and
        Adam's betas of :func:`guidance_for_steps` for its ``nfe``.

        Examples::

            >>> g = ClassifierGuidance.from_config(model, RCSBConfig(), target=y,
            ...                                    counterfactual_target=None)
        """
        g = config.section("guidance")
        scale, betas = guidance_for_steps(config)
        return cls(
            forward_func,
            target=target,
            counterfactual_target=counterfactual_target,
            scale=scale,
            betas=betas,
            classifier_input=g["classifier_input"],
            norm=g["guidance_norm"],
            smoothing=g["guidance_smoothing"],
            shifts=g["guidance_shifts"],
            adam=g["guidance_adam"],
            until=g["guidance_until"],
            additional_forward_args=additional_forward_args,
        )

    def objective(self, x0_hat: Tensor) -> Tensor:
        r"""Summed log-probability of the counterfactual class (or of "not target")."""
        x = to_unit_range(x0_hat, self.classifier_input)
        k, n = self.shifts, x0_hat.shape[0]
        if k > 1:  # the k shifted copies, copy-major, through the classifier in one call
            x = torch.cat([shift_image(x, dy, dx) for dy, dx in SHIFTS[:k]])
        extra = self.additional_forward_args
        if k > 1:
            extra = per_input(extra, n, lambda a: a.repeat(k, *[1] * (a.ndim - 1)))
        logits = self.forward_func(x, *extra)
        if not isinstance(logits, Tensor) or logits.shape[:1] != x.shape[:1]:
            raise TypeError(
                "forward_func must return a Tensor of logits N x K, got "
                f"{type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}"
            )
        logp = torch.log_softmax(logits.float(), dim=1)
        if self.counterfactual_target is not None:
            per = logp.gather(1, self.counterfactual_target.repeat(k)[:, None]).squeeze(1)
        else:
            lp_t = logp.gather(1, self.target.repeat(k)[:, None]).squeeze(1)
            # log(1 - p) computed stably from log p
            per = torch.log(-torch.expm1(lp_t.clamp(max=-1e-7)))
        if self.until < 1:  # the unshifted copy decides
            self.reached = (per[:n].detach().exp() >= self.until).view(-1, *[1] * (x.ndim - 1))
        return per.sum() / k

    def step(self, grad: Tensor, weight: float = 1.0) -> Tensor:
        r"""Adam-stabilised, adaptively normalised and scaled update from a raw gradient;
        ``weight`` multiplies the scale at this step (a guidance schedule, 1 = the official)."""
        b1, b2 = self.betas
        self.k += 1
        grad = gaussian_smooth(grad, self.smoothing)
        if self.m is None or self.v is None:
            self.m = torch.zeros_like(grad)
            self.v = (
                torch.zeros_like(grad)
                if self.adam == "pixel"
                else grad.new_zeros(grad.shape[0], *[1] * (grad.ndim - 1))
            )
        m, v = self.m, self.v
        m.mul_(b1).add_(grad, alpha=1 - b1)
        if self.adam == "pixel":
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        else:  # one second moment per sample: the mean square over its elements
            sq = grad.square().flatten(1).mean(1).view_as(v)
            v.mul_(b2).add_(sq, alpha=1 - b2)
        m_hat = m / (1 - b1**self.k)
        v_hat: Tensor = v / (1 - b2**self.k)
        g = m_hat / (v_hat.sqrt() + self.eps)
        if self.norm0 is None:  # adaptive normalisation: first update has unit L2 norm per sample
            norm0 = g.flatten(1).norm(dim=1).clamp_min(1e-12)
            if self.norm == "rms":  # unit L2 norm at REFERENCE_NUMEL elements
                norm0 = norm0 * (REFERENCE_NUMEL / g[0].numel()) ** 0.5
            self.norm0 = norm0.view(-1, *[1] * (g.ndim - 1))
        update = (self.scale * weight) * g / self.norm0
        if self.reached is not None:  # samples past ``until`` are left to the bridge
            update = torch.where(self.reached, torch.zeros_like(update), update)
        return update
