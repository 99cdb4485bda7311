"""Counterfactual quality on the shipped Fashion-MNIST samples: RCSB against two baselines.

    python benchmarks/counterfactual_quality.py --nfe 50 --out benchmarks/results/quality.md

Images: the shipped sample set (test images 9000..9499, used in no training), the classifier's
correct predictions only. Two conditions: (a) ``counterfactual_target=None`` (leave the
predicted class) on the first ``--n-any`` images; (b) the paired classes shirt <-> T-shirt/top,
pullover <-> coat, sneaker <-> ankle boot on every correctly classified image of those classes.
All methods use the same regions (RCSB's default: Integrated Gradients in a NoiseTunnel, cells of
4 px = an 8 x 8 grid, area 0.3) and the same number of steps:

- RCSB: guidance scale 1.5, start step 600, 2 samples (the paper's balanced defaults);
- bridge, guidance 0: the same sampler without the classifier (plain inpainting, 2 samples);
- PGD: Captum's ``captum.robust.PGD`` inside the region (cross-entropy, L-inf radius 1 so only
  [0, 1] bounds it, step 0.02), the same number of steps as RCSB.

Columns: flip rate, largest change outside the region over all images (must be 0), mean L1
change inside the region, COUT, and FID between the originals and the successful
counterfactuals in the classifier's 128-d penultimate feature space.
"""

import argparse
import time
from pathlib import Path

import torch
from captum.robust import PGD

from rcsb_captum import RCSB, Bridge
from rcsb_captum import metrics as M
from rcsb_captum.demo import PAIRED_CLASSES, load_demo_classifier, load_demo_samples, make_region

parser = argparse.ArgumentParser()
parser.add_argument("--nfe", type=int, default=50)
parser.add_argument("--n-any", type=int, default=240)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--batch", type=int, default=120, help="images sampled together")
parser.add_argument("--limit", type=int, default=None, help="at most this many images (smoke runs)")
parser.add_argument("--out", default=None, help="also write the markdown table here")
args = parser.parse_args()
torch.set_flush_denormal(True)

model = load_demo_classifier()
images, labels = load_demo_samples()
with torch.no_grad():
    pred = model(images).argmax(1)
correct = (pred == labels).nonzero()[:, 0]
paired = torch.tensor([int(labels[i]) in PAIRED_CLASSES for i in correct.tolist()])
conditions = {
    "(a) any other class": (correct[: args.n_any], None),
    "(b) paired classes": (
        correct[paired],
        torch.tensor([PAIRED_CLASSES[int(labels[i])] for i in correct[paired].tolist()]),
    ),
}
bridge = Bridge.pretrained("fashion-mnist")
region_source = make_region("ig", model, cell_size=4, area=0.3)


def rcsb_method(scale):
    def run(x, y, cf, regions, seed):
        rcsb = RCSB(model, bridge, guidance_scale=scale, nfe=args.nfe, n_samples=2)
        return rcsb.generate(
            x,
            target=y,
            counterfactual_target=cf,
            region=regions,
            seed=seed,
            internal_batch_size=args.batch,
        ).counterfactuals

    return run


def pgd_method(x, y, cf, regions, seed):
    pgd = PGD(model, lower_bound=0.0, upper_bound=1.0)
    targeted = cf is not None
    return pgd.perturb(
        x,
        radius=1.0,
        step_size=0.02,
        step_num=args.nfe,
        target=cf if targeted else y,
        targeted=targeted,
        mask=regions.expand_as(x),
    ).detach()


methods = {
    "RCSB (guidance 1.5)": rcsb_method(1.5),
    "bridge, guidance 0": rcsb_method(0.0),
    "PGD in region": pgd_method,
}
rows = []
for cond, (idx, cf) in conditions.items():
    idx, cf = idx[: args.limit], None if cf is None else cf[: args.limit]
    x, y = images[idx], labels[idx]
    t0 = time.perf_counter()
    regions = region_source(x, y)
    print(f"{cond}: {len(idx)} images, regions in {time.perf_counter() - t0:.1f} s", flush=True)
    for name, run in methods.items():
        t0 = time.perf_counter()
        x_cf = run(x, y, cf, regions, args.seed)
        seconds = time.perf_counter() - t0
        ok = M.flipped(model, x_cf, y, cf)
        dist = M.closeness(x, x_cf, regions)
        row = {
            "condition": cond,
            "method": name,
            "images": len(idx),
            "flip rate": ok.float().mean().item(),
            "max change outside": dist["max_outside"].max().item(),
            "L1 inside": dist["l1_inside"].mean().item(),
            "COUT": M.cout(model, x, x_cf, y, cf).mean().item(),
            "FID (clf features)": M.fid(x, x_cf[ok], model.features)
            if ok.sum() > 1
            else float("nan"),
            "seconds": seconds,
        }
        rows.append(row)
        print(
            "  "
            + "  ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
            ),
            flush=True,
        )

head = list(rows[0])
lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
for r in rows:
    cells = [f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in head]
    lines.append("| " + " | ".join(cells) + " |")
table = "\n".join(lines)
print(f"\nNFE {args.nfe}, region IG+NoiseTunnel, cell 4, area 0.3, seed {args.seed}\n")
print(table)
if args.out:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        f"NFE {args.nfe}, region IG+NoiseTunnel, cell 4, area 0.3, seed {args.seed}\n\n{table}\n"
    )
