r"""Writes ``docs/api.rst``, the API reference page, from the public modules' ``__all__``: each
public name is documented once, at the shortest public path it is imported from (``rcsb_captum.
RCSB``, not ``rcsb_captum.attr.RCSB``), so that a new public name cannot be left out.

    python docs/api_page.py > docs/api.rst    (tests/test_docs.py checks the file is current)
"""

from __future__ import annotations

import importlib

#: (module, heading), in the page's order; a module's names already documented above are skipped
MODULES = [
    ("rcsb_captum", "Methods, regions, bridge and autoencoder (``rcsb_captum``)"),
    ("rcsb_captum.config", "Configuration and presets (``rcsb_captum.config``)"),
    ("rcsb_captum.regions", "Regions (``rcsb_captum.regions``)"),
    ("rcsb_captum.sampler", "The sampling loop and its integrators (``rcsb_captum.sampler``)"),
    ("rcsb_captum.guidance", "Classifier guidance (``rcsb_captum.guidance``)"),
    ("rcsb_captum.bridge", "I2SB bridges (``rcsb_captum.bridge``)"),
    ("rcsb_captum.autoencoder", "Diffusion autoencoder (``rcsb_captum.autoencoder``)"),
    ("rcsb_captum.infillers", "FIDO's in-fillers (``rcsb_captum.infillers``)"),
    ("rcsb_captum.metrics", "Counterfactual metrics (``rcsb_captum.metrics``)"),
    ("rcsb_captum.records", "Per-image records (``rcsb_captum.records``)"),
    ("rcsb_captum.stability", "Stability under small transforms (``rcsb_captum.stability``)"),
    ("rcsb_captum.visualization", "Figures (``rcsb_captum.visualization``)"),
    ("rcsb_captum.checks", "Input checks for plug-ins (``rcsb_captum.checks``)"),
    ("rcsb_captum.dataset_runs", "Dataset runs (``rcsb_captum.dataset_runs``)"),
    ("rcsb_captum.durable", "A run's folder kept sound (``rcsb_captum.durable``)"),
    ("rcsb_captum.demo", "The Fashion-MNIST demo (``rcsb_captum.demo``)"),
    ("rcsb_captum.integrations.quantus", "Quantus adapter (``rcsb_captum.integrations.quantus``)"),
    (
        "rcsb_captum.integrations.grounded_sam",
        "GroundingDINO + SAM text regions (``rcsb_captum.integrations.grounded_sam``)",
    ),
]


def public_names() -> dict[str, list[str]]:
    r"""Module -> the public names documented there (each name once, first module wins)."""
    seen: set[int] = set()
    out: dict[str, list[str]] = {}
    for module, _ in MODULES:
        mod = importlib.import_module(module)
        names = []
        for name in mod.__all__:
            obj = getattr(mod, name)
            # constants (strings, tuples, dicts) are not unique objects: key them by name
            key = id(obj) if callable(obj) else hash((module, name))
            if key in seen:
                continue
            seen.add(key)
            names.append(name)
        out[module] = names
    return out


def api_page() -> str:
    lines = [
        "API reference",
        "=============",
        "",
        "Generated from the docstrings of every public name (``python docs/api_page.py >",
        "docs/api.rst``). Each name is documented at the shortest path it is imported from.",
        "",
    ]
    names = public_names()
    for module, heading in MODULES:
        if not names[module]:
            continue
        lines += [heading, "-" * len(heading), "", f".. automodule:: {module}", ""]
        for name in names[module]:
            obj = getattr(importlib.import_module(module), name)
            kind = (
                "autoclass"
                if isinstance(obj, type)
                else "autofunction"
                if callable(obj)
                else "autodata"
            )
            lines.append(f".. {kind}:: {module}.{name}")
            if kind == "autoclass":
                lines.append("   :members:")
            if kind == "autodata" and isinstance(obj, dict):
                lines.append("   :no-value:")  # presets and tables: their pages show them
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(api_page(), end="")
