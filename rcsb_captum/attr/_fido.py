r"""FIDO (Chang et al., ICLR 2019) and BBMP (Fong & Vedaldi, ICCV 2017) as Captum attributions.

Both learn a coarse mask that keeps (SSR: smallest sufficient region) or removes (SDR: smallest
destroying region) the class evidence when the rest is in-filled. Details follow FIDO's
``vbd_imagenet.py`` / ``arch/sensitivity/BDNet.py`` (``zzzace2000/FIDO-saliency``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from captum._utils.common import _format_additional_forward_args
from captum.attr import Attribution
from torch import Tensor
from tqdm.auto import tqdm

from .._utils import (
    CALL_STREAM,
    SAMPLING_STREAM,
    ClassesLike,
    SeedLike,
    base_seed,
    captum_attribute,
    check_choice,
    check_int,
    check_logits,
    check_number,
    derive_seed,
    flush_denormal,
    format_classes,
    image_generator,
    images_in_range,
    model_left_as_given,
    progress_disabled,
)
from ..infillers import BlurInfiller, Infiller, check_fill

__all__ = ["BBMP", "FIDO"]


@dataclass
class _Draws:
    r"""A call's random sources: one generator per image (its keep samples and, for in-fillers
    with ``per_row_generators``, its fills), seeded by ``(seed, global index)``, so that an
    image's mask does not depend on the batch; and one for the call, for other in-fillers."""

    images: list[torch.Generator]
    call: torch.Generator

    @classmethod
    def seeded(cls, seed: int, n: int, offset: int, device: torch.device) -> _Draws:
        images = [
            image_generator(derive_seed(seed, offset + i, SAMPLING_STREAM), device)
            for i in range(n)
        ]
        return cls(images, image_generator(derive_seed(seed, offset, CALL_STREAM), device))

    def rows(self, s: int) -> list[torch.Generator]:
        # the in-filler's rows are S blocks of the N images (x.repeat(s, 1, 1, 1))
        return self.images * s


def _log_odds(logits: Tensor, target: Tensor) -> Tensor:
    # FIDO's log_odds_loss: log p(c|x) - logsumexp_{c' != c} log p(c'|x), on log-softmax values
    logp = torch.log_softmax(logits.float(), 1)
    own = logp.gather(1, target[:, None])[:, 0]
    others = logp.scatter(1, target[:, None], float("-inf")).logsumexp(1)
    return own - others


def _tv(m: Tensor) -> Tensor:
    # anisotropic total variation of the N x 1 x h x w keep map, a mean per image
    dh = (m[..., 1:, :] - m[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (m[..., :, 1:] - m[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


class _MaskAttribution(Attribution):
    """The optimisation shared by FIDO and BBMP; subclasses draw the keep mask."""

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        infiller: Infiller | Callable[..., Tensor] | None,
        objective: str,
        mask_size: int | None,
        steps: int,
        lr: float,
        l1_coef: float,
        tv_coef: float,
        anneal_steps: int | None,
        input_range: str = "check",
    ) -> None:
        if not callable(forward_func):
            raise TypeError(f"forward_func must be callable, got {type(forward_func).__name__}")
        super().__init__(forward_func)
        if objective not in ("ssr", "sdr"):
            raise ValueError(f"objective must be 'ssr' or 'sdr', got {objective!r}")
        self.infiller = infiller if infiller is not None else BlurInfiller(sigma=10.0)
        if not callable(self.infiller):
            raise TypeError(f"infiller must be callable, got {type(infiller).__name__}")
        self.objective = objective
        self.mask_size = None if mask_size is None else check_int(mask_size, "mask_size", 1)
        self.steps = check_int(steps, "steps", 1)
        self.lr = check_number(lr, "lr", 0, low_open=True)
        self.l1_coef = check_number(l1_coef, "l1_coef", 0)
        self.tv_coef = check_number(tv_coef, "tv_coef", 0)
        self.anneal_steps = (
            self.steps // 10 if anneal_steps is None else check_int(anneal_steps, "anneal_steps", 0)
        )
        self.input_range = check_choice(input_range, "input_range", ("check", "clamp"))

    # subclasses: initial parameter, keep samples (S x N x 1 x h x w) and the keep probability
    def _init_param(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        raise NotImplementedError

    def _keep_samples(self, param: Tensor, draws: _Draws) -> Tensor:
        raise NotImplementedError

    def _keep_prob(self, param: Tensor) -> Tensor:
        raise NotImplementedError

    def _after_step(self, param: Tensor) -> None:
        pass

    def _infill(self, x: Tensor, keep: Tensor, draws: _Draws, raw: bool = False) -> Tensor:
        r"""The in-filler's output for ``x`` (``S N`` rows) with binary ``keep``; ``raw``: an
        :class:`Infiller`'s values at every pixel (:meth:`Infiller.fill`)."""
        fill = self.infiller
        if isinstance(fill, Infiller):
            gen = draws.rows(x.shape[0] // len(draws.images))
            g = gen if fill.per_row_generators else draws.call
            return check_fill(fill.fill(x, keep, g) if raw else fill(x, keep, g), x)
        return check_fill(fill(x, keep, draws.call), x)

    def _class_loss(
        self,
        param: Tensor,
        inputs: Tensor,
        target: Tensor,
        extra: tuple,
        draws: _Draws,
    ) -> Tensor:
        n, _, h, w = inputs.shape
        keep = self._keep_samples(param, draws)  # S x N x 1 x h x w
        s = keep.shape[0]
        keep_up = F.interpolate(
            keep.flatten(0, 1), size=(h, w), mode="bilinear", align_corners=False
        )
        x = inputs.repeat(s, 1, 1, 1)
        hard = (keep_up > 0.5).float()  # the in-filler sees round(z) and gets no gradient (FIDO)
        with torch.no_grad():
            # an Infiller's raw fill has values at every pixel (a blur of the whole image, as in
            # FIDO and Fong & Vedaldi), so soft mask values between 0.5 and 1 still get gradient
            fill = self._infill(x, hard, draws, raw=True)
        mixed = keep_up * x + (1 - keep_up) * fill
        logits = check_logits(self.forward_func(mixed, *extra), mixed.shape[0])
        score = _log_odds(logits, target.repeat(s))
        sign = -1.0 if self.objective == "ssr" else 1.0  # SSR keeps the class, SDR destroys it
        return sign * score.view(s, n).mean(0)

    @captum_attribute
    def attribute(
        self,
        inputs: Tensor,
        target: ClassesLike = None,
        additional_forward_args: Any = None,
        seed: SeedLike = None,
        show_progress: bool = False,
        index_offset: int = 0,
    ) -> Tensor:
        r"""Learn the mask of each input.

        Args:
            inputs (Tensor): ``N x C x H x W`` images in ``[0, 1]`` (a floating dtype; the work
                is done in float32).
            target (int, list, Tensor or ndarray, optional): Class explained; ``None``: the
                prediction.
            additional_forward_args (optional): Extra arguments of ``forward_func``.
            seed (int or torch.Generator, optional): Makes the result repeatable: each
                input draws from its own generator, seeded by ``seed`` and its index, so an
                input's mask is the same in any batch (up to float rounding of batched
                kernels) when the in-filler takes per-row generators (every in-filler of
                :mod:`rcsb_captum.infillers`; a plain callable gets one generator per call).
            show_progress (bool): Progress bar over the optimisation steps.
            index_offset (int): The global index of ``inputs[0]`` when a dataset is explained
                in batches: input ``i`` draws as input ``index_offset + i`` (0).

        Returns:
            Tensor: Shaped like ``inputs``: the probability that each pixel belongs to the found
            region (SSR: its keep probability; SDR: its drop probability), upsampled bilinearly
            from the mask grid and repeated over channels. High values mark the evidence in
            both cases, so the map can be passed to :class:`~rcsb_captum.AttributionRegion`.

        The model runs in eval mode and no gradient is written to its parameters (only the
        mask's gradient is taken).
        """
        x = images_in_range(inputs, self.input_range)
        n, _, h, w = x.shape
        size = self.mask_size or max(1, min(h, w) // 4)  # FIDO: 56 x 56 at 224 px
        extra = _format_additional_forward_args(additional_forward_args) or ()
        offset = check_int(index_offset, "index_offset", 0)
        draws = _Draws.seeded(base_seed(seed), n, offset, x.device)  # on the inputs' device
        with model_left_as_given(self.forward_func), flush_denormal(x.device.type == "cpu"):
            with torch.no_grad():
                logits = check_logits(self.forward_func(x, *extra), n)
            tgt = (
                logits.argmax(1)
                if target is None
                else format_classes(target, n, logits.shape[1], "target", x.device)
            )
            param = self._init_param((n, 1, size, size), x.device).requires_grad_(True)
            opt = torch.optim.Adam([param], lr=self.lr)
            for step in tqdm(
                range(self.steps),
                disable=progress_disabled(show_progress),
                desc=type(self).__name__,
            ):
                # the sparsity weight grows linearly from 0 over the first anneal_steps (FIDO's
                # rw_policy: 30 of 300 epochs)
                ramp = min(1.0, (step + 1) / self.anneal_steps) if self.anneal_steps > 0 else 1.0
                with torch.enable_grad():
                    p_keep = self._keep_prob(param)
                    region = p_keep if self.objective == "ssr" else 1 - p_keep
                    loss = (
                        self._class_loss(param, x, tgt, extra, draws)
                        + ramp * self.l1_coef * region.flatten(1).mean(1)
                        + self.tv_coef * _tv(p_keep)
                    ).sum()
                    # the mask's gradient only: loss.backward() would write .grad on the model
                    (param.grad,) = torch.autograd.grad(loss, [param])
                if not bool(torch.isfinite(param.grad).all()):
                    raise FloatingPointError(
                        f"{type(self).__name__}: the mask's gradient became non-finite at step "
                        f"{step + 1} (check forward_func and the in-filler)"
                    )
                opt.step()
                with torch.no_grad():
                    self._after_step(param)
        with torch.no_grad():
            p_keep = self._keep_prob(param)
            found = p_keep if self.objective == "ssr" else 1 - p_keep
            up = F.interpolate(found, size=(h, w), mode="bilinear", align_corners=False)
        return up.expand_as(inputs).to(inputs.dtype).clone()


class FIDO(_MaskAttribution):
    r"""FIDO: the smallest sufficient (``"ssr"``) or destroying (``"sdr"``) region when the rest
    of the image is in-filled (Chang, Creager, Goldenberg & Duvenaud, ICLR 2019).

    A keep probability per cell of a coarse grid; masks are drawn from a relaxed Bernoulli
    (Concrete, temperature 0.1), upsampled bilinearly; the dropped pixels are replaced by the
    in-filler (with no gradient through it); the class score is FIDO's log-odds; a sparsity
    penalty on the region (annealed in linearly) and total variation keep it small and smooth;
    Adam. ``estimator="reinforce"`` uses hard Bernoulli masks and the score-function gradient
    with a mean baseline, so ``forward_func`` needs no gradients (black-box models).

    Args:
        forward_func (callable): Classifier on images in ``[0, 1]`` returning logits.
        infiller (Infiller or callable, optional): ``(images, keep, generator) -> images``;
            default :class:`~rcsb_captum.infillers.BlurInfiller` (σ 10). Use
            :class:`~rcsb_captum.infillers.BridgeInfiller` for generative in-filling.
        objective (str): ``"ssr"`` or ``"sdr"``.
        mask_size (int, optional): Side of the mask grid (default: image side / 4, FIDO's
            56 at 224 px).
        steps (int): Adam steps (300, the paper's ImageNet epochs).
        lr (float): Adam learning rate (0.05).
        n_samples (int): Monte-Carlo masks per step (8).
        l1_coef (float): Weight of the region's mean keep (SSR) or drop (SDR) probability
            (3.0: the paper's 1e-3 per cell summed over a 56 x 56 grid, as a mean).
        tv_coef (float): Weight of the total variation of the keep map (0.1; a choice here).
        anneal_steps (int, optional): Steps over which ``l1_coef`` ramps up (default steps/10).
        temperature (float): Concrete temperature (0.1).
        estimator (str): ``"concrete"`` or ``"reinforce"``.
        init_keep (float): Initial keep probability (0.5, FIDO's ``ard_init`` 0).
        input_range (str): Inputs outside ``[0, 1]``: an error (``"check"``) or explained
            clamped into ``[0, 1]`` (``"clamp"``: for Captum's NoiseTunnel and perturbation
            metrics), as RCSB's option of the same name.

    Examples::

        >>> fido = FIDO(model, infiller=BridgeInfiller(), objective="ssr", steps=100)
        >>> saliency = fido.attribute(images, target=labels, seed=0)
        >>> rcsb = RCSB(model, region=AttributionRegion(fido, cell_size=4))
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        infiller: Infiller | Callable[..., Tensor] | None = None,
        objective: str = "ssr",
        mask_size: int | None = None,
        steps: int = 300,
        lr: float = 0.05,
        n_samples: int = 8,
        l1_coef: float = 3.0,
        tv_coef: float = 0.1,
        anneal_steps: int | None = None,
        temperature: float = 0.1,
        estimator: str = "concrete",
        init_keep: float = 0.5,
        *,
        input_range: str = "check",
    ) -> None:
        super().__init__(
            forward_func,
            infiller,
            objective,
            mask_size,
            steps,
            lr,
            l1_coef,
            tv_coef,
            anneal_steps,
            input_range,
        )
        if estimator not in ("concrete", "reinforce"):
            raise ValueError(f"estimator must be 'concrete' or 'reinforce', got {estimator!r}")
        self.n_samples = check_int(n_samples, "n_samples", 1)
        self.temperature = check_number(temperature, "temperature", 0, low_open=True)
        self.init_keep = check_number(init_keep, "init_keep", 0, 1, low_open=True)
        if self.init_keep == 1:
            raise ValueError("init_keep must be in (0, 1), got 1.0")
        if estimator == "reinforce" and n_samples < 2:
            raise ValueError("the REINFORCE estimator needs n_samples >= 2 for its baseline")
        self.estimator = estimator

    def _init_param(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        logit = torch.logit(torch.tensor(self.init_keep)).item()
        return torch.full(shape, logit, device=device)

    def _keep_prob(self, param: Tensor) -> Tensor:
        return torch.sigmoid(param)

    def _keep_samples(self, param: Tensor, draws: _Draws) -> Tensor:
        # S x N x 1 x h x w, image i's column from image i's generator
        cell = (self.n_samples, *param.shape[1:])
        u = torch.stack(
            [torch.rand(cell, generator=g, device=g.device) for g in draws.images], 1
        ).to(param.device)
        u = u.clamp(1e-6, 1 - 1e-6)
        if self.estimator == "reinforce":
            return (u < torch.sigmoid(param)).float()  # hard Bernoulli(keep)
        logistic = torch.log(u) - torch.log1p(-u)
        return torch.sigmoid((param + logistic) / self.temperature)  # Concrete(keep, τ)

    def _class_loss(self, param, inputs, target, extra, draws):
        if self.estimator == "concrete":
            return super()._class_loss(param, inputs, target, extra, draws)
        # REINFORCE: d/dθ E[f(z)] = E[(f(z) - b) d/dθ log p(z | θ)], b = the mean over samples
        n, _, h, w = inputs.shape
        keep = self._keep_samples(param, draws)
        s = keep.shape[0]
        with torch.no_grad():
            keep_up = F.interpolate(keep.flatten(0, 1), size=(h, w), mode="nearest")
            x = inputs.repeat(s, 1, 1, 1)
            mixed = self._infill(x, keep_up, draws)
            logits = check_logits(self.forward_func(mixed, *extra), mixed.shape[0])
            score = _log_odds(logits, target.repeat(s)).view(s, n)
            sign = -1.0 if self.objective == "ssr" else 1.0
            f = sign * score
            advantage = f - f.mean(0, keepdim=True)
        logp = (
            -F.binary_cross_entropy_with_logits(param.expand_as(keep), keep, reduction="none")
            .flatten(2)
            .sum(2)
        )  # S x N
        surrogate = (advantage * logp).mean(0)
        return surrogate - surrogate.detach() + f.mean(0)  # value f, gradient REINFORCE


class BBMP(_MaskAttribution):
    r"""Meaningful perturbations (Fong & Vedaldi, ICCV 2017) in FIDO's formulation (``BBMPNet``):
    a deterministic keep mask on a coarse grid, clamped to ``[0, 1]``, initialised to 1, one
    sample per step, the same log-odds objective, sparsity and total variation as :class:`FIDO`.

    Args: as :class:`FIDO` (no ``n_samples``, ``temperature``, ``estimator``); ``l1_coef``
    default 15.0 (the paper's BBMP example 5e-3 per cell of a 56 x 56 grid, as a mean).

    The mask starts at 1 (keep everything), so in-fillers that fill only the dropped pixels from
    the kept ones (:class:`~rcsb_captum.infillers.BridgeInfiller`) give it no gradient at the
    start; use BBMP with whole-image in-fillers (blur, mean, noise) as Fong & Vedaldi did, and
    :class:`FIDO` for generative in-filling.

    Examples::

        >>> saliency = BBMP(model, infiller=BlurInfiller(2.0), steps=100).attribute(x, target=y)
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        infiller: Infiller | Callable[..., Tensor] | None = None,
        objective: str = "ssr",
        mask_size: int | None = None,
        steps: int = 300,
        lr: float = 0.05,
        l1_coef: float = 15.0,
        tv_coef: float = 0.1,
        anneal_steps: int | None = None,
        *,
        input_range: str = "check",
    ) -> None:
        super().__init__(
            forward_func,
            infiller,
            objective,
            mask_size,
            steps,
            lr,
            l1_coef,
            tv_coef,
            anneal_steps,
            input_range,
        )

    def _init_param(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        return torch.ones(shape, device=device)

    def _keep_prob(self, param: Tensor) -> Tensor:
        return param

    def _keep_samples(self, param: Tensor, draws: _Draws) -> Tensor:
        return param[None]

    def _after_step(self, param: Tensor) -> None:
        param.clamp_(0, 1)
