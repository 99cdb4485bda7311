"""Speed against quality of RCSB's levers on the shipped Fashion-MNIST models.

For paired-class images (shirt <-> T-shirt/top, pullover <-> coat, sneaker <-> ankle boot) the
classifier gets right: one region per image and region source (timed once, cached, reused by
every row), then for every combination of the options given (steps x guidance_grad x sampler x
guidance_norm x guidance_scale x guidance_schedule x guidance_smoothing x precision x
guidance_interval x region source x samples): flip rate, COUT, FID in the classifier's and in
the oracle's feature space (successful counterfactuals against the inputs; the oracle is a
second classifier of another architecture and seed that plays no part in guidance), oracle
agreement (the oracle also sees the counterfactual class; its ceiling is the oracle's accuracy
on real images of these classes, printed in the header), L1 inside the region, the high-
frequency ratio (mean |Laplacian| inside the region, counterfactual over input: 1 = as smooth as
the input) and seconds per image of the region and of the sampling, each with its standard error
where it is a mean over images.

Rows are appended to a JSON-lines file as they finish and a row already there is not run
again, so a long study can be stopped and resumed and several invocations (different option
lists) fill one table; ``--table`` writes the Markdown table of every row in the file. All
timings are on one machine; run one study at a time.

    python benchmarks/speed_quality.py --rows benchmarks/results/speed_quality.jsonl \\
        --n-images 200 --nfe 10 25 50 100 --grads xt x0 --samplers i2sb heun
    python benchmarks/speed_quality.py --rows benchmarks/results/speed_quality.jsonl \\
        --table benchmarks/results/speed_quality.md
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients

from rcsb_captum import RCSB, AttributionRegion, Bridge
from rcsb_captum import metrics as M
from rcsb_captum.demo import (
    PAIRED_CLASSES,
    load_demo_classifier,
    load_demo_oracle,
    load_demo_samples,
    make_region,
)

KEYS = (
    "images",
    "nfe",
    "guidance_grad",
    "sampler",
    "guidance_norm",
    "guidance_scale",
    "guidance_schedule",
    "guidance_smoothing",
    "region",
    "n_samples",
    "precision",
    "guidance_interval",
    "guidance_switch",
    "seed",
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


def paired_images(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``n`` shipped test images of the paired classes that ``model`` gets right, their
    labels and their counterfactual classes (the pair's other class)."""
    with torch.no_grad():
        pred = model(images).argmax(1)
    keep = torch.tensor([int(c) in PAIRED_CLASSES for c in labels]) & (pred == labels)
    x, y = images[keep][:n], labels[keep][:n]
    if len(x) < n:
        raise SystemExit(f"only {len(x)} paired, correctly classified images are shipped")
    return x, y, torch.tensor([PAIRED_CLASSES[int(c)] for c in y])


def region_source(name: str, model: torch.nn.Module):
    """``ig-nt``: the default (IG, 50 steps, in a 5-sample NoiseTunnel: 250 passes an image);
    ``ig8-nt``: the same NoiseTunnel around IG of 8 steps (40 passes); ``ig16``: plain IG with
    16 steps, batched; ``saliency``; ``gradcam`` (last conv block)."""
    if name == "ig-nt":
        return make_region("ig", model, 4, 0.3)
    if name == "ig8-nt":  # the default's NoiseTunnel around IG of 8 steps: 40 passes an image
        return make_region("ig", model, 4, 0.3, ig_steps=8)
    if name == "ig16":
        return AttributionRegion(
            IntegratedGradients(model), 4, 0.3, n_steps=16, internal_batch_size=512
        )
    return make_region(name, model, 4, 0.3)


def load_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    # rows written before these keys existed hold their defaults
    return [
        {
            "n_samples": 2,
            "guidance_smoothing": 0.0,
            "precision": "fp32",
            "guidance_interval": 1,
            "guidance_switch": 0.5,
            **r,
        }
        for r in rows
    ]


def key_of(row: dict) -> tuple:
    return tuple(row[k] for k in KEYS)


def run_row(cfg: dict, model, oracle, bridge, x, y, cf, masks, region_s: float, batch: int) -> dict:
    rcsb = RCSB(
        model,
        bridge,
        nfe=cfg["nfe"],
        guidance_grad=cfg["guidance_grad"],
        sampler=cfg["sampler"],
        guidance_norm=cfg["guidance_norm"],
        guidance_scale=cfg["guidance_scale"],
        guidance_schedule=cfg["guidance_schedule"],
        n_samples=cfg["n_samples"],
        guidance_smoothing=cfg["guidance_smoothing"],
        precision=cfg["precision"],
        guidance_interval=cfg["guidance_interval"],
        guidance_switch=cfg["guidance_switch"],
    )
    t = time.perf_counter()
    res = rcsb.generate(
        x,
        target=y,
        counterfactual_target=cf,
        seed=cfg["seed"],
        region=masks,
        internal_batch_size=batch,
    )
    seconds = (time.perf_counter() - t) / len(x)
    ok = res.success
    cout = M.cout(model, x, res.counterfactuals, y, cf, steps=20)
    hf = high_frequency_ratio(x, res.counterfactuals, res.regions)
    inside = res.regions.flatten(1).sum(1)
    l1 = ((res.counterfactuals - x).abs() * res.regions).flatten(1).sum(1) / inside
    enough = int(ok.sum()) >= 2
    fid = M.fid(x, res.counterfactuals[ok], model.features) if enough else float("nan")
    oracle_fid = M.fid(x, res.counterfactuals[ok], oracle.features) if enough else float("nan")
    agree = M.flipped(oracle, res.counterfactuals, y, cf)
    return {
        **cfg,
        "forwards": cfg["nfe"] if cfg["sampler"] == "i2sb" else 2 * cfg["nfe"] - 1,
        "flip": float(ok.float().mean()),
        "flip_se": se(ok),
        "cout": float(cout.mean()),
        "cout_se": se(cout),
        "fid_clf": fid,
        "fid_oracle": oracle_fid,
        "oracle": float(agree.float().mean()),
        "oracle_se": se(agree),
        "l1": float(l1.mean()),
        "l1_se": se(l1),
        "hf": float(hf.mean()),
        "hf_se": se(hf),
        "sampling_s": seconds,
        "region_s": region_s,
    }


def table(rows: list[dict], header: str) -> str:
    ref = [
        r
        for r in rows
        if (r["nfe"], r["guidance_grad"], r["sampler"], r["guidance_norm"])
        == (100, "xt", "i2sb", "l2")
        and (r["guidance_scale"], r["guidance_schedule"], r["region"]) == (1.5, "constant", "ig-nt")
        and r["n_samples"] == 2
        and r["guidance_smoothing"] == 0
        and r["precision"] == "fp32"
        and r["guidance_interval"] == 1
    ]
    ref_total = ref[0]["sampling_s"] + ref[0]["region_s"] if ref else None
    head = (
        "| region | samples | steps | sampler | forwards | grad | norm | scale | schedule | "
        "smooth | precision | interval | images | "
        "flip (s.e.) | COUT (s.e.) | FID clf | FID oracle | oracle agr. (s.e.) | L1 in | "
        "HF ratio (s.e.) | region s/img | sampling s/img | speed-up |"
    )
    lines = [header, "", head, "|" + "---|" * (head.count("|") - 1)]
    order = lambda r: (  # noqa: E731
        r["region"] != "ig-nt",
        r["region"],
        -r["n_samples"],
        r["guidance_smoothing"],
        r["precision"],
        r["guidance_interval"],
        r["guidance_norm"],
        r["guidance_schedule"],
        r["guidance_scale"],
        -r["nfe"],
        r["guidance_grad"] != "xt",
        r["guidance_switch"],
        r["sampler"] != "i2sb",
    )
    for r in sorted(rows, key=order):
        total = r["sampling_s"] + r["region_s"]
        grad = r["guidance_grad"]
        if grad == "xt-x0":
            grad += f" @{r['guidance_switch']:g}"  # the switch's noise level
        speed = f"{ref_total / total:.2f}x" if ref_total else "-"
        lines.append(
            f"| {r['region']} | {r['n_samples']} | {r['nfe']} | {r['sampler']} | {r['forwards']} | "
            f"{grad} | {r['guidance_norm']} | {r['guidance_scale']:g} | "
            f"{r['guidance_schedule']} | {r['guidance_smoothing']:g} | {r['precision']} | "
            f"{r['guidance_interval']} | {r['images']} | {r['flip']:.3f} ({r['flip_se']:.3f}) | "
            f"{r['cout']:.3f} ({r['cout_se']:.3f}) | {r['fid_clf']:.1f} | {r['fid_oracle']:.2f} | "
            f"{r['oracle']:.3f} ({r['oracle_se']:.3f}) | {r['l1']:.3f} | "
            f"{r['hf']:.2f} ({r['hf_se']:.2f}) | {r['region_s']:.3f} | {r['sampling_s']:.2f} | "
            f"{speed} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", required=True, help="JSON-lines file of finished rows (appended)")
    p.add_argument("--n-images", type=int, default=200)
    p.add_argument("--nfe", nargs="+", type=int, default=[25, 100])
    p.add_argument("--grads", nargs="+", default=["xt"])
    p.add_argument("--samplers", nargs="+", default=["i2sb"])
    p.add_argument("--norms", nargs="+", default=["l2"])
    p.add_argument("--scales", nargs="+", type=float, default=[1.5])
    p.add_argument("--schedules", nargs="+", default=["constant"])
    p.add_argument("--regions", nargs="+", default=["ig-nt"])
    p.add_argument("--n-samples", nargs="+", type=int, default=[2])
    p.add_argument("--smoothings", nargs="+", type=float, default=[0.0])
    p.add_argument("--precisions", nargs="+", default=["fp32"], help="bridge autocast")
    p.add_argument("--intervals", nargs="+", type=int, default=[1], help="guidance_interval")
    p.add_argument(
        "--switches", nargs="+", type=float, default=[0.5], help="guidance_switch (xt-x0 only)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--batch-size", type=int, default=32, help="images sampled together (not the result)"
    )
    p.add_argument("--table", default=None, help="write the Markdown table of all rows here")
    p.add_argument("--note", default="", help="a paragraph for the table's header")
    a = p.parse_args()
    rows_path = Path(a.rows)
    torch.set_flush_denormal(True)
    model = load_demo_classifier()
    oracle = load_demo_oracle()  # another architecture and seed; never used for guidance
    images, labels = load_demo_samples()
    with torch.no_grad():
        oracle_pred = oracle(images).argmax(1)
    paired = torch.tensor([int(c) in PAIRED_CLASSES for c in labels])
    ceiling = float((oracle_pred == labels)[paired].float().mean())
    if a.table:
        header = (
            "# RCSB speed against quality (shipped Fashion-MNIST models, 2 CPU cores)\n\n"
            "Written by `benchmarks/speed_quality.py` from `"
            f"{rows_path.name}`. Oracle agreement ceiling (the oracle's accuracy on real test "
            f"images of the six paired classes): {ceiling:.3f}. Speed-up: total seconds per "
            "image (region + sampling) of the paper setting (ig-nt, 2 samples, 100 steps, i2sb, "
            "xt, l2, 1.5, constant) over the row's."
        )
        if a.note:
            header += "\n\n" + a.note
        Path(a.table).write_text(table(load_rows(rows_path), header))
        print(Path(a.table).read_text())
        return
    bridge = Bridge.pretrained("fashion-mnist")
    x, y, cf = paired_images(model, images, labels, a.n_images)
    done = {key_of(r) for r in load_rows(rows_path)}
    cache_path = rows_path.with_suffix(f".regions{a.n_images}.pt")
    cache = torch.load(cache_path) if cache_path.exists() else {}
    combos = itertools.product(
        a.regions,
        a.n_samples,
        a.smoothings,
        a.precisions,
        a.intervals,
        a.switches,
        a.norms,
        a.schedules,
        a.scales,
        a.nfe,
        a.grads,
        a.samplers,
    )
    for (
        region,
        n_samples,
        smoothing,
        precision,
        interval,
        switch,
        norm,
        schedule,
        scale,
        nfe,
        grad,
        sampler,
    ) in combos:
        cfg = {
            "images": len(x),
            "nfe": nfe,
            "guidance_grad": grad,
            "sampler": sampler,
            "guidance_norm": norm,
            "guidance_scale": scale,
            "guidance_schedule": schedule,
            "guidance_smoothing": smoothing,
            "region": region,
            "n_samples": n_samples,
            "precision": precision,
            "guidance_interval": interval,
            "guidance_switch": switch,
            "seed": a.seed,
        }
        if key_of(cfg) in done:
            continue
        if region not in cache:
            source = region_source(region, model)
            t = time.perf_counter()
            masks = source(x, y, seeds=list(range(len(x))))
            cache[region] = (masks, (time.perf_counter() - t) / len(x))
            rows_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(cache, cache_path)
        masks, region_s = cache[region]
        row = run_row(cfg, model, oracle, bridge, x, y, cf, masks, region_s, a.batch_size)
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done.add(key_of(cfg))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
