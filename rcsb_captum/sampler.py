r"""The guided, truncated, region-constrained I2SB sampling loop of RCSB (spec §2.4).

``ddpm_dps_sampling`` of ``sobieskibj/rcsb`` (``src/inpainters/src_cddb/i2sb/diffusion.py``),
re-stated: start from the OT-ODE bridge marginal at ``start_step - 1`` between the image and its
noise-filled copy, walk the I2SB step grid down with the OT-ODE posterior, shift ``x_n`` by the
guidance before each posterior step (x̂0 is the pre-guidance estimate, not recomputed) and
replace the pixels outside the region by their start values after each step.
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .bridge.bridge import Bridge
from .bridge.schedule import space_indices
from .guidance import ClassifierGuidance

__all__ = ["sample_rcsb"]


def sample_rcsb(
    bridge: Bridge,
    images: Tensor,
    region: Tensor,
    guidance: ClassifierGuidance | None,
    start_step: int = 600,
    nfe: int = 100,
    generator: torch.Generator | None = None,
    show_progress: bool = False,
) -> Tensor:
    r"""Counterfactuals in ``[0, 1]``; pixels where ``region == 0`` equal ``images`` bit for bit.

    Args:
        bridge (Bridge): The inpainting bridge.
        images (Tensor): ``N x C x H x W`` in ``[0, 1]``.
        region (Tensor): ``N x 1 x H x W`` binary, 1 = may change.
        guidance (ClassifierGuidance, optional): ``None`` gives plain (unguided) inpainting.
        start_step (int): Truncation ``S`` (the trajectory starts at grid index ``S - 1``).
        nfe (int): Number of network evaluations (steps).
        generator (torch.Generator, optional): Source of the hole noise.
        show_progress (bool): tqdm bar over the steps.
    """
    schedule = bridge.schedule
    if not 2 <= start_step <= schedule.interval:
        raise ValueError(f"start_step must be in [2, {schedule.interval}], got {start_step}")
    if not 1 <= nfe <= start_step - 1:
        raise ValueError(f"nfe must be in [1, start_step - 1 = {start_step - 1}], got {nfe}")
    x_gt = images * 2 - 1
    mask = region.to(images.dtype).expand_as(images)
    # Drawn where the generator lives (a CPU generator for CUDA images works too).
    noise_device = generator.device if generator is not None else images.device
    eps = torch.randn(images.shape, generator=generator, dtype=images.dtype, device=noise_device)
    eps = eps.to(images.device)
    x1 = (1 - mask) * x_gt + mask * eps
    x = schedule.marginal(start_step - 1, x_gt, x1, ot_ode=True)
    x = torch.where(mask.bool(), x, x_gt)  # exact outside the region (mu_x0 + mu_x1 == 1)
    x_keep = x
    grid = space_indices(start_step, nfe + 1)
    pairs = list(zip(grid[:-1], grid[1:], strict=True))[::-1]
    for prev, n in tqdm(pairs, disable=not show_progress, desc="RCSB", leave=False):
        if guidance is not None and guidance.scale != 0:
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(True)
                x0_hat = bridge.predict_x0(x_in, n)
                (grad,) = torch.autograd.grad(guidance.objective(x0_hat), x_in)
            x0_hat = x0_hat.detach()
            x_tilde = x + guidance.step(grad)
        else:
            with torch.no_grad():
                x0_hat = bridge.predict_x0(x, n)
            x_tilde = x
        x = schedule.posterior(prev, n, x_tilde, x0_hat, ot_ode=True).detach()
        x = torch.where(mask.bool(), x, x_keep)
    out = (x.clamp(-1, 1) + 1) / 2
    # bit-for-bit: outside the region return the caller's pixels, not a round trip through [-1, 1]
    return torch.where(mask.bool(), out, images)
