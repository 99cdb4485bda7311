r"""The shipped demo: RCSB on Fashion-MNIST with the models the project trains and ships."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ..attr import RCSB
from ..bridge import Bridge
from ..config import RCSBConfig
from ..records import counterfactual_records
from ..regions import REGION_NAMES, named_region
from .assets import FASHION_MNIST_CLASSES, load_demo_classifier, load_demo_samples

__all__ = ["PAIRED_CLASSES", "REGION_SOURCES", "make_region", "pick_images", "run_demo"]

#: Each class's counterfactual class: shirt <-> T-shirt/top, pullover <-> coat, sneaker <->
#: ankle boot (the classes a person confuses).
PAIRED_CLASSES = {6: 0, 0: 6, 2: 4, 4: 2, 7: 9, 9: 7}
#: The region sources the demo can run offline (not ``"text"``: its models are downloaded).
REGION_SOURCES = tuple(n for n in REGION_NAMES if n != "text")


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
    layer = model.body[-2] if name == "gradcam" else None  # type: ignore[index]
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
    nfe: int | None = None,
    cell_size: int = 4,
    area: float | None = None,
    show_progress: bool = True,
    preset: str = "realistic",
) -> dict[str, Path]:
    r"""Explain ``n_images`` shipped sample images with the shipped classifier and bridge.

    Writes ``counterfactuals.png`` (input, region, counterfactual, difference per image),
    ``results.json`` and ``results.csv`` (one record per image) into ``out_dir``.

    Args:
        n_images (int): How many images (1..60).
        counterfactual (str or int): ``"pair"`` (shirt <-> T-shirt/top, pullover <-> coat,
            sneaker <-> ankle boot), ``"any"`` (any other class), or a class name or index.
        region (str): One of :data:`REGION_SOURCES`.
        seed (int): Seed of the sampling (and of the random region).
        out_dir (str or Path): Output folder (created).
        nfe (int, optional): Sampling steps (default: the preset's; the paper's 100).
        cell_size (int): Region cell side in pixels (4: an 8 x 8 grid on 32 x 32 images).
        area (float, optional): Region area (default: the preset's, 0.6 for ``realistic``,
            0.3 for ``paper``).
        show_progress (bool): Progress bar.
        preset (str): The RCSB setting (:data:`~rcsb_captum.config.PRESETS`): ``"realistic"``
            (default; the realism study's best) or ``"paper"`` (the official), ...

    Returns:
        dict: Paths of the written files (``figure``, ``json``, ``csv``).
    """
    if not 1 <= n_images <= 60:
        raise ValueError(f"n_images must be in [1, 60], got {n_images}")
    start = time.perf_counter()
    model = load_demo_classifier()
    images, labels = load_demo_samples()
    with torch.no_grad():
        predictions = model(images).argmax(1)
    idx, cf = pick_images(labels, predictions, n_images, counterfactual)
    x, y = images[idx], labels[idx]
    config = RCSBConfig.preset(preset, **({} if nfe is None else {"nfe": nfe}))
    area = config.area if area is None else area
    rcsb = RCSB(
        model,
        Bridge.pretrained("fashion-mnist"),
        make_region(
            region,
            model,
            cell_size,
            area,
            seed,
            **({"ig_steps": config.ig_steps} if region == "ig" else {}),
        ),
        config=config,
    )
    res = rcsb.generate(
        x, target=y, counterfactual_target=cf, seed=seed, show_progress=show_progress
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from ..visualization import plot_counterfactuals

    names = FASHION_MNIST_CLASSES
    figure = out / "counterfactuals.png"
    plot_counterfactuals(
        x,
        res.counterfactuals,
        res.regions,
        res.probs_before,
        res.probs_after,
        names,
        str(figure),
        success=res.success,
    )
    records = [
        {"sample_index": int(idx[i]), "label": names[int(y[i])], **r}
        for i, r in enumerate(counterfactual_records(x, res, names))
    ]
    json_path, csv_path = out / "results.json", out / "results.csv"
    settings = {
        "preset": preset,
        "region": region,
        "nfe": config.nfe,
        "ig_steps": config.ig_steps,
        "cell_size": cell_size,
        "area": area,
        "seed": seed,
    }
    json_path.write_text(json.dumps({"settings": settings, "images": records}, indent=2) + "\n")
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(  # the top classes as "name p; name p" in one cell
            {**r, "top_after": "; ".join(f"{n} {v}" for n, v in r["top_after"])} for r in records
        )
    if show_progress:
        for r in records:
            print(
                f"  #{r['sample_index']:3d} {r['label']:>11s} ({r['p_target_before']:.2f}) -> "
                f"{r['predicted_after']:<11s} ({r['top_after'][0][1]:.2f})  "
                f"region {r['region_area']:.0%}  outside change {r['max_change_outside']:g}"
            )
        flips = sum(bool(r["success"]) for r in records)
        print(f"{flips}/{len(records)} flipped in {time.perf_counter() - start:.1f} s")
    return {"figure": figure, "json": json_path, "csv": csv_path}
