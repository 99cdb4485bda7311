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
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._utils import (
    built_without_drawing,
    check_choice,
    check_int,
    check_number,
    format_classes,
    format_images,
    progress_disabled,
)
from ..bridge.checkpoints import read_checkpoint
from ..bridge.network import ADMUNet
from .base import LatentAutoencoder

__all__ = [
    "PAPER_STEPS",
    "RECIPES",
    "DiffusionAutoencoder",
    "SemanticEncoder",
    "recipe_config",
    "train_diffae",
    "warm_start_diffae",
    "widen_code",
]

FORMAT = "rcsb_captum.diffae/1"
#: DDIM steps of the DiffAE paper: 250 to invert an image to x_T, 100 to render.
PAPER_STEPS = {"encode_steps": 250, "decode_steps": 100}
PRETRAINED = {"fashion-mnist": "fashion_mnist_diffae.pt"}


def _alphas_cumprod(timesteps: int) -> Tensor:
    # DDPM's linear betas from 1e-4 to 0.02 (Ho et al., 2020), as DiffAE
    betas = np.linspace(1e-4, 0.02, timesteps, dtype=np.float64)
    return torch.from_numpy(np.cumprod(1 - betas)).float()


class SemanticEncoder(nn.Module):
    r"""A CNN from ``C x H x W`` images in ``[-1, 1]`` to ``z_sem`` (``dim``): strided
    convolutions with GroupNorm and SiLU, then global average pooling (``pool="mean"``) or the
    flattened last feature map (``"flatten"``), and a linear map."""

    def __init__(
        self,
        in_channels: int,
        dim: int,
        width: int = 32,
        levels: int = 3,
        pool: str = "mean",
        image_size: int = 32,
    ) -> None:
        super().__init__()
        check_choice(pool, "config: encoder_pool", ("mean", "flatten"))
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
        layers += [nn.GroupNorm(min(32, ch // 4), ch), nn.SiLU()]
        # "mean" pools the last feature map to one vector (DiffAE's encoder); "flatten" keeps
        # its layout (ch x s x s into the linear head), so that where things are reaches z_sem
        side = 1
        if pool == "mean":
            layers.append(nn.AdaptiveAvgPool2d(1))
        else:
            side = -(-image_size // 2**levels)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(ch * side * side, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).flatten(1))


#: Named recipes, as overrides of the default configuration: ``"eps"`` (DiffAE's: the decoder
#: predicts the noise on full-resolution pixels), ``"v-patch2"`` (v-prediction on 2 x 2
#: patches: the encoder gets gradient from the high-noise steps that decide the class, at
#: 3.3x less compute a step) and ``"v-patch2-flat"`` (the same with an encoder that keeps its
#: last 4 x 4 feature map's layout instead of averaging it away); ``benchmarks/diffae_recipes.py``
#: compares them.
RECIPES: dict[str, dict[str, Any]] = {
    "eps": {},
    "v-patch2": {
        "prediction": "v",
        "patch": 2,
        "channel_mult": (1, 2),
        "attention_resolutions": (2,),
    },
}
RECIPES["v-patch2-flat"] = {**RECIPES["v-patch2"], "encoder_pool": "flatten"}


def recipe_config(name: str, image_size: int, channels: int) -> dict[str, Any]:
    r"""The configuration of recipe ``name`` (:data:`RECIPES`) for ``channels x image_size^2``
    images."""
    check_choice(name, "recipe", tuple(RECIPES))
    return {**_default_config(image_size, channels), **RECIPES[name]}


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
        "encoder_pool": "mean",
        "p2_gamma": 0.0,
    }


class DiffusionAutoencoder(LatentAutoencoder):
    r"""A DiffAE: :class:`SemanticEncoder` + conditional ADM decoder + DDIM.

    Args:
        config (dict): ``image_size``, ``channels``, ``z_dim``, ``encoder_width``,
            ``model_channels``, ``channel_mult``, ``num_res_blocks``, ``attention_resolutions``
            (downsampling rates), ``num_head_channels``, ``timesteps``, ``prediction``
            (``"eps"`` or ``"v"``), ``patch``, ``encoder_pool`` (``"mean"`` or
            ``"flatten"``: :class:`SemanticEncoder`), ``p2_gamma`` (the training loss's
            P2 weight ``(1 + SNR(t))^-gamma``; 0: none), ``code_classes`` and
            ``code_class_weight`` (the supervised-code variant; 0: none).
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
        self.encoder = SemanticEncoder(
            c["channels"],
            c["z_dim"],
            c["encoder_width"],
            pool=c.get("encoder_pool", "mean"),
            image_size=c["image_size"],
        )
        for key in ("p2_gamma", "code_class_weight"):
            check_number(c.get(key, 0.0), f"config: {key}", 0)
        classes = check_int(c.get("code_classes", 0), "config: code_classes", 0)
        # the "supervised code" variant: a linear classifier on z_sem trained with the decoder
        # (labels needed); a labelled comparison, never a default recipe
        self.code_head = nn.Linear(c["z_dim"], classes) if classes else None
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
        self.register_buffer("alphas_cumprod", _alphas_cumprod(c["timesteps"]), persistent=False)
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
        state = dict(obj["state_dict"])
        z = torch.zeros(int(obj["config"]["z_dim"]))
        for key, default in (("z_mean", z), ("z_std", z + 1)):
            state.setdefault(key, default)  # files from before the standardisation
        return cls._from_state(obj["config"], state, **kwargs)

    @classmethod
    def _from_state(
        cls, config: Mapping[str, Any], state: Mapping[str, Tensor], **kwargs: Any
    ) -> DiffusionAutoencoder:
        # every weight comes from ``state``: built without initialising (nor drawing) any
        ae = built_without_drawing(lambda: cls(config, **kwargs))
        ae.alphas_cumprod = _alphas_cumprod(int(ae.config["timesteps"]))  # not in the state
        ae.load_state_dict(state)
        return ae.eval().requires_grad_(False)

    @classmethod
    def pretrained(cls, name: str = "fashion-mnist", **kwargs: Any) -> DiffusionAutoencoder:
        r"""The DiffAE shipped in the package: ``"fashion-mnist"`` (1 x 32 x 32, z_sem of 128
        on whitened axes, trained by ``scripts/train_demo_diffae.py --z-dim 128 --whiten``)."""
        check_choice(name, "name", sorted(PRETRAINED))
        with resources.as_file(resources.files("rcsb_captum") / "data" / PRETRAINED[name]) as p:
            return cls.load(p, **kwargs)


def train_diffae(
    images: Tensor,
    labels: Tensor | None = None,
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
    accelerator: str = "cpu",
    devices: int | str = 1,
    num_nodes: int = 1,
    precision: str = "32-true",
    strategy: str = "auto",
    callback: Callable[[int, float], None] | None = None,
) -> DiffusionAutoencoder:
    r"""Train a DiffAE (encoder and decoder jointly, the DDPM regression of the decoder's
    ``prediction`` target conditioned on the encoder's ``z_sem``, as DiffAE) on ``images``
    (``N x C x H x W`` in ``[0, 1]``), on one or many devices through Lightning Fabric.

    The training loop and its resume contract are :func:`~rcsb_captum.train_bridge`'s: every
    draw of a step comes from a generator seeded with ``(seed, step, rank, micro)``; with
    ``checkpoint_path`` the model, its EMA and the optimiser are written every
    ``checkpoint_every`` steps, on Ctrl-C and at the end, and a later call continues up to
    ``steps`` (bit-identical on the same devices); a checkpoint past ``steps`` or written for
    another config is refused.

    Args:
        images (Tensor): Square training images in ``[0, 1]``.
        labels (Tensor, optional): Their classes; only for a config with ``code_classes``
            (the supervised-code variant: a linear classifier on ``z_sem`` trained with the
            decoder, its cross-entropy weighted by ``code_class_weight``).
        config (dict, optional): :class:`DiffusionAutoencoder`'s (default: the 64-d code, a
            32-channel ADM decoder predicting eps, unpatched).
        steps (int), batch_size (int): Optimisation steps and images per step and process.
        lr (float), ema_decay (float): AdamW's learning rate, the EMA's decay.
        checkpoint_path (str, optional), checkpoint_every (int): Resumable checkpoints.
        seed (int): Seed of the initial weights and of every draw.
        show_progress (bool): A tqdm bar with the running loss.
        accelerator, devices, num_nodes, precision, strategy: Lightning Fabric's.
        callback (callable, optional): ``callback(step, loss)`` after each step (rank 0).

    Returns:
        DiffusionAutoencoder: the EMA weights, in eval mode, on the CPU, with the latent
        standardisation fitted on (up to 10,000 of) the training images.
    """
    from .._training import read_resume_state, step_generator, train_loop
    from .._utils import make_fabric

    images = format_images(images, "images").float()
    n, c, h, w = images.shape
    if h != w:
        raise ValueError(f"images must be square, got {h} x {w}")
    steps = check_int(steps, "steps", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every", 1)
    config = dict(_default_config(h, c) if config is None else config)
    fabric = make_fabric(accelerator, devices, num_nodes, precision, strategy)
    fabric.launch()
    torch.manual_seed(seed)
    model = DiffusionAutoencoder(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    identity = {"config": config}
    state = read_resume_state(
        checkpoint_path, identity, steps, "load it with train_diffae(steps=its step)"
    )
    device = fabric.device
    ab = model.alphas_cumprod.to(device)
    total = int(config["timesteps"])
    gamma = float(config.get("p2_gamma", 0.0))
    class_weight = float(config.get("code_class_weight", 0.0))
    code_labels = None
    if model.code_head is not None:  # the supervised-code variant: the class of each image
        if labels is None:
            raise ValueError("labels: config code_classes > 0 (a supervised code) needs the labels")
        code_labels = format_classes(labels, n, model.code_head.out_features, "labels")
    rank = fabric.global_rank

    def micro_loss(wrapped: nn.Module, step: int, micro: int) -> Tensor:
        g = step_generator(seed, step, rank, micro)
        idx = torch.randint(n, (batch_size,), generator=g)
        x0 = images[idx] * 2 - 1
        t = torch.randint(total, (batch_size,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        x0, t, noise = x0.to(device), t.to(device), noise.to(device)
        a = ab[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        # the MSE of the decoder's own output: on eps it weights x0 errors by SNR(t), which
        # starves the encoder of gradient from the steps that decide the class (t ~ 250-750
        # of 1000); on v (``prediction="v"``) by 1 + SNR(t), which keeps them
        if model.prediction == "v":
            target = a.sqrt() * noise - (1 - a).sqrt() * x0
        else:
            target = noise
        out = wrapped(x_t, t, x0)
        class_loss = None
        if code_labels is not None:  # the supervised-code variant: (out, logits)
            out, logits = out
            class_loss = F.cross_entropy(logits, code_labels[idx].to(device))
        if gamma:
            # P2 weighting (Choi et al., "Perception Prioritized Training of Diffusion
            # Models", CVPR 2022): lambda_t = (k + SNR(t))^-gamma with k = 1, i.e.
            # (1 - a)^gamma; on v with gamma = 1 every step's x0 error counts alike, so the
            # high-noise steps (where only z_sem knows the image) drive the encoder
            loss = ((out - target).square() * (1 - a).pow(gamma)).mean()
        else:
            loss = F.mse_loss(out, target)
        return loss if class_loss is None else loss + class_weight * class_loss

    # the Fabric-wrapped module is the whole autoencoder; its forward is the training pass
    ema = train_loop(
        fabric,
        _TrainingPass(model),
        optimizer,
        micro_loss,
        steps=steps,
        state=state,
        identity=identity,
        ema_decay=ema_decay,
        checkpoint_path=checkpoint_path,
        checkpoint_every=checkpoint_every,
        show_progress=show_progress,
        desc="train DiffAE",
        callback=callback,
    )
    out = DiffusionAutoencoder(config)
    weights = ema.module.state_dict()  # of the training pass: the autoencoder's under "ae."
    out.load_state_dict({k.removeprefix("ae."): v.cpu() for k, v in weights.items()})
    out.eval().requires_grad_(False)
    out.fit_latent_stats(images[: min(len(images), 10_000)])
    return out


def warm_start_diffae(
    autoencoder: DiffusionAutoencoder,
    checkpoint_path: str | os.PathLike[str],
    step: int,
    lr: float = 2e-4,
) -> None:
    r"""Write a :func:`train_diffae` checkpoint that goes on training ``autoencoder`` (e.g. a
    finished, shipped file) from ``step``: its weights become the network and the EMA, with a
    fresh AdamW (a finished file holds no Adam moments, so the first steps after the warm
    start differ from an uninterrupted run's). Then call :func:`train_diffae` with the same
    ``checkpoint_path``, the autoencoder's config and ``steps`` above ``step``.

    Examples::

        >>> ae = DiffusionAutoencoder.pretrained("fashion-mnist")
        >>> warm_start_diffae(ae, "more.ckpt", step=9500)
        >>> ae = train_diffae(images, config=ae.config, steps=20_000, checkpoint_path="more.ckpt")
    """
    from .._training import write_start_state

    if not isinstance(autoencoder, DiffusionAutoencoder):
        raise TypeError(
            f"autoencoder must be a DiffusionAutoencoder, got {type(autoencoder).__name__}"
        )
    step = check_int(step, "step", 0)
    config = dict(autoencoder.config)
    model = built_without_drawing(lambda: DiffusionAutoencoder(config))
    model.load_state_dict({k: v.float() for k, v in autoencoder.state_dict().items()})
    network = _TrainingPass(model)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=0.0)
    write_start_state(checkpoint_path, network, optimizer, {"config": config}, step)


#: The layers that read ``z_sem`` (its first linear map into the decoder's conditioning, and
#: the supervised variant's classifier): what :func:`widen_code` and :func:`whiten_code` adapt
#: beside the encoder's head, which writes it.
_CODE_READERS = ("unet.cond_embed.0", "code_head")


def widen_code(
    autoencoder: DiffusionAutoencoder, z_dim: int, seed: int = 0
) -> DiffusionAutoencoder:
    r"""A copy of ``autoencoder`` with a ``z_dim``-dimensional semantic code that computes the
    same function: the first dimensions are the old code; the new ones come from new rows of
    the encoder's linear head (PyTorch's default initialisation, drawn from ``seed``) and reach
    the decoder through zero columns of its conditioning layer, so they start unused and
    further training (:func:`warm_start_diffae`, then :func:`train_diffae`) makes them carry
    what the old code could not (function-preserving widening as in Net2Net, Chen et al.,
    ICLR 2016). The new dimensions' standardisation is the identity until
    :meth:`~DiffusionAutoencoder.fit_latent_stats` (which :func:`train_diffae` calls).

    Args:
        autoencoder (DiffusionAutoencoder): The model to widen (left as it is).
        z_dim (int): The new code size, at least the old one.
        seed (int): Seed of the new rows' initial weights.

    Returns:
        DiffusionAutoencoder: the widened copy, float32, in eval mode, on the CPU.

    Examples::

        >>> ae = DiffusionAutoencoder.pretrained("fashion-mnist")
        >>> wide = widen_code(ae, 128)
        >>> warm_start_diffae(wide, "wide.ckpt", step=18_000)
    """
    if not isinstance(autoencoder, DiffusionAutoencoder):
        raise TypeError(
            f"autoencoder must be a DiffusionAutoencoder, got {type(autoencoder).__name__}"
        )
    old = autoencoder.z_dim
    z_dim = check_int(z_dim, "z_dim", old)
    config = {**autoencoder.config, "z_dim": z_dim}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        wide = DiffusionAutoencoder(
            config, autoencoder.encode_steps, autoencoder.decode_steps
        ).float()
    state = wide.state_dict()
    for key, value in autoencoder.state_dict().items():
        value = value.detach().float().cpu()
        if key in ("encoder.head.weight", "encoder.head.bias", "z_mean", "z_std"):
            state[key][:old] = value  # the old code's rows; the new rows keep their draw
        elif key in {f"{layer}.weight" for layer in _CODE_READERS}:
            state[key].zero_()  # the layers that read the code: the new columns start at zero
            state[key][:, :old] = value
        else:
            state[key] = value
    wide.load_state_dict(state)
    return wide.eval().requires_grad_(False)


def whiten_code(
    autoencoder: DiffusionAutoencoder,
    images: Tensor,
    z_dim: int | None = None,
    batch_size: int = 500,
) -> DiffusionAutoencoder:
    r"""A copy of ``autoencoder`` whose semantic code is the whitened principal components of
    its code on ``images``: the same images in, the same renders out, only the code's axes
    change (with ``z_dim`` below the old size, the leading ``z_dim`` components are kept and
    the rest are replaced by their mean, which drops what they carried).

    Why: GCD steps and the ``[-3, 3]`` range of its transfer measure are in units of the
    standardised code, standardised *per dimension* (DiffAE's ``conds_mean`` / ``conds_std``).
    When the code's dimensions are correlated, a unit step then moves the data by a spread
    that depends on the direction (along a shared direction of many correlated dimensions
    much more than one standard deviation of the data). In the whitened code every unit
    direction has unit spread on the fitting images, so a step of ``s`` moves ``s`` standard
    deviations of the data along any direction (the Mahalanobis metric of the code). The
    encoder's linear head and the decoder's first conditioning layer absorb the linear map;
    no weights are retrained, and a linear probe on the code is unchanged (it is invariant to
    invertible linear maps of its input).

    Args:
        autoencoder (DiffusionAutoencoder): The model (left as it is).
        images (Tensor): ``N x C x H x W`` images in ``[0, 1]`` (the training images) whose
            codes give the mean and the principal components; ``N`` above the code size.
        z_dim (int, optional): How many leading components to keep (default: all).
        batch_size (int): Images encoded at a time.

    Returns:
        DiffusionAutoencoder: the copy, float32, in eval mode, on the CPU; its standardisation
        fitted on ``images`` (mean ~0, std ~1).

    Examples::

        >>> ae = DiffusionAutoencoder.pretrained("fashion-mnist")
        >>> white = whiten_code(ae, train_images)
        >>> white.save("white.pt")
    """
    if not isinstance(autoencoder, DiffusionAutoencoder):
        raise TypeError(
            f"autoencoder must be a DiffusionAutoencoder, got {type(autoencoder).__name__}"
        )
    old = autoencoder.z_dim
    k = old if z_dim is None else check_int(z_dim, "z_dim", 1, old)
    images = format_images(images, "images").float()
    if len(images) <= old:
        raise ValueError(
            f"images: need more than z_dim = {old} images to fit the principal components, "
            f"got {len(images)}"
        )
    batch_size = check_int(batch_size, "batch_size", 1)
    state = {key: v.detach().double().cpu() for key, v in autoencoder.state_dict().items()}
    weight = autoencoder.encoder.head.weight
    with torch.no_grad():  # the codes in float64 on the CPU: eigh of a z_dim x z_dim matrix
        z = torch.cat(
            [
                autoencoder.semantic(images[i : i + batch_size].to(weight)).double().cpu()
                for i in range(0, len(images), batch_size)
            ]
        )
    mean = z.mean(0)
    values, vectors = torch.linalg.eigh(torch.cov((z - mean).T))
    order = values.argsort(descending=True)[:k]
    spread = values[order].clamp_min(1e-12).sqrt()
    if float(spread[-1]) <= 1e-9 * float(spread[0]):
        raise ValueError(
            f"z_dim: the code spans fewer than {k} directions on these images (a component's "
            "spread is zero); keep fewer components or pass more varied images"
        )
    to_new = vectors[:, order].T / spread[:, None]  # k x old: centred old code -> new code
    to_old = vectors[:, order] * spread  # old x k: new code -> centred old code
    w, b = state["encoder.head.weight"], state["encoder.head.bias"]
    state["encoder.head.weight"] = to_new @ w
    state["encoder.head.bias"] = to_new @ (b - mean)
    for layer in _CODE_READERS:
        if f"{layer}.weight" in state:  # z_old = mean + to_old z
            w = state[f"{layer}.weight"]
            state[f"{layer}.bias"] = state[f"{layer}.bias"] + w @ mean
            state[f"{layer}.weight"] = w @ to_old
    state["z_mean"], state["z_std"] = torch.zeros(k), torch.ones(k)
    out = DiffusionAutoencoder._from_state(
        {**autoencoder.config, "z_dim": k},
        {key: v.float() for key, v in state.items()},
        encode_steps=autoencoder.encode_steps,
        decode_steps=autoencoder.decode_steps,
    )
    out.fit_latent_stats(images, batch_size)
    return out


class _TrainingPass(nn.Module):
    r"""The DiffAE's training forward: encode the clean image, predict the decoder's target at
    ``x_t`` (one module, so that Fabric / DDP wraps encoder and decoder together)."""

    def __init__(self, ae: DiffusionAutoencoder) -> None:
        super().__init__()
        self.ae = ae

    def forward(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        z = self.ae.encoder(x0)
        out = self.ae.network(x_t, t, z)
        head = self.ae.code_head
        return out if head is None else (out, head(z))
