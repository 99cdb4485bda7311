r"""RCSB as a Captum attribution method."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from captum._utils.common import _format_additional_forward_args
from captum.attr import Attribution
from torch import Tensor

from .._utils import (
    REGION_STREAM,
    SAMPLING_STREAM,
    ClassesLike,
    SeedLike,
    base_seed,
    check_choice,
    check_int,
    check_logits,
    check_number,
    deterministic_kernels,
    flush_denormal,
    format_classes,
    format_images,
    image_generator,
    image_seeds,
    model_left_as_given,
    seeded_global_rng,
)
from ..bridge.bridge import Bridge
from ..guidance import ADAM_MODES, CLASSIFIER_INPUTS, GUIDANCE_NORMS, ClassifierGuidance
from ..regions import CellSize, MaskRegion, RegionSource, binarize_masks, default_region
from ..sampler import GUIDANCE_GRADS, GUIDANCE_SCHEDULES, PRECISIONS, SAMPLERS, sample_rcsb

__all__ = ["RCSB", "CounterfactualResult"]


@dataclass
class CounterfactualResult:
    r"""What :meth:`RCSB.generate` returns (N inputs, S samples each).

    Attributes:
        counterfactuals (Tensor): ``N x C x H x W``, the best sample per input, in the inputs'
            dtype.
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


def _check_region_callable(region: Any) -> Callable[..., Tensor]:
    if not callable(region):
        raise TypeError(
            f"region must be callable (inputs, target) -> N x 1 x H x W masks, or a Tensor of "
            f"masks, got {type(region).__name__}"
        )
    return region


def _check_region_arguments(region: Callable[..., Tensor], args: tuple) -> None:
    # a plain region callable is called as region(inputs, target[, additional_forward_args]);
    # say so up front instead of letting a TypeError come from inside the call
    try:
        inspect.signature(region).bind(*args)
    except TypeError as e:
        wanted = (
            "(inputs, target, additional_forward_args)" if len(args) == 3 else "(inputs, target)"
        )
        raise TypeError(f"region must accept the positional arguments {wanted}: {e}") from e
    except ValueError:  # no signature to read (some builtins): find out when called
        pass


class RCSB(Attribution):
    r"""Region-constrained Counterfactual Schrödinger Bridge (Sobieski et al., ICLR 2025).

    The smallest realistic change inside a region that makes the classifier change its mind:
    an I2SB bridge inpaints the region, guided by the classifier's gradient, starting from a
    partly noised copy of the input, while every pixel outside the region stays exactly as it
    was. The attribution is ``inputs - counterfactuals`` (the counterfactual as baseline), zero
    outside the region.

    Args:
        forward_func (callable): Classifier on images in ``[0, 1]`` returning logits ``N x K``.
            Wrap a model that wants normalised input with :class:`~rcsb_captum.NormalizedModel`.
            An ``nn.Module`` runs in eval mode during a call and is left as given.
        bridge (Bridge, optional): The inpainting bridge. Default: :meth:`Bridge.default_for`
            the inputs (the file named by ``$RCSB_CAPTUM_BRIDGE``, else the shipped bridge for
            1 x 32 x 32 inputs).
        region (callable, optional): ``(inputs, target) -> N x 1 x H x W`` masks, e.g.
            :class:`AttributionRegion`, :class:`MaskRegion`, :class:`SegmentationRegion`.
            Default: Integrated Gradients in a NoiseTunnel (5 samples, σ 0.05), cells of
            ``cell_size``, ``area`` 0.3.
        guidance_scale (float): ``s`` (1.5), finite and ``>= 0`` (0: plain inpainting).
        start_step (int): Truncation ``τ·T`` (600).
        nfe (int): Sampling steps (100).
        n_samples (int): Counterfactuals drawn per input; the best is returned (2; the paper's
            tables use 1).
        classifier_input (str): ``"affine"`` ((x+1)/2, default) or ``"minmax"`` (the official
            code's mapping, see :func:`~rcsb_captum.guidance.to_unit_range`).
        cell_size (int or "auto", optional): Cell side of the default region (``"auto"``: 16
            px at 128 px and above, ``side // 8`` below). Only with the default region: with
            ``region`` given, set it on the region source.
        area (float, optional): Area of the default region (0.3); only with the default region.
        precision (str): ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``: autocast of the
            bridge's forward and backward. The sampler and guidance state stay in float32.
            On the demo ``"bf16"`` kept fp32's quality at 1.3-1.4x its speed (a CPU with
            AVX512-BF16; README, "Speed and realism levers").
        gradient_checkpointing (bool): Checkpoint the bridge's blocks during the guided
            backward pass (less memory, about one more forward pass of time).
        guidance_grad (str): ``"xt"`` (default, the official: the classifier's gradient
            through the bridge), ``"x0"`` (the classifier's gradient at x̂0 applied to the
            state, no backward pass through the bridge; about half the cost of a step) or
            ``"xt-x0"`` (``"xt"`` at high noise, ``"x0"`` once the noise level is below
            ``guidance_switch`` times the first step's, where the two gradients converge).
        sampler (str): ``"i2sb"`` (default, the official OT-ODE posterior steps) or ``"heun"``
            (second-order steps of the same ODE, one more bridge forward per step; see
            :func:`~rcsb_captum.sampler.sample_rcsb`). Same checkpoints, no retraining.
        guidance_norm (str): ``"l2"`` (default, the official: the first update's L2 norm is
            ``guidance_scale`` whatever the image size) or ``"rms"`` (its per-element size is
            what ``"l2"`` gives at the paper's 3 x 256 x 256, at any size; identical there).
            See :class:`~rcsb_captum.guidance.ClassifierGuidance`.
        guidance_schedule (str): ``"constant"`` (default, the official) or ``"sigma"`` (the
            scale fades with the bridge's noise level, leaving the last steps nearly
            unguided; see :func:`~rcsb_captum.sampler.guidance_weights`).
        guidance_smoothing (float): Standard deviation in pixels of a Gaussian blur of the
            classifier's gradient before Adam (0, default: none, the official); it trades
            COUT for smoother counterfactuals that a held-out classifier agrees with more
            often (README, "Speed and realism levers"). Scale it with the image size.
        guidance_interval (int): Take the classifier's gradient through the bridge at every
            ``guidance_interval``-th step only (1, default: every step, the official); the
            steps between run the bridge forward only and apply the last guidance update
            again (see :func:`~rcsb_captum.sampler.sample_rcsb`).
        guidance_switch (float): With ``guidance_grad="xt-x0"``, the noise level relative to
            the first step's below which the gradient is taken at x̂0 (0.5).
        guidance_shifts (int): Average the classifier's objective over x̂0 and its whole-pixel
            shifts (1, default: x̂0 only, the official; up to 9: the 4- and diagonal
            neighbours), in one batched call: the gradient of a translation-smoothed
            classifier (see :class:`~rcsb_captum.guidance.ClassifierGuidance`).
        guidance_adam (str): ``"pixel"`` (default, the official: Adam's second moment per
            element) or ``"image"`` (one per sample: the update keeps the gradient's spatial
            shape instead of becoming its sign).
        deterministic (bool): On CUDA, run deterministic cuDNN / PyTorch kernels during a call
            (the caller's settings are restored after), so that a seed repeats the result;
            ``False`` trades that for speed. No effect on CPU, which is deterministic.

    Reproducibility: with an int ``seed``, image ``i`` of a call draws its hole noise from a
    generator seeded with ``image_seeds(seed, n)[i]`` and a random region source draws from
    ``image_seeds(seed, n, stream=1)[i]`` (:mod:`rcsb_captum._utils`), so its result depends on
    ``(seed, i)`` only, not on the other images, ``internal_batch_size`` or the process. A
    ``torch.Generator`` seed gives the base seed by one draw. Torch's global generator is never
    touched.

    Examples::

        >>> from rcsb_captum import RCSB, AttributionRegion
        >>> from rcsb_captum.demo import load_demo_classifier, load_demo_samples
        >>> model = load_demo_classifier()
        >>> images, labels = load_demo_samples()
        >>> rcsb = RCSB(model)  # 1 x 32 x 32 inputs: the shipped bridge, cells of 4 px
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
        cell_size: CellSize | None = None,
        area: float | None = None,
        precision: str = "fp32",
        gradient_checkpointing: bool = False,
        deterministic: bool = True,
        guidance_grad: str = "xt",
        sampler: str = "i2sb",
        guidance_norm: str = "l2",
        guidance_schedule: str = "constant",
        guidance_smoothing: float = 0.0,
        guidance_interval: int = 1,
        guidance_switch: float = 0.5,
        guidance_shifts: int = 1,
        guidance_adam: str = "pixel",
    ) -> None:
        if not callable(forward_func):
            raise TypeError(f"forward_func must be callable, got {type(forward_func).__name__}")
        super().__init__(forward_func)
        if bridge is not None and not isinstance(bridge, Bridge):
            raise TypeError(f"bridge must be a rcsb_captum.Bridge, got {type(bridge).__name__}")
        check_choice(classifier_input, "classifier_input", CLASSIFIER_INPUTS)
        check_choice(precision, "precision", sorted(PRECISIONS))
        if region is not None and (cell_size is not None or area is not None):
            raise ValueError(
                "cell_size and area shape the default region only; with region= given, set "
                "them on the region source (e.g. AttributionRegion(method, cell_size, area))"
            )
        self.bridge = bridge
        self.region = (
            _check_region_callable(region)
            if region is not None
            else default_region(
                forward_func,
                "auto" if cell_size is None else cell_size,
                0.3 if area is None else area,
            )
        )
        self.guidance_scale = check_number(guidance_scale, "guidance_scale", 0)
        self.start_step = check_int(start_step, "start_step", 2)
        self.nfe = check_int(nfe, "nfe", 1)
        if self.nfe > self.start_step - 1:
            raise ValueError(
                f"nfe must be at most start_step - 1 = {self.start_step - 1}, got {self.nfe}"
            )
        self.n_samples = check_int(n_samples, "n_samples", 1)
        self.classifier_input = classifier_input
        self.precision = precision
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.deterministic = bool(deterministic)
        self.guidance_grad = check_choice(guidance_grad, "guidance_grad", GUIDANCE_GRADS)
        self.sampler = check_choice(sampler, "sampler", SAMPLERS)
        self.guidance_norm = check_choice(guidance_norm, "guidance_norm", GUIDANCE_NORMS)
        self.guidance_schedule = check_choice(
            guidance_schedule, "guidance_schedule", GUIDANCE_SCHEDULES
        )
        self.guidance_smoothing = check_number(guidance_smoothing, "guidance_smoothing", 0)
        self.guidance_interval = check_int(guidance_interval, "guidance_interval", 1)
        self.guidance_switch = check_number(guidance_switch, "guidance_switch", 0, 1)
        self.guidance_shifts = check_int(guidance_shifts, "guidance_shifts", 1)
        if self.guidance_shifts > 9:
            raise ValueError(f"guidance_shifts must be at most 9, got {guidance_shifts!r}")
        self.guidance_adam = check_choice(guidance_adam, "guidance_adam", ADAM_MODES)
        if self.guidance_switch != 0.5 and self.guidance_grad != "xt-x0":
            raise ValueError(
                "guidance_switch applies to guidance_grad='xt-x0' only, got guidance_grad="
                f"{self.guidance_grad!r}"
            )

    # ------------------------------------------------------------------ named steps

    def _bridge_for(self, inputs: Tensor) -> Bridge:
        if self.bridge is None:
            self.bridge = Bridge.default_for(inputs)
        self.bridge.check_inputs(inputs)
        if self.start_step > self.bridge.schedule.interval:
            raise ValueError(
                f"start_step must be at most the bridge's interval "
                f"({self.bridge.schedule.interval}), got {self.start_step}"
            )
        return self.bridge.to(inputs.device)

    def _logits(self, x: Tensor, extra: tuple, batch: int | None = None) -> Tensor:
        with torch.no_grad():
            step = batch or x.shape[0]
            out = [
                check_logits(self.forward_func(x[i : i + step], *extra), min(step, len(x) - i))
                for i in range(0, x.shape[0], step)
            ]
        return torch.cat(out)

    def _classes(
        self, logits: Tensor, target: ClassesLike, counterfactual_target: ClassesLike
    ) -> tuple[Tensor, Tensor | None]:
        n, k = logits.shape
        tgt = (
            logits.argmax(1)
            if target is None
            else format_classes(target, n, k, "target", logits.device)
        )
        cf = (
            None
            if counterfactual_target is None
            else format_classes(counterfactual_target, n, k, "counterfactual_target", tgt.device)
        )
        if cf is not None and (cf == tgt).any():
            bad = (cf == tgt).nonzero().flatten().tolist()
            raise ValueError(
                f"counterfactual_target must differ from target for every input; equal at {bad}"
            )
        return tgt, cf

    def _regions(
        self,
        inputs: Tensor,
        target: Tensor,
        additional_forward_args: Any,
        extra: tuple,
        region: Any,
        seed: int,
        offset: int,
    ) -> Tensor:
        source = self.region if region is None else self._call_region(region)
        n = inputs.shape[0]
        # region sources take the extra arguments only when there are any, so that plain
        # callables ``(inputs, target) -> masks`` work
        args = (additional_forward_args,) if extra else ()
        seeds = image_seeds(seed, n, offset, stream=REGION_STREAM)
        if isinstance(source, RegionSource):
            masks = source(inputs, target, additional_forward_args if extra else None, seeds=seeds)
        else:  # a user callable may draw from the global generator: seed it, then restore it
            _check_region_arguments(source, (inputs, target, *args))
            with seeded_global_rng(seeds[0], inputs.device):
                masks = source(inputs, target, *args)
        if masks is None:
            raise TypeError("region returned None; it must return N x 1 x H x W masks")
        masks = binarize_masks(masks, n, inputs.shape[-2:], "region").to(inputs.device)
        empty = (masks.flatten(1).sum(1) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"region is empty for inputs {empty}: nothing could change (masks are binarised "
                "at 0.5; 1 = may change)"
            )
        return masks

    @staticmethod
    def _call_region(region: Any) -> Callable[..., Tensor]:
        if isinstance(region, Tensor) or hasattr(region, "__array__"):
            return MaskRegion(torch.as_tensor(region))
        return _check_region_callable(region)

    def _sample(
        self,
        bridge: Bridge,
        x: Tensor,
        masks: Tensor,
        target: Tensor,
        cf: Tensor | None,
        extra: tuple,
        seed: int,
        offset: int,
        internal_batch_size: int | None,
        show_progress: bool,
    ) -> Tensor:
        n, s = x.shape[0], self.n_samples
        # image i's generator draws the hole noise of its s samples, one after the other
        gens = [
            image_generator(v, x.device)
            for v in image_seeds(seed, n, offset, stream=SAMPLING_STREAM)
        ]
        per_sample = [g for g in gens for _ in range(s)]
        rep = lambda t: t.repeat_interleave(s, 0)  # noqa: E731
        x_r, m_r, t_r = rep(x), rep(masks), rep(target)
        cf_r = None if cf is None else rep(cf)
        chunk = (internal_batch_size or n) * s
        outs = []
        for i in range(0, n * s, chunk):
            sl = slice(i, i + chunk)
            guidance = ClassifierGuidance(
                self.forward_func,
                target=t_r[sl],
                counterfactual_target=None if cf_r is None else cf_r[sl],
                scale=self.guidance_scale,
                classifier_input=self.classifier_input,
                normalization=self.guidance_norm,
                smoothing=self.guidance_smoothing,
                shifts=self.guidance_shifts,
                adam=self.guidance_adam,
                additional_forward_args=extra,
            )
            outs.append(
                sample_rcsb(
                    bridge,
                    x_r[sl],
                    m_r[sl],
                    guidance,
                    start_step=self.start_step,
                    nfe=self.nfe,
                    generator=per_sample[sl],
                    show_progress=show_progress,
                    precision=self.precision,
                    checkpointing=self.gradient_checkpointing,
                    guidance_grad=self.guidance_grad,
                    sampler=self.sampler,
                    guidance_schedule=self.guidance_schedule,
                    guidance_interval=self.guidance_interval,
                    guidance_switch=self.guidance_switch,
                )
            )
        return torch.cat(outs).view(n, s, *x.shape[1:])

    def _select(
        self,
        samples: Tensor,
        probs: Tensor,
        target: Tensor,
        cf: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        # successful first, then the highest probability of the counterfactual class (or the
        # lowest of the target); returns the chosen index, per-sample success and the scores
        n, s = samples.shape[:2]
        rep = lambda t: t.repeat_interleave(s, 0)  # noqa: E731
        pred = probs.argmax(1)
        ok = pred == rep(cf) if cf is not None else pred != rep(target)
        score = (
            probs.gather(1, rep(cf)[:, None])[:, 0]
            if cf is not None
            else 1 - probs.gather(1, rep(target)[:, None])[:, 0]
        )
        rank = (ok.float() * 2 + score).view(n, s)
        return rank.argmax(1), ok.view(n, s), score

    # ------------------------------------------------------------------ public

    def generate(
        self,
        inputs: Tensor,
        target: ClassesLike = None,
        counterfactual_target: ClassesLike = None,
        additional_forward_args: Any = None,
        internal_batch_size: int | None = None,
        show_progress: bool = False,
        seed: SeedLike = None,
        region: Tensor | Callable[..., Tensor] | None = None,
        index_offset: int = 0,
    ) -> CounterfactualResult:
        r"""Draw counterfactuals; see the class docstring and :class:`CounterfactualResult`.

        Args:
            inputs (Tensor): ``N x C x H x W`` images in ``[0, 1]``, a floating dtype (the
                work is done in float32; the results come back in the inputs' dtype).
            target (int, list, Tensor or ndarray, optional): Class explained, one for all or one
                per input (``None``: the model's prediction).
            counterfactual_target (optional): Class to reach, same forms (``None``: any class but
                ``target``).
            additional_forward_args (optional): Extra arguments of ``forward_func`` (and of the
                region source).
            internal_batch_size (int, optional): Inputs sampled together (all by default); it
                changes memory and speed, never the result.
            show_progress (bool): Progress bar over the sampling steps.
            seed (int or torch.Generator, optional): Fixes every draw of the call, regions
                included (see the class docstring). ``None``: a random result.
            region (Tensor or callable, optional): Masks (``N x 1 x H x W``, ``>= 0.5`` = may
                change) or a region source overriding the constructor's for this call.
            index_offset (int): The global index of ``inputs[0]`` when a dataset is explained
                in batches: image ``i`` of the call draws as image ``index_offset + i`` (0).

        Returns:
            CounterfactualResult: counterfactuals (best of ``n_samples`` per input), all
            samples, the region masks, success flags and class probabilities before and after.

        Raises:
            TypeError, ValueError: bad arguments, each naming the argument.
            FloatingPointError: the classifier or the bridge produced NaN during sampling.

        Examples::

            >>> res = RCSB(model, bridge).generate(x, target=340, counterfactual_target=339, seed=0)
            >>> res.counterfactuals[res.success]
        """
        inputs = format_images(inputs)
        if internal_batch_size is not None:
            internal_batch_size = check_int(internal_batch_size, "internal_batch_size", 1)
        base = base_seed(seed)
        offset = check_int(index_offset, "index_offset", 0)
        x = inputs.detach().float()  # no graph is built through the caller's inputs
        extra = _format_additional_forward_args(additional_forward_args) or ()
        with (
            model_left_as_given(self.forward_func),
            flush_denormal(x.device.type == "cpu"),
            deterministic_kernels(self.deterministic and x.device.type == "cuda"),
        ):
            bridge = self._bridge_for(x)
            logits = self._logits(x, extra)
            tgt, cf = self._classes(logits, target, counterfactual_target)
            masks = self._regions(x, tgt, additional_forward_args, extra, region, base, offset)
            samples = self._sample(
                bridge, x, masks, tgt, cf, extra, base, offset, internal_batch_size, show_progress
            )
            n, s = samples.shape[:2]
            probs = torch.softmax(
                self._logits(samples.flatten(0, 1), extra, internal_batch_size).float(), 1
            )
        best, ok, _ = self._select(samples, probs, tgt, cf)
        idx = torch.arange(n, device=best.device)
        samples = torch.where(
            masks[:, None].bool(), samples.to(inputs.dtype), inputs.detach()[:, None]
        )
        return CounterfactualResult(
            counterfactuals=samples[idx, best],
            samples=samples,
            regions=masks,
            success=ok[idx, best],
            sample_success=ok,
            target=tgt,
            counterfactual_target=cf,
            probs_before=torch.softmax(logits.float(), 1),
            probs_after=probs.view(n, s, -1)[idx, best],
        )

    def attribute(
        self,
        inputs: Tensor,
        target: ClassesLike = None,
        counterfactual_target: ClassesLike = None,
        additional_forward_args: Any = None,
        internal_batch_size: int | None = None,
        show_progress: bool = False,
        seed: SeedLike = None,
        region: Tensor | Callable[..., Tensor] | None = None,
        index_offset: int = 0,
    ) -> Tensor:
        r"""``inputs - counterfactuals``: the counterfactual as the baseline, zero outside the
        region.

        Args:
            inputs (Tensor): ``N x C x H x W`` images in ``[0, 1]``.
            target (int, list, Tensor or ndarray, optional): Class explained (``None``: the
                model's prediction).
            counterfactual_target (optional): Class to reach (``None``: any class but target).
            additional_forward_args (optional): Extra arguments of ``forward_func``.
            internal_batch_size (int, optional): Inputs sampled together (all by default).
            show_progress (bool): Progress bar over the sampling steps.
            seed (int or torch.Generator, optional): Fixes every draw, regions included.
            region (Tensor or callable, optional): Masks or a region source for this call.
            index_offset (int): Global index of ``inputs[0]`` (see :meth:`generate`).

        Returns:
            Tensor: shaped like ``inputs``, in their dtype.

        Examples::

            >>> rcsb = RCSB(model, bridge=Bridge.load("bridge.pt"))
            >>> attr = rcsb.attribute(images, target=3, counterfactual_target=8, seed=0)
        """
        res = self.generate(
            inputs,
            target=target,
            counterfactual_target=counterfactual_target,
            additional_forward_args=additional_forward_args,
            internal_batch_size=internal_batch_size,
            show_progress=show_progress,
            seed=seed,
            region=region,
            index_offset=index_offset,
        )
        return inputs - res.counterfactuals

    def has_convergence_delta(self) -> bool:
        return False
