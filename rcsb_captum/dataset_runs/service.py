r"""One explain-and-write service for every front end: the command line's ``explain``, the
dataset run (``explain-dataset``, :func:`~rcsb_captum.dataset_runs.explain_dataset`) and the
demo build RCSB and its region from :class:`~rcsb_captum.dataset_runs.RunSettings` with
:func:`build_rcsb`, explain with :func:`explain_batch`, and write one layout
(:mod:`~rcsb_captum.dataset_runs.outputs`): per image ``images/<index>_counterfactual.png``,
``images/<index>_region.png``, ``tensors/<index>.pt`` and ``records/<index>.json``; at the end
``settings.json``, ``manifest.jsonl``, ``summary.json``, ``summary.md`` and ``examples.png``.
:func:`explain_images` is the in-memory front end (images already loaded, one process)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..attr import RCSB
from ..bridge.bridge import Bridge
from ..durable import text_bytes, torch_bytes
from ..records import counterfactual_records
from ..regions import named_region
from .inputs import DatasetItem
from .loading import text_segmenter
from .outputs import claim_folder, record_path, save_png, write_durably
from .settings import RunSettings
from .summary import summarise

__all__ = ["build_rcsb", "explain_batch", "explain_images"]


def build_rcsb(
    forward_func: Callable[..., Tensor],
    bridge: Bridge,
    settings: RunSettings,
    device: str | torch.device | None = None,
    region: Any = None,
) -> RCSB:
    r"""RCSB with ``settings.rcsb`` and the region ``settings`` names (``region``, its
    ``gradcam_layer``, ``prompt`` and ``text_models``, the config's region section and the
    seed), or with ``region`` (masks or a region source) when given.

    Examples::

        >>> rcsb = build_rcsb(model, Bridge.pretrained("fashion-mnist"), RunSettings.of("fast"))
    """
    cfg = settings.rcsb
    if region is None:
        c, size = bridge.channels or 3, bridge.image_size or 0
        region = named_region(
            settings.region,
            forward_func,
            cfg.cell_size,
            cfg.area,
            image_shape=(c, size, size),
            layer=settings.gradcam_layer,
            seed=settings.seed,
            # the IG steps of the config shape the "ig" region only
            **({"ig_steps": cfg.ig_steps} if settings.region == "ig" else {}),
            prompt=settings.prompt,
            segmenter=text_segmenter(settings.text_models, device)
            if settings.region == "text"
            else None,
        )
    return RCSB(forward_func, bridge, region, config=cfg)


def explain_batch(
    rcsb: RCSB,
    items: Sequence[DatasetItem],
    x: Tensor,
    settings: RunSettings,
    out: Path,
    forward_func: Callable[..., Tensor],
    show_progress: bool = False,
) -> None:
    r"""Explain one batch (``x``, the images of ``items``) and write each image's files: the
    targets are the items' labels when all have one, else the model's predictions; the
    counterfactual classes come from ``settings``. An image's record is written last, so a
    record means a finished image."""
    from .. import metrics as M

    start = time.perf_counter()
    device = x.device
    labels = [it.label for it in items]
    target = torch.tensor(labels, device=device) if all(v is not None for v in labels) else None
    cf_setting = settings.counterfactual_target
    with torch.no_grad():
        predicted = forward_func(x).argmax(1)
    tgt = target if target is not None else predicted
    cf = None
    if isinstance(cf_setting, int):
        cf = torch.full_like(tgt, cf_setting)
    elif isinstance(cf_setting, dict):
        missing = sorted({int(t) for t in tgt.tolist()} - set(cf_setting))
        if missing:
            raise ValueError(f"counterfactual_target: the class map has no entry for {missing}")
        cf = torch.tensor([cf_setting[int(t)] for t in tgt.tolist()], device=device)
    # RCSB's seeds follow the index in the call: shift them to the global index
    res = rcsb.generate(
        x,
        target=tgt,
        counterfactual_target=cf,
        seed=settings.seed,
        index_offset=items[0].index,
        show_progress=show_progress,
    )
    cout = M.cout(forward_func, x, res.counterfactuals, tgt, cf, steps=20)
    seconds = (time.perf_counter() - start) / len(items)
    common = counterfactual_records(x, res, digits=None)
    for i, it in enumerate(items):
        stem = f"{it.index:07d}"
        save_png(res.counterfactuals[i], out / "images" / f"{stem}_counterfactual.png")
        save_png(res.regions[i], out / "images" / f"{stem}_region.png")
        tensors = {
            "input": x[i].cpu(),
            "counterfactual": res.counterfactuals[i].cpu(),
            "region": res.regions[i].cpu(),
            "samples": res.samples[i].cpu(),
            "probs_before": res.probs_before[i].cpu(),
            "probs_after": res.probs_after[i].cpu(),
        }
        write_durably(out / "tensors" / f"{stem}.pt", torch_bytes(tensors))
        wrong_before = int(predicted[i]) != int(tgt[i])
        record = {
            "index": it.index,
            "path": it.path,
            "label": it.label,
            **common[i],
            # success is a flip: the model predicted the explained class and now predicts the
            # counterfactual class (any other class when none is named)
            "success": (not wrong_before) and common[i]["success"],
            "misclassified_before": wrong_before,
            "cout": float(cout[i]),
            "seconds": round(seconds, 4),
        }
        write_durably(record_path(out, it.index), text_bytes(json.dumps(record) + "\n"))


def explain_images(
    forward_func: Callable[..., Tensor],
    bridge: Bridge,
    images: Tensor,
    out_dir: str | os.PathLike[str],
    settings: RunSettings | None = None,
    *,
    labels: Sequence[int | None] | None = None,
    paths: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    region: Any = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    r"""Explain images already in memory and write the layout every front end writes (see the
    module docstring); returns the summary (``summary.json``'s content).

    Args:
        forward_func (callable): The classifier on ``[0, 1]`` images.
        bridge (Bridge): The inpainting bridge.
        images (Tensor): ``N x C x H x W`` in ``[0, 1]`` at the bridge's size.
        out_dir (str): Output folder (created; files of the same indices are replaced).
        settings (RunSettings, optional): Region, counterfactual classes, RCSB options, batch
            size and seed.
        labels (sequence, optional): The class explained per image (``None``: the model's
            predictions).
        paths (sequence of str, optional): Where each image came from, for the records.
        class_names (sequence of str, optional): Names in the summary and the figure.
        region (optional): Masks or a region source instead of the one ``settings`` names.
        show_progress (bool): A progress bar over each batch's sampling steps.

    Examples::

        >>> explain_images(model, bridge, x, "out", RunSettings.of("fast"), labels=[6, 0])
    """
    settings = settings or RunSettings()
    n = images.shape[0]
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels: expected {n} (one per image), got {len(labels)}")
    if paths is not None and len(paths) != n:
        raise ValueError(f"paths: expected {n} (one per image), got {len(paths)}")
    items = [
        DatasetItem(
            i,
            str(paths[i]) if paths is not None else f"<image {i}>",
            None if labels is None or labels[i] is None else int(labels[i]),  # type: ignore[arg-type]
        )
        for i in range(n)
    ]
    out = Path(out_dir)
    # per-image masks are cut with the batches; any other region is built once
    per_image = isinstance(region, Tensor) and region.shape[0] == n > 1
    rcsb = None if per_image else build_rcsb(forward_func, bridge, settings, images.device, region)
    b = settings.batch_size
    lock = claim_folder(out)  # one writer per folder, as a dataset run
    try:
        for i in range(0, n, b):
            sl = slice(i, i + b)
            this = rcsb or build_rcsb(forward_func, bridge, settings, images.device, region[sl])
            explain_batch(this, items[sl], images[sl], settings, out, forward_func, show_progress)
        settings_json = text_bytes(json.dumps(settings.to_json(), indent=2))
        write_durably(out / "settings.json", settings_json)
        return summarise(out, items, settings, None, class_names)
    finally:
        lock.release()
