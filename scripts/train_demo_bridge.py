"""Train the Fashion-MNIST demo bridges (resumable: re-run the same command to continue; a
resumed run is bit-identical to an uninterrupted one on the same device).

    # the shipped 'tiny' bridge (8,000 steps on 2 CPU cores)
    python scripts/train_demo_bridge.py --steps 8000 --seed 0 --checkpoint demo_bridge.ckpt
    rcsb-captum export demo_bridge.pt rcsb_captum/data/fashion_mnist_bridge.pt --half
    # the shipped bridge fine-tuned on holes of up to 70 % (the realistic preset's regions)
    python scripts/train_demo_bridge.py --init rcsb_captum/data/fashion_mnist_bridge.pt \\
        --mask-area 0.1,0.7 --lr 2e-4 --steps 3000 --checkpoint ft.ckpt --out ft.pt
    # a larger prior on a GPU, with the bridge written at milestones
    python scripts/train_demo_bridge.py --preset small --steps 40000 --accelerator cuda \\
        --precision bf16-mixed --milestones 4000,16000 --max-seconds 3600 --out small.pt

Data: the 60 000 Fashion-MNIST training images (Debian's dataset-fashion-mnist, MIT), padded to
32 x 32, grayscale. ``tiny``: ADM, 32 channels, multipliers 1,2,2, one residual block per level,
attention at 8 x 8 (1.37 M parameters; ~0.55 s a step at batch 32 on 2 idle CPU cores);
``small``: 64 channels (5.5 M).
"""

import argparse
import os
import time

import torch
from fashion_mnist import load_fashion_mnist

from rcsb_captum import train_bridge
from rcsb_captum.bridge.presets import preset_config

parser = argparse.ArgumentParser()
parser.add_argument("--preset", choices=("tiny", "small"), default="tiny")
parser.add_argument("--steps", type=int, default=20_000)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--mask-area", default="0.1,0.4", help="hole fraction range of the masks")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--checkpoint", default="demo_bridge.ckpt")
parser.add_argument("--out", default="demo_bridge.pt", help="bridge file (float16 weights)")
parser.add_argument("--milestones", default="", help="steps at which to also write out_STEP.pt")
parser.add_argument("--max-seconds", type=float, default=None, help="stop (resumably) after this")
parser.add_argument("--chunk", type=int, default=1000, help="steps between time checks")
parser.add_argument("--accelerator", default="cpu")
parser.add_argument("--precision", default="32-true")
parser.add_argument("--init", default=None, help="fine-tune from this bridge file (Bridge.save)")
parser.add_argument("--lr", type=float, default=5e-4)
parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
args = parser.parse_args()
torch.set_flush_denormal(True)
if args.threads:
    torch.set_num_threads(args.threads)
images, _ = load_fashion_mnist("train")
config = preset_config(args.preset, 32, 1)
lo, hi = (float(v) for v in args.mask_area.split(","))
milestones = sorted(int(v) for v in args.milestones.split(",") if v)
stem, ext = os.path.splitext(args.out)
start = time.time()
done = 0
if os.path.exists(args.checkpoint):  # resume: continue from the checkpoint's step
    done = int(torch.load(args.checkpoint, map_location="cpu", weights_only=True)["step"])
    print(f"resuming at step {done}", flush=True)
while done < args.steps:
    target = min(args.steps, done + args.chunk)
    bridge = train_bridge(
        images,
        config=config,
        steps=target,
        batch_size=args.batch_size,
        lr=args.lr,
        init=args.init,
        ema_decay=0.999,
        mask_area=(lo, hi),
        checkpoint_path=args.checkpoint,
        checkpoint_every=250,
        seed=args.seed,
        show_progress=False,
        accelerator=args.accelerator,
        precision=args.precision,
    )
    done = target
    elapsed = time.time() - start
    print(
        f"step {done} ({elapsed:.0f} s, {elapsed / max(done, 1):.3f} s a step overall)", flush=True
    )
    if done in milestones:
        bridge.save(f"{stem}_{done}{ext}", dtype=torch.float16)
    if args.max_seconds and elapsed > args.max_seconds:
        print(f"stopping at step {done}: --max-seconds reached", flush=True)
        break
bridge.save(args.out, dtype=torch.float16)
print(f"wrote {args.out} at step {done}")
