r"""One per-image record of a counterfactual, for every place that writes results.

Every front end (``rcsb-captum explain``, ``explain-dataset`` and ``demo``, through
:mod:`rcsb_captum.dataset_runs.service`) describes an image's counterfactual with the same keys,
computed once here from the result and :func:`rcsb_captum.metrics.closeness`, in
``records/<index>.json`` and ``manifest.jsonl``; the service adds the keys that identify the
image (index, path, label) and the run's own (COUT, timing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from .attr import CounterfactualResult
from .metrics import closeness

__all__ = ["RECORD_KEYS", "counterfactual_records"]

#: The keys of every record, in order.
RECORD_KEYS = (
    "target",
    "counterfactual_target",
    "predicted_before",
    "predicted_after",
    "success",
    "p_target_before",
    "p_target_after",
    "p_counterfactual_after",
    "top_after",
    "region_area",
    "l1_inside",
    "max_change_outside",
    "stability",
)


def counterfactual_records(
    inputs: Tensor,
    result: CounterfactualResult,
    class_names: Sequence[str] | None = None,
    digits: int | None = 4,
    top: int = 3,
) -> list[dict[str, Any]]:
    r"""Per image: the explained class (``target``), the class to reach (``None``: any other),
    the predictions before and after, ``success`` (the result's: the best counterfactual
    reaches the class to reach, or leaves ``target``), the probabilities of the explained class
    before and after and of the class to reach after, the ``top`` classes after with their
    probabilities, the region's share of the pixels, the mean absolute change inside the region
    (``l1_inside``), the largest change outside it (0 for RCSB) and, with an adaptive region,
    the counterfactual's ``stability`` (``None`` otherwise; :mod:`rcsb_captum.stability`).

    Args:
        inputs (Tensor): The images explained, ``N x C x H x W`` in ``[0, 1]``.
        result (CounterfactualResult): What :meth:`RCSB.generate` returned for them.
        class_names (sequence of str, optional): Classes by name; else by index.
        digits (int, optional): Round probabilities and distances to this many digits
            (``None``: full precision).
        top (int): How many classes ``top_after`` lists.

    Returns:
        list of dict: one per image, keys :data:`RECORD_KEYS`.
    """

    def name(k: int) -> int | str:
        return class_names[k] if class_names is not None and 0 <= k < len(class_names) else k

    def num(v: Any) -> float:
        return float(v) if digits is None else round(float(v), digits)

    dist = closeness(inputs, result.counterfactuals, result.regions)
    records = []
    for i in range(inputs.shape[0]):
        before, after = result.probs_before[i], result.probs_after[i]
        k = int(result.target[i])
        cf = result.counterfactual_target
        c = None if cf is None else int(cf[i])
        values, indices = after.topk(min(top, after.numel()))
        records.append(
            {
                "target": name(k),
                "counterfactual_target": None if c is None else name(c),
                "predicted_before": name(int(before.argmax())),
                "predicted_after": name(int(after.argmax())),
                "success": bool(result.success[i]),
                "p_target_before": num(before[k]),
                "p_target_after": num(after[k]),
                "p_counterfactual_after": None if c is None else num(after[c]),
                "top_after": [[name(int(j)), num(v)] for v, j in zip(values, indices, strict=True)],
                "region_area": num(result.regions[i].float().mean()),
                "l1_inside": num(dist["l1_inside"][i]),
                "max_change_outside": float(dist["max_outside"][i]),
                "stability": None if result.stability is None else num(result.stability[i]),
            }
        )
    return records
