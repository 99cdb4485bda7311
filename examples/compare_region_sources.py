"""Which attribution method gives RCSB the best region? A comparison on the demo data.

    python examples/compare_region_sources.py --n-images 60 --nfe 50 --out outputs/regions

RCSB (shipped classifier and bridge, paired classes shirt <-> T-shirt/top, pullover <-> coat,
sneaker <-> ankle boot) with regions from Integrated Gradients + NoiseTunnel (the default),
Saliency, LayerGradCam, Occlusion and random cells, all at the same area (0.3, cells of 4 px).
For each: flip rate, COUT, FID between the originals and the successful counterfactuals in the
classifier's feature space, mean L1 change inside the region; and Quantus' scores of the
underlying attribution maps: faithfulness (FaithfulnessCorrelation), complexity (Sparseness)
and randomisation (MPRT, all layers at once: the correlation with the map of the randomised
model, lower is better). Writes ``table.md``, ``table.csv`` and ``chart.png``.
"""

import argparse
import csv
import time
import warnings
from pathlib import Path

import numpy as np
import quantus
import torch

from rcsb_captum import RCSB, Bridge, RandomRegion
from rcsb_captum import metrics as M
from rcsb_captum.demo import (
    PAIRED_CLASSES,
    REGION_SOURCES,
    load_demo_classifier,
    load_demo_samples,
    make_region,
)

NAMES = {
    "ig": "IG + NoiseTunnel",
    "saliency": "Saliency",
    "gradcam": "LayerGradCam",
    "occlusion": "Occlusion",
    "random": "random cells",
}


def attribution_explain_func(source: str, seed: int):
    """A Quantus explain_func giving the attribution map behind a region source, computed on the
    model Quantus passes (so that MPRT sees the randomised model)."""

    def explain(model, inputs, targets, **kwargs):
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
        y = torch.as_tensor(np.asarray(targets)).long()
        region = make_region(source, model, cell_size=4, area=0.3, seed=seed)
        if isinstance(region, RandomRegion):
            g = torch.Generator().manual_seed(seed)
            return torch.rand(x.shape[0], 1, *x.shape[-2:], generator=g).numpy()
        a = region.method.attribute(x, target=y, **region.attribute_kwargs).detach()
        a = a.sum(1, keepdim=True).abs()
        if a.shape[-2:] != x.shape[-2:]:
            a = torch.nn.functional.interpolate(a, size=x.shape[-2:], mode="bilinear")
        return a.numpy()

    return explain


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-images", type=int, default=60)
    parser.add_argument("--nfe", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/regions")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    warnings.filterwarnings("ignore")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = load_demo_classifier()
    images, labels = load_demo_samples()
    with torch.no_grad():
        pred = model(images).argmax(1)
    keep = [
        i for i in range(len(labels)) if pred[i] == labels[i] and int(labels[i]) in PAIRED_CLASSES
    ]
    idx = torch.tensor(keep[: args.n_images])
    x, y = images[idx], labels[idx]
    cf = torch.tensor([PAIRED_CLASSES[int(c)] for c in y])
    bridge = Bridge.pretrained("fashion-mnist")

    rows = []
    for source in REGION_SOURCES:
        t0 = time.perf_counter()
        region = make_region(source, model, cell_size=4, area=0.3, seed=args.seed)
        rcsb = RCSB(model, bridge, region, nfe=args.nfe)
        res = rcsb.generate(x, target=y, counterfactual_target=cf, seed=args.seed)
        ok = res.success
        x_cf = res.counterfactuals
        explain = attribution_explain_func(source, args.seed)
        a = explain(model, x.numpy(), y.numpy())
        q_kwargs = dict(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a, device="cpu")
        faith = quantus.FaithfulnessCorrelation(
            nr_runs=50, subset_size=64, perturb_baseline="black", disable_warnings=True
        )(**q_kwargs)
        sparse = quantus.Sparseness(disable_warnings=True)(**q_kwargs)
        mprt = quantus.MPRT(disable_warnings=True, return_last_correlation=True, skip_layers=True)(
            **q_kwargs, explain_func=explain
        )
        rows.append(
            {
                "region source": NAMES[source],
                "flip rate": ok.float().mean().item(),
                "COUT": M.cout(model, x, x_cf, y, cf).mean().item(),
                "FID (clf features)": M.fid(x, x_cf[ok], model.features)
                if ok.sum() > 1
                else float("nan"),
                "L1 inside": M.closeness(x, x_cf, res.regions)["l1_inside"].mean().item(),
                "max change outside": M.closeness(x, x_cf, res.regions)["max_outside"].max().item(),
                "faithfulness corr": float(np.nanmean(faith)),
                "sparseness": float(np.nanmean(sparse)),
                "MPRT corr": float(np.nanmean(np.asarray(mprt, dtype=float))),
            }
        )
        print(
            f"{NAMES[source]:>16s}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1].items() if isinstance(v, float))
            + f" ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )

    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [
        "| " + " | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else r[k] for k in head) + " |"
        for r in rows
    ]
    note = f"{len(idx)} images, paired classes, area 0.3, cell 4, NFE {args.nfe}, seed {args.seed}"
    (out / "table.md").write_text(note + "\n\n" + "\n".join(lines) + "\n")
    with (out / "table.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=head)
        w.writeheader()
        w.writerows(rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ["flip rate", "COUT", "L1 inside", "faithfulness corr", "sparseness", "MPRT corr"]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.0 * len(shown), 3.4))
    for ax, key in zip(axes, shown, strict=True):
        ax.bar(range(len(rows)), [r[key] for r in rows], color=plt.cm.tab10.colors[: len(rows)])
        ax.set_xticks(range(len(rows)), [r["region source"] for r in rows], rotation=60, ha="right")
        ax.set_title(key, fontsize=10)
    fig.suptitle(note, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "chart.png", dpi=110)
    print("\n" + "\n".join(lines))
    print(f"\nwrote {out / 'table.md'}, {out / 'table.csv'}, {out / 'chart.png'}")


if __name__ == "__main__":
    main()
