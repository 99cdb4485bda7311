"""Write the shipped sample set: Fashion-MNIST test images 9000..9499 (never used in training).

python scripts/make_demo_samples.py --out rcsb_captum/data/fashion_mnist_samples.pt
"""

import argparse

import torch
from fashion_mnist import load_fashion_mnist

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="rcsb_captum/data/fashion_mnist_samples.pt")
args = parser.parse_args()
x, y = load_fashion_mnist("test")
x, y = x[9000:9500], y[9000:9500]
torch.save(
    {
        "images": (x * 255).round().to(torch.uint8),
        "labels": y,
        "source": "fashion-mnist t10k 9000:9500",
    },
    args.out,
)
print(f"wrote {args.out}: {tuple(x.shape)}")
