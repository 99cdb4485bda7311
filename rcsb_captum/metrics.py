r"""Counterfactual metrics: validity, COUT, closeness, FID / sFID, S3, FVA / FS, MNAC, LPIPS.

All run offline on tensors. Metrics that need a pretrained network (FID's feature extractor,
SimSiam, a face encoder, an attribute oracle, an LPIPS network) take it from the caller; nothing
is downloaded. Definitions follow ACE's evaluation code (Jeanneret et al., CVPR 2023,
``guillaumejs2403/ACE``), which RCSB's tables use; each function names its source.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ._utils import check_int, check_logits, format_classes, format_images, model_left_as_given

__all__ = [
    "closeness",
    "counterfactual_report",
    "cout",
    "face_similarity",
    "fid",
    "flip_rate",
    "flipped",
    "frechet_distance",
    "fva",
    "lpips",
    "mnac",
    "probability_change",
    "s3",
    "sfid",
]


def _check_pair(inputs: Tensor, counterfactuals: Tensor, check_range: bool = True) -> None:
    format_images(inputs, "inputs", check_range=check_range)
    format_images(counterfactuals, "counterfactuals", check_range=check_range)
    if inputs.shape != counterfactuals.shape:
        raise ValueError(
            f"inputs {tuple(inputs.shape)} and counterfactuals {tuple(counterfactuals.shape)} "
            "must have the same shape"
        )


@torch.no_grad()
def _apply(func: Callable[[Tensor], Tensor], x: Tensor, batch_size: int) -> Tensor:
    batch_size = check_int(batch_size, "batch_size", 1)
    with model_left_as_given(func):
        return torch.cat([func(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def _logits(forward_func: Callable, x: Tensor, batch_size: int) -> Tensor:
    return check_logits(_apply(forward_func, x, batch_size), x.shape[0])


def _probs(forward_func: Callable, x: Tensor, batch_size: int) -> Tensor:
    return torch.softmax(_logits(forward_func, x, batch_size).float(), 1)


# -- validity ------------------------------------------------------------------------------


def flipped(
    forward_func: Callable[[Tensor], Tensor],
    counterfactuals: Tensor,
    target: Any,
    counterfactual_target: Any = None,
    batch_size: int = 256,
) -> Tensor:
    r"""Per sample: the classifier's prediction on the counterfactual is ``counterfactual_target``
    (or, when it is ``None``, is not ``target``). ``N`` bools.

    Args:
        forward_func (callable): Classifier returning logits.
        counterfactuals (Tensor): ``N x C x H x W``.
        target (int, list or Tensor): The original classes.
        counterfactual_target (optional): The classes to reach.
        batch_size (int): Images per forward pass.
    """
    format_images(counterfactuals, "counterfactuals")
    logits = _logits(forward_func, counterfactuals, batch_size)
    pred, k = logits.argmax(1), logits.shape[1]
    n, dev = counterfactuals.shape[0], pred.device
    if counterfactual_target is not None:
        return pred == format_classes(counterfactual_target, n, k, "counterfactual_target", dev)
    return pred != format_classes(target, n, k, "target", dev)


def flip_rate(
    forward_func: Callable[[Tensor], Tensor],
    counterfactuals: Tensor,
    target: Any,
    counterfactual_target: Any = None,
    batch_size: int = 256,
) -> float:
    r"""Flip rate (FR; ACE / RCSB tables): the fraction of :func:`flipped` counterfactuals.

    Examples::

        >>> flip_rate(model, res.counterfactuals, labels, counterfactual_target=cf)
        0.97
    """
    return (
        flipped(forward_func, counterfactuals, target, counterfactual_target, batch_size)
        .float()
        .mean()
        .item()
    )


def probability_change(
    forward_func: Callable[[Tensor], Tensor],
    inputs: Tensor,
    counterfactuals: Tensor,
    target: Any,
    counterfactual_target: Any = None,
    batch_size: int = 256,
) -> Tensor:
    r"""Per sample, the change towards validity: ``p(cf class | x') - p(cf class | x)`` when a
    counterfactual class is given, else ``p(target | x) - p(target | x')``. In ``[-1, 1]``.
    """
    _check_pair(inputs, counterfactuals)
    before = _probs(forward_func, inputs, batch_size)
    after = _probs(forward_func, counterfactuals, batch_size)
    n, dev, k = inputs.shape[0], before.device, before.shape[1]
    if counterfactual_target is not None:
        c = format_classes(counterfactual_target, n, k, "counterfactual_target", dev)[:, None]
        return (after.gather(1, c) - before.gather(1, c))[:, 0]
    t = format_classes(target, n, k, "target", dev)[:, None]
    return (before.gather(1, t) - after.gather(1, t))[:, 0]


# -- COUT ----------------------------------------------------------------------------------


def cout(
    forward_func: Callable[[Tensor], Tensor],
    inputs: Tensor,
    counterfactuals: Tensor,
    target: Any,
    counterfactual_target: Any = None,
    steps: int = 50,
    batch_size: int = 256,
) -> Tensor:
    r"""COUT, counterfactual transition (Khorram & Fuxin, CVPR 2022; ACE's
    ``eval_utils/cout_metrics.py``): rank pixels by ``Σ_c |x' - x|``, paste the counterfactual's
    top pixels into ``x`` in ``steps`` equal increments, and record ``p(cf class)`` and
    ``p(target)`` along the way. ``COUT = AUC(p_cf) - AUC(p_target)`` (trapezoid on ``[0, 1]``),
    in ``[-1, 1]``; higher is better.

    The pixels are pasted with a hard mask (the reference upsamples a mask with bilinear
    interpolation; at full resolution both are the same set of pixels).

    Args:
        forward_func (callable): The explained classifier (logits).
        inputs (Tensor), counterfactuals (Tensor): ``N x C x H x W``.
        target: The original classes.
        counterfactual_target (optional): Classes to reach; ``None``: the class the classifier
            gives the counterfactual.
        steps (int): Increments (50 as in ACE).
        batch_size (int): Images per forward pass.

    Returns:
        Tensor: ``N`` scores.
    """
    _check_pair(inputs, counterfactuals)
    steps = check_int(steps, "steps", 1)
    n, _, h, w = inputs.shape
    dev = inputs.device
    logits = _logits(forward_func, counterfactuals, batch_size)
    k = logits.shape[1]
    t = format_classes(target, n, k, "target", dev)
    if counterfactual_target is None:
        c = logits.argmax(1).to(dev)
    else:
        c = format_classes(counterfactual_target, n, k, "counterfactual_target", dev)
    diff = (counterfactuals - inputs).abs().sum(1).flatten(1)  # N x HW
    order = diff.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(h * w, device=dev).expand(n, -1)
    )  # rank of each pixel
    p_c, p_t = [], []
    for k in range(steps + 1):
        count = round(k * h * w / steps)
        mask = (rank < count).view(n, 1, h, w)
        probs = _probs(forward_func, torch.where(mask, counterfactuals, inputs), batch_size)
        p_c.append(probs.gather(1, c[:, None].to(probs.device))[:, 0])
        p_t.append(probs.gather(1, t[:, None].to(probs.device))[:, 0])
    dx = 1.0 / steps
    auc = lambda p: torch.trapezoid(torch.stack(p, 1), dx=dx, dim=1)  # noqa: E731
    return auc(p_c) - auc(p_t)


# -- closeness -----------------------------------------------------------------------------


def closeness(
    inputs: Tensor, counterfactuals: Tensor, regions: Tensor | None = None, tol: float = 0.0
) -> dict[str, Tensor]:
    r"""Per-sample distances between inputs and counterfactuals (the closeness of ACE / MaskDiME).

    ``l1``: mean ``|x' - x|`` over all values (``‖x' - x‖₁ / CHW``); ``l2``: ``‖x' - x‖₂``;
    ``l0``: fraction of pixels where some channel changed by more than ``tol``. With ``regions``
    (``N x 1 x H x W``, 1 = may change) the same three inside (``*_inside``, averaged over the
    region) and outside the region (``*_outside``), and ``max_outside``, the largest absolute
    change outside the region (exactly 0 for RCSB).

    Returns:
        dict of str to Tensor: each ``N`` values.
    """
    _check_pair(inputs, counterfactuals)
    d = (counterfactuals - inputs).float()
    changed = (d.abs() > tol).any(1, keepdim=True).float()  # N x 1 x H x W
    out = {
        "l1": d.abs().flatten(1).mean(1),
        "l2": d.flatten(1).norm(dim=1),
        "l0": changed.flatten(1).mean(1),
    }
    if regions is None:
        return out
    if regions.shape != (inputs.shape[0], 1, *inputs.shape[-2:]):
        raise ValueError(
            f"regions must be N x 1 x H x W = {(inputs.shape[0], 1, *inputs.shape[-2:])}, got "
            f"{tuple(regions.shape)}"
        )
    for name, m in (("inside", regions != 0), ("outside", regions == 0)):
        m = m.to(d.device)
        mc = m.expand_as(d).float()
        pixels = m.float().flatten(1).sum(1)
        values = mc.flatten(1).sum(1)
        out[f"l1_{name}"] = (d.abs() * mc).flatten(1).sum(1) / values.clamp_min(1)
        out[f"l2_{name}"] = (d * mc).flatten(1).norm(dim=1)
        out[f"l0_{name}"] = (changed * m).flatten(1).sum(1) / pixels.clamp_min(1)
    out["max_outside"] = (d.abs() * (regions == 0).to(d.device)).flatten(1).amax(1)
    return out


# -- FID / sFID ----------------------------------------------------------------------------


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    r"""Fréchet distance between Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``:
    ``|mu1 - mu2|² + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})``, in float64. The trace of the
    matrix square root is the sum of the square roots of the eigenvalues of ``sigma1 sigma2``
    (real and non-negative for covariance matrices), as in torchmetrics' FID."""
    mu1, mu2, s1, s2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    eig = torch.linalg.eigvals(s1 @ s2)
    tr_sqrt = eig.sqrt().real.sum()
    return float((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * tr_sqrt)


def _stats(features: Tensor) -> tuple[Tensor, Tensor]:
    f = features.double().flatten(1)
    if f.shape[0] < 2:
        raise ValueError("FID needs at least 2 images per set")
    return f.mean(0), torch.cov(f.T)


def _features(extractor: Callable[[Tensor], Tensor], x: Tensor, batch_size: int) -> Tensor:
    if extractor is None:
        raise ValueError(
            "feature_extractor is required (an nn.Module or callable images -> N x D features); "
            "no weights are downloaded. The demo uses FashionCNN.features"
        )
    return _apply(extractor, x, batch_size).flatten(1)


def fid(
    real: Tensor,
    fake: Tensor,
    feature_extractor: Callable[[Tensor], Tensor],
    batch_size: int = 256,
) -> float:
    r"""FID (Heusel et al., 2017) between two image sets, in the feature space of ANY extractor
    (the ACE protocol uses Inception-v3 pool3 features; pass yours, nothing is downloaded).

    Args:
        real (Tensor): ``N x C x H x W`` real images (ACE: all originals).
        fake (Tensor): ``M x C x H x W`` counterfactuals (ACE: the successful ones).
        feature_extractor (nn.Module or callable): ``images -> N x D``.
        batch_size (int): Images per extractor call.

    Examples::

        >>> fid(images, res.counterfactuals[res.success], classifier.features)
    """
    for name, t in (("real", real), ("fake", fake)):
        if not isinstance(t, Tensor) or t.ndim != 4:
            raise ValueError(
                f"{name} must be an N x C x H x W Tensor, got {getattr(t, 'shape', t)!r}"
            )
        if len(t) < 2:
            raise ValueError(f"{name} needs at least 2 images for a covariance, got {len(t)}")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real and fake must have the same channels, got {real.shape[1]} and {fake.shape[1]}"
        )
    mu1, s1 = _stats(_features(feature_extractor, real, batch_size))
    mu2, s2 = _stats(_features(feature_extractor, fake, batch_size))
    return frechet_distance(mu1, s1, mu2, s2)


def sfid(
    real: Tensor,
    counterfactuals: Tensor,
    feature_extractor: Callable[[Tensor], Tensor],
    keep: Tensor | None = None,
    n_splits: int = 1,
    seed: int = 0,
    batch_size: int = 256,
) -> float:
    r"""Split FID (DiME / ACE ``compute_sFID.sh``): shuffle the instances, split them in halves
    S1, S2, and average FID(real[S1], cf[S2]) and FID(real[S2], cf[S1]), so that no image is
    compared with its own counterfactual; averaged over ``n_splits`` random splits.

    Args:
        real (Tensor), counterfactuals (Tensor): ``N x C x H x W``, row i of one is the source of
            row i of the other.
        feature_extractor (nn.Module or callable): ``images -> N x D``.
        keep (Tensor, optional): ``N`` bools; counterfactuals used (e.g. the successful ones; the
            real half keeps all its images, as in ACE).
        n_splits (int): Random splits averaged.
        seed (int): Seed of the shuffles.
    """
    _check_pair(real, counterfactuals, check_range=False)  # features decide, not pixel range
    fr = _features(feature_extractor, real, batch_size)
    fc = _features(feature_extractor, counterfactuals, batch_size)
    keep = torch.ones(len(fr), dtype=torch.bool) if keep is None else keep.bool().cpu()
    g = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(n_splits):
        perm = torch.randperm(len(fr), generator=g)
        halves = perm[: len(fr) // 2], perm[len(fr) // 2 :]
        for a, b in (halves, halves[::-1]):
            b = b[keep[b]]
            scores.append(frechet_distance(*_stats(fr[a]), *_stats(fc[b])))
    return sum(scores) / len(scores)


# -- metrics with user-supplied networks ---------------------------------------------------


def _need(network: Any, name: str, what: str) -> None:
    if network is None:
        raise ValueError(f"{name} is required: {what} (nothing is downloaded)")


def _cosine(encoder: Callable, inputs: Tensor, counterfactuals: Tensor, batch_size: int) -> Tensor:
    _check_pair(inputs, counterfactuals)
    a = _apply(encoder, inputs, batch_size).flatten(1).float()
    b = _apply(encoder, counterfactuals, batch_size).flatten(1).float()
    return F.cosine_similarity(a, b, dim=1)


def s3(
    encoder: Callable[[Tensor], Tensor],
    inputs: Tensor,
    counterfactuals: Tensor,
    batch_size: int = 256,
) -> Tensor:
    r"""S3, SimSiam similarity (ACE ``compute_SimSiamSimilarity.py``): per-sample cosine
    similarity of ``encoder(x)`` and ``encoder(x')``. ``encoder``: a SimSiam ResNet-50 with its
    projector (ImageNet-normalising its input) in the reference; any encoder here."""
    _need(encoder, "encoder", "a SimSiam-style encoder, images -> embeddings")
    return _cosine(encoder, inputs, counterfactuals, batch_size)


def face_similarity(
    encoder: Callable[[Tensor], Tensor],
    inputs: Tensor,
    counterfactuals: Tensor,
    batch_size: int = 256,
) -> Tensor:
    r"""FS (ACE ``compute_FVA.py``, "mean dist"): per-sample cosine similarity of a face
    encoder's embeddings (a VGGFace2 ResNet-50 in the reference)."""
    _need(encoder, "encoder", "a face encoder, images -> embeddings")
    return _cosine(encoder, inputs, counterfactuals, batch_size)


def fva(
    encoder: Callable[[Tensor], Tensor],
    inputs: Tensor,
    counterfactuals: Tensor,
    threshold: float = 0.5,
    batch_size: int = 256,
) -> float:
    r"""FVA, face verification accuracy (DiME / ACE ``compute_FVA.py``): the fraction of pairs
    whose face-encoder cosine *similarity* exceeds ``threshold`` (0.5). (STEEX's script compares a
    cosine *distance* with 0.5; we follow DiME / ACE.)"""
    return (
        (face_similarity(encoder, inputs, counterfactuals, batch_size) > threshold)
        .float()
        .mean()
        .item()
    )


def mnac(
    oracle: Callable[[Tensor], Tensor],
    inputs: Tensor,
    counterfactuals: Tensor,
    logits: bool = True,
    batch_size: int = 256,
) -> Tensor:
    r"""MNAC, mean number of attributes changed (DiME / ACE ``compute_MNAC.py``): per sample, how
    many of the oracle's binary attributes flip (``p > 0.5``) between ``x`` and ``x'``.

    Args:
        oracle (callable): ``images -> N x A`` attribute logits (``logits=True``) or probabilities.
    """
    _need(oracle, "oracle", "an attribute classifier, images -> N x A logits")
    _check_pair(inputs, counterfactuals)
    thr = 0.0 if logits else 0.5
    a = _apply(oracle, inputs, batch_size) > thr
    b = _apply(oracle, counterfactuals, batch_size) > thr
    return (a != b).flatten(1).sum(1).float()


def lpips(
    network: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    counterfactuals: Tensor,
    normalize: bool = True,
    batch_size: int = 64,
) -> Tensor:
    r"""LPIPS (Zhang et al., CVPR 2018) with a user-supplied network, e.g. ``lpips.LPIPS(net="vgg")``
    with backbone weights the user has, or ``torchmetrics``' LPIPS module (RCSB uses LPIPS(x, x')
    to pick among samples; ACE averages it between samples for diversity).

    Args:
        network (callable): ``(a, b) -> distances`` on images in ``[-1, 1]``.
        normalize (bool): Map the ``[0, 1]`` inputs to ``[-1, 1]`` first.

    Returns:
        Tensor: ``N`` distances.
    """
    _need(network, "network", "an LPIPS network, (a, b) -> distances")
    _check_pair(inputs, counterfactuals)
    scale = (lambda t: t * 2 - 1) if normalize else (lambda t: t)
    with torch.no_grad():
        return torch.cat(
            [
                network(
                    scale(inputs[i : i + batch_size]), scale(counterfactuals[i : i + batch_size])
                )
                .flatten()
                .float()
                for i in range(0, inputs.shape[0], batch_size)
            ]
        )


# -- everything at once ----------------------------------------------------------------------


def counterfactual_report(
    forward_func: Callable[[Tensor], Tensor],
    inputs: Tensor,
    counterfactuals: Tensor,
    target: Any,
    counterfactual_target: Any = None,
    regions: Tensor | None = None,
    feature_extractor: Callable[[Tensor], Tensor] | None = None,
    simsiam: Callable[[Tensor], Tensor] | None = None,
    face_encoder: Callable[[Tensor], Tensor] | None = None,
    oracle: Callable[[Tensor], Tensor] | None = None,
    lpips_network: Callable[[Tensor, Tensor], Tensor] | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    r"""Every metric this module has, averaged over the samples, as one dict (a table row).

    Metrics whose network was not given are skipped with a warning naming the missing argument.
    FID / sFID follow ACE: real = all inputs, counterfactuals = the successful ones (FID is
    skipped when fewer than 2 succeed).

    Examples::

        >>> counterfactual_report(model, x, res.counterfactuals, y, cf, res.regions,
        ...                       feature_extractor=model.features)
    """
    ok = flipped(forward_func, counterfactuals, target, counterfactual_target, batch_size)
    row: dict[str, float] = {
        "flip_rate": ok.float().mean().item(),
        "probability_change": probability_change(
            forward_func, inputs, counterfactuals, target, counterfactual_target, batch_size
        )
        .mean()
        .item(),
        "cout": cout(
            forward_func, inputs, counterfactuals, target, counterfactual_target, 50, batch_size
        )
        .mean()
        .item(),
    }
    dist = closeness(inputs, counterfactuals, regions)
    row.update({k: v.mean().item() for k, v in dist.items()})
    if regions is not None:
        row["max_outside"] = dist["max_outside"].max().item()  # the worst sample, not the mean
    skipped = []
    if feature_extractor is None:
        skipped.append("fid/sfid (feature_extractor)")
    elif int(ok.sum()) >= 2:
        row["fid"] = fid(
            inputs, counterfactuals[ok.to(counterfactuals.device)], feature_extractor, batch_size
        )
        row["sfid"] = sfid(inputs, counterfactuals, feature_extractor, ok, batch_size=batch_size)
    for key, net, fn in (
        ("s3", simsiam, lambda: s3(simsiam, inputs, counterfactuals, batch_size).mean().item()),  # type: ignore[arg-type]
        ("fva", face_encoder, lambda: fva(face_encoder, inputs, counterfactuals, 0.5, batch_size)),  # type: ignore[arg-type]
        (
            "mnac",
            oracle,
            lambda: mnac(oracle, inputs, counterfactuals, True, batch_size).mean().item(),  # type: ignore[arg-type]
        ),
        (
            "lpips",
            lpips_network,
            lambda: lpips(lpips_network, inputs, counterfactuals).mean().item(),  # type: ignore[arg-type]
        ),
    ):
        if net is None:
            skipped.append(key)
        else:
            row[key] = fn()
    if skipped:
        warnings.warn(
            "counterfactual_report skipped metrics without a network: " + ", ".join(skipped),
            stacklevel=2,
        )
    return row
