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

from .explain import RunStopped, explain_dataset
from .inputs import DatasetItem, list_images, unreadable_images
from .loading import (
    ExportedClassifier,
    fingerprint,
    half_dtype,
    load_bridge,
    load_model,
    resolve_bridge_config,
    text_segmenter,
)
from .outputs import RunEnvironmentError
from .service import build_rcsb, explain_images
from .settings import RunSettings, parse_class_map, parse_class_names

__all__ = [
    "RunEnvironmentError",
    "RunStopped",
    "DatasetItem",
    "ExportedClassifier",
    "RunSettings",
    "build_rcsb",
    "explain_dataset",
    "explain_images",
    "fingerprint",
    "half_dtype",
    "list_images",
    "load_bridge",
    "load_model",
    "parse_class_map",
    "parse_class_names",
    "resolve_bridge_config",
    "text_segmenter",
    "unreadable_images",
]
