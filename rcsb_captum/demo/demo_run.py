r"""The shipped demo: RCSB on Fashion-MNIST with the models the project trains and ships."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..bridge import Bridge
from ..dataset_runs import RunSettings
from ..dataset_runs.service import explain_images
from ..regions import REGION_NAMES, named_region
from .assets import FASHION_MNIST_CLASSES, load_demo_classifier, load_demo_samples

__all__ = [
    "DEMO_GRADCAM_LAYER",
    "PAIRED_CLASSES",
    "REGION_SOURCES",
    "make_region",
    "pick_images",
    "run_demo",
]

#: Each class's counterfactual class: shirt <-> T-shirt/top, pullover <-> coat, sneaker <->
#: ankle boot (the classes a person confuses).
PAIRED_CLASSES = {6: 0, 0: 6, 2: 4, 4: 2, 7: 9, 9: 7}
#: The region sources the demo can run offline (not ``"text"``: its models are downloaded).
REGION_SOURCES = tuple(n for n in REGION_NAMES if n != "text")
#: The demo classifier's layer for the ``"gradcam"`` region: its last convolution block (8 x 8,
#: upsampled to the image).
DEMO_GRADCAM_LAYER = "body.19"


def make_region(
    name: str,
    model: nn.Module,
    cell_size: int = 4,
    area: float = 0.3,
    seed: int = 0,
    ig_steps: int = 50,
) -> Callable[..., Tensor]:
    r"""A region source by name for the demo classifier (:class:`~rcsb_captum.demo.FashionCNN`):
    :func:`~rcsb_captum.regions.named_region` with GradCAM on its last convolution block
    (8 x 8, upsampled) and occlusion windows of one cell on 1 x 32 x 32 images."""
    layer = DEMO_GRADCAM_LAYER if name == "gradcam" else None
    return named_region(
        name,
        model,
        cell_size,
        area,
        image_shape=(1, 32, 32),
        layer=layer,
        seed=seed,
        ig_steps=ig_steps,
    )


def _class_index(value: str | int) -> int:
    if isinstance(value, int) or str(value).isdigit():
        k = int(value)
        if not 0 <= k < len(FASHION_MNIST_CLASSES):
            raise ValueError(f"counterfactual class index must be in [0, 9], got {k}")
        return k
    names = [c.lower() for c in FASHION_MNIST_CLASSES]
    if str(value).lower() not in names:
        raise ValueError(
            f"counterfactual class must be 'pair', 'any', an index or one of "
            f"{FASHION_MNIST_CLASSES}, got {value!r}"
        )
    return names.index(str(value).lower())


def pick_images(
    labels: Tensor, predictions: Tensor, n: int, counterfactual: str | int = "pair"
) -> tuple[Tensor, Tensor | None]:
    r"""Indices of ``n`` correctly classified sample images (cycling through the classes
    concerned, first occurrences first) and their counterfactual classes (``None`` for ``"any"``).
    """
    if counterfactual == "pair":
        classes = list(PAIRED_CLASSES)
    elif counterfactual == "any":
        classes = list(range(len(FASHION_MNIST_CLASSES)))
    else:
        k = _class_index(counterfactual)
        classes = [c for c in range(len(FASHION_MNIST_CLASSES)) if c != k]
    queues = {c: ((labels == c) & (predictions == c)).nonzero()[:, 0].tolist() for c in classes}
    picked: list[int] = []
    while len(picked) < n and any(queues.values()):
        for c in classes:
            if queues[c] and len(picked) < n:
                picked.append(queues[c].pop(0))
    idx = torch.tensor(picked, dtype=torch.long)
    if counterfactual == "pair":
        cf = torch.tensor([PAIRED_CLASSES[int(labels[i])] for i in picked])
    elif counterfactual == "any":
        cf = None
    else:
        cf = torch.full((len(picked),), _class_index(counterfactual))
    return idx, cf


def run_demo(
    n_images: int = 6,
    counterfactual: str | int = "pair",
    region: str = "ig",
    seed: int = 0,
    out_dir: str | Path = "rcsb_demo",
    show_progress: bool = True,
    preset: str = "realistic",
    **options: Any,
) -> dict[str, Path]:
    r"""Explain ``n_images`` shipped sample images with the shipped classifier and bridge.

    Writes the layout every front end writes (:mod:`rcsb_captum.dataset_runs.service`) into
    ``out_dir``: per image its counterfactual and region PNGs, tensors and record; then
    ``manifest.jsonl`` (one record per image), ``summary.json``, ``summary.md`` and
    ``examples.png`` (input, region, counterfactual, difference for the first 8 images).

    Args:
        n_images (int): How many images (1..60).
        counterfactual (str or int): ``"pair"`` (shirt <-> T-shirt/top, pullover <-> coat,
            sneaker <-> ankle boot), ``"any"`` (any other class), or a class name or index.
        region (str): One of :data:`REGION_SOURCES`.
        seed (int): Seed of the sampling (and of the random region).
        out_dir (str or Path): Output folder (created).
        show_progress (bool): Progress bar and one line per image.
        preset (str): The RCSB setting (:data:`~rcsb_captum.config.PRESETS`): ``"realistic"``
            (default; the realism study's best) or ``"paper"`` (the official), ...
        **options: :class:`~rcsb_captum.config.RCSBConfig` fields over the preset's
            (``nfe=25``, ``area=0.3``, ``cell_size=4``: an 8 x 8 grid on 32 x 32 images, which
            ``"auto"`` gives too).

    Returns:
        dict: Paths of the written files (``figure``, ``manifest``, ``summary``).
    """
    if not 1 <= n_images <= 60:
        raise ValueError(f"n_images must be in [1, 60], got {n_images}")
    start = time.perf_counter()
    model = load_demo_classifier()
    images, labels = load_demo_samples()
    with torch.no_grad():
        predictions = model(images).argmax(1)
    idx, _ = pick_images(labels, predictions, n_images, counterfactual)
    cf: int | dict[int, int] | None = (
        dict(PAIRED_CLASSES)
        if counterfactual == "pair"
        else None
        if counterfactual == "any"
        else _class_index(counterfactual)
    )
    settings = RunSettings.of(
        preset,
        region=region,
        gradcam_layer=DEMO_GRADCAM_LAYER if region == "gradcam" else None,
        counterfactual_target=cf,
        batch_size=len(idx),
        seed=seed,
        **options,
    )
    out = Path(out_dir)
    explain_images(
        model,
        Bridge.pretrained("fashion-mnist"),
        images[idx],
        out,
        settings,
        labels=labels[idx].tolist(),
        paths=[f"shipped sample {int(i)}" for i in idx],
        class_names=FASHION_MNIST_CLASSES,
        show_progress=show_progress,
    )
    paths = {
        "figure": out / "examples.png",
        "manifest": out / "manifest.jsonl",
        "summary": out / "summary.md",
    }
    if show_progress:
        names = FASHION_MNIST_CLASSES
        records = [json.loads(line) for line in paths["manifest"].read_text().splitlines()]
        for r in records:
            print(
                f"  {r['path']:>18s} {names[r['target']]:>11s} ({r['p_target_before']:.2f}) -> "
                f"{names[r['predicted_after']]:<11s} ({r['top_after'][0][1]:.2f})  "
                f"region {r['region_area']:.0%}  outside change {r['max_change_outside']:g}"
            )
        flips = sum(bool(r["success"]) for r in records)
        print(f"{flips}/{len(records)} flipped in {time.perf_counter() - start:.1f} s")
    return paths
