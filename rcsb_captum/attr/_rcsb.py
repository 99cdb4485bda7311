r"""RCSB as a Captum attribution method."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from captum._utils.common import _format_additional_forward_args
from captum.attr import Attribution
from torch import Tensor

from ..bridge.bridge import Bridge
from ..guidance import ClassifierGuidance
from ..regions import MaskRegion, default_region
from ..sampler import sample_rcsb

__all__ = ["RCSB", "CounterfactualResult"]

BRIDGE_ENV = "RCSB_CAPTUM_BRIDGE"


@dataclass
class CounterfactualResult:
    r"""What :meth:`RCSB.generate` returns (N inputs, S samples each).

    Attributes:
        counterfactuals (Tensor): ``N x C x H x W``, the best sample per input.
        samples (Tensor): ``N x S x C x H x W``, every sample.
        regions (Tensor): ``N x 1 x H x W`` binary region masks.
        success (Tensor): ``N`` bool, the best sample reaches the counterfactual class (or leaves
            ``target`` when no counterfactual class was given).
        sample_success (Tensor): ``N x S`` bool.
        target (Tensor), counterfactual_target (Tensor or None): the classes used.
        probs_before (Tensor): ``N x K`` class probabilities of the inputs.
        probs_after (Tensor): ``N x K`` class probabilities of the best counterfactuals.
    """

    counterfactuals: Tensor
    samples: Tensor
    regions: Tensor
    success: Tensor
    sample_success: Tensor
    target: Tensor
    counterfactual_target: Tensor | None
    probs_before: Tensor
    probs_after: Tensor


def _classes(value: Any, n: int, num_classes: int, name: str, device: torch.device) -> Tensor:
    if isinstance(value, bool) or (
        not isinstance(value, (int, list, tuple, Tensor, np.ndarray, np.integer))
    ):
        raise TypeError(
            f"{name} must be an int, a list of ints or a tensor, got {type(value).__name__}"
        )
    t = torch.as_tensor(value, device=device)
    if t.is_floating_point():
        raise TypeError(f"{name} must hold integer classes, got dtype {t.dtype}")
    t = t.long().flatten()
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{name} must give one class or one per input ({n}), got {t.numel()}")
    if (t < 0).any() or (t >= num_classes).any():
        raise ValueError(f"{name} has classes outside [0, {num_classes - 1}]: {t.tolist()}")
    return t.clone()


class RCSB(Attribution):
    r"""Region-constrained Counterfactual Schrödinger Bridge (Sobieski et al., ICLR 2025).

    The smallest realistic change inside a region that makes the classifier change its mind:
    an I2SB bridge inpaints the region, guided by the classifier's gradient, starting from a
    partly noised copy of the input, while every pixel outside the region stays exactly as it
    was. The attribution is ``inputs - counterfactuals`` (the counterfactual as baseline), zero
    outside the region.

    Args:
        forward_func (callable): Classifier on images in ``[0, 1]`` returning logits. Wrap a
            model that wants normalised input with :class:`~rcsb_captum.NormalizedModel`.
        bridge (Bridge, optional): The inpainting bridge. Default: the file named by the
            ``RCSB_CAPTUM_BRIDGE`` environment variable (a :meth:`Bridge.save` file) if set,
            else, for 1 x 32 x 32 inputs, the shipped ``Bridge.pretrained("fashion-mnist")``.
        region (callable, optional): ``(inputs, target) -> N x 1 x H x W`` masks, e.g.
            :class:`AttributionRegion`, :class:`MaskRegion`, :class:`SegmentationRegion`.
            Default: Integrated Gradients in a NoiseTunnel (5 samples, σ 0.05), cells of
            ``cell_size``, ``area`` 0.3.
        guidance_scale (float): ``s`` (1.5).
        start_step (int): Truncation ``τ·T`` (600).
        nfe (int): Sampling steps (100).
        n_samples (int): Counterfactuals drawn per input; the best is returned (2).
        classifier_input (str): ``"affine"`` ((x+1)/2, default) or ``"minmax"`` (official).
        cell_size (int): Cell side of the default region (16).
        area (float): Area of the default region (0.3).

    Examples::

        >>> from rcsb_captum import RCSB, AttributionRegion
        >>> from rcsb_captum.pretrained import load_demo_classifier, load_demo_samples
        >>> model = load_demo_classifier()
        >>> images, labels = load_demo_samples()
        >>> rcsb = RCSB(model, cell_size=4)  # 1 x 32 x 32 inputs: the shipped bridge
        >>> attr = rcsb.attribute(images[:4], target=labels[:4], seed=0)
        >>> res = rcsb.generate(images[:4], target=6, counterfactual_target=0, seed=0)
        >>> res.success, res.probs_after.argmax(1)
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        bridge: Bridge | None = None,
        region: Callable[..., Tensor] | None = None,
        *,
        guidance_scale: float = 1.5,
        start_step: int = 600,
        nfe: int = 100,
        n_samples: int = 2,
        classifier_input: str = "affine",
        cell_size: int = 16,
        area: float = 0.3,
    ) -> None:
        super().__init__(forward_func)
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        if classifier_input not in ("affine", "minmax"):
            raise ValueError(
                f"classifier_input must be 'affine' or 'minmax', got {classifier_input!r}"
            )
        self.bridge = bridge
        self.region = (
            region if region is not None else default_region(forward_func, cell_size, area)
        )
        self.guidance_scale = float(guidance_scale)
        self.start_step = int(start_step)
        self.nfe = int(nfe)
        self.n_samples = int(n_samples)
        self.classifier_input = classifier_input

    def _resolve_bridge(self, inputs: Tensor) -> Bridge:
        if self.bridge is None:
            path = os.environ.get(BRIDGE_ENV)
            if path:
                self.bridge = Bridge.load(path)
            elif tuple(inputs.shape[1:]) == (1, 32, 32):
                self.bridge = Bridge.pretrained("fashion-mnist")
            else:
                raise ValueError(
                    "bridge: no bridge given and the shipped demo bridge only takes 1 x 32 x 32 "
                    f"images (inputs are {tuple(inputs.shape[1:])}). Pass "
                    "bridge=Bridge.from_i2sb_checkpoint(path, config) or Bridge.load(path), "
                    f"train one with train_bridge, or set the {BRIDGE_ENV} environment variable "
                    "to a bridge file written by Bridge.save / train_bridge"
                )
        b = self.bridge
        if b.channels is not None and b.channels != inputs.shape[1]:
            raise ValueError(
                f"inputs have {inputs.shape[1]} channels, the bridge takes {b.channels}"
            )
        if b.image_size is not None and tuple(inputs.shape[-2:]) != (b.image_size, b.image_size):
            raise ValueError(
                f"inputs are {tuple(inputs.shape[-2:])} but the bridge was built for "
                f"{b.image_size} x {b.image_size} images; resize the inputs or use a bridge of their size"
            )
        return b.to(inputs.device)

    def _logits(self, x: Tensor, extra: tuple) -> Tensor:
        with torch.no_grad():
            return self.forward_func(x, *extra)

    def generate(
        self,
        inputs: Tensor,
        target: int | list | Tensor | None = None,
        counterfactual_target: int | list | Tensor | None = None,
        additional_forward_args: Any = None,
        internal_batch_size: int | None = None,
        show_progress: bool = False,
        seed: int | torch.Generator | None = None,
        region: Tensor | None = None,
    ) -> CounterfactualResult:
        r"""Draw counterfactuals; see the class docstring and :class:`CounterfactualResult`.

        Args:
            inputs (Tensor): ``N x C x H x W`` images in ``[0, 1]``.
            target (int, list or Tensor, optional): Class explained (``None``: the prediction).
            counterfactual_target (optional): Class to reach (``None``: any class but target).
            additional_forward_args (optional): Extra arguments of ``forward_func``.
            internal_batch_size (int, optional): Inputs sampled together (all by default).
            show_progress (bool): Progress bar over the sampling steps.
            seed (int or torch.Generator, optional): Makes the result repeatable.
            region (Tensor, optional): Masks overriding the region source for this call.

        Returns:
            CounterfactualResult: counterfactuals (best of ``n_samples`` per input), all
            samples, the region masks, success flags and class probabilities before and after.

        Examples::

            >>> res = RCSB(model, bridge).generate(x, target=340, counterfactual_target=339, seed=0)
            >>> res.counterfactuals[res.success]
        """
        if not isinstance(inputs, Tensor):
            raise TypeError(f"inputs must be a Tensor, got {type(inputs).__name__}")
        if inputs.ndim != 4:
            raise ValueError(f"inputs must be N x C x H x W, got shape {tuple(inputs.shape)}")
        if not torch.isfinite(inputs).all():
            raise ValueError("inputs contain non-finite values")
        if inputs.min() < 0 or inputs.max() > 1:
            raise ValueError(
                "inputs must be images in [0, 1]; wrap normalising models with NormalizedModel"
            )
        extra = _format_additional_forward_args(additional_forward_args) or ()
        bridge = self._resolve_bridge(inputs)
        n = inputs.shape[0]
        logits = self._logits(inputs, extra)
        k = logits.shape[1]
        tgt = (
            logits.argmax(1) if target is None else _classes(target, n, k, "target", inputs.device)
        )
        cf = (
            None
            if counterfactual_target is None
            else _classes(counterfactual_target, n, k, "counterfactual_target", inputs.device)
        )
        if cf is not None and (cf == tgt).any():
            raise ValueError("counterfactual_target must differ from target for every input")
        # region sources take the extra arguments only when there are any, so that plain
        # callables ``(inputs, target) -> masks`` work
        region_args = (additional_forward_args,) if extra else ()
        masks = (MaskRegion(region) if region is not None else self.region)(
            inputs, tgt, *region_args
        )
        masks = (masks != 0).float()
        if masks.shape != (n, 1, *inputs.shape[-2:]):
            raise ValueError(f"region masks must be {n} x 1 x H x W, got {tuple(masks.shape)}")
        if (masks.flatten(1).sum(1) == 0).any():
            raise ValueError("region is empty for some input; nothing could change")
        gen = (
            seed
            if isinstance(seed, torch.Generator)
            else torch.Generator().manual_seed(
                int(seed) if seed is not None else int(torch.randint(2**62, (1,)).item())
            )
        )
        s = self.n_samples
        rep = lambda t: None if t is None else t.repeat_interleave(s, 0)  # noqa: E731
        x, m, t_rep, cf_rep = rep(inputs), rep(masks), rep(tgt), rep(cf)
        chunk = (internal_batch_size or n) * s
        outs = []
        for i in range(0, n * s, chunk):
            sl = slice(i, i + chunk)
            guidance = ClassifierGuidance(
                self.forward_func,
                t_rep[sl],
                None if cf_rep is None else cf_rep[sl],
                self.guidance_scale,
                self.classifier_input,
                extra,
            )
            outs.append(
                sample_rcsb(
                    bridge, x[sl], m[sl], guidance, self.start_step, self.nfe, gen, show_progress
                )
            )
        samples = torch.cat(outs)
        probs = torch.softmax(self._logits(samples, extra).float(), 1)
        pred = probs.argmax(1)
        ok = pred == cf_rep if cf_rep is not None else pred != t_rep
        score = (
            probs.gather(1, cf_rep[:, None])[:, 0]
            if cf_rep is not None
            else 1 - probs.gather(1, t_rep[:, None])[:, 0]
        )
        rank = (ok.float() * 2 + score).view(n, s)  # successful first, then highest probability
        best = rank.argmax(1)
        samples = samples.view(n, s, *inputs.shape[1:])
        chosen = samples[torch.arange(n), best]
        return CounterfactualResult(
            counterfactuals=chosen,
            samples=samples,
            regions=masks,
            success=ok.view(n, s)[torch.arange(n), best],
            sample_success=ok.view(n, s),
            target=tgt,
            counterfactual_target=cf,
            probs_before=torch.softmax(logits.float(), 1),
            probs_after=probs.view(n, s, -1)[torch.arange(n), best],
        )

    def attribute(
        self,
        inputs: Tensor,
        target: int | list | Tensor | None = None,
        counterfactual_target: int | list | Tensor | None = None,
        additional_forward_args: Any = None,
        internal_batch_size: int | None = None,
        show_progress: bool = False,
        seed: int | torch.Generator | None = None,
    ) -> Tensor:
        r"""``inputs - counterfactuals``: zero outside the region.

        Args: as :meth:`generate`.

        Returns:
            Tensor: shaped like ``inputs``.

        Examples::

            >>> rcsb = RCSB(model, bridge=Bridge.load("bridge.pt"))
            >>> attr = rcsb.attribute(images, target=3, counterfactual_target=8, seed=0)
        """
        res = self.generate(
            inputs,
            target,
            counterfactual_target,
            additional_forward_args,
            internal_batch_size,
            show_progress,
            seed,
        )
        return inputs - res.counterfactuals
