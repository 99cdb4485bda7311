"""BB-LIG's completeness on the shipped DiffAE: the path method against IG's straight-line
formula on the same rendered paths.

For each paired class, the best direction of ``examples/results/gcd/directions_<a>_to_<b>.pt``
(GCD's CPU preset, found on one image) is used on N shipped test images of class ``a`` at the
direction's own step; the completeness error ``|sum A - (f(x) - f(x_K))|`` per image, with
``f`` the probability of class ``a`` and finite-difference gradients (black-box), for
``integral="path"`` and ``integral="straight"``.

    python benchmarks/bblig_completeness.py --n-images 5 --n-steps 32 --steps 25
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from rcsb_captum import BBLIG, CounterfactualDirections, DiffusionAutoencoder
from rcsb_captum.demo import (
    FASHION_MNIST_CLASSES,
    PAIRED_CLASSES,
    load_demo_classifier,
    load_demo_samples,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=5)
    p.add_argument("--n-steps", type=int, default=32, help="K, points on the path")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps to encode and render")
    p.add_argument("--dirs", default="examples/results/gcd")
    a = p.parse_args()
    torch.set_flush_denormal(True)
    model = load_demo_classifier()
    ae = DiffusionAutoencoder.pretrained(
        "fashion-mnist", encode_steps=a.steps, decode_steps=a.steps
    )
    images, labels = load_demo_samples()
    with torch.no_grad():
        right = model(images).argmax(1) == labels
    print("| from | to | integral | mean abs completeness error | max |")
    print("|---|---|---|---|---|")
    totals: dict[str, list[torch.Tensor]] = {"path": [], "straight": []}
    for src, dst in PAIRED_CLASSES.items():
        dirs = CounterfactualDirections.load(Path(a.dirs) / f"directions_{src}_to_{dst}.pt")
        x = images[(labels == src) & right][: a.n_images]
        for integral in ("path", "straight"):
            lig = BBLIG(model, ae, direction=dirs, n_steps=a.n_steps, integral=integral)
            _, delta = lig.attribute(x, target=src, return_convergence_delta=True)
            totals[integral].append(delta.abs())
            print(
                f"| {FASHION_MNIST_CLASSES[src]} | {FASHION_MNIST_CLASSES[dst]} | {integral} | "
                f"{delta.abs().mean():.2e} | {delta.abs().max():.2e} |",
                flush=True,
            )
    for integral, values in totals.items():
        v = torch.cat(values)
        print(f"all pairs, {integral}: mean {v.mean():.2e}, max {v.max():.2e} ({len(v)} images)")


if __name__ == "__main__":
    main()
