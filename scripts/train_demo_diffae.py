"""Train the Fashion-MNIST demo Diffusion Autoencoder that GCD and BB-LIG use. Resumable:
the run goes in chunks of 500 steps, each one resumed from the checkpoint; re-run the same
command to continue, on any device (every draw comes from a generator seeded by the step).

    python scripts/train_demo_diffae.py --recipe v-patch2-flat --steps 9500 --batch-size 64 \
        --seed 0 --checkpoint demo_diffae.ckpt --out demo_diffae.pt [--accelerator cuda]

(The shipped file: that run to 18,000 steps, widened to a 128-d code and trained to 24,000,
exported with ``--whiten``; CONTRIBUTING.md has the commands.)

Data: the 60 000 Fashion-MNIST training images (Debian's dataset-fashion-mnist, MIT; or an
``.npz`` with an ``images`` array given by --data), padded to 32 x 32. Model:
``rcsb_captum.autoencoder.recipe_config(recipe, 32, 1)`` (semantic encoder of width 32 to z_sem
of 64; ADM decoder of 32 channels; ``eps``: DiffAE's noise prediction on pixels, multipliers
1,2,2, attention at 8 x 8; ``v-patch2``: v-prediction on 2 x 2 patches, multipliers 1,2;
``v-patch2-flat``, the shipped one: the same with the encoder's 4 x 4 map flattened; the
shipped code has 128 dimensions on whitened axes); DDPM linear betas, 1000 steps; AdamW 2e-4,
EMA 0.999. The file written holds the EMA weights in float16. --max-seconds stops after the
chunk that passes it.
"""

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from fashion_mnist import load_fashion_mnist

from rcsb_captum.autoencoder import (
    RECIPES,
    DiffusionAutoencoder,
    recipe_config,
    train_diffae,
    warm_start_diffae,
    whiten_code,
    widen_code,
)

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=6000)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--checkpoint", default="demo_diffae.ckpt")
parser.add_argument("--out", default="demo_diffae.pt", help="DiffAE file (float16)")
parser.add_argument("--recipe", choices=sorted(RECIPES), default="v-patch2-flat")
parser.add_argument("--accelerator", default="cpu")
parser.add_argument("--data", default=None, help=".npz with uint8 'images' N x 28 x 28")
parser.add_argument("--max-seconds", type=float, default=None)
parser.add_argument(
    "--warm-start",
    default=None,
    help="a DiffAE file (e.g. the shipped one) to go on training from when there is no "
    "checkpoint yet: its weights become the network and the EMA at --warm-start-step, with a "
    "fresh optimiser (the file holds no Adam moments)",
)
parser.add_argument("--warm-start-step", type=int, default=0)
parser.add_argument(
    "--z-dim",
    type=int,
    default=None,
    help="the semantic code's size (default: the recipe's, 64); with --warm-start from a "
    "file with a smaller code, the file is widened first (rcsb_captum.autoencoder.widen_code: "
    "same function, new dimensions unused until trained)",
)
parser.add_argument(
    "--whiten",
    action="store_true",
    help="write the exported float16 model with its code on whitened principal axes "
    "(rcsb_captum.autoencoder.whiten_code on all training images: same renders, GCD's unit "
    "steps one data std along any direction); the shipped file is whitened",
)
args = parser.parse_args()
config = recipe_config(args.recipe, 32, 1)
if args.z_dim is not None:
    config["z_dim"] = args.z_dim
torch.set_flush_denormal(True)
if args.data:
    raw = torch.from_numpy(np.load(args.data)["images"]).float().div(255)[:, None]
    images = F.pad(raw, (2, 2, 2, 2))
else:
    images, _ = load_fashion_mnist("train")
start, done = time.time(), 0
if args.warm_start and not os.path.exists(args.checkpoint):
    source = DiffusionAutoencoder.load(args.warm_start)
    if source.z_dim < config["z_dim"]:
        print(f"widening the code from {source.z_dim} to {config['z_dim']}", flush=True)
        source = widen_code(source, config["z_dim"], seed=args.seed)
    if source.config != config:
        raise SystemExit(f"--warm-start {args.warm_start!r} was trained with another recipe")
    warm_start_diffae(source, args.checkpoint, args.warm_start_step)
    print(f"warm start: {args.warm_start} at step {args.warm_start_step}", flush=True)
if os.path.exists(args.checkpoint):
    done = int(torch.load(args.checkpoint, map_location="cpu", weights_only=True)["step"])
ae = None
while done < args.steps:
    done = min(args.steps, done + 500)
    ae = train_diffae(
        images,
        config=config,
        steps=done,
        batch_size=args.batch_size,
        lr=2e-4,
        ema_decay=0.999,
        checkpoint_path=args.checkpoint,
        checkpoint_every=250,
        seed=args.seed,
        accelerator=args.accelerator,
        show_progress=False,
    )
    print(f"{done} steps, {time.time() - start:.0f} s", flush=True)
    if args.max_seconds and time.time() - start > args.max_seconds:
        break
if ae is None:  # nothing left to train: export the checkpoint
    ae = train_diffae(
        images,
        config=config,
        steps=done,
        batch_size=args.batch_size,
        checkpoint_path=args.checkpoint,
        seed=args.seed,
        show_progress=False,
    )
ae.save(args.out, dtype=torch.float16)
if args.whiten:  # the float16 model of record, whitened: the same function as the file above
    ae = whiten_code(DiffusionAutoencoder.load(args.out), images)
    ae.save(args.out, dtype=torch.float16)
print(f"wrote {args.out} after {done} steps{' (code whitened)' if args.whiten else ''}")
