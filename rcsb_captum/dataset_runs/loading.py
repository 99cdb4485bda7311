r"""What a dataset run loads by name: the classifier (an exported program, a TorchScript file
or a Python factory), the bridge (the package's file or an official I2SB checkpoint), the text
region's segmenter, and the fingerprints that tie a run's folder to its model."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..bridge.bridge import Bridge
from ..bridge.checkpoints import OFFICIAL_BRIDGES, official_bridge_config
from ..sampler import PRECISIONS

__all__ = [
    "ExportedClassifier",
    "fingerprint",
    "half_dtype",
    "load_bridge",
    "load_model",
    "resolve_bridge_config",
    "text_segmenter",
]


_EXPORT_HINT = (
    "the model must take N x C x H x W images in [0, 1] at the bridge's size; export it "
    "with a dynamic batch dimension, e.g. torch.export.export(model, (x,), "
    "dynamic_shapes={'x': {0: torch.export.Dim('batch')}})"
)


class ExportedClassifier(nn.Module):
    r"""A ``torch.export`` program (``.pt2``) as a classifier on batches of any size.

    A program exported with a static batch size ``B`` runs the batch in chunks of ``B`` (the
    last padded with zeros whose outputs are dropped, so no gradient reaches them); a program
    that rejects the inputs (another image size, channels or dtype) raises a one-line
    ``ValueError`` that says how to export it.

    Args:
        module (nn.Module): ``torch.export.load(path).module()``.
        batch_size (int, optional): The static batch size, ``None`` when it is dynamic.
        name (str): The file, for messages.
    """

    def __init__(self, module: nn.Module, batch_size: int | None, name: str = "model") -> None:
        super().__init__()
        self.module = module
        self.batch_size = batch_size
        self.name = name

    def _call(self, x: Tensor, *args: Any) -> Tensor:
        try:
            return self.module(x, *args)
        except (AssertionError, RuntimeError) as e:  # torch.export's guards
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(
                f"model: {self.name!r} rejects inputs of shape {tuple(x.shape)} ({first}); "
                + _EXPORT_HINT
            ) from None

    def forward(self, x: Tensor, *args: Any) -> Tensor:
        b = self.batch_size
        if b is None or x.shape[0] == b:
            return self._call(x, *args)
        outs = []
        for i in range(0, x.shape[0], b):
            chunk = x[i : i + b]
            n = chunk.shape[0]
            if n < b:
                chunk = torch.cat([chunk, chunk.new_zeros(b - n, *chunk.shape[1:])])
            outs.append(self._call(chunk, *args)[:n])
        return torch.cat(outs)


def _static_batch(program: Any) -> int | None:
    # the first user input's first dimension: an int when exported without a dynamic batch
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            val = node.meta.get("val")
            shape = getattr(val, "shape", None)
            if shape is not None and len(shape) > 0 and isinstance(shape[0], int):
                return int(shape[0])
            return None
    return None


def load_model(spec: str | nn.Module | Callable[..., Tensor]) -> Callable[..., Tensor]:
    r"""A classifier from a TorchScript file, a ``torch.export`` file (``.pt2``), or an import
    path ``package.module:factory`` whose factory returns the model (``package.module:name``
    of a module-level model works too). Modules come back in eval mode.

    The model takes images in ``[0, 1]`` (normalisation inside it: wrap it in
    :class:`~rcsb_captum.NormalizedModel` before exporting) of the bridge's size. A
    ``.pt2`` exported with a static batch size runs in chunks of that size
    (:class:`ExportedClassifier`); TorchScript's deprecation warning is not shown.
    """
    if not isinstance(spec, str):
        return spec
    if ":" in spec and not os.path.exists(spec):
        module_name, _, attr = spec.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"model: cannot import {spec!r}: {e}") from e
        model = obj() if callable(obj) and not isinstance(obj, nn.Module) else obj
    else:
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"model: no such file {spec!r}")
        try:
            if spec.endswith(".pt2"):
                program = torch.export.load(spec)
                model = ExportedClassifier(program.module(), _static_batch(program), spec)
            else:
                with warnings.catch_warnings():  # "torch.jit.load is deprecated": not the user's
                    warnings.simplefilter("ignore", FutureWarning)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    model = torch.jit.load(spec, map_location="cpu")
        except Exception as e:  # torch raises many types for a corrupt or foreign file
            kind = "torch.export (.pt2)" if spec.endswith(".pt2") else "TorchScript"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"model: could not load {spec!r} as a {kind} file: {first}") from None
    if not callable(model):
        raise TypeError(f"model: {spec!r} gave a {type(model).__name__}, not a callable model")
    if isinstance(model, nn.Module) and not spec.endswith(".pt2"):
        model.eval()  # exported programs have no eval(); RCSB sets their flags per call
    return model


def fingerprint(obj: str | os.PathLike[str] | nn.Module | Bridge | Callable[..., Any]) -> str:
    r"""SHA-256 of what decides a run's results: a file's contents, a module's or a bridge's
    weights (names, shapes, dtypes and values), else a callable's qualified name."""
    h = hashlib.sha256()
    if isinstance(obj, (str, os.PathLike)) and os.path.isfile(obj):
        with open(obj, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    module = obj.network if isinstance(obj, Bridge) else obj
    if isinstance(module, nn.Module):
        for name, t in sorted(module.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        if isinstance(obj, Bridge):
            h.update(json.dumps(obj.config, sort_keys=True, default=str).encode())
        return h.hexdigest()
    name = getattr(obj, "__qualname__", type(obj).__qualname__)
    h.update(f"{getattr(obj, '__module__', '')}.{name}".encode())
    return h.hexdigest()


def half_dtype(precision: str, what: str = "half_bridge") -> torch.dtype:
    r"""The dtype a bridge is held in to run at ``precision`` (``"bf16"`` / ``"fp16"``); a
    ``ValueError`` naming ``what`` for ``"fp32"``."""
    dtype = PRECISIONS.get(precision)
    if dtype is None:
        raise ValueError(
            f"{what}: holding the bridge in half precision needs precision bf16 or fp16, got "
            f"{precision!r}"
        )
    return dtype


def resolve_bridge_config(spec: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    r"""An official checkpoint's configuration: a name of :data:`OFFICIAL_BRIDGES`
    (``"imagenet-256"``, ``"celebahq-256"``, ``"celeba-128"``), a JSON file of ``create_model``
    kwargs (plus ``interval`` etc.), or the kwargs themselves."""
    if spec is None or isinstance(spec, Mapping):
        return None if spec is None else dict(spec)
    if spec in OFFICIAL_BRIDGES:
        return official_bridge_config(spec)
    if not os.path.isfile(spec):
        raise ValueError(
            f"bridge_config: {spec!r} is neither one of {sorted(OFFICIAL_BRIDGES)} nor a JSON file"
        )
    try:
        config = json.loads(Path(spec).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"bridge_config: {spec!r} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ValueError(f"bridge_config: {spec!r} must hold a JSON object of create_model kwargs")
    return config


def load_bridge(
    spec: str | Bridge,
    config: str | Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Bridge:
    r"""A bridge from a name of a shipped bridge (``"fashion-mnist"``), a :meth:`Bridge.save`
    file, or an official I2SB / RCSB ``latest.pt`` with ``config`` (see :func:`resolve_bridge_config`;
    default ImageNet-256), its weights held in ``dtype`` when given (:meth:`Bridge.half_weights`)."""
    if isinstance(spec, Bridge):
        return spec.half_weights(dtype) if dtype is not None else spec
    if spec == "fashion-mnist":
        return Bridge.pretrained(spec, dtype)
    config = resolve_bridge_config(config)
    if config is None:
        try:
            return Bridge.load(spec, dtype)
        except ValueError as e:
            if "not an rcsb_captum bridge file" not in str(e):
                raise
    return Bridge.from_i2sb_checkpoint(spec, config=config, dtype=dtype)


def text_segmenter(models: str, device: str | torch.device | None = None) -> Any:
    r"""The text region's segmenter from ``"DETECTOR,SAM"`` (hub ids or local folders):
    :class:`rcsb_captum.integrations.grounded_sam.GroundedSAM` (``pip install
    'rcsb-captum[text]'``)."""
    # the adapter (and transformers) is imported only when a text region is asked for
    from rcsb_captum.integrations.grounded_sam import GroundedSAM

    parts = [p.strip() for p in models.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"text_models: expected 'DETECTOR,SAM' (ids or folders), got {models!r}")
    return GroundedSAM.from_pretrained(parts[0], parts[1], device=device)
