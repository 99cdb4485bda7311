"""Write a bridge file (EMA weights) from a train_bridge checkpoint, e.g. mid-training.

python scripts/export_bridge.py demo_bridge.ckpt rcsb_captum/data/fashion_mnist_bridge.pt --half
"""

import argparse

import torch

from rcsb_captum.bridge import bridge_from_checkpoint

parser = argparse.ArgumentParser()
parser.add_argument("checkpoint")
parser.add_argument("out")
parser.add_argument("--half", action="store_true", help="store float16 weights (half the size)")
args = parser.parse_args()
bridge = bridge_from_checkpoint(args.checkpoint)
bridge.save(args.out, dtype=torch.float16 if args.half else None)
step = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["step"]
print(f"wrote {args.out} (EMA weights after {step} steps)")
