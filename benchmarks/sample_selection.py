"""Which of an input's samples to keep: the classifier's most confident flip (RCSB's rule) or
the flip that is most stable under 1-px shifts and blurs (``rcsb_captum.stability``).

For the first N paired-class shipped test images, each setting draws S samples per input with
its own default region (seed 0, no escalation) and stores every sample. Per sample: the
classifier's flip and p(counterfactual), the transform stability, and whether the robust judge
(the shipped L2-PGD-trained oracle, which never guides) agrees with the flip. The table compares
the two selection rules on the same samples: robust agreement, flip, COUT of the chosen sample.

    python benchmarks/sample_selection.py --settings realistic_fast-noesc --n-images 200
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from rcsb_captum import RCSB
from rcsb_captum import metrics as M
from rcsb_captum.config import PRESETS
from rcsb_captum.demo import load_demo_classifier, load_demo_robust_oracle, load_demo_samples
from rcsb_captum.stability import transform_stability

sys.path.insert(0, str(Path(__file__).parent))
from realism import REALISTIC_FAST_V1  # noqa: E402  (one definition; the grid varies it)
from speed_quality import paired_images  # noqa: E402

SETTINGS = {
    "realistic_fast-noesc": {**REALISTIC_FAST_V1, "escalation": ()},
    **{
        f"realistic_fast-s{s}n{n}": {
            **REALISTIC_FAST_V1,
            "n_samples": s,
            "nfe": n,
            "escalation": (),
        }
        for s, n in ((4, 20), (4, 10), (3, 16), (5, 8), (6, 7), (8, 5), (5, 10), (6, 8))
    },
    "realistic": {**PRESETS["realistic"]},
    "fast_10x-s2-noesc": {**PRESETS["fast_10x"], "n_samples": 2, "escalation": ()},
}


def run(name, model, robust, x, y, cf, batch):
    res = RCSB(model, **SETTINGS[name], cell_size=4).generate(
        x, target=y, counterfactual_target=cf, seed=0, internal_batch_size=batch
    )
    n, s = res.samples.shape[:2]
    flat = res.samples.flatten(0, 1)
    rep = lambda t: t.repeat_interleave(s)  # noqa: E731
    with torch.no_grad():
        probs = torch.softmax(model(flat), 1)
        judge = robust(flat).argmax(1) == rep(cf)
    stab = transform_stability(model, flat, rep(y), rep(cf), batch_size=256)
    return {
        "samples": res.samples,
        "flip": (probs.argmax(1) == rep(cf)).view(n, s),
        "p_cf": probs.gather(1, rep(cf)[:, None])[:, 0].view(n, s),
        "stability": stab.view(n, s),
        "robust": judge.view(n, s),
    }


def choose(row, rule):
    key = row["flip"].float() * 2 + (row["p_cf"] if rule == "confident" else row["stability"])
    return key.argmax(1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", nargs="+", default=["realistic_fast-noesc"])
    p.add_argument("--n-images", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--out-dir", default="benchmarks/results/realism")
    p.add_argument("--table", default=None)
    a = p.parse_args()
    torch.set_flush_denormal(True)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, robust = load_demo_classifier(), load_demo_robust_oracle()
    images, labels = load_demo_samples()
    x, y, cf = paired_images(model, images, labels, a.n_images)
    lines = [
        "| setting | samples | rule | flip | COUT | robust judge | chosen differs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in a.settings:
        path = out / f"selection-{name}.n{a.n_images}.pt"
        if not path.exists():
            torch.save(run(name, model, robust, x, y, cf, a.batch_size), path)
        row = torch.load(path)
        picks = {r: choose(row, r) for r in ("confident", "stable")}
        for rule, idx in picks.items():
            rows = torch.arange(len(x))
            chosen = row["samples"][rows, idx]
            cout = float(M.cout(model, x, chosen, y, cf, steps=20).mean())
            lines.append(
                f"| {name} | {row['samples'].shape[1]} | {rule} | "
                f"{float(row['flip'][rows, idx].float().mean()):.3f} | {cout:.3f} | "
                f"{float(row['robust'][rows, idx].float().mean()):.3f} | "
                f"{float((idx != picks['confident']).float().mean()):.2f} |"
            )
        best = row["robust"].any(1).float().mean()
        lines.append(f"| {name} | | any sample (ceiling) | | | {float(best):.3f} | |")
        print("\n".join(lines[-3:]), flush=True)
    if a.table:
        Path(a.table).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
