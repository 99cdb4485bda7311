r"""I2SB's discrete noise schedule: symmetric betas, bridge marginals, posterior and step grid.

Everything here follows Liu et al., "I2SB: Image-to-Image Schrödinger Bridge" (ICML 2023,
arXiv 2302.05872; ``NVlabs/I2SB``, ``i2sb/runner.py`` and ``i2sb/diffusion.py``). The schedule
knows nothing about networks; coefficients are kept in float64 and cast to the state's dtype only
when they are applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

__all__ = ["BridgeSchedule", "space_indices"]


def space_indices(num_steps: int, count: int) -> list[int]:
    r"""``count`` indices from ``0`` to ``num_steps - 1`` with an even stride, as in I2SB.

    The fractional position advances by ``(num_steps - 1) / (count - 1)`` by repeated float
    addition and each position is rounded with Python's ``round`` (banker's rounding), as in
    ``i2sb/util.py::space_indices``. The accumulated float error matters: for ``(350, 101)`` it
    changes indices against ``round(k * stride)``, so the grid is built the same way to match
    the official one index for index.

    Args:
        num_steps (int): Length of the range the indices are taken from.
        count (int): How many indices to return (``nfe + 1`` for ``nfe`` sampling steps).

    Returns:
        list[int]: ``count`` increasing indices, the first ``0`` and the last ``num_steps - 1``.
    """
    if num_steps < 2:
        raise ValueError(f"num_steps must be at least 2, got {num_steps}")
    if not 2 <= count <= num_steps:
        raise ValueError(f"count must be between 2 and num_steps={num_steps}, got {count}")
    stride = (num_steps - 1) / (count - 1)
    position, indices = 0.0, []
    for _ in range(count):
        indices.append(round(position))
        position += stride
    return indices


def _symmetric_betas(interval: int, beta_max: float) -> np.ndarray:
    # "sqrt-linear" betas from 1e-4 to beta_max / interval, then the first half mirrored
    # (I2SB runner.py::make_beta_schedule + the symmetric concatenation).
    linear_start, linear_end = 1e-4, beta_max / interval
    base = np.linspace(linear_start**0.5, linear_end**0.5, interval, dtype=np.float64) ** 2
    half = base[: interval // 2]
    return np.concatenate([half, np.flip(half)])


@dataclass(frozen=True)
class BridgeSchedule:
    r"""The discrete Schrödinger-bridge schedule of I2SB.

    Args:
        interval (int): Number of discrete steps ``N`` (1000 for the ImageNet bridges, 500 for
            RCSB's CelebA bridge). Must be even, as I2SB mirrors the first half.
        beta_max (float): Largest base beta times ``interval`` (1.0 for inpainting, 0.3 for
            JPEG and super-resolution bridges).
        t0 (float): First continuous time fed to the network (I2SB's ``--t0``).
        T (float): Last continuous time (I2SB's ``--T``).

    Attributes (float64 numpy arrays of length ``interval``): ``betas``, ``std_fwd`` (sigma_n),
    ``std_bwd`` (sigma-bar_n), ``mu_x0``, ``mu_x1``, ``std_sb`` and ``noise_levels`` (the time
    values given to the network).
    """

    interval: int = 1000
    beta_max: float = 1.0
    t0: float = 1e-4
    T: float = 1.0
    betas: np.ndarray = field(init=False, repr=False, compare=False)
    std_fwd: np.ndarray = field(init=False, repr=False, compare=False)
    std_bwd: np.ndarray = field(init=False, repr=False, compare=False)
    mu_x0: np.ndarray = field(init=False, repr=False, compare=False)
    mu_x1: np.ndarray = field(init=False, repr=False, compare=False)
    std_sb: np.ndarray = field(init=False, repr=False, compare=False)
    noise_levels: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.interval, int) or self.interval < 2 or self.interval % 2:
            raise ValueError(f"interval must be an even integer >= 2, got {self.interval!r}")
        if not self.beta_max > 0:
            raise ValueError(f"beta_max must be positive, got {self.beta_max!r}")
        if not 0 <= self.t0 < self.T:
            raise ValueError(f"expected 0 <= t0 < T, got t0={self.t0!r}, T={self.T!r}")
        betas = _symmetric_betas(self.interval, float(self.beta_max))
        var_fwd = np.cumsum(betas)
        var_bwd = np.flip(np.cumsum(np.flip(betas)))
        total = var_fwd + var_bwd
        # Product of the Gaussians N(x0, sigma_n^2) and N(x1, sigmabar_n^2) (I2SB eq. 11).
        values = {
            "betas": betas,
            "std_fwd": np.sqrt(var_fwd),
            "std_bwd": np.sqrt(var_bwd),
            "mu_x0": var_bwd / total,
            "mu_x1": var_fwd / total,
            "std_sb": np.sqrt(var_fwd * var_bwd / total),
            "noise_levels": np.linspace(self.t0, self.T, self.interval) * self.interval,
        }
        for name, value in values.items():
            value = np.ascontiguousarray(value)
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ helpers on tensors
    def _check_step(self, step: int, name: str = "step") -> int:
        step = int(step)
        if not 0 <= step < self.interval:
            raise ValueError(f"{name} must be in [0, {self.interval - 1}], got {step}")
        return step

    def noise_level(self, step: int, like: Tensor) -> Tensor:
        r"""The network's time input at ``step``, one value per sample of ``like``."""
        step = self._check_step(step)
        value = float(self.noise_levels[step])
        return torch.full((like.shape[0],), value, dtype=like.dtype, device=like.device)

    def marginal(
        self,
        step: int | Tensor,
        x0: Tensor,
        x1: Tensor,
        ot_ode: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""Sample the bridge marginal ``q(x_n | x0, x1)`` (I2SB eq. 11, ``q_sample``).

        With ``ot_ode=True`` (the zero-diffusion limit used by the inpainting bridges) this is the
        deterministic interpolation ``mu_x0[n] x0 + mu_x1[n] x1``.

        Args:
            step (int or Tensor): One step for the whole batch, or a 1-d integer tensor with one
                step per sample (as in training, where each sample draws its own step).
            x0, x1 (Tensor): The two ends, ``N x ...``.
            ot_ode (bool): Deterministic interpolation (True) or the stochastic bridge.
            generator (torch.Generator, optional): Source of the noise when ``ot_ode`` is off.
        """
        mu0, mu1, std = self._coefficients_at(step, x0)
        x_n = mu0 * x0 + mu1 * x1
        if not ot_ode:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
            x_n = x_n + std * noise
        return x_n

    def _coefficients_at(
        self, step: int | Tensor, like: Tensor
    ) -> tuple[float | Tensor, float | Tensor, float | Tensor]:
        # (mu_x0, mu_x1, std_sb) at one step (floats) or per sample (tensors shaped N x 1 x ...)
        if not isinstance(step, Tensor):
            n = self._check_step(step)
            return float(self.mu_x0[n]), float(self.mu_x1[n]), float(self.std_sb[n])
        if step.ndim != 1 or step.shape[0] != like.shape[0] or step.is_floating_point():
            raise ValueError(
                f"step must be an int or a 1-d integer tensor with one step per sample "
                f"({like.shape[0]}), got {step.dtype} of shape {tuple(step.shape)}"
            )
        if step.numel() and (step.min() < 0 or step.max() >= self.interval):
            raise ValueError(f"step must be in [0, {self.interval - 1}], got {step.tolist()}")
        idx = step.detach().cpu().long().numpy()
        shape = (-1,) + (1,) * (like.ndim - 1)

        def pick(values: np.ndarray) -> Tensor:
            return torch.from_numpy(values[idx]).to(like.device, like.dtype).view(shape)

        return pick(self.mu_x0), pick(self.mu_x1), pick(self.std_sb)

    def posterior(
        self,
        prev_step: int,
        step: int,
        x_n: Tensor,
        x0: Tensor,
        ot_ode: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""Sample ``p(x_{n'} | x_n, x0)`` for ``n' < n`` (I2SB eq. 4, ``p_posterior``).

        The mean is ``(a^2 / sigma_n^2) x0 + (sigma_{n'}^2 / sigma_n^2) x_n`` with
        ``a^2 = sigma_n^2 - sigma_{n'}^2``; noise of variance ``sigma_{n'}^2 a^2 / sigma_n^2`` is
        added only when ``ot_ode`` is off and ``n' > 0``.
        """
        prev_step = self._check_step(prev_step, "prev_step")
        step = self._check_step(step)
        if prev_step >= step:
            raise ValueError(f"prev_step must be smaller than step, got {prev_step} >= {step}")
        coef_x0, coef_xn, var = self.posterior_coefficients(prev_step, step)
        x_prev = coef_x0 * x0 + coef_xn * x_n
        if not ot_ode and prev_step > 0:
            noise = torch.randn(x_n.shape, generator=generator, dtype=x_n.dtype, device=x_n.device)
            x_prev = x_prev + var**0.5 * noise
        return x_prev

    def posterior_coefficients(self, prev_step: int, step: int) -> tuple[float, float, float]:
        r"""``(coef_x0, coef_xn, variance)`` of ``p(x_{n'} | x_n, x0)``, computed in float64."""
        var_n = self.std_fwd[step] ** 2
        var_prev = self.std_fwd[prev_step] ** 2
        a2 = var_n - var_prev
        return float(a2 / var_n), float(var_prev / var_n), float(var_prev * a2 / var_n)
