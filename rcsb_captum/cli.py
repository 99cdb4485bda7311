r"""The ``rcsb-captum`` command line (uses the public API only)."""

from __future__ import annotations

import argparse
import sys


def _train_bridge(args: argparse.Namespace) -> int:
    import torch

    from . import train_bridge
    from .bridge.training import load_images

    torch.set_flush_denormal(True)
    images = load_images(
        args.images, image_size=args.image_size, channels=1 if args.grayscale else None
    )
    bridge = train_bridge(
        images,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        mask_area=(args.min_area, args.max_area),
        checkpoint_path=args.checkpoint,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
    )
    bridge.save(args.out)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rcsb-captum", description="Region-constrained counterfactuals"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tb = sub.add_parser(
        "train-bridge", help="train an I2SB inpainting bridge on a folder of images"
    )
    tb.add_argument("images", help="folder of image files")
    tb.add_argument("--out", default="bridge.pt")
    tb.add_argument("--image-size", type=int, default=None)
    tb.add_argument("--grayscale", action="store_true")
    tb.add_argument("--steps", type=int, default=20_000)
    tb.add_argument("--batch-size", type=int, default=32)
    tb.add_argument("--lr", type=float, default=5e-4)
    tb.add_argument("--min-area", type=float, default=0.1)
    tb.add_argument("--max-area", type=float, default=0.4)
    tb.add_argument("--checkpoint", default=None, help="resumable training checkpoint file")
    tb.add_argument("--checkpoint-every", type=int, default=500)
    tb.add_argument("--seed", type=int, default=0)
    tb.set_defaults(func=_train_bridge)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
