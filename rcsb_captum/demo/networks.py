r"""The demo classifier architecture."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FashionCNN", "OracleNet", "RobustOracleNet"]


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


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(8, cin),
            nn.SiLU(),
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
            nn.GroupNorm(8, cout),
            nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.skip = (
            nn.Conv2d(cin, cout, 1, stride=stride) if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class OracleNet(nn.Module):
    r"""The second Fashion-MNIST classifier, the "oracle" that judges counterfactuals without
    having guided them (as DiME and ACE judge with an oracle): a residual network with GroupNorm,
    SiLU and global average pooling, unlike :class:`FashionCNN` (VGG-style, BatchNorm, ReLU,
    dense head), trained with another seed. ``features(x)`` gives its 128-d pooled features."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.blocks = nn.Sequential(
            _Residual(32, 32, 1),
            _Residual(32, 64, 2),
            _Residual(64, 128, 2),
            _Residual(128, 128, 2),
        )
        self.norm = nn.GroupNorm(8, 128)
        self.classifier = nn.Linear(128, num_classes)

    def features(self, x: Tensor) -> Tensor:
        h = torch.nn.functional.silu(self.norm(self.blocks(self.stem(x))))
        return h.mean((2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class _PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.skip = (
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        h = torch.nn.functional.gelu(self.bn1(x))
        skip = self.skip(h) if not isinstance(self.skip, nn.Identity) else x
        h = self.conv1(h)
        h = self.conv2(torch.nn.functional.gelu(self.bn2(h)))
        return skip + h


class RobustOracleNet(nn.Module):
    r"""The robust judge of counterfactuals: a pre-activation wide residual network (BatchNorm,
    GELU, two blocks per stage at widths 48 / 96 / 192), trained with L2 PGD adversarial
    training and random shifts by ``scripts/train_robust_oracle.py``, so that a small change
    that flips a non-robust classifier does not flip it. Another architecture and seed than
    both :class:`FashionCNN` (the guided classifier) and :class:`OracleNet`.
    ``features(x)`` gives its 192-d pooled features."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 48) -> None:
        super().__init__()
        w = (width, 2 * width, 4 * width)
        self.stem = nn.Conv2d(in_channels, w[0], 3, padding=1, bias=False)
        self.blocks = nn.Sequential(
            _PreActBlock(w[0], w[0], 1),
            _PreActBlock(w[0], w[0], 1),
            _PreActBlock(w[0], w[1], 2),
            _PreActBlock(w[1], w[1], 1),
            _PreActBlock(w[1], w[2], 2),
            _PreActBlock(w[2], w[2], 1),
        )
        self.norm = nn.BatchNorm2d(w[2])
        self.classifier = nn.Linear(w[2], num_classes)

    def features(self, x: Tensor) -> Tensor:
        h = torch.nn.functional.gelu(self.norm(self.blocks(self.stem(x))))
        return h.mean((2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
