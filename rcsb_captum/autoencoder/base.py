r"""The interface GCD and BB-LIG need from a latent autoencoder."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

__all__ = ["LatentAutoencoder"]


class LatentAutoencoder(nn.Module, ABC):
    r"""An autoencoder with a semantic latent ``z`` and, optionally, a stochastic code.

    Subclasses implement:

    - :meth:`encode` ``(images N x C x H x W in [0, 1]) -> z`` (``N x D``), the semantic code
      that global directions live in;
    - :meth:`encode_stochastic` ``(images, z) -> noise`` (any shape, or ``None``), what a
      diffusion autoencoder needs to reconstruct exactly (its DDIM-inverted ``x_T``);
    - :meth:`decode` ``(z, noise) -> images in [0, 1]``.

    Any user model that provides the three works with :class:`~rcsb_captum.GCD` and
    :class:`~rcsb_captum.BBLIG`.
    """

    @abstractmethod
    def encode(self, images: Tensor) -> Tensor: ...

    def encode_stochastic(self, images: Tensor, z: Tensor) -> Tensor | None:
        return None

    @abstractmethod
    def decode(self, z: Tensor, noise: Tensor | None = None) -> Tensor: ...

    def reconstruct(self, images: Tensor) -> Tensor:
        r"""``decode(encode(x), encode_stochastic(x, encode(x)))``."""
        z = self.encode(images)
        return self.decode(z, self.encode_stochastic(images, z))
