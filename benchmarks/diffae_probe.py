"""How much of the class does the shipped DiffAE's semantic code carry?

Two measures, as DiffAE's paper reads its semantic code:

- a linear probe: multinomial logistic regression from z_sem to the ten classes, fitted on
  N training images and scored on 2,000 test images (DiffAE reports attribute AUROC of a
  linear classifier on z_sem);
- class keeping: each of 200 test images per paired class is rendered from its own z_sem with
  a random x_T instead of its inverted one; the share the classifier still puts in the
  image's class (the classifier's accuracy on the renders, against its accuracy on the inputs).

    python benchmarks/diffae_probe.py --train 10000 --render 200 --steps 25

Needs Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from fashion_mnist import load_fashion_mnist  # noqa: E402

from rcsb_captum import DiffusionAutoencoder  # noqa: E402
from rcsb_captum.demo import FASHION_MNIST_CLASSES, PAIRED_CLASSES, load_demo_classifier  # noqa: E402


@torch.no_grad()
def codes(ae: DiffusionAutoencoder, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([ae.encode(x[i : i + 500]) for i in range(0, len(x), 500)])


def probe(z_train, y_train, z_test, y_test, epochs: int = 300) -> float:
    mean, std = z_train.mean(0), z_train.std(0).clamp_min(1e-6)
    a, b = (z_train - mean) / std, (z_test - mean) / std
    lin = torch.nn.Linear(a.shape[1], 10)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=epochs, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(a), y_train) + 1e-4 * lin.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((lin(b).argmax(1) == y_test).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=10000)
    p.add_argument("--render", type=int, default=200, help="test images per paired class")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps of a render")
    a = p.parse_args()
    torch.set_flush_denormal(True)
    ae = DiffusionAutoencoder.pretrained("fashion-mnist", decode_steps=a.steps)
    model = load_demo_classifier()
    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(xtr), generator=g)[: a.train]
    t = time.perf_counter()
    acc = probe(codes(ae, xtr[pick]), ytr[pick], codes(ae, xte[:2000]), yte[:2000])
    print(
        f"linear probe on z_sem: {acc:.3f} test accuracy ({a.train} training images, "
        f"{time.perf_counter() - t:.0f} s)",
        flush=True,
    )
    rows = []
    for k in PAIRED_CLASSES:
        idx = (yte == k).nonzero().flatten()[: a.render]
        x = xte[idx]
        with torch.no_grad():
            z = ae.encode(x)
            noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(k))
            renders = torch.cat(
                [ae.decode(z[i : i + 100], noise[i : i + 100]) for i in range(0, len(x), 100)]
            )
            kept = float((model(renders).argmax(1) == k).float().mean())
            base = float((model(x).argmax(1) == k).float().mean())
        rows.append((k, kept, base))
        print(
            f"{FASHION_MNIST_CLASSES[k]}: renders with random x_T keep the class {kept:.3f} "
            f"(inputs {base:.3f})",
            flush=True,
        )
    mean = sum(r[1] for r in rows) / len(rows)
    print(f"class keeping over the paired classes: {mean:.3f}")


if __name__ == "__main__":
    main()
