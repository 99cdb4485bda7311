"""RCSB sampling wall time and peak memory against the bare network calls it must make.

Per step RCSB needs one UNet forward+backward and one classifier forward+backward (through x0).
This script times `sample_rcsb` and, in the same run, a loop of exactly those calls, and prints
the ratios. Peak memory, each in a fresh process: how far the peak resident set size (getrusage)
grows above the set-up (interpreter, models, inputs) during a full RCSB run versus during one bare
step; a ratio near 1 means the sampler holds no more than one step's working set.

    python benchmarks/sampler_overhead.py --channels 64 --batch 4 --nfe 20
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from rcsb_captum import Bridge
from rcsb_captum.guidance import ClassifierGuidance
from rcsb_captum.sampler import sample_rcsb


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--nfe", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--memory-child", choices=["bare", "rcsb"], default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    cfg = {
        "image_size": a.size,
        "num_channels": a.channels,
        "num_res_blocks": 1,
        "channel_mult": "1,2,2",
        "attention_resolutions": str(a.size // 4),
        "num_head_channels": 32,
        "resblock_updown": True,
    }
    bridge = Bridge.from_config(cfg)
    for prm in bridge.network.parameters():  # non-zero output layers, as a trained network
        nn.init.normal_(prm, std=0.02)
    clf = (
        nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(256, 10),
        )
        .eval()
        .requires_grad_(False)
    )
    x = torch.rand(a.batch, 3, a.size, a.size)
    m = torch.zeros(a.batch, 1, a.size, a.size)
    m[..., : a.size // 2, :] = 1
    tgt = torch.zeros(a.batch, dtype=torch.long)

    def bare() -> None:
        xt = (x * 2 - 1).clone()
        for _n in range(a.nfe):
            xi = xt.detach().requires_grad_(True)
            x0 = bridge.predict_x0(xi, 500)
            loss = torch.log_softmax(clf((x0 + 1) / 2), 1)[:, 1].sum()
            (g,) = torch.autograd.grad(loss, xi)
            xt = xt + 0.0 * g

    def rcsb() -> None:
        guide = ClassifierGuidance(
            clf, target=tgt, counterfactual_target=torch.ones_like(tgt), scale=1.5
        )
        sample_rcsb(
            bridge,
            x,
            m,
            guide,
            start_step=600,
            nfe=a.nfe,
            generator=torch.Generator().manual_seed(0),
        )

    if a.memory_child:
        import json
        import resource

        # growth of the peak resident set over what the set-up (models, inputs) already holds
        with open("/proc/self/statm") as f:
            base_kib = int(f.read().split()[1]) * resource.getpagesize() // 1024
        (bare if a.memory_child == "bare" else rcsb)()
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"base": base_kib, "peak": peak_kib, "delta": peak_kib - base_kib}))
        return
    bare(), rcsb()  # warm-up
    t_bare, t_rcsb = [], []
    for _ in range(a.repeats):  # interleaved so both see the same machine load
        s = time.perf_counter()
        bare()
        t_bare.append(time.perf_counter() - s)
        s = time.perf_counter()
        rcsb()
        t_rcsb.append(time.perf_counter() - s)
    tb, tr = min(t_bare), min(t_rcsb)
    params = sum(p.numel() for p in bridge.parameters())
    print(f"network {params / 1e6:.2f} M params, {a.size}px, batch {a.batch}, nfe {a.nfe}")
    print(f"bare network calls: {tb:.3f} s   RCSB sampling: {tr:.3f} s   time ratio {tr / tb:.3f}")

    # memory: peak resident set growth of one run over the set-up, each in a fresh process
    import json
    import subprocess
    import sys

    def peak(mode: str, nfe: int) -> float:
        args = [
            sys.executable,
            __file__,
            "--memory-child",
            mode,
            "--nfe",
            str(nfe),
            "--size",
            str(a.size),
            "--channels",
            str(a.channels),
            "--batch",
            str(a.batch),
        ]
        return json.loads(subprocess.check_output(args).decode().strip().splitlines()[-1])

    one, full = peak("bare", 1), peak("rcsb", a.nfe)
    print(
        f"peak RSS growth over set-up: one bare step {one['delta'] / 2**10:.1f} MiB, full RCSB "
        f"run ({a.nfe} steps) {full['delta'] / 2**10:.1f} MiB, ratio {full['delta'] / one['delta']:.3f}"
    )
    print(
        f"peak RSS (whole process): {one['peak'] / 2**10:.1f} MiB vs {full['peak'] / 2**10:.1f} MiB, "
        f"ratio {full['peak'] / one['peak']:.3f}"
    )


if __name__ == "__main__":
    main()
