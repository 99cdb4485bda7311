"""Which DiffAE training recipe gives a semantic code that carries class and shape?

Trains each recipe for the same number of steps (resumable: one checkpoint per recipe under
--work; rerun the command to continue) and scores it with quick probes:

- linear probe: logistic regression from z_sem to the ten classes (5,000 training images,
  2,000 test images; ``probe_full``: all 60,000 and 10,000), beside the same encoder with
  random weights;
- x0 at t = 999: the MSE of the decoder's x0 estimate from pure noise given the image's own
  z_sem, beside the class-mean image's MSE (what a code that carries only the class allows);
- class keeping: renders of each test image's z_sem from a random x_T, classified by the demo
  classifier (share that keeps the image's class; test images the classifier gets right);
- reconstruction: DDIM inversion to x_T and back, share that keeps the class;
- z switch: image A inverted to its own x_T, rendered with the z_sem of an image B of A's paired
  class: share that lands in B's class (what a GCD direction needs).

    python benchmarks/diffae_recipes.py --recipes eps v v-p2 --steps 1500 --batch-size 64
    python benchmarks/diffae_recipes.py --probe-file rcsb_captum/data/fashion_mnist_diffae.pt

Needs Debian's dataset-fashion-mnist. One thread (set --threads).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from fashion_mnist import load_fashion_mnist  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diffae_probe import probe as linear_probe  # noqa: E402

from rcsb_captum.autoencoder import RECIPES as LIBRARY_RECIPES  # noqa: E402
from rcsb_captum.autoencoder import DiffusionAutoencoder, train_diffae  # noqa: E402
from rcsb_captum.autoencoder import recipe_config as library_recipe_config  # noqa: E402
from rcsb_captum.demo import PAIRED_CLASSES, load_demo_classifier  # noqa: E402

# recipe name -> config overrides of the 1 x 32 x 32 default: the library's two recipes
# (rcsb_captum.autoencoder.RECIPES; "v-p2" is "v-patch2") and the variants compared with them
_PATCH2 = {k: v for k, v in LIBRARY_RECIPES["v-patch2"].items() if k != "prediction"}
RECIPES: dict[str, dict] = {
    "eps": LIBRARY_RECIPES["eps"],
    "v": {"prediction": "v"},
    "eps-p2": _PATCH2,
    "v-p2": LIBRARY_RECIPES["v-patch2"],
    "v-p2-w64": {**LIBRARY_RECIPES["v-patch2"], "model_channels": 64, "num_head_channels": 32},
    # the encoder keeps its 4 x 4 layout; the loss weights every step's x0 error alike (P2)
    "v-p2-flat": {**LIBRARY_RECIPES["v-patch2"], "encoder_pool": "flatten"},
    "v-p2-x0w": {**LIBRARY_RECIPES["v-patch2"], "p2_gamma": 1.0},
    "v-p2-flat-x0w": {**LIBRARY_RECIPES["v-patch2"], "encoder_pool": "flatten", "p2_gamma": 1.0},
    # a wider semantic code (DiffAE's is 512-d): does the 64-d code limit the linear probe?
    "v-p2-flat-z128": {**LIBRARY_RECIPES["v-patch2-flat"], "z_dim": 128},
    # labelled comparison, never a default: a linear classifier on z_sem trained with it
    "v-p2-flat-supervised": {
        **LIBRARY_RECIPES["v-patch2-flat"],
        "code_classes": 10,
        "code_class_weight": 0.1,
    },
}


def recipe_config(name: str) -> dict:
    return {**library_recipe_config("eps", 32, 1), **RECIPES[name]}


@torch.no_grad()
def codes(ae: DiffusionAutoencoder, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([ae.semantic(x[i : i + 500]) for i in range(0, len(x), 500)])


@torch.no_grad()
def probes(ae: DiffusionAutoencoder, data, classifier, n_render: int, steps: int) -> dict:
    xtr, ytr, xte, yte = data
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(xtr), generator=g)[:5000]
    z_train, z_test = codes(ae, xtr), codes(ae, xte)
    out = {
        "probe": linear_probe(z_train[pick], ytr[pick], z_test[:2000], yte[:2000]),
        # the standard protocol: every training image, every test image (the row above has
        # 5,000 training codes, few for a 128-d code, and a test error of about +-0.008)
        "probe_full": linear_probe(z_train, ytr, z_test, yte),
    }
    # x0 from pure noise at t = 999, given the image's own code
    x, y = xte[:500], yte[:500]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    a = ae.alphas_cumprod[-1]
    x_t = a.sqrt() * (x * 2 - 1) + (1 - a).sqrt() * noise
    t = torch.full((len(x),), len(ae.alphas_cumprod) - 1)
    x0, _ = ae.denoise(x_t, t, ae.semantic(x))
    out["x0_mse_t999"] = float((x0 - (x * 2 - 1)).square().mean())
    means = torch.stack([(xtr[ytr == k] * 2 - 1).mean(0) for k in range(10)])
    out["class_mean_mse"] = float((means[y] - (x * 2 - 1)).square().mean())
    # renders with random x_T, reconstructions, z switch on the paired classes
    # on test images the classifier gets right, so that "keeps the class" measures the
    # autoencoder, not the classifier's own errors (before, the unfiltered images capped
    # reconstruction at the classifier's accuracy on them, 0.90)
    right = torch.cat([classifier(xte[i : i + 1000]).argmax(1) for i in range(0, len(xte), 1000)])
    right = right == yte
    keep = recon = switch = total = 0
    for k, partner in PAIRED_CLASSES.items():
        xa = xte[(yte == k) & right][:n_render]
        xb = xte[(yte == partner) & right][:n_render]
        za, zb = ae.encode(xa), ae.encode(xb)
        rand = torch.randn(xa.shape, generator=torch.Generator().manual_seed(k))
        keep += int((classifier(ae.decode(za, rand, steps=steps)).argmax(1) == k).sum())
        x_T = ae.encode_stochastic(xa, za, steps=steps)
        recon += int((classifier(ae.decode(za, x_T, steps=steps)).argmax(1) == k).sum())
        switch += int((classifier(ae.decode(zb, x_T, steps=steps)).argmax(1) == partner).sum())
        total += len(xa)
    out.update(
        keep_random_xT=keep / total, keep_reconstruction=recon / total, z_switch=switch / total
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", nargs="+", default=["eps", "v", "v-p2"], choices=sorted(RECIPES))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--render", type=int, default=20, help="test images per paired class")
    p.add_argument("--ddim", type=int, default=25, help="DDIM steps of renders and inversions")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="benchmarks/results/diffae_recipes")
    p.add_argument("--random-baseline", action="store_true", help="also probe random encoders")
    p.add_argument("--probe-file", nargs="+", default=None, help="only probe these DiffAE files")
    p.add_argument("--note", default="", help="a note for the --probe-file rows")
    p.add_argument(
        "--export",
        default=None,
        help="also save each trained recipe as a float16 DiffAE file in this folder "
        "(<recipe>_<steps>.pt; loads with DiffusionAutoencoder.load)",
    )
    a = p.parse_args()
    torch.set_flush_denormal(True)
    torch.set_num_threads(a.threads)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    data = (xtr, ytr, xte, yte)
    classifier = load_demo_classifier()
    log = work / "probes.jsonl"
    for path in a.probe_file or []:
        ae = DiffusionAutoencoder.load(path)
        row = {"file": path, "note": a.note, **probes(ae, data, classifier, a.render, a.ddim)}
        print(json.dumps(row), flush=True)
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
    if a.probe_file:
        return
    for name in a.recipes:
        if a.random_baseline:
            torch.manual_seed(0)
            ae = DiffusionAutoencoder(recipe_config(name)).eval()
            row = {"recipe": name, "steps": 0, **probes(ae, data, classifier, a.render, a.ddim)}
            print(json.dumps(row), flush=True)
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
        if a.steps == 0:  # --steps 0 --random-baseline: the random encoders only
            continue
        ckpt = work / f"{name}.ckpt"
        start = time.perf_counter()
        done = 0
        if ckpt.exists():
            done = int(torch.load(ckpt, map_location="cpu", weights_only=True)["step"])
        ae = None
        while done < a.steps or ae is None:
            done = min(a.steps, done + 250)
            ae = train_diffae(
                xtr,
                ytr if RECIPES[name].get("code_classes") else None,
                config=recipe_config(name),
                steps=done,
                batch_size=a.batch_size,
                checkpoint_path=ckpt,
                checkpoint_every=250,
                seed=0,
                show_progress=False,
            )
        train_s = time.perf_counter() - start
        if a.export:
            Path(a.export).mkdir(parents=True, exist_ok=True)
            ae.save(Path(a.export) / f"{name}_{a.steps}.pt", dtype=torch.float16)
        row = {
            "recipe": name,
            "steps": a.steps,
            "batch_size": a.batch_size,
            "train_s_this_call": round(train_s),
            **probes(ae, data, classifier, a.render, a.ddim),
        }
        print(json.dumps(row), flush=True)
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
