"""Speed against quality of RCSB's levers on the shipped Fashion-MNIST models (issue 12).

For paired-class images (shirt <-> T-shirt/top, pullover <-> coat, sneaker <-> ankle boot) the
classifier gets right, one region per image (IG + NoiseTunnel, cells of 4 px, area 0.3; timed
once, reused by every row), and for each NFE x guidance_grad: flip rate, COUT, FID in the
classifier's and in the oracle's feature space (successful counterfactuals against the
inputs; the oracle is a second classifier of another architecture and seed that plays no part
in guidance), oracle agreement (the oracle also sees the counterfactual class), L1 inside the
region, the high-frequency ratio (mean |Laplacian| inside the region, counterfactual over input:
1 = as smooth as the input), and seconds per image of the sampling, each with its standard
error where it is a mean over images. All rows run in one process, one after the other.

    python benchmarks/speed_quality.py --n-images 60 --nfe 25 100 --grads xt x0 \
        --out benchmarks/results/speed_quality.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rcsb_captum import RCSB, Bridge
from rcsb_captum import metrics as M
from rcsb_captum.demo import (
    PAIRED_CLASSES,
    load_demo_classifier,
    load_demo_oracle,
    load_demo_samples,
    make_region,
)


def high_frequency_ratio(x: torch.Tensor, cf: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).to(x)

    def energy(t):
        e = F.conv2d(t.mean(1, keepdim=True), lap, padding=1).abs()
        return (e * region).flatten(1).sum(1) / region.flatten(1).sum(1).clamp_min(1)

    return energy(cf) / energy(x).clamp_min(1e-6)


def se(t: torch.Tensor) -> float:
    t = t.float()
    return float(t.std() / len(t) ** 0.5) if len(t) > 1 else float("nan")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n-images", type=int, default=60)
    p.add_argument("--nfe", nargs="+", type=int, default=[25, 100])
    p.add_argument("--grads", nargs="+", default=["xt", "x0"])
    p.add_argument("--samplers", nargs="+", default=["i2sb", "heun"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_flush_denormal(True)
    model = load_demo_classifier()
    oracle = load_demo_oracle()  # another architecture and seed; never used for guidance
    bridge = Bridge.pretrained("fashion-mnist")
    images, labels = load_demo_samples()
    with torch.no_grad():
        pred = model(images).argmax(1)
    keep = torch.tensor([int(y) in PAIRED_CLASSES for y in labels]) & (pred == labels)
    x, y = images[keep][: a.n_images], labels[keep][: a.n_images]
    cf = torch.tensor([PAIRED_CLASSES[int(c)] for c in y])
    region = make_region("ig", model, 4, 0.3)
    t = time.perf_counter()
    seeds = list(range(len(x)))
    masks = region(x, y, seeds=seeds)
    region_s = (time.perf_counter() - t) / len(x)
    rows = []
    combos = [(n, g, sm) for n in a.nfe for g in a.grads for sm in a.samplers]
    for nfe, grad, sampler in combos:
        rcsb = RCSB(model, bridge, nfe=nfe, guidance_grad=grad, sampler=sampler)
        t = time.perf_counter()
        res = rcsb.generate(x, target=y, counterfactual_target=cf, seed=a.seed, region=masks)
        seconds = (time.perf_counter() - t) / len(x)
        ok = res.success
        cout = M.cout(model, x, res.counterfactuals, y, cf, steps=20)
        hf = high_frequency_ratio(x, res.counterfactuals, res.regions)
        l1 = ((res.counterfactuals - x).abs() * res.regions).flatten(1).sum(
            1
        ) / res.regions.flatten(1).sum(1)
        fid = (
            M.fid(x, res.counterfactuals[ok], model.features)
            if int(ok.sum()) >= 2
            else float("nan")
        )
        oracle_fid = (
            M.fid(x, res.counterfactuals[ok], oracle.features)
            if int(ok.sum()) >= 2
            else float("nan")
        )
        agree = M.flipped(oracle, res.counterfactuals, y, cf)  # the oracle sees the cf class
        row = {
            "nfe": nfe,
            "guidance_grad": grad,
            "sampler": sampler,
            "network forwards": nfe if sampler == "i2sb" else 2 * nfe - 1,
            "images": len(x),
            "flip rate": float(ok.float().mean()),
            "flip s.e.": se(ok),
            "COUT": float(cout.mean()),
            "COUT s.e.": se(cout),
            "FID (clf)": fid,
            "FID (oracle)": oracle_fid,
            "oracle agreement": float(agree.float().mean()),
            "oracle s.e.": se(agree),
            "L1 inside": float(l1.mean()),
            "L1 s.e.": se(l1),
            "HF ratio": float(hf.mean()),
            "HF s.e.": se(hf),
            "sampling s/image": seconds,
            "region s/image": region_s,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    ref = next(
        (
            r
            for r in rows
            if r["nfe"] == max(a.nfe) and r["guidance_grad"] == "xt" and r["sampler"] == "i2sb"
        ),
        rows[0],
    )
    lines = [
        "| steps | sampler | forwards | guidance_grad | images | flip rate (s.e.) | COUT (s.e.) | FID (clf) | FID (oracle) | oracle agreement (s.e.) | L1 inside | HF ratio (s.e.) | sampling s/image | + region s/image | speed-up vs "
        f"{ref['nfe']} steps i2sb xt |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    total_ref = ref["sampling s/image"] + ref["region s/image"]
    for r in rows:
        total = r["sampling s/image"] + r["region s/image"]
        lines.append(
            f"| {r['nfe']} | {r['sampler']} | {r['network forwards']} | {r['guidance_grad']} | {r['images']} | {r['flip rate']:.3f} ({r['flip s.e.']:.3f}) | "
            f"{r['COUT']:.3f} ({r['COUT s.e.']:.3f}) | {r['FID (clf)']:.1f} | {r['FID (oracle)']:.1f} | "
            f"{r['oracle agreement']:.3f} ({r['oracle s.e.']:.3f}) | {r['L1 inside']:.3f} | "
            f"{r['HF ratio']:.2f} ({r['HF s.e.']:.2f}) | {r['sampling s/image']:.2f} | {r['region s/image']:.2f} | "
            f"{total_ref / total:.2f}x |"
        )
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(
            "# RCSB speed against quality (shipped Fashion-MNIST models, 2 CPU cores)\n\n"
            f"`python benchmarks/speed_quality.py --n-images {a.n_images} --nfe {' '.join(map(str, a.nfe))} "
            f"--grads {' '.join(a.grads)} --samplers {' '.join(a.samplers)}`\n\n" + text + "\n"
        )


if __name__ == "__main__":
    main()
