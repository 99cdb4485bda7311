r"""Quantus integration: RCSB as a Quantus ``explain_func``, counterfactual metrics as Quantus
metrics, and perturbation functions that make Quantus' ROAD and IROF work on colour images.

Importable as ``rcsb_captum.integrations.quantus`` after ``pip install rcsb-captum[quantus]``.
Quantus scores attribution maps; it has no counterfactual metric. The metrics here read the
counterfactual back from an RCSB attribution (``x' = x - a``), so they run inside
``quantus.evaluate`` next to Quantus' own metrics on the same explanations.

Examples::

    >>> import quantus
    >>> from rcsb_captum.integrations.quantus import (
    ...     explain, CounterfactualValidity, CounterfactualTransition)
    >>> quantus.evaluate(
    ...     metrics={"validity": CounterfactualValidity(), "cout": CounterfactualTransition(),
    ...              "sparseness": quantus.Sparseness()},
    ...     xai_methods={"RCSB": explain}, model=model, x_batch=x, y_batch=y,
    ...     explain_func_kwargs={"counterfactual_target": 3, "nfe": 20, "seed": 0})
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rcsb_captum import RCSB
from rcsb_captum import metrics as M
from rcsb_captum.config import config_fields

try:
    import quantus
    from quantus.functions.perturb_func import (
        baseline_replacement_by_mask,
        noisy_linear_imputation,
    )
    from quantus.helpers.enums import DataType, EvaluationCategory, ModelType, ScoreDirection
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "rcsb_captum.integrations.quantus needs Quantus: pip install 'rcsb-captum[quantus]'"
    ) from e

__all__ = [
    "CounterfactualCloseness",
    "CounterfactualTransition",
    "CounterfactualValidity",
    "ProbabilityChange",
    "explain",
    "irof_perturb_func",
    "road_perturb_func",
]

# every RCSB option (the fields of RCSBConfig) is accepted; "preset" names a starting point
_RCSB_KEYS = tuple(f.name for f in config_fields()) + ("preset",)
# keys Quantus or its other explain funcs put into explain_func_kwargs: accepted and ignored
_QUANTUS_KEYS = (
    "method",
    "softmax",
    "xai_lib",
    "keepdims",
    "reduce_axes",
    "abs",
    "normalise",
    "pos_only",
    "neg_only",
    "interpolate",
    "interpolate_mode",
)


def _device(model: nn.Module, device: Any) -> torch.device:
    if device is not None:
        return torch.device(device)
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def explain(
    model: nn.Module,
    inputs: np.ndarray | Tensor,
    targets: np.ndarray | Tensor | int,
    counterfactual_target: Any = None,
    bridge: Any = None,
    region: Callable | None = None,
    region_from_model: Callable[[nn.Module], Callable] | None = None,
    output: str = "attribution",
    cell_size: Any = None,
    area: float | None = None,
    seed: int | None = 0,
    internal_batch_size: int | None = None,
    device: Any = None,
    channel_first: bool | None = None,
    **kwargs: Any,
) -> np.ndarray:
    r"""A Quantus ``explain_func`` that runs RCSB with the ``model`` Quantus passes (so that
    Quantus' randomisation metrics randomise the explained model, its region and its guidance).

    Args:
        model (nn.Module): The classifier (logits, images in ``[0, 1]``).
        inputs (ndarray or Tensor): ``N x C x H x W``.
        targets: Classes explained.
        counterfactual_target (optional): Classes to reach (``None``: any other class).
        bridge (Bridge, optional): Default as in :class:`~rcsb_captum.RCSB`.
        region (optional): A fixed region source ``(inputs, target) -> masks``; default RCSB's
            (Integrated Gradients in a NoiseTunnel on ``model``).
        region_from_model (optional): Instead of ``region``, ``model -> region source``, built on
            the model Quantus passes (e.g. ``lambda m: AttributionRegion(Saliency(m), 16)``),
            so that randomisation metrics see the region change with the model.
        output (str): ``"attribution"`` (``x - x'``, zero outside the region), ``"region"``
            (the binary region, ``N x 1 x H x W``) or ``"counterfactual"``.
        cell_size (int or "auto"), area (float): Of the default region (``"auto"``, 0.3); give
            them only without ``region`` / ``region_from_model``.
        seed (int, optional): Sampling seed (0: Quantus calls repeat).
        internal_batch_size (int, optional): As in RCSB.
        device (optional): Where to run (default: the model's device).
        channel_first (bool, optional): ``False`` for ``N x H x W x C`` arrays (the output is
            then channels-last too); Quantus passes it. ``None``: channels first.
        **kwargs: ``preset`` (a name of :data:`~rcsb_captum.config.PRESETS`) and any option
            of :class:`~rcsb_captum.config.RCSBConfig` (``nfe``, ``guidance_grad``, ...). Keys that Quantus adds for other explain funcs (``method``, ``softmax``,
            ``xai_lib``, ...) are ignored; any other key is a ``TypeError`` (a misspelling).

    Returns:
        ndarray: float32, shaped like ``inputs`` (``N x 1 x H x W`` for ``"region"``).
    """
    if output not in ("attribution", "region", "counterfactual"):
        raise ValueError(
            f"output must be 'attribution', 'region' or 'counterfactual', got {output!r}"
        )
    unknown = sorted(set(kwargs) - set(_RCSB_KEYS) - set(_QUANTUS_KEYS))
    if unknown:
        raise TypeError(
            f"explain got unexpected keyword arguments {unknown}; RCSB options are "
            f"{list(_RCSB_KEYS)}"
        )
    dev = _device(model, device)
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, Tensor) else inputs)
    if x.ndim != 4:
        raise ValueError(f"inputs must be N x C x H x W (channel first), got {tuple(x.shape)}")
    if channel_first is False:
        x = x.permute(0, 3, 1, 2)
    elif x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        raise ValueError(
            f"inputs of shape {tuple(x.shape)} look channels-last; pass N x C x H x W or "
            "channel_first=False"
        )
    if not x.is_floating_point():
        raise TypeError(f"inputs must be floating-point images in [0, 1], got {x.dtype}")
    x = x.float().to(dev).contiguous()
    y: Any = targets if isinstance(targets, (int, np.integer, Tensor)) else np.asarray(targets)
    if region is not None and region_from_model is not None:
        raise ValueError("give region or region_from_model, not both")
    if region_from_model is not None:
        region = region_from_model(model)
    default_kw = {}
    if cell_size is not None:
        default_kw["cell_size"] = cell_size
    if area is not None:
        default_kw["area"] = area
    options = {k: v for k, v in kwargs.items() if k in _RCSB_KEYS}
    rcsb = RCSB(model, bridge, region, config=options.pop("preset", None), **default_kw, **options)
    res = rcsb.generate(
        x,
        target=y,
        counterfactual_target=counterfactual_target,
        internal_batch_size=internal_batch_size,
        seed=seed,
    )
    out = {
        "attribution": x - res.counterfactuals,
        "region": res.regions,
        "counterfactual": res.counterfactuals,
    }[output]
    if channel_first is False:
        out = out.permute(0, 2, 3, 1)
    return out.detach().cpu().numpy().astype(np.float32)


# -- metrics ---------------------------------------------------------------------------------


class _CounterfactualMetric(quantus.Metric):
    """Reads ``x' = x - a`` from the attribution and scores each counterfactual."""

    data_applicability = {DataType.IMAGE}
    model_applicability = {ModelType.TORCH}
    evaluation_category = EvaluationCategory.FAITHFULNESS

    def __init__(
        self,
        counterfactual_target: Any = None,
        return_aggregate: bool = False,
        aggregate_func: Callable | None = None,
        disable_warnings: bool = True,
        display_progressbar: bool = False,
        **kwargs: Any,
    ) -> None:
        # RCSB attributions must reach the metric raw: no abs, no normalisation
        super().__init__(
            abs=False,
            normalise=False,
            normalise_func=None,
            normalise_func_kwargs=None,
            return_aggregate=return_aggregate,
            aggregate_func=aggregate_func or np.mean,
            default_plot_func=None,
            disable_warnings=disable_warnings,
            display_progressbar=display_progressbar,
            **kwargs,
        )
        self.counterfactual_target = counterfactual_target

    def __call__(
        self,
        model: nn.Module,
        x_batch: np.ndarray,
        y_batch: np.ndarray,
        a_batch: np.ndarray | None = None,
        s_batch: np.ndarray | None = None,
        channel_first: bool | None = True,
        explain_func: Callable | None = None,
        explain_func_kwargs: dict | None = None,
        model_predict_kwargs: dict | None = None,
        softmax: bool | None = False,
        device: str | None = None,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> list[float]:
        return super().__call__(
            model=model,
            x_batch=x_batch,
            y_batch=y_batch,
            a_batch=a_batch,
            s_batch=s_batch,
            custom_batch=None,
            channel_first=channel_first,
            explain_func=explain_func,
            explain_func_kwargs=explain_func_kwargs,
            model_predict_kwargs=model_predict_kwargs,
            softmax=softmax,
            device=device,
            batch_size=batch_size,
            **kwargs,
        )

    def custom_preprocess(self, x_batch: np.ndarray, **kwargs: Any) -> dict[str, Any]:
        # the counterfactual class: the metric's own, else the one the explain_func was given;
        # -1 means "any class but the target". Named *_batch so Quantus slices it per batch.
        cf = self.counterfactual_target
        if cf is None:
            cf = (self.explain_func_kwargs or {}).get("counterfactual_target")
        n = len(x_batch)
        cf = np.full(n, -1) if cf is None else np.broadcast_to(np.asarray(cf).reshape(-1), (n,))
        return {"cf_batch": np.array(cf, dtype=np.int64)}  # a writable copy

    def evaluate_batch(
        self,
        model: Any,
        x_batch: np.ndarray,
        y_batch: np.ndarray,
        a_batch: np.ndarray,
        cf_batch: np.ndarray,
        **kwargs: Any,
    ) -> list[float]:
        net = model.get_model() if hasattr(model, "get_model") else model
        dev = _device(net, None)
        x = torch.as_tensor(np.asarray(x_batch), dtype=torch.float32, device=dev)
        a = torch.as_tensor(np.asarray(a_batch), dtype=torch.float32, device=dev)
        x_cf = x - a.expand_as(x)
        y = torch.as_tensor(np.asarray(y_batch), device=dev).long()
        cf = torch.as_tensor(cf_batch, device=dev)
        scores = torch.empty(len(x), device=dev)
        # samples with and without a counterfactual class are scored by the two forms
        for with_cf in (True, False):
            sel = (cf >= 0) if with_cf else (cf < 0)
            if sel.any():
                scores[sel] = self.score(
                    net, x[sel], x_cf[sel], y[sel], cf[sel] if with_cf else None
                ).float()
        return scores.cpu().tolist()

    def score(
        self, model: nn.Module, x: Tensor, x_cf: Tensor, y: Tensor, cf: Tensor | None
    ) -> Tensor:
        raise NotImplementedError


class CounterfactualValidity(_CounterfactualMetric):
    r"""1 when the classifier gives the counterfactual ``x - a`` the counterfactual class (or, with
    none given, any class but the target), else 0; the mean is the flip rate (ACE / RCSB FR)."""

    name = "Counterfactual Validity"
    score_direction = ScoreDirection.HIGHER

    def score(self, model, x, x_cf, y, cf):
        return M.flipped(model, x_cf, y, cf)


class CounterfactualTransition(_CounterfactualMetric):
    r"""COUT (Khorram & Fuxin, CVPR 2022), see :func:`rcsb_captum.metrics.cout`; in ``[-1, 1]``."""

    name = "COUT"
    score_direction = ScoreDirection.HIGHER

    def __init__(self, steps: int = 50, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.steps = steps

    def score(self, model, x, x_cf, y, cf):
        return M.cout(model, x, x_cf, y, cf, steps=self.steps)


class ProbabilityChange(_CounterfactualMetric):
    r"""The change towards validity, see :func:`rcsb_captum.metrics.probability_change`."""

    name = "Probability Change"
    score_direction = ScoreDirection.HIGHER

    def score(self, model, x, x_cf, y, cf):
        return M.probability_change(model, x, x_cf, y, cf)


class CounterfactualCloseness(_CounterfactualMetric):
    r"""Distance between input and counterfactual, ``norm`` ``"l1"`` (mean absolute change),
    ``"l2"`` or ``"l0"`` (fraction of pixels changed); see :func:`rcsb_captum.metrics.closeness`."""

    name = "Counterfactual Closeness"
    score_direction = ScoreDirection.LOWER

    def __init__(self, norm: str = "l1", **kwargs: Any) -> None:
        if norm not in ("l1", "l2", "l0"):
            raise ValueError(f"norm must be 'l1', 'l2' or 'l0', got {norm!r}")
        super().__init__(**kwargs)
        self.norm = norm

    def score(self, model, x, x_cf, y, cf):
        return M.closeness(x, x_cf)[self.norm]


# -- perturbation functions for ROAD and IROF on colour images -------------------------------


def road_perturb_func(
    arr: np.ndarray, indices: np.ndarray, noise: float = 0.01, **kwargs: Any
) -> np.ndarray:
    r"""ROAD's noisy linear imputation for ``C x H x W`` images of any ``C``.

    ROAD ranks the ``C·H·W`` values of the (channel-broadcast) attribution and passes flat
    indices into ``C x H x W``; Quantus' imputation indexes ``H·W`` pixels, so indices past the
    first channel fail (Quantus 0.6). Here they are folded onto their pixel, and the whole pixel
    (all channels) is imputed. Pass as ``quantus.ROAD(perturb_func=road_perturb_func)``.
    """
    hw = int(np.prod(arr.shape[1:]))
    pixels = np.unique(np.asarray(indices).reshape(-1) % hw)
    return noisy_linear_imputation(arr=arr, indices=pixels, noise=noise, **kwargs)  # type: ignore[arg-type]


def irof_perturb_func(
    arr: np.ndarray, mask: np.ndarray, perturb_baseline: str = "mean", **kwargs: Any
) -> np.ndarray:
    r"""IROF's baseline replacement with a ``N x 1 x H x W`` segment mask broadcast over the
    channels (Quantus 0.6 asserts equal shapes and fails for ``C > 1``). Pass as
    ``quantus.IROF(perturb_func=irof_perturb_func)``."""
    mask = np.broadcast_to(mask, arr.shape)
    return baseline_replacement_by_mask(
        arr=arr, mask=mask, perturb_baseline=perturb_baseline, **kwargs
    )
