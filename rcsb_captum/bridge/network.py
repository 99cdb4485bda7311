r"""The ADM UNet (Dhariwal & Nichol, "Diffusion Models Beat GANs", NeurIPS 2021) as used by I2SB.

Written for this project; its module tree mirrors ``openai/guided-diffusion``'s ``UNetModel`` so
that ``state_dict`` keys and shapes of the official I2SB / RCSB checkpoints load without renaming
(checked against ``tests/fixtures/*_state_dict_shapes.json``). Differences from the reference code,
none of which changes the numerics beyond float32 rounding:

- attention uses :func:`torch.nn.functional.scaled_dot_product_attention` (same ``1/sqrt(d)``
  scaling, fused kernel) instead of two einsums;
- ``use_checkpoint`` wraps blocks with :func:`torch.utils.checkpoint.checkpoint`
  (``use_reentrant=False``), which, unlike ADM's own ``CheckpointFunction``, works when the
  parameters are frozen and only the input needs a gradient (RCSB's guidance);
- ``use_fp16`` is accepted for config compatibility but ignored: use ``torch.autocast``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["ADMUNet", "adm_config_from_create_model", "timestep_embedding"]

# guided-diffusion/script_util.py::create_model, the channel multipliers chosen when
# ``channel_mult=""``.
_DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    r"""Sinusoidal embedding of (float) time values, ``[cos | sin]`` as in ADM."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    r"""32-group norm computed in float32, as ADM's ``normalization``; its affine weights are
    read as float32 too, so a network held in bfloat16 / float16 normalises as in float32."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.weight, self.bias
        out = F.group_norm(
            x.float(),
            self.num_groups,
            None if w is None else w.float(),
            None if b is None else b.float(),
            self.eps,
        )
        return out.type(x.dtype)


class Upsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        if use_conv:
            self.op: nn.Module = nn.Conv2d(
                channels, out_channels or channels, 3, stride=2, padding=1
            )
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class TimestepBlock(nn.Module):
    r"""A block whose forward takes the time embedding as a second argument."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential):
    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class ResBlock(TimestepBlock):
    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False)
            self.x_upd: nn.Module = Upsample(channels, False)
        elif down:
            self.h_upd = Downsample(channels, False)
            self.x_upd = Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels),
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class QKVAttention(nn.Module):
    r"""Multi-head attention over a packed ``qkv`` tensor.

    ``legacy=True`` splits heads before q/k/v (ADM's ``QKVAttentionLegacy``, the order of every
    I2SB checkpoint); ``legacy=False`` splits q/k/v first (``QKVAttention``,
    ``use_new_attention_order``). The module has no parameters, only the layout differs.
    """

    def __init__(self, n_heads: int, legacy: bool = True) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.legacy = legacy

    def forward(self, qkv: Tensor) -> Tensor:
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        if self.legacy:
            q, k, v = qkv.reshape(bs * self.n_heads, ch * 3, length).split(ch, dim=1)
        else:
            q, k, v = (t.reshape(bs * self.n_heads, ch, length) for t in qkv.chunk(3, dim=1))
        # (B*heads, ch, L) -> (B*heads, L, ch); softmax(q k^T / sqrt(ch)) v.
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        return out.transpose(1, 2).reshape(bs, -1, length)


class AttentionBlock(nn.Module):
    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_new_attention_order: bool = False,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if num_head_channels == -1:
            n_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(
                    f"channels {channels} are not divisible by num_head_channels {num_head_channels}"
                )
            n_heads = channels // num_head_channels
        self.use_checkpoint = use_checkpoint
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.attention = QKVAttention(n_heads, legacy=not use_new_attention_order)
        self.proj_out = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = self.proj_out(self.attention(self.qkv(self.norm(x))))
        return (x + h).reshape(b, c, *spatial)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.detach().zero_()
    return module


class ADMUNet(nn.Module):
    r"""The ADM UNet of any size, with guided-diffusion's module names.

    Args:
        image_size (int): Side of the (square) images; only used to check inputs.
        in_channels (int): Input channels (3; 6 for I2SB's ``cond_x1``).
        model_channels (int): Base width.
        out_channels (int): Output channels (3 when ``learn_sigma`` is off).
        num_res_blocks (int): Residual blocks per resolution.
        attention_resolutions (Sequence[int]): Downsampling rates (1, 2, 4, ...) that get
            self-attention.
        dropout (float): Dropout in the residual blocks.
        channel_mult (Sequence[float]): Width multiplier per resolution.
        num_heads (int): Attention heads when ``num_head_channels == -1``.
        num_head_channels (int): Channels per head (``-1``: use ``num_heads``).
        num_heads_upsample (int): Heads in the decoder (``-1``: ``num_heads``).
        use_scale_shift_norm (bool): FiLM-style time conditioning.
        resblock_updown (bool): Resample with residual blocks rather than (conv) resamplers.
        use_new_attention_order (bool): Split q/k/v before heads.
        conv_resample (bool): Learned convolutions in the plain resamplers.
        use_checkpoint (bool): Gradient checkpointing per block (saves memory when the guidance
            back-propagates through the network).

    The forward is ``network(x, t)`` with ``x`` of shape ``N x in_channels x H x W`` and ``t``
    the float time values of shape ``N`` (I2SB's ``noise_levels``).
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        conv_resample: bool = True,
        use_checkpoint: bool = False,
        cond_dim: int | None = None,
    ) -> None:
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.image_size = image_size
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.model_channels = model_channels
        self.channel_mult = tuple(channel_mult)
        attention_rates = set(attention_resolutions)

        def res(ch: int, out: int, **kw: bool) -> ResBlock:
            return ResBlock(
                ch,
                time_embed_dim,
                dropout,
                out_channels=out,
                use_scale_shift_norm=use_scale_shift_norm,
                use_checkpoint=use_checkpoint,
                **kw,
            )

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(
                ch,
                num_heads=heads,
                num_head_channels=num_head_channels,
                use_new_attention_order=use_new_attention_order,
                use_checkpoint=use_checkpoint,
            )

        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_embed_dim),
            nn.SiLU(),
            nn.Linear(time_embed_dim, time_embed_dim),
        )
        # a conditioning vector (DiffAE's z_sem) added to the time embedding, so that it acts
        # through every residual block's scale-shift, as DiffAE conditions its decoder
        # (Preechakul et al., CVPR 2022); absent in I2SB bridges (no keys are added)
        self.cond_dim = cond_dim
        if cond_dim is not None:
            self.cond_embed = nn.Sequential(
                nn.Linear(cond_dim, time_embed_dim),
                nn.SiLU(),
                nn.Linear(time_embed_dim, time_embed_dim),
            )
        ch = input_ch = int(self.channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))]
        )
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(self.channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_rates:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(self.channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2
        self.downsampling = ds

        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch, num_heads), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(self.channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_rates:
                    layers.append(attn(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    up = res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample)
                    layers.append(up)
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), _zero(nn.Conv2d(input_ch, out_channels, 3, padding=1))
        )

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must be N x {self.in_channels} x H x W, got shape {tuple(x.shape)}"
            )
        if x.shape[-1] % self.downsampling or x.shape[-2] % self.downsampling:
            raise ValueError(
                f"x height and width must be multiples of {self.downsampling}, "
                f"got {tuple(x.shape[-2:])}"
            )
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(x.dtype))
        if (cond is None) != (self.cond_dim is None):
            raise ValueError(
                "cond must be given exactly when the network was built with cond_dim "
                f"(cond_dim={self.cond_dim})"
            )
        if cond is not None:
            emb = emb + self.cond_embed(cond.to(emb.dtype))
        hs = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


_CREATE_MODEL_KEYS = {
    "image_size",
    "num_channels",
    "num_res_blocks",
    "channel_mult",
    "learn_sigma",
    "class_cond",
    "use_checkpoint",
    "attention_resolutions",
    "num_heads",
    "num_head_channels",
    "num_heads_upsample",
    "use_scale_shift_norm",
    "dropout",
    "resblock_updown",
    "use_fp16",
    "use_new_attention_order",
    "in_channels",
    "out_channels",
}


def adm_config_from_create_model(config: Mapping[str, Any]) -> dict[str, Any]:
    r"""Translate guided-diffusion ``create_model`` kwargs (as I2SB stores them) to
    :class:`ADMUNet` arguments.

    Strings such as ``channel_mult="1,2"`` or ``""`` (the per-size default) and
    ``attention_resolutions="32,16,8"`` (resolutions, turned into downsampling rates) are parsed
    exactly as ``create_model`` does. Two keys beyond ``create_model``'s are accepted:
    ``in_channels`` (as I2SB's own ``create_model`` does, 6 with ``cond_x1``) and ``out_channels``
    (default 3, or 6 with ``learn_sigma``), so that bridges of grayscale images can be built.
    """
    unknown = set(config) - _CREATE_MODEL_KEYS
    if unknown:
        raise ValueError(f"config has unknown create_model keys: {sorted(unknown)}")
    if "image_size" not in config:
        raise ValueError("config must give image_size")
    image_size = int(config["image_size"])
    if config.get("class_cond", False):
        raise ValueError("config: class_cond=True is not supported, I2SB bridges are unconditional")
    mult = config.get("channel_mult", "")
    if isinstance(mult, str):
        if mult == "":
            if image_size not in _DEFAULT_CHANNEL_MULT:
                raise ValueError(
                    f"config: no default channel_mult for image_size={image_size}; give it explicitly"
                )
            mult = _DEFAULT_CHANNEL_MULT[image_size]
        else:
            mult = tuple(float(m) if "." in m else int(m) for m in mult.split(","))
    attn = config.get("attention_resolutions", "16,8")
    if isinstance(attn, str):
        attn = [int(r) for r in attn.split(",") if r.strip()]
    return {
        "image_size": image_size,
        "in_channels": int(config.get("in_channels", 3)),
        "model_channels": int(config.get("num_channels", 128)),
        "out_channels": int(
            config.get("out_channels", 6 if config.get("learn_sigma", False) else 3)
        ),
        "num_res_blocks": int(config.get("num_res_blocks", 2)),
        "attention_resolutions": tuple(image_size // int(r) for r in attn),
        "dropout": float(config.get("dropout", 0.0)),
        "channel_mult": tuple(mult),
        "num_heads": int(config.get("num_heads", 4)),
        "num_head_channels": int(config.get("num_head_channels", -1)),
        "num_heads_upsample": int(config.get("num_heads_upsample", -1)),
        "use_scale_shift_norm": bool(config.get("use_scale_shift_norm", True)),
        "resblock_updown": bool(config.get("resblock_updown", False)),
        "use_new_attention_order": bool(config.get("use_new_attention_order", False)),
        "use_checkpoint": bool(config.get("use_checkpoint", False)),
    }
