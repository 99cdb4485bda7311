"""Write a bridge file (EMA weights) from a train_bridge checkpoint, e.g. mid-training.

python scripts/export_bridge.py demo_bridge.ckpt rcsb_captum/data/fashion_mnist_bridge.pt --half
"""

import argparse

import torch

from rcsb_captum import Bridge

parser = argparse.ArgumentParser()
parser.add_argument("checkpoint")
parser.add_argument("out")
parser.add_argument("--half", action="store_true", help="store float16 weights (half the size)")
args = parser.parse_args()
ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
bridge = Bridge.from_config(
    ckpt["config"], interval=ckpt["interval"], beta_max=ckpt.get("beta_max", 1.0)
)
# torch.optim.swa_utils.AveragedModel prefixes the averaged network's keys with "module."
ema = {k.removeprefix("module."): v for k, v in ckpt["ema"].items() if k.startswith("module.")}
bridge.network.load_state_dict(ema)
bridge.save(args.out, dtype=torch.float16 if args.half else None)
print(f"wrote {args.out} (EMA weights after {ckpt['step']} steps)")
