"""Guidance variants that are not options of RCSB, tried against the speckle.

Each variant but ``blur`` replaces one piece of
:class:`rcsb_captum.guidance.ClassifierGuidance` or of the step weights for the duration of a
run (the library is not changed); every variant is scored like
``speed_quality.py`` on the first ``n`` paired-class images with the default (IG +
NoiseTunnel) regions: flip rate, COUT, oracle agreement, L1 inside, high-frequency ratio. Two
references are printed first: real images of the counterfactual class (the high-frequency ratio
of a real change of class inside the same regions) and unguided inpainting (the bridge's own).

    const:S      the official guidance at scale S
    stopF:S      the official guidance, switched off for the last fraction F of the steps
    blurB:S      the classifier's gradient blurred (Gaussian, sigma B px) before Adam: the
                 library's ``RCSB(guidance_smoothing=B)``, which grew out of this variant
    noadam:S     no Adam: the raw gradient, its first update L2-normalised to S

    python benchmarks/guidance_variants.py --n-images 30 --nfe 25 const:0 const:1.5 \\
        stop0.3:1.5 stop0.3:3 blur1:1.5 blur1:3 blur1.5:3 noadam:1.5 noadam:4
"""

from __future__ import annotations

import argparse
import contextlib
from unittest import mock

import torch
from speed_quality import high_frequency_ratio, paired_images

from rcsb_captum import RCSB, Bridge
from rcsb_captum import guidance as G
from rcsb_captum import metrics as M
from rcsb_captum import sampler as S
from rcsb_captum.demo import (
    load_demo_classifier,
    load_demo_oracle,
    load_demo_samples,
    make_region,
)


def variant(name: str) -> contextlib.AbstractContextManager:
    if name == "const" or name.startswith("blur"):  # blur is RCSB(guidance_smoothing=B)
        return contextlib.nullcontext()
    if name.startswith("stop"):
        frac = float(name[4:])

        def weights(schedule, steps, kind):
            return [1.0 if i < len(steps) * (1 - frac) else 0.0 for i in range(len(steps))]

        return mock.patch.object(S, "guidance_weights", weights)
    if name == "noadam":

        def raw(self, grad, weight=1.0):
            if self.norm0 is None:
                self.norm0 = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            return self.scale * weight * grad / self.norm0

        return mock.patch.object(G.ClassifierGuidance, "step", raw)
    raise SystemExit(f"unknown variant {name!r}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n-images", type=int, default=30)
    p.add_argument("--nfe", type=int, default=25)
    p.add_argument("variants", nargs="+", help="NAME:SCALE, see the module docstring")
    a = p.parse_args()
    torch.set_flush_denormal(True)
    model, oracle = load_demo_classifier(), load_demo_oracle()
    bridge = Bridge.pretrained("fashion-mnist")
    images, labels = load_demo_samples()
    x, y, cf = paired_images(model, images, labels, a.n_images)
    masks = make_region("ig", model, 4, 0.3)(x, y, seeds=list(range(len(x))))
    g = torch.Generator().manual_seed(0)
    real = []
    for _ in range(20):  # random real images of the counterfactual class, same regions
        pick = [(labels == cf[i]).nonzero()[:, 0] for i in range(len(x))]
        other = torch.stack([images[q[torch.randint(len(q), (1,), generator=g)][0]] for q in pick])
        real.append(high_frequency_ratio(x, other, masks))
    print(f"real counterfactual-class images: HF ratio {torch.stack(real).mean():.2f}")
    print("| variant | scale | flip | COUT | oracle agreement | L1 inside | HF ratio |")
    print("|---|---|---|---|---|---|---|")
    for spec in a.variants:
        name, scale = spec.split(":")
        with variant(name):
            smoothing = float(name[4:]) if name.startswith("blur") else 0.0
            rcsb = RCSB(
                model,
                bridge,
                nfe=a.nfe,
                guidance_scale=float(scale),
                guidance_smoothing=smoothing,
            )
            res = rcsb.generate(x, target=y, counterfactual_target=cf, seed=0, region=masks)
        cfs = res.counterfactuals
        hf = high_frequency_ratio(x, cfs, res.regions)
        cout = M.cout(model, x, cfs, y, cf, steps=20)
        agree = M.flipped(oracle, cfs, y, cf)
        l1 = ((cfs - x).abs() * res.regions).flatten(1).sum(1) / res.regions.flatten(1).sum(1)
        print(
            f"| {name} | {scale} | {res.success.float().mean():.3f} | {cout.mean():.3f} | "
            f"{agree.float().mean():.3f} | {l1.mean():.3f} | {hf.mean():.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
