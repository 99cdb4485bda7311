"""GCD's endpoint refinement on more source images than the search used.

For each pair (a -> b), the best direction of ``--dirs`` (default: the example's, found by GCD's
CPU preset on eight source images) is refined with ``GCD.refine`` (``--rounds`` rounds,
``refine_rate`` 0.2) on the first N test images of class a at index >= 9500 that the classifier
gets right, for each N of ``--n-sources``, and measured as in ``gcd_recipes.py`` (any of
``--n-steps`` steps in [-3, 3] reaches class b; a third class first) on ``--n-images`` held-out
test images of a taken from ``--offset`` on (default 50: disjoint from the first 50 that
``gcd_transfer.py`` and ``gcd_recipes.py`` report). ``--n-images 0 --save-dir D`` only refines
and saves, for ``gcd_transfer.py --dirs D/<N> --kinds e``. ``--start search`` refines the
search's best direction (g or h) instead of ``best()``, which is the refined one (kind e) since
the CPU preset refines; the tables of ``benchmarks/results/gcd_refine_sources.md`` written
before that are ``--start search``.

    python benchmarks/gcd_refine_sources.py --pairs 0:6 9:7 --n-sources 8 32 --n-images 60

Needs Debian's dataset-fashion-mnist. One thread: ~3.5 minutes a pair and N.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from fashion_mnist import classified_right, load_diffae, load_fashion_mnist  # noqa: E402

from rcsb_captum import GCD, CounterfactualDirections  # noqa: E402
from rcsb_captum.demo import FASHION_MNIST_CLASSES as NAMES  # noqa: E402
from rcsb_captum.demo import load_demo_classifier  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", nargs="+", default=["6:0", "0:6", "2:4", "4:2", "7:9", "9:7"])
    p.add_argument("--dirs", default="examples/results/gcd")
    p.add_argument("--n-sources", type=int, nargs="+", default=[8, 32])
    p.add_argument("--rounds", type=int, default=24)
    p.add_argument("--n-images", type=int, default=60)
    p.add_argument("--offset", type=int, default=50)
    p.add_argument("--n-steps", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jsonl", default=None, help="append one JSON row per result here")
    p.add_argument(
        "--start",
        choices=["best", "search"],
        default="best",
        help="refine the directions' best() (their refined one when they have it) or the "
        "search's best (g or h directions only)",
    )
    p.add_argument(
        "--save-dir",
        default=None,
        help="write each refined direction as <dir>/<N>/directions_<a>_to_<b>.pt "
        "(gcd_transfer.py --dirs <dir>/<N> --kinds e measures them)",
    )
    p.add_argument("--autoencoder", default=None, help="a DiffAE file (default: the shipped)")
    a = p.parse_args()
    torch.set_flush_denormal(True)
    model = load_demo_classifier()
    ae = load_diffae(a.autoencoder, 25, 25)
    images, labels = load_fashion_mnist("test")
    correct = classified_right(model, images, labels)
    gcd = GCD(model, ae, refine_rounds=a.rounds, refine_rate=0.2)
    print("| from | to | sources | cos with start | [-3, 3]: reach / third | s |")
    print("|---|---|---|---|---|---|")
    for pair in a.pairs:
        src, dst = (int(v) for v in pair.split(":"))
        found = CounterfactualDirections.load(Path(a.dirs) / f"directions_{src}_to_{dst}.pt")
        start = found.directions[found.best(("g", "h") if a.start == "search" else None)]
        pool = ((labels == src) & correct).nonzero()[:, 0]
        sources = images[pool[pool >= 9500]]
        held = images[pool[pool < 9000][a.offset : a.offset + a.n_images]]
        for n in a.n_sources:
            t0 = time.perf_counter()
            if n > len(sources):
                raise SystemExit(f"{NAMES[src]} has {len(sources)} source images, not {n}")
            out = gcd.refine(
                sources[:n], start, found.source_class, found.target_class, seed=a.seed
            )
            if a.save_dir:
                (Path(a.save_dir) / str(n)).mkdir(parents=True, exist_ok=True)
                out.save(Path(a.save_dir) / str(n) / f"directions_{src}_to_{dst}.pt")
            if not a.n_images:
                continue  # refine and save only
            r = out.transfer(model, ae, held, index=0, n_steps=a.n_steps, max_step=3.0)
            row = {
                "pair": pair,
                "n_sources": n,
                "cos_start": float(out.directions[0] @ start),
                "reached": float(r["reached"].float().mean()),
                "third": float(r["third"].float().mean()),
                "n_images": len(held),
                "offset": a.offset,
                "rounds": a.rounds,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            print(
                f"| {NAMES[src]} | {NAMES[dst]} | {n} | {row['cos_start']:+.2f} | "
                f"{row['reached']:.2f} / {row['third']:.2f} | {row['seconds']:.0f} |",
                flush=True,
            )
            if a.jsonl:
                with open(a.jsonl, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
