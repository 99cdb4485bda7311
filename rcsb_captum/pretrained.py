r"""Deprecated alias of :mod:`rcsb_captum.demo` (the shipped demo assets moved there)."""

import warnings

from .demo.assets import FASHION_MNIST_CLASSES, load_demo_classifier, load_demo_samples

__all__ = ["FASHION_MNIST_CLASSES", "load_demo_classifier", "load_demo_samples"]

warnings.warn(
    "rcsb_captum.pretrained is deprecated; import from rcsb_captum.demo",
    DeprecationWarning,
    stacklevel=2,
)
