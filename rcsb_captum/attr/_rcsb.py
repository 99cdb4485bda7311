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
    ClassesLike,
    SeedLike,
    base_seed,
    captum_attribute,
    check_int,
    deterministic_kernels,
    flush_denormal,
    format_classes,
    format_images,
    image_seeds,
    images_in_range,
    model_left_as_given,
    seeded_global_rng,
)
from ..bridge.bridge import Bridge
from ..config import RCSBConfig, config_fields
from ..regions import (
    AttributionRegion,
    MaskRegion,
    RegionSource,
    binarize_masks,
    default_region,
)
from . import _drawing as drawing

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
        stability (Tensor or None): ``N``, with an adaptive region (``area_steps``): the
            classifier's mean probability of the counterfactual class over one-pixel shifts
            and blurs of the counterfactual (:func:`~rcsb_captum.stability.transform_stability`);
            ``None`` otherwise.
        stage (Tensor): ``N`` long, which stage gave each input's result: 0 the call's own
            setting, ``k`` the ``k``-th preset of ``escalation`` (zeros without escalation).
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
    stability: Tensor | None = None
    stage: Tensor | None = None


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


_CONFIG_FIELDS = frozenset(f.name for f in config_fields())
_REGION_FIELDS = frozenset({"cell_size", "area", "ig_steps"})


def _check_region_only_options(overrides: dict[str, Any]) -> None:
    given = sorted(_REGION_FIELDS & set(overrides))
    if given:
        raise ValueError(
            f"cell_size, area and ig_steps shape the default region only (got {', '.join(given)}); "
            "with region= given, set "
            "them on the region source (e.g. AttributionRegion(method, cell_size, area))"
        )


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
        config (RCSBConfig or str, optional): Every algorithm option in one frozen object
            (:class:`~rcsb_captum.config.RCSBConfig`), or a preset's name (``"paper"``, the
            default; ``"near_paper_4x"``, ``"fast"``, ``"realistic"``).
        **overrides: Options replacing the config's, by field name: ``guidance_scale`` (1.5),
            ``start_step`` (600), ``nfe`` (100), ``n_samples`` (2), ``guidance_grad``,
            ``sampler``, ``precision``, ... (the settings page of the docs lists every one
            with its meaning, generated from the config). ``cell_size``, ``area`` and
            ``ig_steps`` shape the default region and are refused with ``region`` given.
            ``generate`` and ``attribute`` take the same overrides for one call.

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
        >>> fast = RCSB(model, config="near_paper_4x", nfe=60)  # a preset with an override
        >>> attr = fast.attribute(images[:4], target=labels[:4], seed=0, guidance_scale=2.0)
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        bridge: Bridge | None = None,
        region: Callable[..., Tensor] | None = None,
        *,
        config: RCSBConfig | str | None = None,
        **overrides: Any,
    ) -> None:
        if not callable(forward_func):
            raise TypeError(f"forward_func must be callable, got {type(forward_func).__name__}")
        super().__init__(forward_func)
        if bridge is not None and not isinstance(bridge, Bridge):
            raise TypeError(f"bridge must be a rcsb_captum.Bridge, got {type(bridge).__name__}")
        if isinstance(config, str):
            config = RCSBConfig.preset(config)
        elif config is not None and not isinstance(config, RCSBConfig):
            raise TypeError(
                f"config must be an RCSBConfig or a preset name, got {type(config).__name__}"
            )
        # None for a region option means its default, as in RCSBConfig.replace
        overrides = {k: v for k, v in overrides.items() if not (k in _REGION_FIELDS and v is None)}
        self.config = (config or RCSBConfig()).replace(**overrides)
        self._own_region = region is None
        if region is not None:
            _check_region_only_options(overrides)
        self.bridge = bridge
        # a Tensor (or array) of masks is a fixed region, as region= of generate takes it
        self.region = (
            self._call_region(region) if region is not None else self._default_region(self.config)
        )

    def _default_region(self, cfg: RCSBConfig) -> Callable[..., Tensor]:
        return default_region(self.forward_func, cfg.cell_size, cfg.area, n_steps=cfg.ig_steps)

    def __getattr__(self, name: str) -> Any:
        # the options read as attributes (rcsb.nfe, rcsb.guidance_scale, ...)
        config = self.__dict__.get("config")
        if config is not None and name in _CONFIG_FIELDS:
            return getattr(config, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CONFIG_FIELDS:  # rcsb.nfe = 50: a checked new configuration
            self.config = self.config.replace(**{name: value})
            if self.__dict__.get("_own_region") and name in _REGION_FIELDS:
                self.region = self._default_region(self.config)
            return
        super().__setattr__(name, value)

    # ------------------------------------------------------------------ named steps

    def _bridge_for(self, inputs: Tensor, cfg: RCSBConfig) -> Bridge:
        if self.bridge is None:
            self.bridge = Bridge.default_for(inputs)
        self.bridge.check_inputs(inputs)
        if cfg.start_step > self.bridge.schedule.interval:
            raise ValueError(
                f"start_step must be at most the bridge's interval "
                f"({self.bridge.schedule.interval}), got {cfg.start_step}"
            )
        return self.bridge.to(inputs.device)

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

    @staticmethod
    def _check_masks(masks: Any, inputs: Tensor) -> Tensor:
        if masks is None:
            raise TypeError("region returned None; it must return N x 1 x H x W masks")
        n = inputs.shape[0]
        masks = binarize_masks(masks, n, inputs.shape[-2:], "region").to(inputs.device)
        empty = (masks.flatten(1).sum(1) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"region is empty for inputs {empty}: nothing could change (masks are binarised "
                "at 0.5; 1 = may change)"
            )
        return masks

    def _regions(
        self,
        cfg: RCSBConfig,
        inputs: Tensor,
        target: Tensor,
        additional_forward_args: Any,
        extra: tuple,
        region: Any,
        seed: int,
        offset: int,
    ) -> tuple[Tensor, Callable[[Tensor, float], Tensor] | None]:
        r"""The masks; with ``cfg.area_steps`` also ``grow(rows, area)``: those inputs' regions
        at a larger area of the same attribution ranking (computed once, here)."""
        source = self.region if region is None else self._call_region(region)
        if region is None and self._own_region and cfg != self.config:
            mine = {k: getattr(self.config, k) for k in _REGION_FIELDS}
            if mine != {k: getattr(cfg, k) for k in _REGION_FIELDS}:  # per-call region options
                source = self._default_region(cfg)
        n = inputs.shape[0]
        # region sources take the extra arguments only when there are any, so that plain
        # callables ``(inputs, target) -> masks`` work
        args = (additional_forward_args,) if extra else ()
        seeds = image_seeds(seed, n, offset, stream=REGION_STREAM)
        if cfg.area_steps:
            if not isinstance(source, AttributionRegion):
                raise ValueError(
                    "area_steps grows a region along its attribution ranking: it needs the "
                    f"default region or an AttributionRegion, got {type(source).__name__} "
                    "(set area_steps=(), on the command line --area-steps none)"
                )
            if cfg.area_steps[0] <= source.area:
                raise ValueError(
                    f"area_steps must all be larger than the region's area {source.area}, "
                    f"got {cfg.area_steps}"
                )
            ranked, size = source, inputs.shape[-2:]  # a name the closure sees narrowed
            maps = ranked.attributions(
                inputs, target, additional_forward_args if extra else None, seeds=seeds
            )

            def grow(rows: Tensor, area: float) -> Tensor:
                return self._check_masks(ranked.masks_from(maps[rows], size, area), inputs[rows])

            return self._check_masks(ranked.masks_from(maps, size), inputs), grow
        if isinstance(source, RegionSource):
            masks = source(inputs, target, additional_forward_args if extra else None, seeds=seeds)
        else:  # a user callable may draw from the global generator: seed it, then restore it
            _check_region_arguments(source, (inputs, target, *args))
            with seeded_global_rng(seeds[0], inputs.device):
                masks = source(inputs, target, *args)
        return self._check_masks(masks, inputs), None

    @staticmethod
    def _call_region(region: Any) -> Callable[..., Tensor]:
        if isinstance(region, Tensor) or hasattr(region, "__array__"):
            return MaskRegion(torch.as_tensor(region))
        return _check_region_callable(region)

    # ------------------------------------------------------------------ public

    def regions(
        self,
        inputs: Tensor,
        target: ClassesLike = None,
        additional_forward_args: Any = None,
        seed: SeedLike = None,
        index_offset: int = 0,
        **overrides: Any,
    ) -> Tensor:
        r"""The region masks a call of :meth:`generate` with the same arguments uses: with an
        int ``seed``, exactly those (the default region's NoiseTunnel and ``RandomRegion`` draw
        from the per-image seeds), so a region can be inspected before sampling.

        Returns:
            Tensor: ``N x 1 x H x W`` binary masks (1 = may change).

        Examples::

            >>> masks = rcsb.regions(x, target=y, seed=0)
            >>> res = rcsb.generate(x, target=y, seed=0)
            >>> torch.equal(masks, res.regions)
            True
        """
        cfg = self.config.replace(**overrides)
        if not self._own_region:
            _check_region_only_options(overrides)
        x = images_in_range(inputs, cfg.input_range)
        extra = _format_additional_forward_args(additional_forward_args) or ()
        offset = check_int(index_offset, "index_offset", 0)
        with model_left_as_given(self.forward_func), flush_denormal(x.device.type == "cpu"):
            logits = drawing.logits(self.forward_func, x, extra)
            tgt, _ = self._classes(logits, target, None)
            masks, _ = self._regions(
                cfg, x, tgt, additional_forward_args, extra, None, base_seed(seed), offset
            )
            return masks

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
        **overrides: Any,
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
            **overrides: Options of :class:`~rcsb_captum.config.RCSBConfig` for this call only
                (``nfe=50``, ``guidance_scale=2.0``, ...), as Captum keeps algorithm knobs on
                ``attribute``.

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
        cfg = self.config.replace(**overrides)
        if region is not None or not self._own_region:
            _check_region_only_options(overrides)
        x = images_in_range(
            inputs, cfg.input_range
        )  # no graph is built through the caller's inputs
        inputs = format_images(inputs, check_range=False)
        if internal_batch_size is not None:
            internal_batch_size = check_int(internal_batch_size, "internal_batch_size", 1)
        base = base_seed(seed)
        offset = check_int(index_offset, "index_offset", 0)
        extra = _format_additional_forward_args(additional_forward_args) or ()
        with (
            model_left_as_given(self.forward_func),
            flush_denormal(x.device.type == "cpu"),
            deterministic_kernels(cfg.deterministic and x.device.type == "cuda"),
        ):
            bridge = self._bridge_for(x, cfg)
            logits = drawing.logits(self.forward_func, x, extra)
            tgt, cf = self._classes(logits, target, counterfactual_target)
            masks, grown_masks = self._regions(
                cfg, x, tgt, additional_forward_args, extra, region, base, offset
            )
            call = drawing.Call(
                forward_func=self.forward_func,
                bridge=bridge,
                extra=extra,
                seed=base,
                batch=internal_batch_size,
                show_progress=show_progress,
                target=tgt,
                counterfactual=cf,
                offset=offset,
            )
            draws = drawing.draw(call, cfg, x, masks)
            stability = None
            if grown_masks is not None:
                stability = drawing.grow(call, cfg, grown_masks, x, masks, draws)
            stage = drawing.escalate(call, cfg, x, masks, draws)
        n = x.shape[0]
        idx = torch.arange(n, device=draws.best.device)
        samples = torch.where(
            masks[:, None].bool(), draws.samples.to(inputs.dtype), inputs.detach()[:, None]
        )
        return CounterfactualResult(
            counterfactuals=samples[idx, draws.best],
            samples=samples,
            regions=masks,
            success=draws.ok[idx, draws.best],
            sample_success=draws.ok,
            target=tgt,
            counterfactual_target=cf,
            probs_before=torch.softmax(logits.float(), 1),
            probs_after=draws.probs[idx, draws.best],
            stability=stability,
            stage=stage,
        )

    @captum_attribute
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
        **overrides: Any,
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
            **overrides: :class:`~rcsb_captum.config.RCSBConfig` options for this call only.

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
            **overrides,
        )
        return inputs - res.counterfactuals

    def has_convergence_delta(self) -> bool:
        return False
