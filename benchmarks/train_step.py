"""Seconds per training step of train_bridge for each preset (same run, same machine).

    python benchmarks/train_step.py --presets tiny small --size 32 --batch 32 --steps 6
    python benchmarks/train_step.py --presets celeba-128 --size 128 --batch 2 --steps 2

Each step is timed on its own (train_bridge's per-step callback), the first (warm-up) is not
counted, and the median over the rest is reported, so the figure is never the difference of
two runs (which came out negative under load). Images are random (speed does not depend on
them).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rcsb_captum import train_bridge
from rcsb_captum.bridge import ADMUNet, adm_config_from_create_model
from rcsb_captum.bridge.presets import preset_config


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--presets", nargs="+", default=["tiny", "small"])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--precision", default="32-true")
    a = p.parse_args()
    torch.set_flush_denormal(True)
    images = torch.rand(64, a.channels, a.size, a.size, generator=torch.Generator().manual_seed(0))
    print(f"| preset | size | parameters | batch | {a.accelerator} s/step ({a.precision}) |")
    print("|---|---|---|---|---|")
    for name in a.presets:
        config = preset_config(name, a.size, a.channels)
        with torch.device("meta"):
            params = sum(
                q.numel() for q in ADMUNet(**adm_config_from_create_model(config)).parameters()
            )
        kw = dict(
            config=config,
            batch_size=a.batch,
            show_progress=False,
            accelerator=a.accelerator,
            precision=a.precision,
        )
        stamps: list[float] = []

        def stamp(step: int, loss: float, stamps: list[float] = stamps) -> None:
            stamps.append(time.perf_counter())

        train_bridge(images, steps=1 + a.steps, callback=stamp, **kw)
        # stamps[0] closes the warm-up step; each later gap is one step
        per = statistics.median(b - a_ for a_, b in zip(stamps[:-1], stamps[1:], strict=True))
        print(f"| {name} | {a.size} | {params / 1e6:.2f} M | {a.batch} | {per:.3f} |", flush=True)


if __name__ == "__main__":
    main()
