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
):
    r"""One row per image: the input, its region (red) over it, the counterfactual and
    ``counterfactual - input`` (blue darker, red brighter), titled with the predicted classes and
    their probabilities.

    Args:
        inputs (Tensor): ``N x C x H x W`` in ``[0, 1]``.
        counterfactuals (Tensor): Shaped like ``inputs``.
        regions (Tensor): ``N x 1 x H x W`` binary masks.
        probs_before (Tensor), probs_after (Tensor): ``N x K`` class probabilities.
        class_names (sequence of str, optional): Names of the ``K`` classes.
        path (str, optional): Also save the figure there (PNG by extension).

    Returns:
        matplotlib.figure.Figure

    Examples::

        >>> res = RCSB(model).generate(x, seed=0)
        >>> plot_counterfactuals(x, res.counterfactuals, res.regions, res.probs_before,
        ...                      res.probs_after, class_names, path="cf.png")
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = inputs.shape[0]
    if not (counterfactuals.shape == inputs.shape and regions.shape[0] == n):
        raise ValueError(
            f"counterfactuals {tuple(counterfactuals.shape)} and regions "
            f"{tuple(regions.shape)} must match inputs {tuple(inputs.shape)}"
        )
    fig, axes = plt.subplots(n, 4, figsize=(8.4, 2.3 * n), squeeze=False)
    gray = "gray" if inputs.shape[1] == 1 else None
    for i in range(n):
        b, a = int(probs_before[i].argmax()), int(probs_after[i].argmax())
        diff = (counterfactuals[i] - inputs[i]).detach().float().cpu().sum(0)
        lim = max(float(diff.abs().max()), 1e-6)
        overlay = torch.zeros(*regions.shape[-2:], 4)
        overlay[..., 0] = 1.0
        overlay[..., 3] = 0.45 * regions[i, 0].detach().float().cpu()
        ax = axes[i]
        ax[0].imshow(_image(inputs[i]), cmap=gray, vmin=0, vmax=1)
        ax[0].set_title(f"{_name(b, class_names)} {float(probs_before[i, b]):.2f}", fontsize=9)
        ax[1].imshow(_image(inputs[i]), cmap=gray, vmin=0, vmax=1)
        ax[1].imshow(overlay.numpy())
        ax[1].set_title(f"region {float(regions[i].float().mean()):.0%}", fontsize=9)
        ax[2].imshow(_image(counterfactuals[i]), cmap=gray, vmin=0, vmax=1)
        ax[2].set_title(f"{_name(a, class_names)} {float(probs_after[i, a]):.2f}", fontsize=9)
        ax[3].imshow(diff.numpy(), cmap="bwr", vmin=-lim, vmax=lim)
        ax[3].set_title("counterfactual - input", fontsize=9)
        for a_ in ax:
            a_.set_xticks([])
            a_.set_yticks([])
    for j, label in enumerate(["input", "region", "counterfactual", "difference"]):
        axes[0, j].annotate(
            label, (0.5, 1.25), xycoords="axes fraction", ha="center", fontsize=10, weight="bold"
        )
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
