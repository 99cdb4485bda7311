r"""rcsb_captum: region-constrained visual counterfactuals (RCSB) as a Captum attribution method."""

from .attr import BBLIG, BBMP, FIDO, GCD, RCSB, CounterfactualDirections, CounterfactualResult
from .autoencoder import DiffusionAutoencoder, LatentAutoencoder
from .bridge import Bridge, BridgeSchedule, train_bridge
from .normalization import NormalizedModel
from .regions import (
    AttributionRegion,
    MaskRegion,
    RandomRegion,
    SegmentationRegion,
    TextRegion,
    TextSegmenter,
)

__all__ = [
    "BBLIG",
    "BBMP",
    "GCD",
    "CounterfactualDirections",
    "DiffusionAutoencoder",
    "LatentAutoencoder",
    "FIDO",
    "RCSB",
    "AttributionRegion",
    "Bridge",
    "BridgeSchedule",
    "CounterfactualResult",
    "MaskRegion",
    "NormalizedModel",
    "RandomRegion",
    "SegmentationRegion",
    "TextRegion",
    "TextSegmenter",
    "train_bridge",
]
__version__ = "0.1.0.dev0"
