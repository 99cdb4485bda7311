"""GCD and BB-LIG on the shipped Fashion-MNIST models: do directions found on a few images (or
ONE, as the paper) flip the classifier for hundreds of others?

    python examples/gcd_directions.py --out examples/results/gcd      # ~20 min on 2 CPU cores

For each paired class (shirt <-> T-shirt/top, pullover <-> coat, sneaker <-> ankle boot):
- the sources: the first ``--n-sources`` (8) test images of the class (indices 9500..9999,
  outside the shipped samples and the transfer set) that the classifier gets right;
- GCD (CPU preset, black-box) finds g- and h-directions towards the paired class, shared by
  the sources (``--n-sources 1``: from one image, as the paper);
- the best g- and the best h-direction are transferred, at the step found on the sources, to
  200 held-out test images of the class (indices 0..8999, classified right): flip rate to the
  paired class ("globality"), rate of leaving the class, mean L1 change, FID in the
  classifier's 128-d feature space against 200 real images of the paired class;
- BB-LIG (finite differences, 32 steps) on 5 images per pair: completeness error, and
  Quantus faithfulness correlation and sparseness against Integrated Gradients.

Also: DiffAE reconstruction (encode -> decode) on the 200 held-out images of each class: MSE and
SSIM. Needs Debian's dataset-fashion-mnist (the test set).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from fashion_mnist import classified_right, load_fashion_mnist  # noqa: E402

from rcsb_captum import BBLIG, GCD, CounterfactualDirections, DiffusionAutoencoder  # noqa: E402
from rcsb_captum import metrics as M  # noqa: E402
from rcsb_captum.demo import FASHION_MNIST_CLASSES, PAIRED_CLASSES, load_demo_classifier  # noqa: E402


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # Wang et al. 2004: Gaussian window 11 x 11, sigma 1.5, images in [0, 1]; mean per image
    t = torch.arange(11, dtype=torch.float32) - 5
    g = torch.exp(-(t**2) / (2 * 1.5**2))
    w = (g[:, None] * g[None]) / g.sum() ** 2
    w = w.view(1, 1, 11, 11).repeat(a.shape[1], 1, 1, 1)

    def blur(x):
        return F.conv2d(x, w, padding=5, groups=a.shape[1])

    mu_a, mu_b = blur(a), blur(b)
    va = blur(a * a) - mu_a**2
    vb = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return s.flatten(1).mean(1)


def transfer_figure(dirs, ae, model, x, src: int, dst: int, path: Path) -> None:
    r"""The best direction at the step found on the sources, on the images ``x``: one row each
    (input, counterfactual, change); framed in red where the paired class is not reached."""
    from rcsb_captum.visualization import plot_counterfactuals

    cf = dirs.apply(ae, x)
    with torch.no_grad():
        pb, pa = torch.softmax(model(x), 1), torch.softmax(model(cf), 1)
    fig = plot_counterfactuals(
        x,
        cf,
        torch.ones(len(x), 1, 32, 32),
        pb,
        pa,
        FASHION_MNIST_CLASSES,
        success=pa.argmax(1) == dst,
    )
    fig.suptitle(
        f"{FASHION_MNIST_CLASSES[src]} -> {FASHION_MNIST_CLASSES[dst]}: {dirs.kinds[dirs.best()]}, "
        f"step {float(dirs.steps[dirs.best()]):.2f}"
    )
    fig.savefig(path, dpi=80)


def draw_figures(out: Path, ae, model, images, labels, correct) -> None:
    r"""Each pair's saved directions on its first 8 transfer images (``transfer_<a>_to_<b>.png``)."""
    for src, dst in PAIRED_CLASSES.items():
        pool = ((labels == src) & correct).nonzero()[:, 0]
        dirs = CounterfactualDirections.load(out / f"directions_{src}_to_{dst}.pt")
        x8 = images[pool[pool < 9000][:8]]
        transfer_figure(dirs, ae, model, x8, src, dst, out / f"transfer_{src}_to_{dst}.png")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="examples/results/gcd")
    p.add_argument("--n-transfer", type=int, default=200)
    p.add_argument("--steps", type=int, default=25, help="DDIM steps to encode and to render")
    p.add_argument("--lig-images", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-sources", type=int, default=8, help="source images searched together")
    p.add_argument(
        "--refine-rounds",
        type=int,
        default=None,
        help="endpoint refinement rounds (default: the CPU preset's, 24; 0: the search alone, "
        "as the tables written before session 19, with --line-steps 24)",
    )
    p.add_argument(
        "--line-steps",
        type=int,
        default=None,
        help="line-search step sizes up to 6 (default: the CPU preset's, 12)",
    )
    p.add_argument(
        "--figures-only",
        action="store_true",
        help="only draw each pair's figure from the directions saved in --out",
    )
    a = p.parse_args()
    torch.set_flush_denormal(True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_demo_classifier()
    ae = DiffusionAutoencoder.pretrained(
        "fashion-mnist", encode_steps=a.steps, decode_steps=a.steps
    )
    images, labels = load_fashion_mnist("test")
    correct = classified_right(model, images, labels)
    if a.figures_only:
        draw_figures(out, ae, model, images, labels, correct)
        return
    rows, lig_rows, recon = [], [], {}
    # only the settings given, so that a default run's record reads as the preset's
    overrides = {
        k: v
        for k, v in (("refine_rounds", a.refine_rounds), ("line_steps", a.line_steps))
        if v is not None
    }
    for src, dst in PAIRED_CLASSES.items():
        t0 = time.perf_counter()
        pool = ((labels == src) & correct).nonzero()[:, 0]
        source_idx = pool[pool >= 9500][: a.n_sources]
        transfer_idx = pool[pool < 9000][: a.n_transfer]
        real_dst = images[((labels == dst) & correct).nonzero()[:, 0][: a.n_transfer]]
        x_src, x_t = images[source_idx], images[transfer_idx]
        gcd = GCD(model, ae, **overrides)
        dirs = gcd.find(x_src, target=src, counterfactual_target=dst, seed=a.seed)
        dirs.save(out / f"directions_{src}_to_{dst}.pt")
        t_find = time.perf_counter() - t0
        # encode the transfer set once, render each direction from the same codes
        z = torch.cat([ae.encode(x_t[i : i + 100]) for i in range(0, len(x_t), 100)])
        noise = torch.cat(
            [
                ae.encode_stochastic(x_t[i : i + 100], z[i : i + 100])
                for i in range(0, len(x_t), 100)
            ]
        )
        rec = torch.cat(
            [ae.decode(z[i : i + 100], noise[i : i + 100]) for i in range(0, len(x_t), 100)]
        )
        recon[FASHION_MNIST_CLASSES[src]] = {
            "mse": float((rec - x_t).square().mean()),
            "ssim": float(ssim(rec, x_t).mean()),
        }
        # "e": the endpoint-refined direction, when the preset refines (GCDConfig.refine_*)
        for kind in ("g", "h", *(["e"] if "e" in dirs.kinds else [])):
            i = dirs.best(kind)
            d = dirs.directions[i]
            alpha = float(dirs.steps[i])
            t1 = time.perf_counter()
            cf = torch.cat(
                [
                    ae.decode(z[s : s + 100] + alpha * d, noise[s : s + 100])
                    for s in range(0, len(x_t), 100)
                ]
            )
            with torch.no_grad():
                after = model(cf).argmax(1)
            ok = after == dst
            fid = M.fid(real_dst, cf, model.features) if len(cf) >= 2 else float("nan")
            rows.append(
                {
                    "source": FASHION_MNIST_CLASSES[src],
                    "target": FASHION_MNIST_CLASSES[dst],
                    "kind": kind,
                    "direction": dirs.kinds[i],
                    "flipped on source": bool(dirs.flipped[i]),
                    "step": round(alpha, 3),
                    "images": len(cf),
                    "flip rate to target": float(ok.float().mean()),
                    "flip rate s.e.": float(ok.float().std() / len(ok) ** 0.5),
                    "left source class": float((after != src).float().mean()),
                    "L1 change": float((cf - x_t).abs().mean()),
                    "FID vs real target (clf features)": fid,
                    "reconstruction FID vs real target": M.fid(real_dst, rec, model.features),
                    "seconds to find": round(t_find, 1),
                    "seconds to transfer": round(time.perf_counter() - t1, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        # BB-LIG on a few transfer images: completeness and Quantus scores against IG
        xl = x_t[: a.lig_images]
        lig = BBLIG(model, ae, direction=dirs, n_steps=32)
        attr, delta = lig.attribute(xl, target=src, return_convergence_delta=True)
        from captum.attr import IntegratedGradients

        ig = IntegratedGradients(model).attribute(xl.clone().requires_grad_(True), target=src)
        with torch.no_grad():
            p_src = torch.softmax(model(xl), 1)[:, src]
        lig_rows.append(
            {
                "source": FASHION_MNIST_CLASSES[src],
                "bblig": attr.detach(),
                "ig": ig.detach(),
                "x": xl,
                "y": torch.full((len(xl),), src),
                "completeness error": delta.abs().tolist(),
                "p(source)": p_src.tolist(),
            }
        )
    # Quantus on all BB-LIG images together
    quantus_scores = {}
    try:
        import quantus

        x = torch.cat([r["x"] for r in lig_rows]).numpy()
        y = torch.cat([r["y"] for r in lig_rows]).numpy()
        for name, key in (("BB-LIG", "bblig"), ("Integrated Gradients", "ig")):
            a_batch = torch.cat([r[key] for r in lig_rows]).numpy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                faith = quantus.FaithfulnessCorrelation(
                    nr_runs=50,
                    subset_size=64,
                    perturb_baseline="black",
                    disable_warnings=True,
                    return_aggregate=False,
                )(model=model, x_batch=x, y_batch=y, a_batch=a_batch, device="cpu")
                sparse = quantus.Sparseness(disable_warnings=True)(
                    model=model, x_batch=x, y_batch=y, a_batch=a_batch, device="cpu"
                )
            quantus_scores[name] = {
                "faithfulness correlation": [
                    float(np.mean(faith)),
                    float(np.std(faith) / len(faith) ** 0.5),
                ],
                "sparseness": [float(np.mean(sparse)), float(np.std(sparse) / len(sparse) ** 0.5)],
            }
    except ImportError:
        quantus_scores = {"skipped": "quantus not installed"}
    completeness = [e for r in lig_rows for e in r["completeness error"]]
    draw_figures(out, ae, model, images, labels, correct)
    summary = {
        "settings": {
            "preset": "cpu",
            "ddim_steps": a.steps,
            "n_transfer": a.n_transfer,
            "n_sources": a.n_sources,
            "seed": a.seed,
            **overrides,
        },
        "transfer": rows,
        "reconstruction": recon,
        "bblig_completeness_error": {
            "mean": float(np.mean(completeness)),
            "max": float(np.max(completeness)),
            "images": len(completeness),
        },
        "quantus": quantus_scores,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [
        "# GCD direction transfer on Fashion-MNIST (shipped classifier and DiffAE)",
        "",
        "| source -> target | kind | direction | flips sources | step | images | flip rate to target (s.e.) | left source | L1 change | FID vs real target | recon FID |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['source']} -> {r['target']} | {r['kind']} | {r['direction']} | {r['flipped on source']} | "
            f"{r['step']} | {r['images']} | {r['flip rate to target']:.3f} ({r['flip rate s.e.']:.3f}) | "
            f"{r['left source class']:.3f} | {r['L1 change']:.3f} | "
            f"{r['FID vs real target (clf features)']:.1f} | {r['reconstruction FID vs real target']:.1f} |"
        )
    lines += [
        "",
        "Reconstruction (encode -> decode) of the held-out images:",
        "",
        "| class | MSE | SSIM |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v['mse']:.4f} | {v['ssim']:.3f} |" for k, v in recon.items()]
    c = summary["bblig_completeness_error"]
    lines += [
        "",
        f"BB-LIG completeness error |sum A - (f(x) - f(x_K))| on {c['images']} images: mean {c['mean']:.2e}, max {c['max']:.2e}",
        "",
    ]
    lines += [
        "| attribution | Quantus faithfulness correlation (s.e.) | sparseness (s.e.) |",
        "|---|---|---|",
    ]
    for name, s in quantus_scores.items():
        if isinstance(s, dict):
            lines.append(
                f"| {name} | {s['faithfulness correlation'][0]:.3f} ({s['faithfulness correlation'][1]:.3f}) | "
                f"{s['sparseness'][0]:.3f} ({s['sparseness'][1]:.3f}) |"
            )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
