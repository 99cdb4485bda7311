"""Wall time per image of the paper's setting against the 4x setting, measured in one run.

Both settings run on the same ``--n-images`` shipped paired-class test images in this one
process, region included (the region is part of a call): the paper's (the library's
defaults: IG + NoiseTunnel region, 2 samples, 100 steps through the bridge, fp32) and the 4x
setting of the README (IG of 8 steps in the same NoiseTunnel, 1 sample, 95 steps, the
gradient through the bridge while the noise is above 0.75 of the first step's and at x0 after,
bf16 autocast). Each setting is warmed up on two images first. Prints seconds per image, the
ratio, and each setting's flip rate.

    python benchmarks/speedup.py --n-images 96
"""

from __future__ import annotations

import argparse
import time

import torch
from speed_quality import paired_images

from rcsb_captum import RCSB, Bridge
from rcsb_captum.demo import load_demo_classifier, load_demo_samples
from rcsb_captum.regions import default_region


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n-images", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    a = p.parse_args()
    torch.set_flush_denormal(True)
    model, bridge = load_demo_classifier(), Bridge.pretrained("fashion-mnist")
    images, labels = load_demo_samples()
    x, y, cf = paired_images(model, images, labels, a.n_images)
    settings = {
        "paper (defaults)": RCSB(model, bridge, default_region(model, 4)),
        "4x": RCSB(
            model,
            bridge,
            default_region(model, 4, n_steps=8),
            nfe=95,
            n_samples=1,
            guidance_grad="xt-x0",
            guidance_switch=0.75,
            precision="bf16",
        ),
    }
    seconds = {}
    for name, rcsb in settings.items():
        # one short call first: one-off costs (kernel selection, bf16 kernels) are not per image
        rcsb.generate(x[:2], target=y[:2], counterfactual_target=cf[:2], seed=0)
        t = time.perf_counter()
        res = rcsb.generate(
            x, target=y, counterfactual_target=cf, seed=0, internal_batch_size=a.batch_size
        )
        seconds[name] = (time.perf_counter() - t) / len(x)
        print(
            f"{name:>16}: {seconds[name]:.3f} s/image (region + sampling), "
            f"flip {res.success.float().mean():.3f}",
            flush=True,
        )
    print(f"speed-up: {seconds['paper (defaults)'] / seconds['4x']:.2f}x ({len(x)} images)")


if __name__ == "__main__":
    main()
