"""GCD direction transfer under the official definition.

For the given pairs, the best g- and h-direction of
``examples/results/gcd/directions_<a>_to_<b>.pt`` (found by GCD's CPU preset on the example's
source images) is swept over ``--n-steps`` step sizes in [-3, 3] on N held-out Fashion-MNIST
test images of class ``a`` that the classifier gets right, each keeping its own stochastic code
(``CounterfactualDirections.transfer``): the share that leaves class ``a`` at some step (the
official "transfer"), that reaches class ``b``, and that first leaves for a third class; and the
last two along the direction's own sense alone (positive steps). ``--max-step`` sets the range
(the official 3).

    python benchmarks/gcd_transfer.py --pairs 6:0 4:2 --n-images 20 --n-steps 16 --steps 25

Needs Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from fashion_mnist import load_diffae, load_fashion_mnist  # noqa: E402

from rcsb_captum import CounterfactualDirections  # noqa: E402
from rcsb_captum.demo import FASHION_MNIST_CLASSES, load_demo_classifier  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", nargs="+", default=["6:0", "0:6", "2:4", "4:2", "7:9", "9:7"])
    p.add_argument("--n-images", type=int, default=20)
    p.add_argument("--n-steps", type=int, default=16)
    p.add_argument("--steps", type=int, default=25, help="DDIM steps to encode and render")
    p.add_argument("--dirs", default="examples/results/gcd")
    p.add_argument("--max-step", type=float, default=3.0)
    p.add_argument(
        "--kinds", nargs="+", default=["g", "h"], help="g, h (the best of each) or best (overall)"
    )
    p.add_argument("--autoencoder", default=None, help="a DiffAE file (default: the shipped)")
    a = p.parse_args()
    torch.set_flush_denormal(True)
    model = load_demo_classifier()
    ae = load_diffae(a.autoencoder, a.steps, a.steps)
    images, labels = load_fashion_mnist("test")
    print(
        f"{a.n_images} held-out test images per class (0..8999, classified right), "
        f"{a.n_steps} step sizes in [-{a.max_step:g}, {a.max_step:g}], DDIM {a.steps}/{a.steps}\n"
    )
    print(
        "| from | to | direction | leaves the class (official) | reaches the paired class | "
        "third class | along +d: reaches / third |"
    )
    print("|---|---|---|---|---|---|---|")
    for pair in a.pairs:
        src, dst = (int(v) for v in pair.split(":"))
        dirs = CounterfactualDirections.load(Path(a.dirs) / f"directions_{src}_to_{dst}.pt")
        idx = (labels[:9000] == src).nonzero().flatten()
        x = images[idx[:400]]
        with torch.no_grad():
            x = x[model(x).argmax(1) == src][: a.n_images]
        for kind in a.kinds:
            i = dirs.best(None if kind == "best" else kind)
            r = dirs.transfer(model, ae, x, index=i, n_steps=a.n_steps, max_step=a.max_step)
            print(
                f"| {FASHION_MNIST_CLASSES[src]} | {FASHION_MNIST_CLASSES[dst]} | "
                f"{dirs.kinds[i]} | {r['transferred'].float().mean():.2f} | "
                f"{r['reached'].float().mean():.2f} | {r['third'].float().mean():.2f} | "
                f"{r['reached_forward'].float().mean():.2f} / "
                f"{r['third_forward'].float().mean():.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
