"""Train the robust oracle: a judge of counterfactuals that a small, non-robust change cannot fool.

L2 PGD adversarial training (Madry et al., ICLR 2018) on half of each batch and clean images on
the other half (to keep clean accuracy), random shifts of up to 2 pixels and horizontal flips.
Architecture: :class:`rcsb_captum.demo.RobustOracleNet` (pre-activation wide ResNet, BatchNorm,
GELU), unlike the guided classifier (VGG-style) and the first oracle (GroupNorm ResNet).

    python scripts/train_robust_oracle.py --epochs 20 --eps 1.5 --seed 2 --device cuda \\
        --out rcsb_captum/data/fashion_mnist_robust_oracle.pt

Data: Debian's dataset-fashion-mnist package (MIT), padded 28 -> 32; test images >= 9000 are
never used (the shipped sample set); accuracy is reported on test images 0..8999.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from fashion_mnist import load_fashion_mnist
from torch import Tensor, nn

from rcsb_captum.demo import RobustOracleNet


def pgd_l2(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, g: torch.Generator
) -> Tensor:
    """Untargeted L2 PGD with a random start inside the ball; images stay in [0, 1]."""
    alpha = 2.5 * eps / steps
    flat = lambda t: t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)  # noqa: E731
    delta = torch.randn(x.shape, generator=g, device=x.device)
    radius = torch.rand(len(x), 1, 1, 1, generator=g, device=x.device) * eps
    delta = delta / flat(delta) * radius
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = delta.detach() + alpha * grad / flat(grad)
        delta = delta * (eps / flat(delta)).clamp(max=1.0)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def shift(x: Tensor, g: torch.Generator, max_shift: int = 2) -> Tensor:
    """Each image moved by its own whole-pixel offset in [-max_shift, max_shift] (zero fill)."""
    n, _, h, w = x.shape
    off = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=g, device=x.device)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = -2 * off[:, 1] / w
    theta[:, 1, 2] = -2 * off[:, 0] / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    pred = torch.cat([model(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return (pred == y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eps", type=float, default=1.5, help="L2 radius of the PGD ball")
    parser.add_argument("--pgd-steps", type=int, default=7)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images only")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--out", default="rcsb_captum/data/fashion_mnist_robust_oracle.pt")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    x, y = load_fashion_mnist("train")
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    xt, yt = load_fashion_mnist("test")
    x, y, xt, yt = x.to(device), y.to(device), xt[:9000].to(device), yt[:9000].to(device)
    model = RobustOracleNet().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    per_epoch = len(x) // args.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.epochs * per_epoch)
    g = torch.Generator(device=device).manual_seed(args.seed)
    start = time.time()
    half = args.batch_size // 2
    epoch = 0
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g, device=device)
        for i in range(per_epoch):
            idx = perm[i * args.batch_size : (i + 1) * args.batch_size]
            xb, yb = x[idx], y[idx]
            flip = torch.rand(len(idx), generator=g, device=device) < 0.5
            xb = shift(torch.where(flip[:, None, None, None], xb.flip(-1), xb), g)
            model.eval()  # attack with the running statistics, update in train mode
            adv = pgd_l2(model, xb[half:], yb[half:], args.eps, args.pgd_steps, g)
            model.train()
            loss = F.cross_entropy(model(torch.cat([xb[:half], adv])), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        acc = accuracy(model, xt, yt)
        print(
            f"epoch {epoch + 1}: loss {loss.item():.4f} clean test accuracy {acc:.4f} "
            f"({time.time() - start:.0f} s)",
            flush=True,
        )
        if args.max_seconds and time.time() - start > args.max_seconds:
            print("stopping: --max-seconds reached", flush=True)
            break
    model.eval()
    ge = torch.Generator(device=device).manual_seed(12345)
    xa = pgd_l2(model, xt[:1000], yt[:1000], args.eps, 20, ge)
    robust = accuracy(model, xa, yt[:1000])
    print(
        f"clean accuracy {acc:.4f}; L2 PGD-20 (eps {args.eps}) accuracy {robust:.4f} "
        f"on test 0..999",
        flush=True,
    )
    torch.save(
        {
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "test_accuracy": acc,
            "robust_accuracy": robust,
            "eps": args.eps,
            "epochs": epoch + 1,
            "seed": args.seed,
        },
        args.out,
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
