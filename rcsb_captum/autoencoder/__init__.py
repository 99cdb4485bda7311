r"""Latent autoencoders for GCD and BB-LIG: the interface and a Diffusion Autoencoder."""

from .base import LatentAutoencoder
from .diffae import (
    PAPER_STEPS,
    RECIPES,
    DiffusionAutoencoder,
    SemanticEncoder,
    recipe_config,
    train_diffae,
    warm_start_diffae,
    whiten_code,
    widen_code,
)

__all__ = [
    "PAPER_STEPS",
    "RECIPES",
    "DiffusionAutoencoder",
    "LatentAutoencoder",
    "SemanticEncoder",
    "recipe_config",
    "train_diffae",
    "warm_start_diffae",
    "whiten_code",
    "widen_code",
]
