"""Train the shipped Fashion-MNIST demo classifier (and the oracle that judges it).

Reproduce the shipped weights with:

    python scripts/train_demo_classifier.py --epochs 4 --seed 0 \
        --out rcsb_captum/data/fashion_mnist_classifier.pt
    python scripts/train_demo_classifier.py --arch oracle --epochs 1 --seed 1 \
        --out rcsb_captum/data/fashion_mnist_oracle.pt

Data: Debian's dataset-fashion-mnist package (MIT). Images are zero-padded 28 -> 32. The test
images with index >= 9000 are never used here (they are where the shipped sample set comes
from, see scripts/make_demo_samples.py); accuracy is reported on test images 0..8999.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from fashion_mnist import load_fashion_mnist

from rcsb_captum.demo import FashionCNN, OracleNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("fashion-cnn", "oracle"), default="fashion-cnn")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images only")
    parser.add_argument("--out", default="rcsb_captum/data/fashion_mnist_classifier.pt")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    x, y = load_fashion_mnist("train")
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    xt, yt = load_fashion_mnist("test")
    xt, yt = xt[:9000], yt[:9000]
    model = FashionCNN() if args.arch == "fashion-cnn" else OracleNet()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * (len(x) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    g = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(len(x) // args.batch_size):
            idx = perm[i * args.batch_size : (i + 1) * args.batch_size]
            xb = x[idx]
            # light augmentation: horizontal flips (the classes are left/right symmetric)
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = torch.cat([model(xt[i : i + 1000]).argmax(1) for i in range(0, len(xt), 1000)])
            acc = (acc == yt).float().mean().item()
        print(
            f"epoch {epoch + 1}: loss {loss.item():.4f} test accuracy {acc:.4f} ({time.time() - start:.0f} s)"
        )
    torch.save({"state_dict": model.state_dict(), "test_accuracy": acc}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
