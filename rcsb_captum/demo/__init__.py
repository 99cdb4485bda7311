r"""Everything Fashion-MNIST: the shipped demo assets, the demo classifier and the demo run.

Nothing in the methods knows this sub-package; it uses the public API only.
"""

from .assets import (
    FASHION_MNIST_CLASSES,
    load_demo_classifier,
    load_demo_oracle,
    load_demo_robust_oracle,
    load_demo_samples,
)
from .demo_run import (
    DEMO_GRADCAM_LAYER,
    PAIRED_CLASSES,
    REGION_SOURCES,
    make_region,
    pick_images,
    run_demo,
)
from .networks import FashionCNN, OracleNet, RobustOracleNet

__all__ = [
    "DEMO_GRADCAM_LAYER",
    "FASHION_MNIST_CLASSES",
    "PAIRED_CLASSES",
    "REGION_SOURCES",
    "FashionCNN",
    "OracleNet",
    "RobustOracleNet",
    "load_demo_classifier",
    "load_demo_oracle",
    "load_demo_robust_oracle",
    "load_demo_samples",
    "make_region",
    "pick_images",
    "run_demo",
]
