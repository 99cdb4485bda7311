r"""Training an I2SB inpainting bridge on a user's images.

The objective is I2SB's (Liu et al., ICML 2023; ``NVlabs/I2SB`` ``i2sb/runner.py``): for a clean
image x0 and a mask m (1 = hole), the endpoint is ``x1 = (1 - m) x0 + m eps`` (the hole filled with
Gaussian noise), a step n is drawn uniformly, ``x_n`` is the OT-ODE bridge marginal, and the
network regresses ``(x_n - x0) / sigma_n`` on the hole pixels with a mean squared error. We use
AdamW and an exponential moving average of the weights, which is what the returned bridge holds
(I2SB samples with its EMA weights).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._training import read_resume_state, step_generator, train_loop
from .._utils import check_int, make_fabric
from .bridge import Bridge
from .checkpoints import check_state_dict, read_checkpoint
from .masks import random_freeform_masks
from .network import ADMUNet, adm_config_from_create_model
from .schedule import BridgeSchedule

__all__ = ["IMAGE_SUFFIXES", "bridge_from_checkpoint", "load_images", "train_bridge"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def load_images(
    source: str | os.PathLike[str] | Tensor | np.ndarray,
    image_size: int | None = None,
    channels: int | None = None,
) -> Tensor:
    r"""Images as an ``N x C x H x W`` float tensor in ``[0, 1]``.

    Args:
        source: An image file, a folder of image files (read with Pillow, sorted by name), a tensor, or a numpy
            array. Arrays may be ``N x H x W`` (grayscale), ``N x C x H x W`` or ``N x H x W x C``;
            integer arrays are divided by 255.
        image_size (int, optional): Resize (bilinear) to ``image_size`` square when given.
        channels (int, optional): 1 or 3; files are read as grayscale or RGB accordingly.
            Default: the data's own (1 when every file is grayscale, else 3).
    """
    if isinstance(source, (str, os.PathLike)):
        from PIL import Image

        folder = Path(source)
        if folder.is_file():
            files = [folder]
        elif folder.is_dir():
            files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            raise ValueError(f"images: {str(folder)!r} is neither an image file nor a folder")
        if not files:
            raise ValueError(f"images: no image files in {str(folder)!r}")
        if channels is None:  # follow the data: grayscale files give a 1-channel batch
            gray = set()
            for path in files:
                try:
                    with Image.open(path) as probe:
                        gray.add(probe.mode in ("1", "L", "LA", "I", "I;16", "F"))
                except OSError as e:
                    raise ValueError(f"images: {str(path)!r} is not a readable image ({e})") from e
            channels = 1 if gray == {True} else 3
        mode = "L" if channels == 1 else "RGB"
        arrays = []
        for path in files:
            try:
                with Image.open(path) as opened:
                    im = opened.convert(mode)
                    if image_size is not None:
                        im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
                    arrays.append(np.asarray(im))
            except OSError as e:  # PIL.UnidentifiedImageError and truncated files
                raise ValueError(f"images: {str(path)!r} is not a readable image ({e})") from e
        sizes = sorted({a.shape[:2] for a in arrays})
        if len(sizes) > 1:
            raise ValueError(
                f"images: the files have different sizes {sizes[:4]}; pass image_size to resize"
            )
        data = torch.from_numpy(np.stack(arrays))
        data = data[:, None] if data.ndim == 3 else data.permute(0, 3, 1, 2)
        return data.float() / 255.0
    if isinstance(source, np.ndarray):
        source = torch.from_numpy(np.ascontiguousarray(source))
    if not isinstance(source, Tensor):
        raise TypeError(
            f"images must be a folder path, a tensor or a numpy array, got {type(source).__name__}"
        )
    data = source
    if data.ndim == 3:
        data = data[:, None]
    elif data.ndim == 4 and data.shape[1] not in (1, 3) and data.shape[-1] in (1, 3):
        data = data.permute(0, 3, 1, 2)
    if data.ndim != 4 or data.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be N x C x H x W with C in (1, 3), got shape {tuple(source.shape)}"
        )
    data = data.float() / 255.0 if not data.is_floating_point() else data.float()
    if data.numel() == 0:
        raise ValueError(f"images: need at least one image, got shape {tuple(data.shape)}")
    if not torch.isfinite(data).all() or data.min() < 0 or data.max() > 1:
        raise ValueError("images must be finite and in [0, 1] (or integers in [0, 255])")
    if image_size is not None and data.shape[-1] != image_size:
        data = F.interpolate(
            data, size=(image_size, image_size), mode="bilinear", align_corners=False
        )
    if channels is not None and data.shape[1] != channels:
        data = data.expand(-1, 3, -1, -1) if channels == 3 else data.mean(1, keepdim=True)
    return data.contiguous()


def bridge_from_checkpoint(path: str | os.PathLike[str]) -> Bridge:
    r"""The EMA bridge stored in a :func:`train_bridge` checkpoint, e.g. to look at samples while
    training goes on, or to export it with :meth:`Bridge.save`.

    Examples::

        >>> bridge_from_checkpoint("bridge.ckpt").save("bridge.pt", dtype=torch.float16)
    """
    state = read_checkpoint(path)
    if not {"config", "interval", "ema", "step"} <= set(state):
        raise ValueError(f"{os.fspath(path)!r} is not a train_bridge checkpoint")
    bridge = Bridge.from_config(
        state["config"], interval=state["interval"], beta_max=state.get("beta_max", 1.0)
    )
    # torch.optim.swa_utils.AveragedModel prefixes the averaged network's keys with "module."
    ema = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    bridge.network.load_state_dict(ema)
    bridge.requires_grad_(False)
    return bridge


def train_bridge(
    images: str | os.PathLike[str] | Tensor | np.ndarray,
    *,
    config: Mapping[str, Any] | None = None,
    preset: str | None = None,
    steps: int = 20_000,
    batch_size: int = 32,
    accumulate: int = 1,
    lr: float = 5e-4,
    weight_decay: float = 0.0,
    ema_decay: float = 0.999,
    mask_area: tuple[float, float] = (0.1, 0.4),
    interval: int = 1000,
    beta_max: float = 1.0,
    init: str | os.PathLike[str] | None = None,
    init_weights: str = "ema",
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
) -> Bridge:
    r"""Train an I2SB inpainting bridge (OT-ODE, free-form masks) on ``images``, on one or
    many devices and nodes through Lightning Fabric (DDP).

    Each step every process draws its own micro-batches of ``batch_size`` images; the global
    batch is ``batch_size x accumulate x devices x num_nodes``. The draws of a micro-batch come
    from a generator seeded with ``(seed, step, rank, micro)``, so training is exactly
    resumable: with ``checkpoint_path`` set, the network, its EMA and the optimiser are written
    every ``checkpoint_every`` steps, on Ctrl-C and at the end; a later call with the same path
    continues from the last written step up to ``steps`` (bit-identical on the same devices),
    also on another number of devices.

    Args:
        images: Training images in ``[0, 1]`` (see :func:`load_images`; folders keep their
            channels: grayscale files train a 1-channel bridge).
        config (dict, optional): guided-diffusion ``create_model`` kwargs of the network.
        preset (str, optional): A size from :func:`~rcsb_captum.bridge.presets.preset_config`
            (``tiny``, ``small``, ``celeba-128``, ``imagenet-256``) when ``config`` is not
            given; default :func:`~rcsb_captum.bridge.presets.default_preset` for the images'
            size and the accelerator.
        steps (int): Total optimisation steps.
        batch_size (int): Images per micro-batch and process.
        accumulate (int): Micro-batches per optimisation step (gradient accumulation).
        lr (float), weight_decay (float): AdamW's.
        ema_decay (float): Decay of the weights' exponential moving average.
        mask_area (tuple[float, float]): Range of the hole fraction of the random masks.
        interval (int), beta_max (float): The schedule (1000 and 1.0 for inpainting, as I2SB).
        init (str, optional): Start from a bridge: an official I2SB / RCSB ``latest.pt`` (whose
            network must be the configured one) or a :meth:`Bridge.save` file (fine-tuning).
        init_weights (str): ``"ema"`` or ``"net"`` weights of an official checkpoint.
        checkpoint_path (str, optional): File for resumable training checkpoints.
        checkpoint_every (int): Steps between checkpoints.
        seed (int): Seed of all randomness (initial weights, batches, masks, noise, steps).
        show_progress (bool): A tqdm bar with the running loss (rank 0).
        accelerator, devices, num_nodes, precision, strategy: Lightning Fabric's
            (``precision="bf16-mixed"`` for autocast training on GPUs).
        callback (callable, optional): ``callback(step, loss)`` on rank 0 after each
            optimisation step (the number of steps completed, the step's loss), for logging
            and timing.

    Raises:
        ValueError: Among others when ``checkpoint_path`` holds a run already past ``steps``
            (its bridge is then written with ``rcsb-captum export``).

    Returns:
        Bridge: holding the EMA weights, frozen and in eval mode, on the CPU.

    Examples::

        >>> bridge = train_bridge("my_images/", steps=5000, checkpoint_path="bridge.ckpt")
        >>> bridge.save("bridge.pt")
    """
    from .presets import default_preset, preset_config

    steps = check_int(steps, "steps", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    accumulate = check_int(accumulate, "accumulate", 1)
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every", 1)
    data = load_images(images)
    if data.ndim != 4 or len(data) == 0:
        raise ValueError(
            f"images must hold at least one N x C x H x W image, got shape {tuple(data.shape)}"
        )
    n, channels, height, width = data.shape
    if height != width:
        raise ValueError(f"images must be square, got {height} x {width}")
    fabric = make_fabric(accelerator, devices, num_nodes, precision, strategy)
    fabric.launch()
    if config is None:
        name = preset or default_preset(height, fabric.device.type)
        config = preset_config(name, height, channels)
    config = dict(config)
    net_kwargs = adm_config_from_create_model(config)
    if net_kwargs["image_size"] != height or net_kwargs["in_channels"] != channels:
        raise ValueError(
            f"config builds a network for {net_kwargs['in_channels']} x {net_kwargs['image_size']}^2 "
            f"images but the images are {channels} x {height}^2"
        )
    schedule = BridgeSchedule(interval=interval, beta_max=beta_max)
    torch.manual_seed(seed)
    network = ADMUNet(**net_kwargs)
    if init is not None:
        try:
            start_from = Bridge.load(init)
        except ValueError:
            start_from = Bridge.from_i2sb_checkpoint(init, config=config, weights=init_weights)
        check_state_dict(network, start_from.network.state_dict())
        network.load_state_dict(start_from.network.state_dict())
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay)
    identity = {"config": config, "interval": interval, "beta_max": beta_max}
    state = read_resume_state(
        checkpoint_path,
        identity,
        steps,
        f"write its bridge with `rcsb-captum export {os.fspath(checkpoint_path or '')} bridge.pt`",
    )
    device = fabric.device
    std_fwd = torch.tensor(schedule.std_fwd, dtype=torch.float32, device=device)
    noise_levels = torch.tensor(schedule.noise_levels, dtype=torch.float32, device=device)
    rank = fabric.global_rank

    def micro_loss(model: torch.nn.Module, step: int, micro: int) -> Tensor:
        g = step_generator(seed, step, rank, micro)
        idx = torch.randint(n, (batch_size,), generator=g)
        x0 = data[idx] * 2 - 1
        mask = random_freeform_masks(batch_size, height, mask_area, generator=g)
        eps = torch.randn(x0.shape, generator=g)
        t = torch.randint(interval, (batch_size,), generator=g)
        x0, mask, eps, t = (v.to(device) for v in (x0, mask, eps, t))
        x1 = (1 - mask) * x0 + mask * eps
        x_t = schedule.marginal(t, x0, x1, ot_ode=True)
        label = (x_t - x0) / std_fwd[t].view(-1, 1, 1, 1)
        pred = model(x_t, noise_levels[t]).float()
        return F.mse_loss(pred * mask, label * mask)

    ema = train_loop(
        fabric,
        network,
        optimizer,
        micro_loss,
        steps=steps,
        state=state,
        identity=identity,
        ema_decay=ema_decay,
        accumulate=accumulate,
        checkpoint_path=checkpoint_path,
        checkpoint_every=checkpoint_every,
        show_progress=show_progress,
        desc="train bridge",
        callback=callback,
    )
    out = ADMUNet(**net_kwargs)
    out.load_state_dict({k: v.cpu() for k, v in ema.module.state_dict().items()})
    return Bridge(out, schedule, config=config, ot_ode=True)
