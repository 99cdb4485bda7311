r"""Dataset-scale explanation: RCSB over a folder of images on Lightning Fabric, resumable.

:func:`explain_dataset` (and ``rcsb-captum explain-dataset``) runs RCSB over every image of a
folder or list file, on one or many devices and nodes through Lightning Fabric, the engine the
official RCSB code uses. What it guarantees:

- **Shards.** Images are cut into fixed batches of ``batch_size`` consecutive indices; batch
  ``b`` belongs to rank ``b % world_size``. Every image is handled by exactly one rank (no
  padding sampler, no duplicates).
- **Results depend on the image, not the run.** Image ``i`` draws from seeds derived from
  ``(seed, i)`` (see :class:`~rcsb_captum.RCSB`); a batch always holds the same images, so an
  interrupted and resumed run gives bit-identical results on CPU, and a run on another number
  of processes the same results up to float rounding.
- **Atomic outputs, resume.** Per image: ``images/<index>_counterfactual.png``,
  ``images/<index>_region.png``, ``tensors/<index>.pt`` and last its record
  ``records/<index>.json``, each written to a temporary file and renamed. A record exists only
  for a finished image; a restarted run skips those and redoes the rest. ``kill -9`` at any
  moment loses at most the batches in flight.
- **At the end** rank 0 writes ``manifest.jsonl`` (one line per image, by index),
  ``summary.json`` and ``summary.md`` (flip rate, mean COUT, FID / sFID when a feature
  extractor is given) and ``examples.png``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._utils import check_choice, check_int, make_fabric
from .attr import RCSB
from .bridge.bridge import Bridge
from .bridge.checkpoints import OFFICIAL_BRIDGES, official_bridge_config
from .bridge.training import IMAGE_SUFFIXES, load_images
from .config import RCSBConfig
from .durable import (
    RunLock,
    RunStopped,
    StopSignals,
    atomic_write,
    describe_os_error,
    finished,
    remove_stale_temporaries,
    text_bytes,
    torch_bytes,
)
from .records import counterfactual_records
from .regions import DEFAULT_TEXT_MODELS, REGION_NAMES, named_region
from .sampler import PRECISIONS

__all__ = [
    "RunEnvironmentError",
    "RunStopped",
    "DatasetItem",
    "ExportedClassifier",
    "RunSettings",
    "explain_dataset",
    "half_dtype",
    "list_images",
    "load_bridge",
    "load_model",
    "parse_class_map",
    "parse_class_names",
    "resolve_bridge_config",
    "text_segmenter",
]


# -- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetItem:
    r"""One image of a run: its global ``index``, file ``path`` and optional ``label``."""

    index: int
    path: str
    label: int | None


def list_images(
    source: str | os.PathLike[str], class_names: Sequence[str] | None = None
) -> tuple[list[DatasetItem], list[str] | None]:
    r"""The images of a run and, for ImageFolder-style folders, the class names.

    ``source`` is a folder of image files (flat: no labels), or a folder with one sub-folder
    per class, or a text file listing one image per line as ``path`` or ``path label``
    (relative paths are relative to the list file). Files are sorted by path, so the index of
    an image is stable across runs.

    Labels of class sub-folders must be the classifier's class indices: sub-folders named by
    integers are those indices; otherwise, with ``class_names`` (the classifier's classes in
    order) a folder's label is the position of its name there; without it, torchvision's
    ``ImageFolder`` rule (classes sorted by name, label = position), which is right for a
    model trained with ``ImageFolder`` on the same classes.
    """
    src = Path(source)
    items: list[DatasetItem] = []
    if src.is_file():
        for n, line in enumerate(src.read_text().splitlines()):
            parts = line.strip().rsplit(maxsplit=1)
            if not parts or line.lstrip().startswith("#"):
                continue
            label = None
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                path, label = parts[0], int(parts[1])
            else:
                path = line.strip()
            p = Path(path) if Path(path).is_absolute() else src.parent / path
            if not p.is_file():
                raise ValueError(f"images: line {n + 1} of {str(src)!r} names no file: {path!r}")
            items.append(DatasetItem(len(items), str(p), label))
        if not items:
            raise ValueError(f"images: the list file {str(src)!r} names no image")
        return items, None
    if not src.is_dir():
        raise ValueError(f"images: {str(src)!r} is neither a folder nor a list file")
    subdirs = sorted(d for d in src.iterdir() if d.is_dir())
    flat = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if subdirs and not flat:
        names = [d.name for d in subdirs]
        numeric = all(n.isdigit() for n in names)
        if class_names is not None and not numeric:
            unknown = sorted(set(names) - set(class_names))
            if unknown:
                raise ValueError(f"images: sub-folders {unknown} are not in class_names")
        files = []
        for k, d in enumerate(subdirs):
            if numeric:
                label = int(d.name)
            elif class_names is not None:
                label = list(class_names).index(d.name)
            else:
                label = k
            files += [
                (str(p), label)
                for p in sorted(d.rglob("*"))
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            ]
        items = [DatasetItem(i, p, label) for i, (p, label) in enumerate(files)]
        classes = list(class_names) if class_names is not None else (None if numeric else names)
    else:
        items = [DatasetItem(i, str(p), None) for i, p in enumerate(flat)]
        classes = None
    if not items:
        raise ValueError(f"images: no image files in {str(src)!r}")
    return items, classes


def unreadable_images(items: Sequence[DatasetItem]) -> list[tuple[DatasetItem, str]]:
    r"""The items whose file Pillow cannot decode (empty, truncated, not an image), each with
    the reason; every file is opened and fully decoded once."""
    from PIL import Image

    bad = []
    for it in items:
        try:
            with Image.open(it.path) as im:
                im.load()
        except Exception as e:  # PIL raises OSError, ValueError, SyntaxError... for bad files
            bad.append((it, f"{type(e).__name__}: {e}"))
    return bad


def _check_readable(items: list[DatasetItem], skip: bool) -> tuple[list[DatasetItem], list[str]]:
    # every unreadable file named in one message (the first 20 and a count), or skipped
    bad = unreadable_images(items)
    if not bad:
        return items, []
    if not skip:
        listed = "; ".join(f"{it.path} ({why})" for it, why in bad[:20])
        more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise ValueError(
            f"images: {len(bad)} unreadable file(s): {listed}{more}; fix or remove them, or "
            "pass --skip-unreadable (skip_unreadable=True) to explain the others"
        )
    skipped = {it.index for it, _ in bad}
    return [it for it in items if it.index not in skipped], [it.path for it, _ in bad]


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
    :class:`~rcsb_captum.models.NormalizedModel` before exporting) of the bridge's size. A
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


def parse_class_names(value: str | Sequence[str] | None) -> list[str] | None:
    r"""Class names in the classifier's order: a list, a text file with one name per line
    (blank lines and ``#`` comments skipped), or a comma-separated list (``"cat,dog"``)."""
    if value is None:
        return None
    if not isinstance(value, str):
        names = [str(v) for v in value]
    elif os.path.isfile(value):
        lines = Path(value).read_text().splitlines()
        names = [n.strip() for n in lines if n.strip() and not n.lstrip().startswith("#")]
    else:
        names = [n.strip() for n in value.split(",")]
    if not names or any(not n for n in names):
        raise ValueError(
            f"class_names: expected a file with one name per line or a comma list of non-empty "
            f"names, got {value!r}"
        )
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"class_names: names must be unique, {dup} repeat")
    return names


def parse_class_map(value: str | int | Mapping[int, int] | None) -> int | dict[int, int] | None:
    r"""A counterfactual class: ``None`` (any other class), one class (``"3"``), or a map from
    the explained class to the class to reach (``"6:0,0:6"``, or a JSON file of such a map)."""
    if value is None or isinstance(value, (int, np.integer)):
        return None if value is None else int(value)
    if isinstance(value, Mapping):
        return {int(k): int(v) for k, v in value.items()}
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if os.path.isfile(text):
        return {int(k): int(v) for k, v in json.loads(Path(text).read_text()).items()}
    try:
        pairs = [p.split(":") for p in text.split(",") if p.strip()]
        return {int(a): int(b) for a, b in pairs}
    except ValueError as e:
        raise ValueError(
            f"counterfactual_target must be a class, 'a:b,c:d' or a JSON file, got {value!r}"
        ) from e


# -- settings and outputs -----------------------------------------------------------------------


_RUN_FIELDS = (
    "region",
    "gradcam_layer",
    "prompt",
    "text_models",
    "counterfactual_target",
    "batch_size",
    "seed",
)


@dataclass
class RunSettings:
    r"""Every option of a run that changes its results (stored in ``settings.json``; a resumed
    run must use the same): the region source by name, the counterfactual classes, the RCSB
    configuration (:class:`~rcsb_captum.config.RCSBConfig`, whose ``cell_size``, ``area`` and
    ``ig_steps`` shape the named region; ``prompt`` and ``text_models``, the detector's and
    SAM's hub ids or folders separated by a comma, make the ``"text"`` region), the batch size
    and the seed. ``settings.json`` holds them flat, one key per option."""

    region: str = "ig"
    gradcam_layer: str | None = None
    prompt: str | None = None
    text_models: str = ",".join(DEFAULT_TEXT_MODELS)
    counterfactual_target: int | dict[int, int] | None = None
    rcsb: RCSBConfig = field(default_factory=RCSBConfig)
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.rcsb, RCSBConfig):
            raise TypeError(f"rcsb must be an RCSBConfig, got {type(self.rcsb).__name__}")

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "region": self.region,
            "gradcam_layer": self.gradcam_layer,
            "prompt": self.prompt,
            "text_models": self.text_models,
            "counterfactual_target": (
                {str(k): v for k, v in self.counterfactual_target.items()}
                if isinstance(self.counterfactual_target, dict)
                else self.counterfactual_target
            ),
            **self.rcsb.to_json(),
            "batch_size": self.batch_size,
            "seed": self.seed,
        }
        return d

    @classmethod
    def of(cls, preset: str = "paper", **options: Any) -> RunSettings:
        r"""Settings from flat options: the run's own (``region``, ``gradcam_layer``,
        ``counterfactual_target``, ``batch_size``, ``seed``) and any
        :class:`~rcsb_captum.config.RCSBConfig` field, starting from ``preset``.

        Examples::

            >>> RunSettings.of(nfe=25, batch_size=8, region="saliency")
        """
        own = {k: options.pop(k) for k in _RUN_FIELDS if k in options}
        return cls(**own, rcsb=RCSBConfig.preset(preset, **options))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSettings:
        r"""Read :meth:`to_json`'s dict (options missing from an older file take defaults)."""
        own = set(_RUN_FIELDS)
        data = dict(data)
        data.pop("model_sha256", None)
        data.pop("bridge_sha256", None)
        data.pop("images", None)
        cf = data.get("counterfactual_target")
        if isinstance(cf, dict):
            data["counterfactual_target"] = {int(k): int(v) for k, v in cf.items()}
        rcsb = RCSBConfig.from_json({k: v for k, v in data.items() if k not in own})
        return cls(**{k: v for k, v in data.items() if k in own}, rcsb=rcsb)


class RunEnvironmentError(OSError):
    r"""An environment error of a dataset run (no space, no permission, ...), in one line that
    says what to do (:func:`~rcsb_captum.durable.describe_os_error`)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _atomic_write(path: Path, write: Callable[[Any], object]) -> None:
    try:
        atomic_write(path, write)
    except RunEnvironmentError:
        raise
    except OSError as e:
        raise RunEnvironmentError(describe_os_error(e, f"writing {path}")) from None


def _save_png(image: Tensor, path: Path) -> None:
    import io

    from PIL import Image

    arr = (image.detach().float().clamp(0, 1) * 255).round().byte().cpu()
    arr = arr[0] if arr.shape[0] == 1 else arr.permute(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(arr.numpy()).save(buf, format="PNG")
    data = buf.getvalue()
    _atomic_write(path, lambda f: f.write(data))


def _record_path(out: Path, index: int) -> Path:
    return out / "records" / f"{index:07d}.json"


def _outputs(out: Path, index: int) -> tuple[Path, Path, tuple[Path, Path]]:
    stem = f"{index:07d}"
    pngs = (
        out / "images" / f"{stem}_counterfactual.png",
        out / "images" / f"{stem}_region.png",
    )
    return _record_path(out, index), out / "tensors" / f"{stem}.pt", pngs


def _done(out: Path, index: int) -> bool:
    # finished only when its record parses, its tensors load and its PNGs exist
    return finished(*_outputs(out, index))


# -- the run ----------------------------------------------------------------------------------


def _load_batch(items: Sequence[DatasetItem], bridge: Bridge) -> Tensor:
    size, channels = bridge.image_size, bridge.channels
    return torch.cat([load_images(it.path, image_size=size, channels=channels) for it in items])


def _explain_batch(
    rcsb: RCSB,
    items: Sequence[DatasetItem],
    x: Tensor,
    settings: RunSettings,
    out: Path,
    forward_func: Callable[..., Tensor],
) -> None:
    from . import metrics as M

    start = time.perf_counter()
    device = x.device
    labels = [it.label for it in items]
    target = torch.tensor(labels, device=device) if all(v is not None for v in labels) else None
    cf_setting = settings.counterfactual_target
    with torch.no_grad():
        predicted = forward_func(x).argmax(1)
    tgt = target if target is not None else predicted
    cf = None
    if isinstance(cf_setting, int):
        cf = torch.full_like(tgt, cf_setting)
    elif isinstance(cf_setting, dict):
        missing = sorted({int(t) for t in tgt.tolist()} - set(cf_setting))
        if missing:
            raise ValueError(f"counterfactual_target: the class map has no entry for {missing}")
        cf = torch.tensor([cf_setting[int(t)] for t in tgt.tolist()], device=device)
    # RCSB's seeds follow the index in the call: shift them to the global index
    res = rcsb.generate(
        x, target=tgt, counterfactual_target=cf, seed=settings.seed, index_offset=items[0].index
    )
    cout = M.cout(forward_func, x, res.counterfactuals, tgt, cf, steps=20)
    seconds = (time.perf_counter() - start) / len(items)
    common = counterfactual_records(x, res, digits=None)
    for i, it in enumerate(items):
        stem = f"{it.index:07d}"
        _save_png(res.counterfactuals[i], out / "images" / f"{stem}_counterfactual.png")
        _save_png(res.regions[i], out / "images" / f"{stem}_region.png")
        tensors = {
            "input": x[i].cpu(),
            "counterfactual": res.counterfactuals[i].cpu(),
            "region": res.regions[i].cpu(),
            "samples": res.samples[i].cpu(),
            "probs_before": res.probs_before[i].cpu(),
            "probs_after": res.probs_after[i].cpu(),
        }
        _atomic_write(out / "tensors" / f"{stem}.pt", torch_bytes(tensors))
        wrong_before = int(predicted[i]) != int(tgt[i])
        record = {
            "index": it.index,
            "path": it.path,
            "label": it.label,
            **common[i],
            # success is a flip: the model predicted the explained class and now predicts the
            # counterfactual class (any other class when none is named)
            "success": (not wrong_before) and common[i]["success"],
            "misclassified_before": wrong_before,
            "cout": float(cout[i]),
            "seconds": round(seconds, 4),
        }
        _atomic_write(_record_path(out, it.index), text_bytes(json.dumps(record) + "\n"))


def _summary_markdown(
    summary: dict[str, Any], records: list[dict[str, Any]], class_names: Sequence[str] | None
) -> str:
    name = lambda k: class_names[k] if class_names and 0 <= k < len(class_names) else str(k)  # noqa: E731
    measures = [
        f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in summary.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    right = [r for r in records if not r.get("misclassified_before", False)]
    per_class: dict[int, list[dict[str, Any]]] = {}
    for r in right:
        per_class.setdefault(r["target"], []).append(r)
    class_rows = [
        f"| {name(k)} | {len(rs)} | {sum(r['success'] for r in rs) / len(rs):.3f} | "
        f"{np.mean([r['cout'] for r in rs]):.3f} |"
        for k, rs in sorted(per_class.items())
    ]
    moves: dict[tuple[int, int], int] = {}
    for r in right:
        key = (r["target"], r["predicted_after"])
        moves[key] = moves.get(key, 0) + 1
    move_rows = [
        f"| {name(a)} | {name(b)} | {c} |" + (" (no change)" if a == b else "")
        for (a, b), c in sorted(moves.items())
    ]
    settings = "\n".join(f"| {k} | {v} |" for k, v in summary["settings"].items())
    faults = ""
    if summary.get("skipped_unreadable"):
        faults += "\n## Skipped (unreadable)\n\n" + "".join(
            f"- `{p}`\n" for p in summary["skipped_unreadable"]
        )
    if summary.get("redone_damaged"):
        faults += f"\nDamaged outputs redone (indices): {summary['redone_damaged']}\n"
    return (
        "# RCSB run summary\n\n"
        f"Success rule: {summary['success_rule']}.\n\n"
        "| measure | value |\n|---|---|\n" + "\n".join(measures) + "\n\n"
        "## Per explained class\n\n| class | images | flip rate | COUT |\n|---|---|---|---|\n"
        + "\n".join(class_rows)
        + "\n\n## From class to class (prediction before, after)\n\n"
        "| from | to | images |\n|---|---|---|\n" + "\n".join(move_rows) + "\n\n"
        "## Settings\n\n"
        f"Model SHA-256 `{summary.get('model_sha256')}`, bridge SHA-256 "
        f"`{summary.get('bridge_sha256')}`.\n\n| option | value |\n|---|---|\n"
        + settings
        + "\n"
        + faults
    )


def _summarise(
    out: Path,
    items: Sequence[DatasetItem],
    settings: RunSettings,
    feature_extractor: Callable[[Tensor], Tensor] | None,
    class_names: Sequence[str] | None,
    redone: Sequence[int] = (),
    skipped: Sequence[str] = (),
) -> dict[str, Any]:
    from . import metrics as M
    from .visualization import plot_counterfactuals

    records = [json.loads(_record_path(out, it.index).read_text()) for it in items]
    lines = "".join(json.dumps(r) + "\n" for r in records)
    _atomic_write(out / "manifest.jsonl", text_bytes(lines))
    n = len(records)
    # older records (written before the flip rule) count as they were written
    wrong = [r for r in records if r.get("misclassified_before", False)]
    right = [r for r in records if not r.get("misclassified_before", False)]
    named = settings.counterfactual_target is not None
    summary: dict[str, Any] = {
        "images": n,
        "explained": len(right),
        "misclassified_before": len(wrong),
        "success_rule": (
            "the prediction moves from the explained class to the counterfactual class"
            if named
            else "the prediction moves from the explained class to any other class"
        )
        + "; images the model already got wrong are counted apart, never as successes",
        "flip_rate": sum(r["success"] for r in right) / len(right) if right else float("nan"),
        "cout": float(np.mean([r["cout"] for r in right])) if right else float("nan"),
        "l1_inside": float(np.mean([r["l1_inside"] for r in records])),
        "max_change_outside": max(r["max_change_outside"] for r in records),
        "seconds_per_image": float(np.mean([r["seconds"] for r in records])),
        "redone_damaged": list(redone),
        "skipped_unreadable": list(skipped),
        "settings": settings.to_json(),
    }
    stored = out / "settings.json"
    if stored.exists():
        fp = json.loads(stored.read_text())
        summary["model_sha256"] = fp.get("model_sha256")
        summary["bridge_sha256"] = fp.get("bridge_sha256")
    if class_names is not None:
        summary["classes"] = list(class_names)
    tensors = [
        torch.load(out / "tensors" / f"{r['index']:07d}.pt", weights_only=True) for r in records
    ]
    if feature_extractor is not None:
        real = torch.stack([t["input"] for t in tensors])
        cfs = torch.stack([t["counterfactual"] for t in tensors])
        ok = torch.tensor([r["success"] for r in records])
        if int(ok.sum()) >= 2:
            summary["fid"] = M.fid(real, cfs[ok], feature_extractor)
            summary["sfid"] = M.sfid(real, cfs, feature_extractor, ok)
    _atomic_write(out / "summary.json", text_bytes(json.dumps(summary, indent=2) + "\n"))
    _atomic_write(out / "summary.md", text_bytes(_summary_markdown(summary, records, class_names)))
    shown = tensors[:8]
    if shown:
        x = torch.stack([t["input"] for t in shown])
        c = torch.stack([t["counterfactual"] for t in shown])
        m = torch.stack([t["region"] for t in shown])
        before = torch.stack([t["probs_before"] for t in shown])
        after = torch.stack([t["probs_after"] for t in shown])
        flips = [r["success"] for r in records[: len(shown)]]
        fig = plot_counterfactuals(x, c, m, before, after, class_names, None, success=flips)
        fig.savefig(out / "examples.png", dpi=100)
        import matplotlib.pyplot as plt

        plt.close(fig)
    return summary


@contextlib.contextmanager
def _exclusive(fabric: Any, out: Path) -> Iterator[None]:
    # one run per out-dir for the body: rank 0 makes the folders and takes the lock, every
    # rank stops with the same one line when it cannot; the ranks of this run share it
    lock = RunLock(out)
    problem = ""
    if fabric.global_rank == 0:
        try:
            for sub in ("images", "tensors", "records"):
                (out / sub).mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except OSError as e:
            problem = describe_os_error(e, f"creating {out}")
        except RuntimeError as e:
            problem = str(e)
    problem = fabric.broadcast(problem, src=0) if fabric.world_size > 1 else problem
    if problem:
        raise RunEnvironmentError(problem)
    try:
        yield
    finally:
        if fabric.global_rank == 0:
            lock.release()


def explain_dataset(
    images: str | os.PathLike[str],
    model: str | nn.Module | Callable[..., Tensor],
    bridge: str | Bridge,
    out_dir: str | os.PathLike[str],
    settings: RunSettings | None = None,
    *,
    bridge_config: str | Mapping[str, Any] | None = None,
    half_bridge: bool = False,
    feature_extractor: str | Callable[[Tensor], Tensor] | None = None,
    class_names: Sequence[str] | None = None,
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    show_progress: bool = True,
    skip_unreadable: bool = False,
) -> dict[str, Any] | None:
    r"""Explain every image of a folder or list file with RCSB; see the module docstring.

    Args:
        images (str): A folder (flat, or one sub-folder per class) or a list file.
        model: The classifier: an ``nn.Module`` / callable, or a spec for :func:`load_model`.
        bridge: A :class:`Bridge` or a spec for :func:`load_bridge`.
        out_dir (str): Output folder (created; reused to resume).
        settings (RunSettings, optional): The RCSB options of the run.
        bridge_config (str or dict, optional): An official checkpoint's configuration: a name
            (``"imagenet-256"``, ``"celebahq-256"``, ``"celeba-128"``), a JSON file or the
            kwargs (see :func:`resolve_bridge_config`).
        half_bridge (bool): Hold the bridge's weights in the dtype of ``settings.rcsb.precision``
            (bf16 / fp16): half the memory of its weights (:meth:`Bridge.half_weights`).
        feature_extractor (optional): ``images -> features`` for FID / sFID in the summary, or
            a ``package.module:factory`` spec.
        class_names (sequence of str, optional): The classifier's classes in order: labels of
            named class sub-folders (see :func:`list_images`) and names in the figure.
        accelerator, devices, num_nodes, strategy: Lightning Fabric's (``"cpu"``, ``"cuda"``,
            ``"auto"``; DDP over ``devices`` x ``num_nodes`` processes when more than one).
        show_progress (bool): A progress bar on rank 0 counting finished images of all ranks.
        skip_unreadable (bool): Explain the readable images and list the unreadable ones in
            ``summary.json`` / ``summary.md`` (default: refuse, naming every unreadable file).
            Indices stay those of the full listing.

    Returns:
        dict: the summary on rank 0 (``None`` on the other ranks).
    """
    settings = settings or RunSettings()
    check_choice(settings.region, "region", REGION_NAMES)
    if (settings.region == "text") != bool(settings.prompt):
        raise ValueError("prompt: the 'text' region needs a prompt, and only it takes one")
    check_int(settings.batch_size, "batch_size", 1)
    items, class_names = list_images(images, class_names)
    items, skipped = _check_readable(items, skip_unreadable)
    out = Path(out_dir)
    fabric = make_fabric(accelerator, devices, num_nodes, strategy=strategy)
    fabric.launch()
    rank, world = fabric.global_rank, fabric.world_size
    # load first: a start that fails on a bad model or bridge leaves no settings behind
    forward_func = load_model(model)
    the_bridge = load_bridge(
        bridge, bridge_config, half_dtype(settings.rcsb.precision) if half_bridge else None
    )
    mine = {
        "images": os.path.normpath(os.path.abspath(os.fspath(images))),
        "model_sha256": fingerprint(
            model if isinstance(model, str) and os.path.isfile(model) else forward_func
        ),
        "bridge_sha256": fingerprint(the_bridge),
        **settings.to_json(),
    }
    mine = json.loads(json.dumps(mine))  # as settings.json holds it (tuples become lists)
    stored = out / "settings.json"
    if stored.exists():  # every rank checks, so that every rank stops with the same one line
        before = json.loads(stored.read_text())
        # an option added after a run was started has its default in that run
        before = {**RunSettings().to_json(), **before}
        differ = sorted(k for k in set(before) | set(mine) if before.get(k) != mine.get(k))
        if differ:
            k = differ[0]
            raise ValueError(
                f"out_dir {str(out)!r} holds a run with other settings: {', '.join(differ)} "
                f"differ ({k}: {before.get(k)!r} in settings.json, {mine.get(k)!r} now); use "
                "another out_dir, or the same model, bridge, images and options to resume it"
            )
    device = fabric.device
    with _exclusive(fabric, out):
        redone: list[int] = []
        finished: set[int] | None = None  # rank 0 checks every image once, here
        if rank == 0:
            remove_stale_temporaries(out)  # what a killed run left; this run holds the lock
            _atomic_write(stored, text_bytes(json.dumps(mine, indent=2)))
            # outputs of earlier runs that are not whole (a power cut, a full disk): redone
            recorded = [it.index for it in items if _record_path(out, it.index).exists()]
            finished = {i for i in recorded if _done(out, i)}
            redone = [i for i in recorded if i not in finished]
            if redone:
                print(
                    f"explain-dataset: {len(redone)} damaged image output(s) will be redone: "
                    f"{redone[:20]}{' ...' if len(redone) > 20 else ''}",
                    flush=True,
                )
        fabric.barrier()
        if isinstance(forward_func, nn.Module):
            forward_func = forward_func.to(device)
        the_bridge = the_bridge.to(device)
        shape = (the_bridge.channels or 3, the_bridge.image_size or 0, the_bridge.image_size or 0)
        layer = settings.gradcam_layer
        cfg = settings.rcsb
        region = named_region(
            settings.region,
            forward_func,
            cfg.cell_size,
            cfg.area,
            image_shape=shape,
            layer=layer,
            seed=settings.seed,
            ig_steps=cfg.ig_steps,
            prompt=settings.prompt,
            segmenter=text_segmenter(settings.text_models, device)
            if settings.region == "text"
            else None,
        )
        rcsb = RCSB(forward_func, the_bridge, region, config=cfg)
        b = settings.batch_size
        batches = [items[i : i + b] for i in range(0, len(items), b)]
        mine_batches = [bt for k, bt in enumerate(batches) if k % world == rank]
        bar = None
        if rank == 0 and show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), desc="explain-dataset", unit="img", disable=None)
        with StopSignals() as stop:
            for batch in mine_batches:
                if bar is not None:  # the global count: records of every rank on the shared disk
                    bar.n = len(os.listdir(out / "records"))
                    bar.refresh()
                stop.check()  # SIGTERM (or Slurm's SIGUSR1): stop between batches, keep the rest
                if all(
                    it.index in finished if finished is not None else _done(out, it.index)
                    for it in batch
                ):
                    continue
                x = _load_batch(batch, the_bridge).to(device)
                _explain_batch(rcsb, batch, x, settings, out, forward_func)
            stop.check()
        fabric.barrier()
        if rank != 0:
            return None
        if bar is not None:
            bar.n = len(os.listdir(out / "records"))
            bar.close()
        extractor = (
            load_model(feature_extractor)
            if isinstance(feature_extractor, str)
            else feature_extractor
        )
        return _summarise(out, items, settings, extractor, class_names, redone, skipped)
