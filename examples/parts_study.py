"""Which part of a garment must change? STEEX's question on the shipped Fashion-MNIST models.

For the paired classes (T-shirt/top <-> shirt, pullover <-> coat, sneaker <-> ankle boot), the
first N shipped test images of each class that the classifier gets right are explained toward
the paired class with RCSB restricted to one semantic part at a time (part maps by rule:
``rcsb_captum.demo.parts``; sleeves, collar, torso, hem for tops; toe, shaft, heel, vamp for
shoes), and to the whole garment for reference. Per class and part: the part's share of the
image, the flip rate, COUT and how often the robust judge (never used for guidance) agrees.
Settings: per-image Adam and 1-px gradient smoothing (the realism study's levers) with 50 steps
and one sample per image (the region is the part, so ``area`` does not apply). Resumable: one file per
class and part under --out-dir.

    python examples/parts_study.py --n-per-class 16            # the parts' zones
    python examples/parts_study.py --n-per-class 16 --pixels   # the garment's own pixels
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from rcsb_captum import RCSB, Bridge, SegmentationRegion
from rcsb_captum import metrics as M
from rcsb_captum.demo import (
    FASHION_MNIST_CLASSES,
    PAIRED_CLASSES,
    load_demo_classifier,
    load_demo_robust_oracle,
    load_demo_samples,
)
from rcsb_captum.demo.parts import PART_NAMES, PARTS_OF_CLASS, garment_parts

WHOLE = 99  # the whole garment (every part), for reference


def study(k: int, part: int, model, robust, bridge, x, parts, nfe: int) -> dict:
    cf = PAIRED_CLASSES[k]
    masks = (parts > 0) if part == WHOLE else (parts == part)
    keep = masks.flatten(1).any(1)  # images that have the part
    x, parts, masks = x[keep], parts[keep], masks[keep]
    labels = [1] if part == WHOLE else [part]
    seg = (parts > 0).long() if part == WHOLE else parts
    rcsb = RCSB(
        model,
        bridge,
        SegmentationRegion(seg, labels),
        guidance_adam="image",  # options, not a preset name: the study must not move with one
        guidance_smoothing=1.0,
        nfe=nfe,
        n_samples=1,
    )
    t = time.perf_counter()
    res = rcsb.generate(x, target=k, counterfactual_target=cf, seed=0)
    seconds = (time.perf_counter() - t) / len(x)
    target = torch.full((len(x),), k)
    cft = torch.full((len(x),), cf)
    return {
        "counterfactuals": res.counterfactuals,
        "regions": res.regions,
        "inputs": x,
        "flip": res.success.float(),
        "cout": M.cout(model, x, res.counterfactuals, target, cft, steps=20),
        "robust": M.flipped(robust, res.counterfactuals, target, cft).float(),
        "area": masks.float().flatten(1).mean(1),
        "seconds": seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-per-class", type=int, default=16)
    p.add_argument("--nfe", type=int, default=50)
    p.add_argument("--out-dir", default="examples/results/parts")
    p.add_argument(
        "--pixels",
        action="store_true",
        help="parts as the garment's own pixels (default: the parts' zones, which may grow "
        "into the background)",
    )
    a = p.parse_args()
    torch.set_flush_denormal(True)
    out = Path(a.out_dir) / ("pixels" if a.pixels else "zones")
    out.mkdir(parents=True, exist_ok=True)
    model, robust = load_demo_classifier(), load_demo_robust_oracle()
    bridge = Bridge.pretrained("fashion-mnist")
    images, labels = load_demo_samples()
    with torch.no_grad():
        right = model(images).argmax(1) == labels
    rows = []
    for k in (0, 6, 2, 4, 7, 9):
        pick = ((labels == k) & right).nonzero().flatten()[: a.n_per_class]
        x = images[pick]
        parts = garment_parts(x, [k] * len(x), zones=not a.pixels)
        for part in (*PARTS_OF_CLASS[k], WHOLE):
            name = "whole" if part == WHOLE else PART_NAMES[part]
            path = out / f"{k}_{name}.n{a.n_per_class}.pt"
            if path.exists():
                r = torch.load(path)
            else:
                r = study(k, part, model, robust, bridge, x, parts, a.nfe)
                torch.save(r, path)
            rows.append((k, name, r))
            print(
                f"{FASHION_MNIST_CLASSES[k]} -> {FASHION_MNIST_CLASSES[PAIRED_CLASSES[k]]} "
                f"{name}: n={len(r['flip'])} area {r['area'].mean():.3f} flip "
                f"{r['flip'].mean():.3f} COUT {r['cout'].mean():.3f} robust "
                f"{r['robust'].mean():.3f} ({r['seconds']:.2f} s/img)",
                flush=True,
            )
    write_table(rows, out, a)
    draw(rows, out)


def write_table(rows, out: Path, a) -> None:
    lines = [
        "# Which part must change? (shipped Fashion-MNIST models)",
        "",
        f"Written by `examples/parts_study.py --n-per-class {a.n_per_class} --nfe {a.nfe}`: "
        "RCSB (per-image Adam, 1-px gradient smoothing, 50 steps, one sample) restricted to one part at a time "
        "(part maps by rule, `rcsb_captum.demo.parts`) toward the paired class; the first "
        f"{a.n_per_class} shipped test images of each class that the classifier gets right. "
        "Area: the part's share of the image. Robust: the robust judge (L2-PGD trained, never "
        "used for guidance) sees the counterfactual class. Per-image values (written by the run, "
        "not committed): "
        f"`examples/results/parts/{out.name}/`; figure: `parts_{out.name}.png`. Parts: "
        + (
            "the garment's own pixels of each part."
            if out.name == "pixels"
            else "each part's zone (the garment's bounding box, for shoes up to the top of the "
            "image), so that a part may grow into the background."
        ),
        "",
        "| from | to | part | images | area | flip | COUT | robust agrees |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, name, r in rows:
        lines.append(
            f"| {FASHION_MNIST_CLASSES[k]} | {FASHION_MNIST_CLASSES[PAIRED_CLASSES[k]]} | "
            f"{name} | {len(r['flip'])} | {r['area'].mean():.3f} | {r['flip'].mean():.2f} | "
            f"{r['cout'].mean():.3f} | {r['robust'].mean():.2f} |"
        )
    (out.parent / f"parts_{out.name}.md").write_text("\n".join(lines) + "\n")


def draw(rows, out: Path, k: int = 0, image: int = 0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [(name, r) for c, name, r in rows if c == k]
    fig, axes = plt.subplots(2, len(mine), figsize=(2.0 * len(mine), 4.4), layout="constrained")
    x0 = mine[-1][1]["inputs"][image]
    for j, (name, r) in enumerate(mine):
        # the image's position among those that have this part
        idx = next((i for i in range(len(r["inputs"])) if torch.equal(r["inputs"][i], x0)), None)
        ax_top, ax_bottom = axes[0, j], axes[1, j]
        ax_top.imshow(x0[0], cmap="gray", vmin=0, vmax=1)
        if idx is not None:
            overlay = torch.zeros(*x0.shape[-2:], 4)
            overlay[..., 0] = 1
            overlay[..., 3] = 0.45 * r["regions"][idx, 0]
            ax_top.imshow(overlay)
            ax_bottom.imshow(r["counterfactuals"][idx, 0], cmap="gray", vmin=0, vmax=1)
            ok = "flipped" if r["flip"][idx] else "no flip"
            ax_bottom.set_title(ok, fontsize=9, color="black" if r["flip"][idx] else "red")
        ax_top.set_title(name, fontsize=10)
        for ax in (ax_top, ax_bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    cf = FASHION_MNIST_CLASSES[PAIRED_CLASSES[k]]
    fig.suptitle(f"{FASHION_MNIST_CLASSES[k]} -> {cf}, one part at a time (red: the part)")
    fig.savefig(out.parent / f"parts_{out.name}.png", dpi=110)


if __name__ == "__main__":
    main()
