r"""A helper for classifiers that want normalised input."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["NormalizedModel"]


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

    mean: Tensor
    std: Tensor

    def forward(self, x: Tensor, *args: object) -> Tensor:
        if x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"input has {x.shape[1]} channels but mean/std have {self.mean.shape[1]}"
            )
        return self.model((x - self.mean) / self.std, *args)
