"""Untargeted RCSB over all ten classes (no counterfactual class: leave the predicted one, the
default of ``explain-dataset``) on the shipped Fashion-MNIST models: flip rate per class and
seconds per image (the default region included) for each preset, in one run, alternating.

For the first N shipped test images the classifier gets right, every preset explains the
same images with seed 0 and its own default region; flip: the classifier no longer predicts
the original class. Printed as a Markdown table (per-class flip rates, the overall rate with a
95 % paired-bootstrap interval of its difference from the first preset, the escalation's
share, seconds per image and the ratio to the first preset).

    python benchmarks/untargeted.py --n-images 100 --presets paper fast fast_10x --out benchmarks/results/untargeted.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from rcsb_captum import RCSB, Bridge
from rcsb_captum.demo import FASHION_MNIST_CLASSES, load_demo_classifier, load_demo_samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=100)
    p.add_argument("--presets", nargs="+", default=["paper", "fast", "fast_10x"])
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_flush_denormal(True)
    if a.threads:
        torch.set_num_threads(a.threads)
    model = load_demo_classifier()
    images, labels = load_demo_samples()
    with torch.no_grad():
        right = (model(images).argmax(1) == labels).nonzero().flatten()[: a.n_images]
    x, y = images[right], labels[right]
    bridge = Bridge.pretrained("fashion-mnist")
    flips: dict[str, torch.Tensor] = {}
    stages: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    for name in a.presets:
        rcsb = RCSB(model, bridge, config=name, cell_size=4)
        t = time.perf_counter()
        res = rcsb.generate(x, target=y, seed=0, internal_batch_size=a.batch_size)
        seconds[name] = (time.perf_counter() - t) / len(x)
        flips[name], stages[name] = res.success.float(), res.stage
        print(
            name,
            f"flip {float(res.success.float().mean()):.3f}",
            f"{seconds[name]:.3f} s/img",
            flush=True,
        )
    ref = a.presets[0]
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(len(x), (2000, len(x)), generator=g)
    head = "| preset | " + " | ".join(FASHION_MNIST_CLASSES) + " | all | Δ vs " + ref
    lines = [
        f"# Untargeted RCSB over all classes ({len(x)} shipped test images, seed 0, "
        f"{torch.get_num_threads()} threads)",
        "",
        "Written by `benchmarks/untargeted.py`: flip = the classifier leaves the original class. "
        "Per-class flip rates, then all images with a 95 % paired-bootstrap interval of the "
        f"difference from {ref}; escalated: the share of images whose result came from an "
        "escalation stage; s/image includes the default region.",
        "",
        head + " | escalated | s / image | speed-up |",
        "|---" * (len(FASHION_MNIST_CLASSES) + 6) + "|",
    ]
    for name in a.presets:
        f = flips[name]
        per = [f"{float(f[y == c].mean()):.2f}" if (y == c).any() else "-" for c in range(10)]
        d = (f - flips[ref]).double()
        boot = d[idx].mean(1)
        lo, hi = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64))
        delta = (
            "-" if name == ref else f"{float(d.mean()):+.3f} [{float(lo):+.3f}, {float(hi):+.3f}]"
        )
        esc = float((stages[name] > 0).float().mean())
        lines.append(
            f"| {name} | " + " | ".join(per) + f" | {float(f.mean()):.3f} | {delta} | {esc:.3f} | "
            f"{seconds[name]:.3f} | {seconds[ref] / seconds[name]:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
