"""Peak memory of RCSB on the official bridge sizes: one guided step and one full run, for
fp32, bf16 autocast, gradient checkpointing, both, and both with the bridge's weights held in
bf16 (``Bridge.half_weights``).

Configurations: RCSB's CelebA-128 bridge (105 M parameters) and I2SB's ImageNet-256 bridge
(552 M), with random weights (memory does not depend on them) and a torchvision ResNet-50 as
the classifier (random weights, ImageNet normalisation). Peaks are the allocator's: on CUDA
``torch.cuda.max_memory_allocated`` (reset before each measurement, the models' own weights
included); on CPU ``torch.profiler`` with ``profile_memory=True`` (the largest live total of the
allocations made during the measured call, so the weights loaded before it are not counted;
the table adds them: "with weights" is that peak plus the bridge's and the classifier's weights,
what a GPU holds).

Prints a Markdown table, the ratio of each setting to fp32, and the largest batch per 24 / 40 /
80 GB GPU from a linear fit of the peaks at batch 1 and 2 (CUDA only).

    python benchmarks/memory.py --device cuda --configs celeba-128 imagenet-256 --nfe 100
    python benchmarks/memory.py --device cpu --configs celeba-128 --no-full-run
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from rcsb_captum import RCSB, Bridge, MaskRegion, NormalizedModel
from rcsb_captum.bridge.presets import preset_config

SETTINGS = {  # label: (precision, gradient checkpointing, bridge weights held in bf16)
    "fp32": ("fp32", False, False),
    "bf16": ("bf16", False, False),
    "checkpointing": ("fp32", True, False),
    "bf16 + checkpointing": ("bf16", True, False),
    "bf16 weights + checkpointing": ("bf16", True, True),
}
SIZES = {"celeba-128": 128, "imagenet-256": 256}


def _classifier(device: torch.device) -> torch.nn.Module:
    from torchvision.models import resnet50

    model = NormalizedModel(resnet50(), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return model.eval().requires_grad_(False).to(device)


def _peak(device: torch.device, fn) -> tuple[float, float]:  # (bytes, seconds)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated()), time.perf_counter() - t
    from torch.profiler import ProfilerActivity, profile

    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    seconds = time.perf_counter() - t
    # replay every event's own allocations minus frees (ops carry what they allocated, the
    # "[memory]" events the frees outside ops) in time order: the largest live total is the
    # peak of what the call allocated (at the granularity of single ops)
    events = sorted(
        (e for e in prof.events() if e.self_cpu_memory_usage != 0),
        key=lambda e: e.time_range.start,
    )
    live = peak = 0
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return float(peak), seconds


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--configs", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 2])
    p.add_argument("--nfe", type=int, default=100, help="steps of the full run")
    p.add_argument("--no-full-run", action="store_true")
    p.add_argument("--json", default=None, help="also write the rows here")
    a = p.parse_args()
    device = torch.device(a.device)
    torch.set_flush_denormal(True)
    clf = _classifier(device)
    rows = []
    for name in a.configs:
        size = SIZES[name]
        torch.manual_seed(0)
        with torch.device("meta"):
            bridge = Bridge.from_config(preset_config(name, size, 3))
        bridge.network = bridge.network.to_empty(device=device)
        for prm in bridge.network.parameters():
            torch.nn.init.normal_(prm, std=0.02)
        bridge.requires_grad_(False)
        params = sum(q.numel() for q in bridge.network.parameters())
        for batch in a.batches:
            x = torch.rand(batch, 3, size, size, device=device)
            m = torch.zeros(batch, 1, size, size, device=device)
            m[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
            for label, (precision, ckpt, half) in SETTINGS.items():
                # in place (a copy would hold both): back to float32 after the measurement
                bridge.half_weights(torch.bfloat16 if half else torch.float32)
                weights = sum(
                    q.numel() * q.element_size() for q in [*bridge.parameters(), *clf.parameters()]
                )

                def run(nfe: int, bridge=bridge, m=m, x=x, precision=precision, ckpt=ckpt) -> None:  # noqa: B023
                    rcsb = RCSB(
                        clf,
                        bridge,
                        MaskRegion(m),
                        nfe=nfe,
                        start_step=nfe + 1,
                        n_samples=1,
                        precision=precision,
                        gradient_checkpointing=ckpt,
                    )
                    rcsb.generate(x, target=0, counterfactual_target=1, seed=0)

                step_peak, step_s = _peak(device, lambda: run(1))
                row = {
                    "config": name,
                    "parameters": params,
                    "batch": batch,
                    "setting": label,
                    "step_peak_gib": step_peak / 2**30,
                    "step_seconds": step_s,
                    "weights_gib": weights / 2**30,
                }
                if not a.no_full_run:
                    full_peak, full_s = _peak(device, lambda: run(a.nfe))
                    row.update(full_peak_gib=full_peak / 2**30, full_seconds=full_s)
                rows.append(row)
                print(json.dumps(row), flush=True)
            bridge.half_weights(torch.float32)
    print()
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}")
    cpu = device.type != "cuda"  # the CPU profiler's peak leaves out the resident weights
    head = "| config | batch | setting | step peak GiB | x fp32 | step s |"
    if cpu:
        head = "| config | batch | setting | step peak GiB | with weights GiB | x fp32 | step s |"
    if not a.no_full_run:
        head += f" full run ({a.nfe} steps) peak GiB | full run s |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        ref = next(
            q
            for q in rows
            if q["config"] == r["config"] and q["batch"] == r["batch"] and q["setting"] == "fp32"
        )
        total = (
            (lambda q: q["step_peak_gib"] + q["weights_gib"])
            if cpu
            else (lambda q: q["step_peak_gib"])
        )
        line = (
            f"| {r['config']} | {r['batch']} | {r['setting']} | {r['step_peak_gib']:.2f} | "
            + (f"{total(r):.2f} | " if cpu else "")
            + f"{total(r) / total(ref):.2f} | {r['step_seconds']:.2f} |"
        )
        if "full_peak_gib" in r:
            line += f" {r['full_peak_gib']:.2f} | {r['full_seconds']:.1f} |"
        print(line)
    if device.type == "cuda" and len(a.batches) >= 2:
        print()
        print("| config | setting | largest batch, 24 GB | 40 GB | 80 GB |")
        print("|---|---|---|---|---|")
        b1, b2 = a.batches[0], a.batches[1]
        for name in a.configs:
            for label in SETTINGS:
                key = "full_peak_gib" if not a.no_full_run else "step_peak_gib"
                p1, p2 = (
                    next(
                        r[key]
                        for r in rows
                        if r["config"] == name and r["setting"] == label and r["batch"] == b
                    )
                    for b in (b1, b2)
                )
                per = (p2 - p1) / (b2 - b1)
                fixed = p1 - per * b1
                fits = [max(0, int((cap * 1e9 / 2**30 - fixed) // per)) for cap in (24, 40, 80)]
                print(f"| {name} | {label} | {fits[0]} | {fits[1]} | {fits[2]} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
