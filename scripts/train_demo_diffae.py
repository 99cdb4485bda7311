"""Train the Fashion-MNIST demo Diffusion Autoencoder that GCD and BB-LIG use (resumable:
re-run the same command to continue).

    python scripts/train_demo_diffae.py --steps 6000 --seed 0 --checkpoint demo_diffae.ckpt \
        --out rcsb_captum/data/fashion_mnist_diffae.pt

Data: the 60 000 Fashion-MNIST training images (Debian's dataset-fashion-mnist, MIT), padded to
32 x 32. Model: rcsb_captum.autoencoder's default for 1 x 32 x 32 (semantic encoder of width 32
to z_sem of 64; ADM decoder of 32 channels, multipliers 1,2,2, one residual block per level,
attention at 8 x 8); DDPM linear betas, 1000 steps; AdamW 2e-4, batch 32, EMA 0.999. The file
written holds the EMA weights in float16.
"""

import argparse

import torch
from fashion_mnist import load_fashion_mnist

from rcsb_captum.autoencoder import train_diffae

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=6000)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--checkpoint", default="demo_diffae.ckpt")
parser.add_argument("--out", default="demo_diffae.pt", help="DiffAE file (float16)")
args = parser.parse_args()
torch.set_flush_denormal(True)
images, _ = load_fashion_mnist("train")
ae = train_diffae(
    images,
    steps=args.steps,
    batch_size=32,
    lr=2e-4,
    ema_decay=0.999,
    checkpoint_path=args.checkpoint,
    checkpoint_every=250,
    seed=args.seed,
)
ae.save(args.out, dtype=torch.float16)
print(f"wrote {args.out}")
