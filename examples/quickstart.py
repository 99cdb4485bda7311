"""RCSB through the Python API, on CPU in well under a minute.

The shipped Fashion-MNIST classifier, sample images and bridge; a Saliency region instead of the
default Integrated Gradients, to show how any Captum method plugs in; then the counterfactual
metrics. Writes outputs/quickstart.png.
"""

import time
from pathlib import Path

import torch
from captum.attr import Saliency

from rcsb_captum import RCSB, AttributionRegion
from rcsb_captum import metrics as M
from rcsb_captum.demo import FASHION_MNIST_CLASSES, load_demo_classifier, load_demo_samples
from rcsb_captum.visualization import plot_counterfactuals


def main() -> None:
    torch.set_flush_denormal(True)
    start = time.time()
    model = load_demo_classifier()
    images, labels = load_demo_samples()
    x, y = images[:4], labels[:4]

    # no bridge given: 1 x 32 x 32 inputs use the shipped Bridge.pretrained("fashion-mnist")
    rcsb = RCSB(model, region=AttributionRegion(Saliency(model), cell_size=4, area=0.3), nfe=50)
    res = rcsb.generate(x, target=y, seed=0, show_progress=True)
    attr = x - res.counterfactuals  # what rcsb.attribute(x, target=y, seed=0) returns

    for i in range(len(x)):
        before, after = res.probs_before[i].argmax().item(), res.probs_after[i].argmax().item()
        print(
            f"image {i}: {FASHION_MNIST_CLASSES[before]} ({res.probs_before[i, before]:.2f}) -> "
            f"{FASHION_MNIST_CLASSES[after]} ({res.probs_after[i, after]:.2f}); "
            f"region {res.regions[i].mean():.0%}, |attribution| outside the region "
            f"{attr[i][(res.regions[i] == 0).expand_as(x[i])].abs().max():.1f}"
        )
    print(
        f"flip rate {M.flip_rate(model, res.counterfactuals, y):.2f}, "
        f"COUT {M.cout(model, x, res.counterfactuals, y).mean():.2f}, "
        f"L1 inside {M.closeness(x, res.counterfactuals, res.regions)['l1_inside'].mean():.3f}"
    )
    out = Path("outputs")
    out.mkdir(exist_ok=True)
    plot_counterfactuals(
        x,
        res.counterfactuals,
        res.regions,
        res.probs_before,
        res.probs_after,
        FASHION_MNIST_CLASSES,
        path=str(out / "quickstart.png"),
        success=res.success,
    )
    print(f"figure: {out / 'quickstart.png'}; done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
