r"""Reading official I2SB / RCSB checkpoints and reading/writing this project's own format.

Official ``latest.pt`` files (``NVlabs/I2SB`` ``i2sb/runner.py``) are dicts with ``"net"`` (the
``Image256Net`` state dict, keys prefixed ``diffusion_model.``), ``"ema"`` (a ``torch_ema``
state dict whose ``shadow_params`` follow ``net.parameters()`` order), ``"optimizer"`` and
``"sched"``. RCSB itself samples with the raw ``"net"`` weights (``src/inpainters/cddb.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "FORMAT",
    "OFFICIAL_BRIDGES",
    "official_bridge_config",
    "IMAGENET256_INPAINT_CONFIG",
    "load_network_weights",
    "read_checkpoint",
    "strip_prefix",
]

FORMAT = "rcsb_captum.bridge/1"

# guided-diffusion create_model kwargs of I2SB's ImageNet-256 bridges (i2sb/ckpt_util.py, the
# config of the public inpaint-* checkpoints; also RCSB's configs/inpainter/imagenet_*.yaml).
IMAGENET256_INPAINT_CONFIG: dict[str, Any] = {
    "image_size": 256,
    "num_channels": 256,
    "num_res_blocks": 2,
    "channel_mult": "",
    "learn_sigma": False,
    "class_cond": False,
    "use_checkpoint": False,
    "attention_resolutions": "32,16,8",
    "num_heads": 4,
    "num_head_channels": 64,
    "num_heads_upsample": -1,
    "use_scale_shift_norm": True,
    "dropout": 0.0,
    "resblock_updown": True,
    "use_fp16": False,
    "use_new_attention_order": False,
}


#: The official bridges' configurations by name: ``create_model`` kwargs plus the schedule's
#: ``interval``, what :meth:`Bridge.from_i2sb_checkpoint` (and ``--bridge-config NAME``) takes.
#: ``imagenet-256``: I2SB's public ImageNet-256 inpainting checkpoints (``inpaint-center``,
#: ``inpaint-freeform1020``, ``inpaint-freeform2030``; RCSB's ImageNet bridge is the last).
#: ``celebahq-256``: RCSB's CelebA-HQ bridge (same network). ``celeba-128``: RCSB's CelebA
#: bridge (128 channels at 128 px, a 500-step schedule). Where to download them:
#: the documentation's "Explain your own model" page.
OFFICIAL_BRIDGES: dict[str, dict[str, Any]] = {
    "imagenet-256": {**IMAGENET256_INPAINT_CONFIG, "interval": 1000},
    "celebahq-256": {**IMAGENET256_INPAINT_CONFIG, "interval": 1000},
    "celeba-128": {
        **IMAGENET256_INPAINT_CONFIG,
        "image_size": 128,
        "num_channels": 128,
        "interval": 500,
    },
}


def official_bridge_config(name: str) -> dict[str, Any]:
    r"""A copy of the configuration of the official bridge ``name`` (:data:`OFFICIAL_BRIDGES`)."""
    if name not in OFFICIAL_BRIDGES:
        raise ValueError(
            f"bridge config must be one of {sorted(OFFICIAL_BRIDGES)} or a JSON file, got {name!r}"
        )
    return dict(OFFICIAL_BRIDGES[name])


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    r"""``torch.load`` with ``weights_only=True`` on the CPU, with errors that name the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in many types
        # torch's message runs to a page on a corrupt file: its first line is the cause
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"could not read {path!r} as a weights-only torch checkpoint: {first}"
        ) from err
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {path!r} holds a {type(obj).__name__}, expected a dict")
    return obj


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str = "diffusion_model.") -> dict:
    r"""Drop ``prefix`` from every key that has it (I2SB wraps the UNet as ``diffusion_model``)."""
    return {k.removeprefix(prefix): v for k, v in state_dict.items()}


def _ema_state_dict(network: nn.Module, ema: Mapping[str, Any]) -> dict[str, Tensor]:
    shadow = ema.get("shadow_params") if isinstance(ema, Mapping) else None
    if not isinstance(shadow, (list, tuple)):
        raise ValueError("checkpoint 'ema' entry has no 'shadow_params' list (torch_ema format)")
    names = [name for name, _ in network.named_parameters()]
    if len(shadow) != len(names):
        raise ValueError(
            f"checkpoint 'ema' has {len(shadow)} shadow parameters, the network has {len(names)}"
        )
    return dict(zip(names, shadow, strict=True))


def load_network_weights(
    network: nn.Module, checkpoint: Mapping[str, Any], weights: str = "net"
) -> None:
    r"""Load the ``"net"`` or ``"ema"`` weights of an I2SB checkpoint into ``network`` strictly.

    Raises:
        ValueError: When ``weights`` names an entry the checkpoint lacks, or when keys are
            missing or unexpected or shapes differ; the message lists each.
    """
    if weights not in ("net", "ema"):
        raise ValueError(f"weights must be 'net' or 'ema', got {weights!r}")
    if weights not in checkpoint:
        raise ValueError(f"checkpoint has no {weights!r} entry; it has {sorted(checkpoint)}")
    if weights == "net":
        if not isinstance(checkpoint["net"], Mapping):
            raise ValueError(
                f"checkpoint 'net' entry must be a state dict (parameter name -> tensor), got a "
                f"{type(checkpoint['net']).__name__}"
            )
        state = strip_prefix(checkpoint["net"])
        # I2SB registers noise_levels as a plain attribute and RCSB as a buffer: neither is a
        # network weight, the schedule provides it.
        state.pop("noise_levels", None)
    else:
        state = _ema_state_dict(network, checkpoint["ema"])
    check_state_dict(network, state)
    network.load_state_dict(state, strict=True)


def check_state_dict(network: nn.Module, state: Mapping[str, Tensor]) -> None:
    r"""Raise a ``ValueError`` listing missing, unexpected and misshapen keys, if any."""
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or misshapen:
        parts = []
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("misshapen", misshapen),
        ):
            if items:
                shown = ", ".join(items[:10]) + (
                    f", ... ({len(items)} in all)" if len(items) > 10 else ""
                )
                parts.append(f"{label}: {shown}")
        raise ValueError(
            "checkpoint does not fit the network built from the config "
            "(pass the config the checkpoint was trained with). " + "; ".join(parts)
        )
