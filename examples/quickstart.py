"""RCSB end to end on CPU in under a minute.

Uses the shipped Fashion-MNIST classifier and sample images. The demo bridge is not shipped yet,
so this script trains a tiny bridge for a few dozen steps first: its inpainting is crude, the
point is the API. With a real bridge, replace it with Bridge.load(...) or
Bridge.from_i2sb_checkpoint(...).
"""

import time
from pathlib import Path

import torch
from captum.attr import Saliency

from rcsb_captum import RCSB, AttributionRegion, train_bridge
from rcsb_captum.pretrained import FASHION_MNIST_CLASSES, load_demo_classifier, load_demo_samples


def main() -> None:
    torch.set_flush_denormal(True)
    start = time.time()
    model = load_demo_classifier()
    images, labels = load_demo_samples()
    config = {
        "image_size": 32,
        "num_channels": 32,
        "num_res_blocks": 1,
        "channel_mult": "1,2",
        "attention_resolutions": "8",
        "num_head_channels": 32,
        "resblock_updown": True,
        "in_channels": 1,
        "out_channels": 1,
    }
    bridge = train_bridge(
        images[100:], config=config, steps=40, batch_size=16, lr=2e-3, show_progress=True, seed=0
    )
    x = images[:4]
    rcsb = RCSB(
        model,
        bridge,
        AttributionRegion(Saliency(model), cell_size=4, area=0.3),
        start_step=600,
        nfe=20,
        n_samples=2,
        guidance_scale=1.5,
    )
    res = rcsb.generate(x, seed=0, show_progress=False)
    for i in range(len(x)):
        before = res.probs_before[i].argmax().item()
        after = res.probs_after[i].argmax().item()
        outside = (res.counterfactuals[i] - x[i])[(res.regions[i] == 0).expand_as(x[i])].abs().max()
        print(
            f"image {i}: {FASHION_MNIST_CLASSES[before]} ({res.probs_before[i, before]:.2f}) -> "
            f"{FASHION_MNIST_CLASSES[after]} ({res.probs_after[i, after]:.2f}); "
            f"region {res.regions[i].mean():.0%}, change outside region {outside.item():.1f}"
        )
    out = Path("outputs")
    out.mkdir(exist_ok=True)
    try:
        from PIL import Image

        rows = torch.cat(
            [
                torch.cat(
                    [
                        x[i, 0],
                        res.regions[i, 0],
                        res.counterfactuals[i, 0],
                        (x[i, 0] - res.counterfactuals[i, 0]).abs(),
                    ],
                    1,
                )
                for i in range(len(x))
            ],
            0,
        )
        Image.fromarray((rows.clamp(0, 1) * 255).byte().numpy()).resize((512, 512), 0).save(
            out / "quickstart.png"
        )
        print(f"figure: {out / 'quickstart.png'} (input | region | counterfactual | |difference|)")
    except ImportError:
        pass
    print(f"done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
