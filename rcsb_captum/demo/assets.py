r"""The shipped demo assets: class names and loaders of the classifier and samples (no download)."""

from __future__ import annotations

from importlib import resources
from typing import TypeVar

import torch
from torch import Tensor

from .._utils import built_without_drawing
from .networks import FashionCNN, OracleNet, RobustOracleNet

NetworkT = TypeVar("NetworkT", bound=torch.nn.Module)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "load_demo_classifier",
    "load_demo_oracle",
    "load_demo_robust_oracle",
    "load_demo_samples",
]

#: Fashion-MNIST's ten class names, in label order.
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _data_file(name: str):
    return resources.files("rcsb_captum") / "data" / name


def _shipped_network(name: str, network: type[NetworkT], float32: bool = False) -> NetworkT:
    # a shipped state dict into ``network`` built without drawing (torch's global generator
    # untouched); ``float32`` casts half-precision weights
    with resources.as_file(_data_file(name)) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    if float32:
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model = built_without_drawing(network)
    model.load_state_dict(state)
    return model.eval()


def load_demo_classifier() -> FashionCNN:
    r"""The shipped Fashion-MNIST classifier (1 x 32 x 32 input in ``[0, 1]``, 10 logits), in
    eval mode. Trained by ``scripts/train_demo_classifier.py`` (93.3 % on test images 0..8999)."""
    return _shipped_network("fashion_mnist_classifier.pt", FashionCNN)


def load_demo_samples() -> tuple[Tensor, Tensor]:
    r"""500 Fashion-MNIST test images (indices 9000..9499, used in no training), zero-padded to
    32 x 32, as ``(images N x 1 x 32 x 32 in [0, 1], labels N)``."""
    with resources.as_file(_data_file("fashion_mnist_samples.pt")) as path:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj["images"].float() / 255.0, obj["labels"]


def load_demo_oracle() -> OracleNet:
    r"""The shipped second classifier (:class:`~rcsb_captum.demo.OracleNet`), for judging
    counterfactuals with a network that played no part in guiding them. Trained by
    ``scripts/train_demo_classifier.py --arch oracle --epochs 1 --seed 1``; in eval mode."""
    return _shipped_network("fashion_mnist_oracle.pt", OracleNet)


def load_demo_robust_oracle() -> RobustOracleNet:
    r"""The shipped robust judge (:class:`~rcsb_captum.demo.RobustOracleNet`): L2 PGD
    adversarial training (radius 1.0, 7 steps, half of each batch) with random shifts, by
    ``scripts/train_robust_oracle.py --epochs 9 --eps 1.0 --seed 2 --device cuda`` (one H200).
    Its clean and PGD accuracies are stored in the file (``test_accuracy``,
    ``robust_accuracy``); in eval mode, float32."""
    return _shipped_network("fashion_mnist_robust_oracle.pt", RobustOracleNet, float32=True)
