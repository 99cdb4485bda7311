r"""Latent autoencoders for GCD and BB-LIG: the interface and a Diffusion Autoencoder."""

from .base import LatentAutoencoder
from .diffae import PAPER_STEPS, DiffusionAutoencoder, SemanticEncoder, train_diffae

__all__ = [
    "PAPER_STEPS",
    "DiffusionAutoencoder",
    "LatentAutoencoder",
    "SemanticEncoder",
    "train_diffae",
]
