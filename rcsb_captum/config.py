r"""One home for RCSB's options: a frozen, typed, validated configuration with named presets.

:class:`RCSBConfig` holds every option that changes what RCSB computes. :class:`~rcsb_captum.RCSB`
takes one (``RCSB(model, config=RCSBConfig.preset("fast"), nfe=60)``), ``generate`` and
``attribute`` take per-call overrides, and the application layer (CLI flags and their help,
dataset-run settings files, the Quantus adapter, the documentation's defaults table) is
generated from its fields, so adding an option means one field here, its use and its test.

Each field's ``metadata`` says what it means (``help``) and its valid range; every check runs
once, in ``__post_init__``, with a message naming the field. ``to_json`` / ``from_json``
round-trip exactly; :meth:`RCSBConfig.preset` gives the settings the project's benchmarks
established (see :data:`PRESETS`).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from ._utils import check_choice, check_int, check_number

__all__ = ["PRESETS", "RCSBConfig", "config_fields", "defaults_table", "settings_page"]

Precision = Literal["fp32", "bf16", "fp16"]
ClassifierInput = Literal["affine", "minmax"]
GuidanceGrad = Literal["xt", "x0", "xt-x0"]
Sampler = Literal["i2sb", "heun"]
GuidanceNorm = Literal["l2", "rms"]
GuidanceSchedule = Literal["constant", "sigma"]
AdamMode = Literal["pixel", "image"]


def _f(default: Any, help: str, low: float | None = None, high: float | None = None, **kw: Any):
    return field(default=default, metadata={"help": help, "low": low, "high": high, **kw})


@dataclass(frozen=True)
class RCSBConfig:
    r"""Every option of RCSB (defaults: the official setting of the paper's code).

    Build one with keyword arguments, :meth:`preset`, :meth:`replace` or :meth:`from_json`;
    a bad value raises ``TypeError`` / ``ValueError`` naming the field.

    Examples::

        >>> cfg = RCSBConfig.preset("near_paper_4x")
        >>> cfg.replace(nfe=50).to_json()["nfe"]
        50
        >>> RCSB(model, config=cfg)
    """

    guidance_scale: float = _f(1.5, "guidance scale s (0: plain inpainting)", 0)
    start_step: int = _f(600, "truncation tau*T: the step the noised input starts from", 2)
    nfe: int = _f(100, "sampling steps (at most start_step - 1)", 1)
    n_samples: int = _f(2, "counterfactuals drawn per input; the best is returned", 1)
    classifier_input: ClassifierInput = _f(
        "affine", "x0-hat to classifier input: (x+1)/2, or the official per-sample min-max"
    )
    precision: Precision = _f("fp32", "autocast of the bridge (the sampler stays float32)")
    gradient_checkpointing: bool = _f(
        False, "checkpoint the bridge's blocks in the guided backward (less memory)"
    )
    deterministic: bool = _f(True, "deterministic CUDA kernels during a call (no effect on CPU)")
    guidance_grad: GuidanceGrad = _f(
        "xt", "classifier gradient through the bridge (xt), at x0-hat (x0), or xt then x0"
    )
    guidance_switch: float = _f(
        0.5, "xt-x0 only: noise level (relative to the first step's) where x0 takes over", 0, 1
    )
    sampler: Sampler = _f("i2sb", "integrator: I2SB posterior steps or Heun (2nd order)")
    guidance_norm: GuidanceNorm = _f(
        "l2", "size of the first update: L2 norm = scale (l2) or the paper's per-element (rms)"
    )
    guidance_schedule: GuidanceSchedule = _f(
        "constant", "guidance weight per step: constant or fading with the noise level"
    )
    guidance_smoothing: float = _f(0.0, "Gaussian blur (std, pixels) of the gradient", 0)
    guidance_interval: int = _f(1, "take the classifier gradient every k-th step", 1)
    guidance_shifts: int = _f(
        1, "average the objective over x0-hat and its 1-pixel shifts (1: none)", 1, 9
    )
    guidance_adam: AdamMode = _f(
        "pixel", "Adam second moment per element (official) or per image (keeps the shape)"
    )
    guidance_until: float = _f(
        1.0,
        "guide a sample only while p(counterfactual class | x0-hat) is below this (1: always)",
        0,
        1,
    )
    cell_size: int | Literal["auto"] = _f(
        "auto", "default region: cell side in pixels, or auto (16 px at >= 128 px, side/8)", 1
    )
    area: float = _f(0.3, "default region: largest fraction of the pixels that may change", 0, 1)
    ig_steps: int = _f(50, "default region: Integrated Gradients steps in the NoiseTunnel", 1)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            low, high = f.metadata.get("low"), f.metadata.get("high")
            kind = hints[f.name]
            if f.name == "cell_size":
                if isinstance(value, str) and value != "auto":
                    raise ValueError(
                        f"cell_size must be a positive integer or 'auto', got {value!r}"
                    )
                if value != "auto":
                    check_int(value, "cell_size", 1)
                continue
            if typing.get_origin(kind) is Literal:
                check_choice(value, f.name, get_args(kind))
            elif kind is bool:
                if not isinstance(value, bool):
                    raise TypeError(f"{f.name} must be True or False, got {value!r}")
            elif kind is int:
                check_int(value, f.name, low, high)
            elif kind is float:
                value = check_number(
                    value, f.name, low, high, low_open=f.name in ("area", "guidance_until")
                )
                object.__setattr__(self, f.name, value)  # ints given for floats become floats
        if self.nfe > self.start_step - 1:
            raise ValueError(
                f"nfe must be at most start_step - 1 = {self.start_step - 1}, got {self.nfe}"
            )
        if self.guidance_switch != 0.5 and self.guidance_grad != "xt-x0":
            raise ValueError(
                "guidance_switch applies to guidance_grad='xt-x0' only, got guidance_grad="
                f"{self.guidance_grad!r}"
            )

    # -- building ---------------------------------------------------------------------------

    def replace(self, **overrides: Any) -> RCSBConfig:
        r"""A copy with ``overrides`` (field names; an unknown name is a ``TypeError``)."""
        unknown = sorted(set(overrides) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(
                f"unknown RCSB option(s) {unknown}; the options are {[f.name for f in fields(self)]}"
            )
        return dataclasses.replace(self, **overrides) if overrides else self

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> RCSBConfig:
        r"""The named setting (:data:`PRESETS`), with ``overrides``."""
        check_choice(name, "preset", tuple(PRESETS))
        return cls(**PRESETS[name]).replace(**overrides)

    def to_json(self) -> dict[str, Any]:
        r"""Every field as a JSON-ready dict (:meth:`from_json` reads it back exactly)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> RCSBConfig:
        r"""From :meth:`to_json`'s dict or its JSON text; missing fields take their defaults
        (a settings file written before a field existed), unknown ones are refused."""
        if isinstance(data, str):
            data = json.loads(data)
        if not isinstance(data, dict):
            raise TypeError(
                f"an RCSB configuration must be a JSON object, got {type(data).__name__}"
            )
        return cls().replace(**data)

    def diff(self, other: RCSBConfig) -> dict[str, tuple[Any, Any]]:
        r"""``{field: (mine, other's)}`` for every field that differs."""
        return {
            f.name: (getattr(self, f.name), getattr(other, f.name))
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        }


#: The named settings, as overrides of the defaults (``paper``). Measured on the shipped
#: Fashion-MNIST models (docs: "Speed and realism"): ``near_paper_4x`` keeps every flip and the
#: paper setting's quality within 1.5 s.e. at about 4x its speed on a CPU; ``fast`` trades a
#: little COUT for about 5x; ``realistic`` is the realism study's best setting (an image-wide
#: Adam normaliser, a smoothed gradient and a default region of 0.45: the robust judge agrees
#: more often and the change has less speckle, for a larger region).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "near_paper_4x": {
        "ig_steps": 8,
        "n_samples": 1,
        "nfe": 95,
        "guidance_grad": "xt-x0",
        "guidance_switch": 0.75,
        "precision": "bf16",
    },
    "fast": {"ig_steps": 8, "n_samples": 1, "nfe": 50, "precision": "bf16"},
    "realistic": {"guidance_adam": "image", "guidance_smoothing": 1.0, "area": 0.45},
}


def config_fields() -> list[dataclasses.Field]:
    r"""The fields of :class:`RCSBConfig`, in order (what the CLI and the docs are built from)."""
    return list(fields(RCSBConfig))


def defaults_table() -> str:
    r"""The Markdown table of every option: default, presets that change it, meaning."""
    hints = typing.get_type_hints(RCSBConfig)
    lines = [
        "| option | type | default | presets | meaning |",
        "|---|---|---|---|---|",
    ]
    for f in config_fields():
        kind = hints[f.name]
        if f.name == "cell_size":
            type_s = "int \\| `auto`"
        elif typing.get_origin(kind) is Literal:
            type_s = " \\| ".join(f"`{v}`" for v in get_args(kind))
        else:
            type_s = getattr(kind, "__name__", str(kind)).replace("|", "\\|")
        presets = ", ".join(
            f"{name}: `{values[f.name]}`" for name, values in PRESETS.items() if f.name in values
        )
        lines.append(
            f"| `{f.name}` | {type_s} | `{f.default}` | {presets or '-'} | {f.metadata['help']} |"
        )
    return "\n".join(lines) + "\n"


def settings_page() -> str:
    r"""The documentation's settings page (``docs/settings.md``), generated from the config:
    ``python -m rcsb_captum.config > docs/settings.md``."""
    presets = "\n".join(
        f"- `{name}`: " + (", ".join(f"`{k}={v!r}`" for k, v in values.items()) or "the defaults")
        for name, values in PRESETS.items()
    )
    return (
        "# Settings\n\n"
        "Generated from `rcsb_captum.config.RCSBConfig` by `python -m rcsb_captum.config`; a "
        "test keeps this page equal to the code. Every option is a field of the config, a "
        "keyword of `RCSB(...)`, `generate(...)` and `attribute(...)`, a flag of `rcsb-captum "
        "explain` / `explain-dataset` (`--guidance-scale`, ...), a key of a dataset run's "
        "`settings.json` and of the Quantus adapter's `explain`.\n\n"
        + defaults_table()
        + "\n## Presets\n\n"
        "`RCSBConfig.preset(name, **overrides)`, `RCSB(model, config=name)`, `--preset name`:\n\n"
        + presets
        + "\n\nWhat each preset costs and buys on the shipped models: "
        "[speed_and_realism.md](speed_and_realism.md).\n"
    )


if __name__ == "__main__":
    print(settings_page(), end="")
