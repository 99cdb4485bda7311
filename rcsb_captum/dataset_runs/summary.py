r"""The end of a dataset run: ``manifest.jsonl``, ``summary.json``, ``summary.md`` and the
examples figure, written by rank 0 from the per-image records."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..durable import (
    text_bytes,
)
from .inputs import DatasetItem
from .outputs import record_path, write_durably
from .settings import RunSettings

__all__ = ["summarise", "summary_markdown"]


def summary_markdown(
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


def summarise(
    out: Path,
    items: Sequence[DatasetItem],
    settings: RunSettings,
    feature_extractor: Callable[[Tensor], Tensor] | None,
    class_names: Sequence[str] | None,
    redone: Sequence[int] = (),
    skipped: Sequence[str] = (),
) -> dict[str, Any]:
    from .. import metrics as M
    from ..visualization import plot_counterfactuals

    records = [json.loads(record_path(out, it.index).read_text()) for it in items]
    lines = "".join(json.dumps(r) + "\n" for r in records)
    write_durably(out / "manifest.jsonl", text_bytes(lines))
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
    write_durably(out / "summary.json", text_bytes(json.dumps(summary, indent=2) + "\n"))
    write_durably(out / "summary.md", text_bytes(summary_markdown(summary, records, class_names)))
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
