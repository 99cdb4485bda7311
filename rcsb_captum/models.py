r"""Small classifier architecture of the demo and a helper for models that want normalised input."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["FashionCNN", "NormalizedModel"]


class NormalizedModel(nn.Module):
    r"""Wrap a classifier that expects ``(x - mean) / std`` so that it takes images in ``[0, 1]``.

    RCSB, its regions and the metrics all work on ``[0, 1]`` images; wrap a model once with this
    helper instead of normalising inputs by hand.

    Args:
        model (nn.Module): The classifier on normalised input.
        mean (sequence of float): Per-channel mean (e.g. ImageNet's ``(0.485, 0.456, 0.406)``).
        std (sequence of float): Per-channel standard deviation.

    Examples::

        >>> model = NormalizedModel(resnet50(), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        >>> RCSB(model).attribute(images_in_0_1, target=340)
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(
                f"mean and std must have the same length, got {len(mean)} and {len(std)}"
            )
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor, *args: object) -> Tensor:
        if x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"input has {x.shape[1]} channels but mean/std have {self.mean.shape[1]}"
            )
        return self.model((x - self.mean) / self.std, *args)


class FashionCNN(nn.Module):
    r"""The demo classifier: a small VGG-style CNN for 1 x 32 x 32 images in ``[0, 1]``.

    ``features(x)`` returns the 128-d penultimate activations (used as the feature space of FID
    in the demo); ``forward(x)`` returns the 10 class logits.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]

        self.body = nn.Sequential(*block(in_channels, 32), *block(32, 64), *block(64, 128))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(128 * 4 * 4, 128), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.classifier = nn.Linear(128, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.features(x)))
