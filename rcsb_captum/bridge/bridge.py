r"""The :class:`Bridge`: an I2SB network together with its schedule."""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from typing import Any

import torch
from torch import Tensor, nn

from .._utils import built_without_drawing, check_choice, seeded_global_rng
from .checkpoints import (
    FORMAT,
    IMAGENET256_INPAINT_CONFIG,
    check_state_dict,
    load_network_weights,
    read_checkpoint,
)
from .network import ADMUNet, adm_config_from_create_model
from .schedule import BridgeSchedule

__all__ = ["Bridge"]

_SCHEDULE_KEYS = ("interval", "beta_max", "t0", "T")
PRETRAINED = {"fashion-mnist": "fashion_mnist_bridge.pt"}  # name -> file in rcsb_captum/data
PRETRAINED_SHAPES = {(1, 32, 32): "fashion-mnist"}  # image shape -> shipped bridge for it
BRIDGE_ENV = "RCSB_CAPTUM_BRIDGE"  # a Bridge.save file used when no bridge is given


class Bridge(nn.Module):
    r"""An image-to-image Schrödinger bridge: a network and the schedule it was trained with.

    The network is called as ``network(x, noise_level)`` on images in ``[-1, 1]`` and predicts
    ``(x_n - x0) / sigma_n`` (I2SB eq. 12), so that :meth:`predict_x0` recovers the clean image.
    Parameters are frozen (``requires_grad=False``) and the module is in eval mode; move it with
    ``.to(device)`` like any module.

    Args:
        network (nn.Module): The denoising network, ``network(x, t) -> Tensor`` shaped like ``x``.
        schedule (BridgeSchedule): The discrete schedule the network was trained with.
        config (dict, optional): guided-diffusion ``create_model`` kwargs that rebuild
            ``network`` (kept so that :meth:`save` writes a self-describing file).
        ot_ode (bool): Whether the bridge was trained and is sampled in the OT-ODE limit (true
            for all inpainting bridges).

    Examples::

        >>> bridge = Bridge.from_i2sb_checkpoint("results/inpaint-freeform2030/latest.pt")
        >>> x0_hat = bridge.predict_x0(x_t, step=599)
    """

    def __init__(
        self,
        network: nn.Module,
        schedule: BridgeSchedule | None = None,
        config: Mapping[str, Any] | None = None,
        ot_ode: bool = True,
    ) -> None:
        super().__init__()
        self.network = network
        self.schedule = schedule if schedule is not None else BridgeSchedule()
        self.config = dict(config) if config is not None else None
        self.ot_ode = bool(ot_ode)
        self.requires_grad_(False)
        self.eval()

    # ------------------------------------------------------------------ properties
    @property
    def image_size(self) -> int | None:
        r"""Side of the images the network was built for (``None`` if unknown)."""
        return getattr(self.network, "image_size", None)

    @property
    def channels(self) -> int | None:
        r"""Image channels the network takes (``None`` if unknown)."""
        return getattr(self.network, "in_channels", None)

    @property
    def device(self) -> torch.device:
        return next(iter(self.network.parameters())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.network.parameters())).dtype

    def check_inputs(self, images: Tensor, name: str = "inputs") -> None:
        r"""Raise a ``ValueError`` naming ``name`` when ``images`` (``N x C x H x W``) do not fit
        the network's channels and size. The one rule every user of a bridge applies."""
        if self.channels is not None and self.channels != images.shape[1]:
            c, h, w = images.shape[1:]
            raise ValueError(
                f"{name} are {c} x {h} x {w} but the bridge inpaints {self.channels} x "
                f"{self.image_size or h} x {self.image_size or w} images; use a bridge trained on "
                f"{c}-channel images (Bridge.load, Bridge.from_i2sb_checkpoint or train_bridge), "
                "or explain images with the bridge's channels"
            )
        size = self.image_size
        if size is not None and tuple(images.shape[-2:]) != (size, size):
            raise ValueError(
                f"{name} are {images.shape[-2]} x {images.shape[-1]} but the bridge was built for "
                f"{size} x {size} images; resize them or use a bridge of their size"
            )

    @classmethod
    def default_for(cls, images: Tensor, name: str = "bridge") -> Bridge:
        r"""The bridge used when none is given: the :meth:`save` file named by the
        ``RCSB_CAPTUM_BRIDGE`` environment variable if it is set, else the shipped bridge for
        the images' shape (``1 x 32 x 32``: ``"fashion-mnist"``); otherwise a ``ValueError``
        that says how to pass one. The result is checked with :meth:`check_inputs`."""
        path = os.environ.get(BRIDGE_ENV)
        if path:
            bridge = cls.load(path)
        elif (shape := tuple(int(v) for v in images.shape[1:])) in PRETRAINED_SHAPES:
            bridge = cls.pretrained(PRETRAINED_SHAPES[shape])
        else:
            shipped = ", ".join(" x ".join(map(str, k)) for k in PRETRAINED_SHAPES)
            raise ValueError(
                f"{name}: none given, and the shipped bridges take only {shipped} images (the "
                f"inputs are {' x '.join(map(str, images.shape[1:]))}). Pass "
                "bridge=Bridge.from_i2sb_checkpoint(path, config) or Bridge.load(path), train "
                f"one with train_bridge, or set the {BRIDGE_ENV} environment variable to a "
                "bridge file written by Bridge.save / train_bridge"
            )
        bridge.check_inputs(images)
        return bridge

    def train(self, mode: bool = True) -> Bridge:
        # Dropout must stay off when sampling; a bridge is trained through train_bridge instead.
        return super().train(False)

    # ------------------------------------------------------------------ maths
    def forward(self, x_t: Tensor, step: int) -> Tensor:
        r"""The network's output at integer ``step`` (its time input is ``noise_levels[step]``)."""
        return self.network(x_t, self.schedule.noise_level(step, x_t))

    def predict_x0(self, x_t: Tensor, step: int) -> Tensor:
        r"""The clean-image estimate ``x_t - sigma[step] * network(x_t, t_step)`` (I2SB
        ``compute_pred_x0`` without clipping, as RCSB uses it)."""
        sigma = float(self.schedule.std_fwd[step])
        return x_t - sigma * self(x_t, step)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        interval: int = 1000,
        beta_max: float = 1.0,
        t0: float = 1e-4,
        T: float = 1.0,
        ot_ode: bool = True,
    ) -> Bridge:
        r"""A bridge with a freshly initialised ADM network built from ``create_model`` kwargs."""
        network = ADMUNet(**adm_config_from_create_model(config))
        schedule = BridgeSchedule(interval=interval, beta_max=beta_max, t0=t0, T=T)
        return cls(network, schedule, config=config, ot_ode=ot_ode)

    @classmethod
    def from_i2sb_checkpoint(
        cls,
        path: str | os.PathLike[str],
        config: Mapping[str, Any] | None = None,
        weights: str = "net",
        dtype: torch.dtype | None = None,
    ) -> Bridge:
        r"""Load an official I2SB or RCSB ``latest.pt``.

        Args:
            path (str or PathLike): The checkpoint file.
            config (dict, optional): guided-diffusion ``create_model`` kwargs exactly as I2SB
                stores them (strings such as ``channel_mult="1,2"`` included), optionally with
                the schedule options ``interval`` (default 1000), ``beta_max`` (1.0), ``t0``,
                ``T`` and ``ot_ode`` (True). Default: I2SB's ImageNet-256 inpainting
                configuration, the network of the public ``inpaint-*`` checkpoints and of RCSB's
                ImageNet bridge.
            weights (str): ``"net"`` (the raw weights, what RCSB samples with) or ``"ema"``
                (``torch_ema`` shadow parameters, what I2SB samples with).
            dtype (torch.dtype, optional): Hold the weights in this type (``torch.bfloat16``
                halves their memory; see :meth:`half_weights`).

        Returns:
            Bridge: frozen, in eval mode, on the CPU.

        Raises:
            ValueError: When the file is not a weights-only checkpoint, lacks the entry, or its
                keys or shapes do not fit the configured network (each listed).
        """
        config = dict(IMAGENET256_INPAINT_CONFIG if config is None else config)
        schedule_kw = {k: config.pop(k) for k in _SCHEDULE_KEYS if k in config}
        ot_ode = bool(config.pop("ot_ode", True))
        checkpoint = read_checkpoint(path)
        network = built_without_drawing(lambda: ADMUNet(**adm_config_from_create_model(config)))
        load_network_weights(network, checkpoint, weights)
        bridge = cls(network, BridgeSchedule(**schedule_kw), config=config, ot_ode=ot_ode)
        return bridge.half_weights(dtype) if dtype is not None else bridge

    def save(self, path: str | os.PathLike[str], dtype: torch.dtype | None = None) -> None:
        r"""Write the bridge with its config and schedule to one file (see :meth:`load`).

        Args:
            path (str or PathLike): Where to write.
            dtype (torch.dtype, optional): Store floating-point weights in this dtype (e.g.
                ``torch.float16`` halves the file; :meth:`load` casts back to float32).
        """
        if self.config is None:
            raise ValueError(
                "this bridge has no config (its network was not built from create_model kwargs), "
                "so it cannot be saved in a self-describing file; save network.state_dict() instead"
            )
        s = self.schedule
        torch.save(
            {
                "format": FORMAT,
                "config": self.config,
                "schedule": {"interval": s.interval, "beta_max": s.beta_max, "t0": s.t0, "T": s.T},
                "ot_ode": self.ot_ode,
                "state_dict": {
                    k: v.detach().cpu().to(dtype if dtype and v.is_floating_point() else v.dtype)
                    for k, v in self.network.state_dict().items()
                },
            },
            os.fspath(path),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], dtype: torch.dtype | None = None) -> Bridge:
        r"""Read a file written by :meth:`save` (or by :func:`~rcsb_captum.train_bridge`);
        ``dtype`` (e.g. ``torch.bfloat16``) holds the weights in that type (see
        :meth:`half_weights`)."""
        obj = read_checkpoint(path)
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ValueError(
                f"{os.fspath(path)!r} is not an rcsb_captum bridge file (format "
                f"{obj.get('format') if isinstance(obj, dict) else type(obj).__name__!r}, "
                f"expected {FORMAT!r}); use Bridge.from_i2sb_checkpoint "
                "for official I2SB / RCSB checkpoints"
            )
        missing = [k for k in ("config", "schedule", "state_dict") if k not in obj]
        if missing or not isinstance(obj["config"], Mapping):
            raise ValueError(
                f"{os.fspath(path)!r} is an incomplete bridge file: it lacks "
                f"{missing or ['a config dict']}; write bridge files with Bridge.save"
            )
        # the network's initial weights are drawn and then overwritten: the caller's global
        # random state is left as it was
        with seeded_global_rng(None):
            bridge = cls.from_config(
                obj["config"], ot_ode=obj.get("ot_ode", True), **obj["schedule"]
            )
        check_state_dict(bridge.network, obj["state_dict"])
        bridge.network.load_state_dict(obj["state_dict"])  # casts to the network's float32
        bridge.requires_grad_(False)
        return bridge.half_weights(dtype) if dtype is not None else bridge

    def half_weights(self, dtype: torch.dtype = torch.bfloat16) -> Bridge:
        r"""Hold the network's weights in ``dtype`` (``torch.bfloat16`` or ``torch.float16``),
        in place; returns the bridge. A big bridge's float32 weights dominate the memory of a
        bf16 run (2.1 GiB of ImageNet-256's); held in bf16 they take half. Such a bridge runs
        only with the matching ``precision`` (``"bf16"`` / ``"fp16"``); the sampler, x̂0 and the
        guidance stay float32, and group norms read their weights as float32.
        """
        if dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise ValueError(
                f"dtype must be torch.bfloat16, torch.float16 or torch.float32, got {dtype}"
            )
        self.network.to(dtype)
        return self

    @classmethod
    def pretrained(cls, name: str = "fashion-mnist", dtype: torch.dtype | None = None) -> Bridge:
        r"""A bridge shipped inside the package (no download).

        Args:
            name (str): ``"fashion-mnist"``: 1 x 32 x 32 Fashion-MNIST inpainting bridge (ADM,
                1.4 M parameters), trained by ``scripts/train_demo_bridge.py``.

        Examples::

            >>> bridge = Bridge.pretrained("fashion-mnist")
        """
        check_choice(name, "name", sorted(PRETRAINED))
        with resources.as_file(resources.files("rcsb_captum") / "data" / PRETRAINED[name]) as p:
            return cls.load(p, dtype)
