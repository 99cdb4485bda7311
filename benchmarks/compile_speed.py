"""Wall time of RCSB sampling with the networks eager, in channels-last memory, compiled, and
with the bridge under bf16 autocast (``RCSB(precision="bf16")``).

The shipped Fashion-MNIST bridge and classifier, ``--batch`` paired-class images sampled
together at ``--nfe`` steps (one sample), timed ``--repeats`` times after one warm-up run; the
warm-up of a compiled variant (tracing and code generation) is printed on its own. Every
variant's counterfactuals are compared with the eager ones (largest absolute difference), and
the speed-up is eager seconds over the variant's, measured in this one run.

    python benchmarks/compile_speed.py --batch 32 --nfe 50 --variants eager channels-last compile
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from speed_quality import paired_images

from rcsb_captum import RCSB, Bridge
from rcsb_captum.demo import load_demo_classifier, load_demo_samples, make_region


def prepare(variant: str, bridge: Bridge, model: torch.nn.Module):
    bridge, model = copy.deepcopy(bridge), copy.deepcopy(model)
    if variant == "channels-last":
        bridge.network.to(memory_format=torch.channels_last)
        model.to(memory_format=torch.channels_last)
    elif variant.startswith("compile"):
        mode = variant.partition(":")[2] or None
        bridge.network = torch.compile(bridge.network, mode=mode, dynamic=False)
        model = torch.compile(model, mode=mode, dynamic=False)
    elif variant not in ("eager", "bf16"):
        raise SystemExit(f"unknown variant {variant!r}")
    return bridge, model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--nfe", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--variants",
        nargs="+",
        default=["eager", "channels-last", "bf16", "compile"],
        help="eager | channels-last | bf16 | compile[:MODE] (a torch.compile mode)",
    )
    a = p.parse_args()
    torch.set_flush_denormal(True)
    model0, bridge0 = load_demo_classifier(), Bridge.pretrained("fashion-mnist")
    images, labels = load_demo_samples()
    x, y, cf = paired_images(model0, images, labels, a.batch)
    masks = make_region("saliency", model0, 4, 0.3)(x, y)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {len(x)}, NFE {a.nfe}"
    )
    reference = None
    base = None
    for variant in a.variants:
        bridge, model = prepare(variant, bridge0, model0)
        precision = "bf16" if variant == "bf16" else "fp32"
        rcsb = RCSB(model, bridge, nfe=a.nfe, n_samples=1, precision=precision)

        def run(rcsb: RCSB = rcsb):
            return rcsb.generate(x, target=y, counterfactual_target=cf, seed=0, region=masks)

        t = time.perf_counter()
        out = run().counterfactuals
        warm = time.perf_counter() - t
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        best = min(times)
        base = base or best
        reference = out if reference is None else reference
        diff = float((out - reference).abs().max())
        print(
            f"{variant:>14}: first run {warm:6.2f} s, then {best / len(x) * 1000:6.1f} ms/image "
            f"(min of {a.repeats}), speed-up {base / best:4.2f}x, max |cf - eager| {diff:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
