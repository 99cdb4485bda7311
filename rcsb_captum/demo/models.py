r"""The demo classifier architecture."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["FashionCNN"]


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
