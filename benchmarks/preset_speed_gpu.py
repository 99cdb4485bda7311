"""Seconds per image of every RCSB preset on the official bridge shapes, in one run.

RCSB's CelebA-128 bridge (105 M parameters) and I2SB's ImageNet-256 bridge (552 M) with random
weights (time and memory do not depend on them) and a torchvision ResNet-50 classifier (random
weights, ImageNet normalisation), at batch 1 and 8. Each preset's time includes its default
region (Integrated Gradients in a NoiseTunnel, with the preset's ``ig_steps``) and its
escalation stages as they run on these random models (how many inputs escalate depends on the
classifier: the ``stages`` column says how many did). Presets run in turn, alternating, twice;
the faster of the two is reported, with ``torch.cuda.synchronize`` around each call on CUDA,
and the allocator's peak (``torch.cuda.max_memory_allocated``). ``precision="auto"`` resolves to
bf16 on GPUs that compute it natively (Ampere and newer) and on CPUs with AVX512-BF16/AMX.

    python benchmarks/preset_speed_gpu.py --device cuda --out benchmarks/results/preset_speed_gpu.md
    python benchmarks/preset_speed_gpu.py --device cpu --configs celeba-128 --batch-sizes 1 --nfe-cap 4
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from rcsb_captum import RCSB, Bridge, NormalizedModel
from rcsb_captum.bridge.presets import preset_config
from rcsb_captum.config import PRESETS, RCSBConfig
from rcsb_captum.sampler import native_bf16

SIZES = {"celeba-128": 128, "imagenet-256": 256}


def _classifier(device: torch.device) -> torch.nn.Module:
    from torchvision.models import resnet50

    model = NormalizedModel(resnet50(num_classes=2), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return model.eval().requires_grad_(False).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--configs", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument(
        "--nfe-cap", type=int, default=None, help="cap every preset's steps (a smoke run on CPU)"
    )
    p.add_argument("--out", default=None, help="write the Markdown table here (and .json)")
    a = p.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    rows = []
    for name in a.configs:
        size = SIZES[name]
        bridge = Bridge.from_config(preset_config(name, size, 3)).to(device)
        model = _classifier(device)
        for batch in a.batch_sizes:
            x = torch.rand(batch, 3, size, size, device=device)
            y = torch.zeros(batch, dtype=torch.long, device=device)
            rcsbs = {}
            for preset in a.presets:
                cfg = RCSBConfig.preset(preset)
                if a.nfe_cap:
                    cfg = cfg.replace(nfe=min(cfg.nfe, a.nfe_cap))
                rcsbs[preset] = RCSB(model, bridge, config=cfg)
            times: dict[str, list[float]] = {k: [] for k in rcsbs}
            peaks: dict[str, float] = {}
            stages: dict[str, list[int]] = {}
            for _ in range(a.rounds):
                for preset, rcsb in rcsbs.items():
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                    _sync(device)
                    t = time.perf_counter()
                    res = rcsb.generate(x, target=y, counterfactual_target=1, seed=0)
                    _sync(device)
                    times[preset].append((time.perf_counter() - t) / batch)
                    if device.type == "cuda":
                        peaks[preset] = torch.cuda.max_memory_allocated() / 2**30
                    assert res.stage is not None
                    stages[preset] = torch.bincount(res.stage.cpu(), minlength=3).tolist()
            base = min(times[a.presets[0]])
            for preset in a.presets:
                best = min(times[preset])
                rows.append(
                    {
                        "bridge": name,
                        "batch": batch,
                        "preset": preset,
                        "seconds_per_image": best,
                        "speedup": base / best,
                        "peak_gib": peaks.get(preset),
                        "stages": stages[preset],
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    lines = [
        f"# RCSB presets on the official bridge shapes ({where}; torch {torch.__version__})",
        "",
        f"Written by `benchmarks/preset_speed_gpu.py`: random weights, a ResNet-50 classifier, the "
        f"region included; best of {a.rounds} alternating rounds. precision auto resolves to "
        f"{'bf16' if native_bf16(device) else 'fp32'} here. Speed-up against `{a.presets[0]}` at "
        "the same bridge and batch. stages: inputs finished at stage 0, 1, 2.",
        "",
        "| bridge | batch | preset | s / image | speed-up | peak GiB | stages |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        lines.append(
            f"| {r['bridge']} | {r['batch']} | {r['preset']} | {r['seconds_per_image']:.3f} | "
            f"{r['speedup']:.2f}x | {peak} | {r['stages']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
        Path(a.out).with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
