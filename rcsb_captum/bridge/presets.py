r"""Bridge network sizes, from a CPU-sized one to the official I2SB / RCSB configurations.

Each preset is a function of the image size and channels that returns guided-diffusion
``create_model`` kwargs (what :meth:`Bridge.from_config` and :func:`train_bridge` take):
``tiny`` (1.37 M parameters at 32 px), ``small`` (5.5 M), ``celeba-128`` (105 M at 128 px),
``imagenet-256`` (552 M at 256 px). Time per training step: ``benchmarks/train_step.py`` and
the docs' "Training bridges" page.
"""

from __future__ import annotations

from typing import Any

from .._utils import check_choice
from .checkpoints import official_bridge_config

__all__ = ["PRESETS", "default_preset", "preset_config"]

PRESETS = ("tiny", "small", "celeba-128", "imagenet-256")


def _mult(image_size: int) -> str:
    # guided-diffusion's per-size multipliers, and a shallow one for small images
    if image_size <= 32:
        return "1,2,2"
    if image_size <= 64:
        return "1,2,3,4"
    if image_size <= 128:
        return "1,1,2,3,4"
    return "1,1,2,2,4,4"


def preset_config(name: str, image_size: int, channels: int, **overrides: Any) -> dict[str, Any]:
    r"""``create_model`` kwargs of preset ``name`` for ``channels x image_size^2`` images.

    ``tiny``: 32 channels, one residual block per level, attention at a quarter of the size
    (the shipped Fashion-MNIST bridge). ``small``: 64 channels, otherwise as ``tiny``.
    ``celeba-128``: RCSB's CelebA bridge (128 channels, 2 blocks, attention at 32/16/8).
    ``imagenet-256``: I2SB's ImageNet-256 inpainting bridge (256 channels). The two official
    ones keep their widths and attention at any size. ``overrides`` replace any key
    (``num_channels``, ``channel_mult``, ``num_res_blocks``, ``attention_resolutions``, ...).
    """
    check_choice(name, "preset", PRESETS)
    if name in ("tiny", "small"):
        config: dict[str, Any] = {
            "image_size": image_size,
            "num_channels": 32 if name == "tiny" else 64,
            "num_res_blocks": 1,
            "channel_mult": _mult(image_size),
            "attention_resolutions": str(max(image_size // 4, 1)),
            "num_head_channels": 32,
            "use_scale_shift_norm": True,
            "resblock_updown": True,
            "dropout": 0.0,
        }
    else:
        # the official networks (the same table the checkpoint loader uses), at this size
        config = official_bridge_config(name)
        config.pop("interval")  # a schedule option; train_bridge takes it on its own
        config["image_size"] = image_size
        if image_size not in (64, 128, 256, 512):
            config["channel_mult"] = _mult(image_size)
    config["in_channels"] = channels
    config["out_channels"] = channels
    config.update({k: v for k, v in overrides.items() if v is not None})
    return config


def default_preset(image_size: int, device_type: str = "cpu") -> str:
    r"""The preset that fits the images and the device: on CPU ``tiny`` up to 64 px, else
    ``small``; on an accelerator ``small`` up to 64 px, ``celeba-128`` up to 128 px, else
    ``imagenet-256``."""
    if device_type == "cpu":
        return "tiny" if image_size <= 64 else "small"
    if image_size <= 64:
        return "small"
    return "celeba-128" if image_size <= 128 else "imagenet-256"
