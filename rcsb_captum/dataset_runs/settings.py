r"""The settings of a dataset run that change its results (``settings.json``), and the parsers
of the class options the command line and ``explain_dataset`` share."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RCSBConfig
from ..regions import DEFAULT_TEXT_MODELS

__all__ = ["RunSettings", "parse_class_map", "parse_class_names"]


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
