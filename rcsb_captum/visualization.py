r"""A figure of counterfactuals: input, region, counterfactual and difference per image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["plot_counterfactuals"]


def _image(x: Tensor):
    x = x.detach().float().cpu().clamp(0, 1)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def _name(k: int, class_names: Sequence[str] | None) -> str:
    return class_names[k] if class_names is not None and 0 <= k < len(class_names) else str(k)


def plot_counterfactuals(
    inputs: Tensor,
    counterfactuals: Tensor,
    regions: Tensor,
    probs_before: Tensor,
    probs_after: Tensor,
    class_names: Sequence[str] | None = None,
    path: str | None = None,
    success: Tensor | Sequence[bool] | None = None,
):
    r"""One row per image: the input, its region (red) over it, the counterfactual and
    ``counterfactual - input`` on one colour scale for all rows (blue darker, red brighter,
    with a colour bar), titled with the predicted classes and their probabilities; rows whose
    counterfactual did not flip the classifier are framed and titled in red.

    Args:
        inputs (Tensor): ``N x C x H x W`` in ``[0, 1]``.
        counterfactuals (Tensor): Shaped like ``inputs``.
        regions (Tensor): ``N x 1 x H x W`` binary masks.
        probs_before (Tensor), probs_after (Tensor): ``N x K`` class probabilities.
        class_names (sequence of str, optional): Names of the ``K`` classes.
        path (str, optional): Also save the figure there (PNG by extension).
        success (Tensor or sequence of bool, optional): Per image, whether it flipped
            (``CounterfactualResult.success``); default: the prediction changed.

    Returns:
        matplotlib.figure.Figure

    Examples::

        >>> res = RCSB(model).generate(x, seed=0)
        >>> plot_counterfactuals(x, res.counterfactuals, res.regions, res.probs_before,
        ...                      res.probs_after, class_names, path="cf.png",
        ...                      success=res.success)
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = inputs.shape[0]
    if n == 0:
        raise ValueError("inputs: need at least one image to plot")
    if not (counterfactuals.shape == inputs.shape and regions.shape[0] == n):
        raise ValueError(
            f"counterfactuals {tuple(counterfactuals.shape)} and regions "
            f"{tuple(regions.shape)} must match inputs {tuple(inputs.shape)}"
        )
    if success is None:
        flipped = [int(probs_before[i].argmax()) != int(probs_after[i].argmax()) for i in range(n)]
    else:
        flipped = [bool(v) for v in success]
        if len(flipped) != n:
            raise ValueError(f"success: need one value per image ({n}), got {len(flipped)}")
    diffs = (counterfactuals - inputs).detach().float().cpu().sum(1)
    lim = max(float(diffs.abs().max()), 1e-6)  # one scale for every row: comparable rows
    fig, axes = plt.subplots(
        n, 4, figsize=(8.8, 2.2 * n + 0.9), squeeze=False, layout="constrained"
    )
    gray = "gray" if inputs.shape[1] == 1 else None
    headers = ["input", "region", "counterfactual", "difference"]
    image = None
    for i in range(n):
        b, a = int(probs_before[i].argmax()), int(probs_after[i].argmax())
        overlay = torch.zeros(*regions.shape[-2:], 4)
        overlay[..., 0] = 1.0
        overlay[..., 3] = 0.45 * regions[i, 0].detach().float().cpu()
        ax = axes[i]
        titles = [
            f"{_name(b, class_names)} {float(probs_before[i, b]):.2f}",
            f"{float(regions[i].float().mean()):.0%} of the image",
            f"{_name(a, class_names)} {float(probs_after[i, a]):.2f}"
            + ("" if flipped[i] else " (no flip)"),
            "counterfactual - input",
        ]
        ax[0].imshow(_image(inputs[i]), cmap=gray, vmin=0, vmax=1)
        ax[1].imshow(_image(inputs[i]), cmap=gray, vmin=0, vmax=1)
        ax[1].imshow(overlay.numpy())
        ax[2].imshow(_image(counterfactuals[i]), cmap=gray, vmin=0, vmax=1)
        image = ax[3].imshow(diffs[i].numpy(), cmap="bwr", vmin=-lim, vmax=lim)
        for j, a_ in enumerate(ax):
            # the column's name above the first row's title, inside the layout (never cut)
            head = f"{headers[j]}\n" if i == 0 else ""
            a_.set_title(head + titles[j], fontsize=9, color="black")
            a_.set_xticks([])
            a_.set_yticks([])
        if not flipped[i]:
            ax[2].title.set_color("red")
            for spine in ax[2].spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2.5)
    assert image is not None  # n >= 1 rows were drawn
    fig.colorbar(image, ax=axes[:, 3], shrink=0.8, label="change (summed over channels)")
    handles = [Patch(facecolor=(1, 0, 0, 0.45), label="region: the pixels allowed to change")]
    if not all(flipped):
        handles.append(Patch(facecolor="none", edgecolor="red", linewidth=2.5, label="no flip"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
