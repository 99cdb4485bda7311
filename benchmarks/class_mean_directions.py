"""What a latent direction of the shipped DiffAE can do, without GCD's search: the difference
of the class-mean codes (200 training images per class) applied at steps 0.5-2 to 50 held-out
test images of the source class (each with its own inverted x_T); share that reaches the
paired class and share that lands in a third class. A diagnostic beside
benchmarks/gcd_transfer.py: it uses labels and many images, GCD one image and the classifier.

    python benchmarks/class_mean_directions.py      # ~2 minutes on 2 CPU threads
    python benchmarks/class_mean_directions.py --transfer 3 6 9 --n-images 30 --n-steps 32

``--transfer``: instead, the unit class-mean direction under GCD's official transfer measure
(``CounterfactualDirections.transfer``, ``--n-steps`` steps in [-m, m] for each range m), the
share that reaches the paired class and that first leaves for a third one.

``--direction discriminant``: instead of the class-mean difference, the normal of a logistic
regression separating the two classes' codes (the same 200 training images per class): the
latent direction along which the two classes are nearest (the class-mean difference
whitened by the classes' spread), i.e. a bound on what any single direction of this
autoencoder does within a range.

``--direction optimised``: a white-box bound on the official measure. One unit direction per pair,
optimised by gradient through the DiffAE's render and the classifier (Adam on the direction,
renormalised) so that ``--opt-step`` times it takes ``--opt-images`` training images of the
source class (the classifier's correct ones, each with its own inverted x_T) to the paired
class (cross-entropy towards it, so a third class costs as much as staying), started from the
class-mean direction; then measured on the same held-out test images as the other rows. GCD
has only the classifier's answers and one or eight images: if no direction does it with the
gradient and many images, no search will.

Needs Debian's dataset-fashion-mnist.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from fashion_mnist import class_mean_direction, load_diffae, load_fashion_mnist  # noqa: E402

from rcsb_captum import CounterfactualDirections  # noqa: E402
from rcsb_captum.demo import FASHION_MNIST_CLASSES as NAMES  # noqa: E402
from rcsb_captum.demo import PAIRED_CLASSES, load_demo_classifier  # noqa: E402

STEPS = (0.5, 1.0, 1.5, 2.0)


def discriminant_direction(ae, images, labels, source: int, target: int, n: int = 200):
    r"""Unit normal of an L2-regularised logistic regression from the codes of ``n`` training
    images of ``source`` (0) and ``target`` (1), pointing to ``target``."""
    with torch.no_grad():
        z = torch.cat([ae.encode(images[labels == k][:n]) for k in (source, target)])
    y = torch.cat([torch.zeros(n), torch.ones(n)])
    w = torch.zeros(z.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + bias, y)
        loss = loss + 1e-3 * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return (w / w.norm()).detach()


def optimised_direction(
    ae,
    model,
    images,
    labels,
    source: int,
    target: int,
    init,
    step: float = 3.0,
    n: int = 64,
    iters: int = 60,
    batch_size: int = 16,
    lr: float = 0.05,
    seed: int = 0,
):
    r"""Unit direction that takes ``step`` times it from ``n`` training images of ``source``
    (correctly classified, own inverted x_T) to ``target``: Adam on the cross-entropy towards
    ``target`` through the render, from ``init``. Returns the direction and the share of the
    ``n`` images at ``target`` after each epoch (their fit, not a held-out measure)."""
    for param in (*ae.parameters(), *model.parameters()):
        param.requires_grad_(False)  # the gradient is wanted for the direction only
    with torch.no_grad():
        x = images[labels == source][: 4 * n]
        x = x[model(x).argmax(1) == source][:n]
        z = ae.encode(x)
        x_t = ae.encode_stochastic(x, z)
    v = (init / init.norm()).clone().requires_grad_(True)
    opt = torch.optim.Adam([v], lr=lr)
    g = torch.Generator().manual_seed(seed)
    fit = []
    with torch.enable_grad():
        for _ in range(iters):
            order = torch.randperm(len(x), generator=g)
            hits = 0
            for i in range(0, len(x), batch_size):
                idx = order[i : i + batch_size]
                logits = model(ae.decode(z[idx] + step * v / v.norm(), x_t[idx]))
                loss = torch.nn.functional.cross_entropy(logits, torch.full((len(idx),), target))
                opt.zero_grad()
                loss.backward()
                opt.step()
                hits += int((logits.argmax(1) == target).sum())
            fit.append(hits / len(x))
    return (v / v.norm()).detach(), fit


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=50)
    p.add_argument("--transfer", type=float, nargs="+", default=None)
    p.add_argument("--n-steps", type=int, default=32)
    p.add_argument(
        "--direction", choices=("class-mean", "discriminant", "optimised"), default="class-mean"
    )
    p.add_argument("--pairs", nargs="+", default=[f"{a}:{b}" for a, b in PAIRED_CLASSES.items()])
    p.add_argument("--opt-step", type=float, default=3.0, help="optimised: the step it is fit at")
    p.add_argument("--opt-images", type=int, default=64, help="optimised: training images")
    p.add_argument("--opt-epochs", type=int, default=60, help="optimised: passes over them")
    p.add_argument("--save", default=None, help="write the unit directions to this .pt file")
    p.add_argument("--autoencoder", default=None, help="a DiffAE file (default: the shipped)")
    p.add_argument(
        "--ddim",
        type=int,
        nargs=2,
        default=(25, 25),
        metavar=("ENCODE", "RENDER"),
        help="DDIM steps of the inversion and of a render (the DiffAE paper and GCD: 250 100)",
    )
    args = p.parse_args()
    torch.set_flush_denormal(True)
    model = load_demo_classifier()
    ae = load_diffae(args.autoencoder, *args.ddim)
    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    cols = (
        [f"[-{m:g}, {m:g}]: reach / third" for m in args.transfer]
        if args.transfer
        else [f"step {s}: reach / third" for s in STEPS]
    )
    print("| from | to | norm | " + " | ".join(cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    saved = {}
    for a, b in (tuple(map(int, pair.split(":"))) for pair in args.pairs):
        d = class_mean_direction(ae, xtr, ytr, a, b)
        if args.direction == "discriminant":
            d = discriminant_direction(ae, xtr, ytr, a, b) * d.norm()
        if args.direction == "optimised":
            u, fit = optimised_direction(
                ae, model, xtr, ytr, a, b, d, args.opt_step, args.opt_images, args.opt_epochs
            )
            cos = float(u @ d / d.norm())
            print(f"fit ({NAMES[a]} -> {NAMES[b]}, cos with class mean {cos:+.2f}): {fit}")
            d = u * d.norm()
        saved[f"{a}:{b}"] = d / d.norm()
        x = xte[(yte[:9000] == a).nonzero()[:, 0][:200]]
        x = x[model(x).argmax(1) == a][: args.n_images]
        cells = []
        if args.transfer:
            unit = CounterfactualDirections(
                (d / d.norm())[None],
                ["class mean"],
                torch.ones(1),
                torch.ones(1, dtype=torch.bool),
                a,
                b,
            )
            for m in args.transfer:
                r = unit.transfer(model, ae, x, n_steps=args.n_steps, max_step=m)
                cells.append(f"{r['reached'].float().mean():.2f} / {r['third'].float().mean():.2f}")
        else:
            z = ae.encode(x)
            x_t = ae.encode_stochastic(x, z)
            for step in STEPS:
                pred = model(ae.decode(z + step * d, x_t)).argmax(1)
                third = ((pred != a) & (pred != b)).float().mean()
                cells.append(f"{(pred == b).float().mean():.2f} / {third:.2f}")
        print(
            f"| {NAMES[a]} | {NAMES[b]} | {d.norm():.2f} | " + " | ".join(cells) + " |",
            flush=True,
        )
    if args.save:
        torch.save(saved, args.save)


if __name__ == "__main__":
    main()
