r"""A Diffusion Autoencoder (DiffAE; Preechakul et al., "Diffusion Autoencoders: Toward a
Meaningful and Decodable Representation", CVPR 2022).

A semantic encoder maps an image to ``z_sem``; a conditional DDPM decoder (the project's ADM
UNet, with ``z_sem`` added to the time embedding so that it acts through every residual block's
scale-shift) denoises with ``z_sem`` as condition. Deterministic DDIM (Song et al., ICLR 2021)
inverts an image to its stochastic code ``x_T`` given ``z_sem`` and renders it back, so
``decode(encode(x), x_T)`` reconstructs ``x`` and ``decode(z + d, x_T)`` shows what the
semantic change ``d`` does to this very image (what GCD needs).

Schedule: DDPM's linear betas from 1e-4 to 0.02 over 1000 steps (Ho et al., 2020), as DiffAE.
The paper encodes with 250 DDIM steps and renders with 100 (:data:`PAPER_STEPS`); the shipped
32 x 32 model defaults to 50 / 50, which reconstructs held-out images as well here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .._utils import check_choice, check_int, format_images, progress_disabled
from ..bridge.checkpoints import read_checkpoint
from ..bridge.network import ADMUNet
from .base import LatentAutoencoder

__all__ = ["PAPER_STEPS", "DiffusionAutoencoder", "SemanticEncoder", "train_diffae"]

FORMAT = "rcsb_captum.diffae/1"
#: DDIM steps of the DiffAE paper: 250 to invert an image to x_T, 100 to render.
PAPER_STEPS = {"encode_steps": 250, "decode_steps": 100}
PRETRAINED = {"fashion-mnist": "fashion_mnist_diffae.pt"}


class SemanticEncoder(nn.Module):
    r"""A CNN from ``C x H x W`` images in ``[-1, 1]`` to ``z_sem`` (``dim``): strided
    convolutions with GroupNorm and SiLU, global average pooling and a linear map."""

    def __init__(self, in_channels: int, dim: int, width: int = 32, levels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1)]
        ch = width
        for _ in range(levels):
            out = ch * 2
            layers += [
                nn.GroupNorm(min(32, ch // 4), ch),
                nn.SiLU(),
                nn.Conv2d(ch, out, 3, stride=2, padding=1),
            ]
            ch = out
        layers += [nn.GroupNorm(min(32, ch // 4), ch), nn.SiLU(), nn.AdaptiveAvgPool2d(1)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(ch, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).flatten(1))


def _default_config(image_size: int, channels: int) -> dict[str, Any]:
    return {
        "image_size": image_size,
        "channels": channels,
        "z_dim": 64,
        "encoder_width": 32,
        "model_channels": 32,
        "channel_mult": (1, 2, 2),
        "num_res_blocks": 1,
        "attention_resolutions": (4,),
        "num_head_channels": 32,
        "timesteps": 1000,
        "prediction": "eps",
        "patch": 1,
    }


class DiffusionAutoencoder(LatentAutoencoder):
    r"""A DiffAE: :class:`SemanticEncoder` + conditional ADM decoder + DDIM.

    Args:
        config (dict): ``image_size``, ``channels``, ``z_dim``, ``encoder_width``,
            ``model_channels``, ``channel_mult``, ``num_res_blocks``, ``attention_resolutions``
            (downsampling rates), ``num_head_channels``, ``timesteps``.
        encode_steps (int): DDIM steps of the inversion to ``x_T`` (paper: 250).
        decode_steps (int): DDIM steps of a render (paper: 100).

    Examples::

        >>> ae = DiffusionAutoencoder.pretrained("fashion-mnist")
        >>> z = ae.encode(images)                      # N x 64 semantic codes
        >>> x_T = ae.encode_stochastic(images, z)     # DDIM inversion
        >>> same = ae.decode(z, x_T)                   # ~ images
    """

    def __init__(
        self, config: Mapping[str, Any], encode_steps: int = 50, decode_steps: int = 50
    ) -> None:
        super().__init__()
        c = dict(config)
        self.config = c
        self.encoder = SemanticEncoder(c["channels"], c["z_dim"], c["encoder_width"])
        p = int(c.get("patch", 1))
        if p < 1 or c["image_size"] % p:
            raise ValueError(f"config: patch must divide image_size {c['image_size']}, got {p}")
        check_choice(c.get("prediction", "eps"), "config: prediction", ("eps", "v"))
        self.unet = ADMUNet(
            image_size=c["image_size"] // p,
            in_channels=c["channels"] * p * p,
            model_channels=c["model_channels"],
            out_channels=c["channels"] * p * p,
            num_res_blocks=c["num_res_blocks"],
            attention_resolutions=tuple(c["attention_resolutions"]),
            channel_mult=tuple(c["channel_mult"]),
            num_head_channels=c["num_head_channels"],
            use_scale_shift_norm=True,
            resblock_updown=True,
            cond_dim=c["z_dim"],
        )
        # z_sem is standardised with statistics of the training images (DiffAE's
        # conds_mean / conds_std), so that latent steps are in units of the data's spread
        self.register_buffer("z_mean", torch.zeros(c["z_dim"]))
        self.register_buffer("z_std", torch.ones(c["z_dim"]))
        betas = np.linspace(1e-4, 0.02, c["timesteps"], dtype=np.float64)
        alphas_cumprod = torch.from_numpy(np.cumprod(1 - betas)).float()
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)
        self.encode_steps = check_int(encode_steps, "encode_steps", 1, c["timesteps"])
        self.decode_steps = check_int(decode_steps, "decode_steps", 1, c["timesteps"])

    alphas_cumprod: Tensor
    z_mean: Tensor
    z_std: Tensor

    @property
    def z_dim(self) -> int:
        return int(self.config["z_dim"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        s = int(self.config["image_size"])
        return (int(self.config["channels"]), s, s)

    # -- the networks ---------------------------------------------------------------------

    def semantic(self, images: Tensor) -> Tensor:
        r"""``z_sem`` of images in ``[0, 1]`` (differentiable; :meth:`encode` is not)."""
        return self.encoder(images * 2 - 1)

    @property
    def prediction(self) -> str:
        r"""What the decoder predicts: ``"eps"`` (the noise, DDPM and DiffAE) or ``"v"``
        (``sqrt(a) eps - sqrt(1 - a) x0``; Salimans & Ho, "Progressive Distillation", ICLR
        2022)."""
        return str(self.config.get("prediction", "eps"))

    @property
    def patch(self) -> int:
        r"""Side of the square patches the decoder sees as channels (1: none)."""
        return int(self.config.get("patch", 1))

    def network(self, x_t: Tensor, t: Tensor, z: Tensor) -> Tensor:
        r"""The decoder's raw output (:attr:`prediction`) at integer steps ``t`` given raw
        ``z_sem``. With ``patch`` > 1 the UNet works on ``patch x patch`` pixel blocks stacked
        as channels (``F.pixel_unshuffle``; a ``C x H x W`` image is ``C p^2 x H/p x W/p``), as
        latent-free patch diffusion does (Peebles & Xie, DiT, 2023, with patches of 2)."""
        p = self.patch
        if p > 1:
            x_t = F.pixel_unshuffle(x_t, p)
        out = self.unet(x_t, t.to(x_t.dtype), z)
        return F.pixel_shuffle(out, p) if p > 1 else out

    def denoise(
        self, x_t: Tensor, t: Tensor, z: Tensor, clip: bool = True
    ) -> tuple[Tensor, Tensor]:
        r"""``(x0, eps)`` estimated from ``x_t`` at integer steps ``t`` given raw ``z_sem``.

        With ``clip`` (the default), ``x0`` is clamped to ``[-1, 1]`` and ``eps`` re-derived
        from it, as the official DiffAE renders and inverts (its ``p_mean_variance`` with
        ``clip_denoised=True`` in ``ddim_sample`` and ``ddim_reverse_sample``): an estimate
        outside the data's range is never carried on to the next step."""
        a = self.alphas_cumprod[t].to(x_t.dtype).view(-1, *([1] * (x_t.ndim - 1)))
        out = self.network(x_t, t, z)
        if self.prediction == "v":
            x0 = a.sqrt() * x_t - (1 - a).sqrt() * out
            eps = (1 - a).sqrt() * x_t + a.sqrt() * out
        else:
            x0 = (x_t - (1 - a).sqrt() * out) / a.sqrt()
            eps = out
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return x0, eps

    def eps(self, x_t: Tensor, t: Tensor, z: Tensor) -> Tensor:
        r"""The decoder's noise estimate at integer steps ``t`` given raw ``z_sem`` (not
        clipped; :meth:`denoise` gives the clipped pair)."""
        return self.denoise(x_t, t, z, clip=False)[1]

    def _grid(self, steps: int) -> list[int]:
        total = int(self.config["timesteps"])
        return np.linspace(0, total - 1, steps).round().astype(int).tolist()

    def _ddim_step(self, x: Tensor, z: Tensor, t: int, t_next: int) -> Tensor:
        # deterministic DDIM from step t to t_next (either direction); t_next = -1 is x0
        ab = self.alphas_cumprod
        a_next = ab[t_next] if t_next >= 0 else torch.ones((), device=x.device)
        x0, eps = self.denoise(x, torch.full((x.shape[0],), t, device=x.device), z)
        return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps

    # -- the interface --------------------------------------------------------------------

    @torch.no_grad()
    def fit_latent_stats(self, images: Tensor, batch_size: int = 500) -> None:
        r"""Set the standardisation of ``z_sem`` from (training) images."""
        images = format_images(images, "images").float()
        z = torch.cat(
            [self.semantic(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        )
        self.z_mean.copy_(z.mean(0))
        self.z_std.copy_(z.std(0).clamp_min(1e-6))

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        r"""The standardised semantic code ``(z_sem - mean) / std`` (``N x z_dim``)."""
        images = format_images(images, "images")
        return (self.semantic(images.float()) - self.z_mean) / self.z_std

    @torch.no_grad()
    def encode_stochastic(
        self, images: Tensor, z: Tensor, steps: int | None = None, show_progress: bool = False
    ) -> Tensor:
        r"""DDIM inversion of ``images`` to ``x_T`` given ``z`` (``steps``: ``encode_steps``)."""
        x = format_images(images, "images").float() * 2 - 1
        z = z * self.z_std + self.z_mean  # the decoder is conditioned on the raw code
        grid = self._grid(steps or self.encode_steps)
        pairs = list(zip([-1, *grid[:-1]], grid, strict=True))
        for prev, t in tqdm(
            pairs, disable=progress_disabled(show_progress), desc="DDIM encode", leave=False
        ):
            # inversion uses the model at the step it leaves (prev; 0 at the start)
            x = self._ddim_step(x, z, max(prev, 0), t)
        return x

    def decode(
        self,
        z: Tensor,
        noise: Tensor | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        show_progress: bool = False,
    ) -> Tensor:
        r"""Render ``z`` from ``noise`` (``x_T``; drawn from ``generator`` when ``None``) with
        ``steps`` DDIM steps; images in ``[0, 1]``. Differentiable in ``z`` when grad is on."""
        if not isinstance(z, Tensor) or z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(
                f"z must be N x {self.z_dim}, got {tuple(getattr(z, 'shape', ())) or z!r}"
            )
        if noise is None:
            noise = torch.randn(
                (z.shape[0], *self.image_shape), generator=generator, device=z.device
            )
        if noise.shape != (z.shape[0], *self.image_shape):
            raise ValueError(
                f"noise must be {(z.shape[0], *self.image_shape)}, got {tuple(noise.shape)}"
            )
        x = noise
        z = z * self.z_std + self.z_mean  # standardised -> raw, differentiably
        grid = self._grid(steps or self.decode_steps)
        pairs = list(zip(grid[::-1], [*grid[::-1][1:], -1], strict=True))
        for t, t_next in tqdm(
            pairs, disable=progress_disabled(show_progress), desc="DDIM decode", leave=False
        ):
            x = self._ddim_step(x, z, t, t_next)
        return ((x.clamp(-1, 1) + 1) / 2).clamp(0, 1)

    # -- files ----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], dtype: torch.dtype | None = None) -> None:
        r"""Write the autoencoder (config + weights, optionally in ``dtype``) to one file."""
        state = {
            k: v.detach().cpu().to(dtype if dtype and v.is_floating_point() else v.dtype)
            for k, v in self.state_dict().items()
        }
        torch.save({"format": FORMAT, "config": self.config, "state_dict": state}, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: Any) -> DiffusionAutoencoder:
        r"""Read a :meth:`save` file; ``kwargs`` are ``encode_steps`` / ``decode_steps``."""
        obj = read_checkpoint(path)
        if obj.get("format") != FORMAT or "config" not in obj or "state_dict" not in obj:
            raise ValueError(f"{os.fspath(path)!r} is not an rcsb_captum DiffAE file")
        ae = cls(obj["config"], **kwargs)
        state = dict(obj["state_dict"])
        for key, default in (("z_mean", ae.z_mean), ("z_std", ae.z_std)):
            state.setdefault(key, default)  # files from before the standardisation
        ae.load_state_dict(state)
        return ae.eval().requires_grad_(False)

    @classmethod
    def pretrained(cls, name: str = "fashion-mnist", **kwargs: Any) -> DiffusionAutoencoder:
        r"""The DiffAE shipped in the package: ``"fashion-mnist"`` (1 x 32 x 32, z_sem of 64,
        trained by ``scripts/train_demo_diffae.py``)."""
        check_choice(name, "name", sorted(PRETRAINED))
        with resources.as_file(resources.files("rcsb_captum") / "data" / PRETRAINED[name]) as p:
            return cls.load(p, **kwargs)


def train_diffae(
    images: Tensor,
    *,
    config: Mapping[str, Any] | None = None,
    steps: int = 10_000,
    batch_size: int = 32,
    lr: float = 2e-4,
    ema_decay: float = 0.999,
    checkpoint_path: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 500,
    seed: int = 0,
    show_progress: bool = True,
    device: torch.device | str = "cpu",
) -> DiffusionAutoencoder:
    r"""Train a DiffAE (encoder and decoder jointly, DDPM noise regression conditioned on the
    encoder's ``z_sem``, as DiffAE) on ``images`` (``N x C x H x W`` in ``[0, 1]``).

    Resumable exactly like :func:`~rcsb_captum.train_bridge`: with ``checkpoint_path``, the
    model, its EMA, the optimiser and the random state are saved every ``checkpoint_every``
    steps, on Ctrl-C and at the end, and a later call continues up to ``steps``.

    All draws come from one CPU generator (then moved to ``device``), so a run on another
    device sees the same batches, steps and noise.

    Returns:
        DiffusionAutoencoder: the EMA weights, in eval mode, on the CPU.
    """
    images = format_images(images, "images").float()
    n, c, h, w = images.shape
    if h != w:
        raise ValueError(f"images must be square, got {h} x {w}")
    config = dict(_default_config(h, c) if config is None else config)
    torch.manual_seed(seed)
    device = torch.device(device)
    model = DiffusionAutoencoder(config).to(device)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    start = 0
    if checkpoint_path is not None and os.path.exists(checkpoint_path):
        state = read_checkpoint(checkpoint_path)
        if state.get("config") != config:
            raise ValueError("checkpoint_path was written for another config")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        ema.to(device)
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start = int(state["step"])

    def save(step: int) -> None:
        if checkpoint_path is None:
            return
        tmp = f"{os.fspath(checkpoint_path)}.tmp"
        torch.save(
            {
                "step": step,
                "config": config,
                "model": {k: v.cpu() for k, v in model.state_dict().items()},
                "ema": {k: v.cpu() for k, v in ema.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
            },
            tmp,
        )
        os.replace(tmp, checkpoint_path)

    ab = model.alphas_cumprod
    total = int(config["timesteps"])
    model.train()
    bar = tqdm(
        total=steps, initial=start, disable=progress_disabled(show_progress), desc="train DiffAE"
    )
    running = None
    step = start
    try:
        for step in range(start, steps):
            x0 = images[torch.randint(n, (batch_size,), generator=generator)] * 2 - 1
            t = torch.randint(total, (batch_size,), generator=generator)
            noise = torch.randn(x0.shape, generator=generator)
            x0, t, noise = x0.to(device), t.to(device), noise.to(device)
            a = ab[t].view(-1, 1, 1, 1)
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
            z = model.encoder(x0)
            # the MSE of the decoder's own output: on eps it weights x0 errors by SNR(t), which
            # starves the encoder of gradient from the steps that decide the class (t ~ 250-750
            # of 1000); on v (``prediction="v"``) by 1 + SNR(t), which keeps them
            if model.prediction == "v":
                target = a.sqrt() * noise - (1 - a).sqrt() * x0
            else:
                target = noise
            loss = F.mse_loss(model.network(x_t, t, z), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ema.update_parameters(model)
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.set_postfix(loss=f"{running:.4f}")
            bar.update(1)
            if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                save(step + 1)
        step = steps
    except KeyboardInterrupt:
        save(step)  # the step being taken when interrupted is redone on resume
        raise
    finally:
        bar.close()
    if start < steps:  # a checkpoint already past `steps` is left as it is
        save(steps)
    out = DiffusionAutoencoder(config)
    out.load_state_dict({k: v.cpu() for k, v in ema.module.state_dict().items()})
    out.eval().requires_grad_(False)
    out.fit_latent_stats(images[: min(len(images), 10_000)])
    return out
