r"""The training loop both trainers share (:func:`~rcsb_captum.train_bridge`,
:func:`~rcsb_captum.autoencoder.train_diffae`): Lightning Fabric, an EMA of the weights,
gradient accumulation, a progress bar with the running loss, durable checkpoints, and one
resume contract.

The resume contract:

- every draw of a micro-batch comes from :func:`step_generator` ``(seed, step, rank, micro)``:
  derived, never carried, so a checkpoint resumes bit-identically on the same devices and
  cleanly on another number of them;
- a checkpoint is written every ``checkpoint_every`` steps, on Ctrl-C (the steps completed so
  far) and at the end, atomically and durably (:func:`~rcsb_captum.durable.atomic_write`);
- a checkpoint written for another identity (the network's configuration and the trainer's
  own settings) is refused, and so is one already past ``steps``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from ._utils import derive_seed, progress_disabled
from .bridge.checkpoints import read_checkpoint
from .durable import atomic_write, torch_bytes

__all__ = [
    "read_resume_state",
    "step_generator",
    "train_loop",
    "write_checkpoint",
    "write_start_state",
]


def step_generator(seed: int, step: int, rank: int, micro: int) -> torch.Generator:
    r"""The generator of one micro-batch of one rank at one step (CPU; move draws to the
    device after drawing, so a run on another device sees the same numbers)."""
    return torch.Generator().manual_seed(derive_seed(seed, step, rank, micro))


def read_resume_state(
    checkpoint_path: str | os.PathLike[str] | None,
    identity: Mapping[str, Any],
    steps: int,
    export_hint: str,
) -> dict[str, Any]:
    r"""The checkpoint's state to resume from (``{}`` when there is none). ``identity`` holds
    what the checkpoint must have been written with (``{"config": ..., ...}``); another
    identity, or a checkpoint already past ``steps``, is a ``ValueError`` naming the fix
    (``export_hint``: how to write the trained model instead)."""
    if checkpoint_path is None or not os.path.exists(checkpoint_path):
        return {}
    path = os.fspath(checkpoint_path)
    state = read_checkpoint(path)
    if "network" not in state or "ema" not in state:
        raise ValueError(
            f"checkpoint_path {path!r} is not a training checkpoint of this version (written "
            "by an older trainer?); delete it or pass another path"
        )
    for key, value in identity.items():
        if state.get(key) != value:
            raise ValueError(
                f"checkpoint_path {path!r} was written for another {key}; delete it or pass the "
                f"{key} it was trained with"
            )
    start = int(state["step"])
    if start > steps:
        raise ValueError(
            f"steps: the checkpoint {path!r} is already at step {start}, past steps={steps}; "
            f"pass steps above {start} to train on, or {export_hint}"
        )
    return state


def write_checkpoint(
    checkpoint_path: str | os.PathLike[str],
    step: int,
    identity: Mapping[str, Any],
    network: nn.Module,
    ema: AveragedModel,
    optimizer: torch.optim.Optimizer,
    running_loss: float | None,
) -> None:
    r"""The checkpoint :func:`train_loop` writes and :func:`read_resume_state` reads, durably."""
    payload = {
        "step": step,
        **identity,
        "network": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "ema": {k: v.detach().cpu() for k, v in ema.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "running_loss": running_loss,
    }
    atomic_write(checkpoint_path, torch_bytes(payload))


def write_start_state(
    checkpoint_path: str | os.PathLike[str],
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    identity: Mapping[str, Any],
    step: int,
) -> None:
    r"""A checkpoint that resumes at ``step`` from ``network``'s weights, as both the weights
    and their EMA, and ``optimizer``'s state (a fresh one: its moments start at zero): for
    going on training finished weights, whose file holds no optimiser or EMA."""
    ema = AveragedModel(network, use_buffers=True)  # a copy of the weights
    ema.n_averaged.fill_(step)  # the EMA goes on averaging, not copying, at the next update
    write_checkpoint(checkpoint_path, step, identity, network, ema, optimizer, None)


def train_loop(
    fabric: Any,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_loss: Callable[[nn.Module, int, int], Tensor],
    *,
    steps: int,
    state: Mapping[str, Any],
    identity: Mapping[str, Any],
    ema_decay: float,
    accumulate: int = 1,
    checkpoint_path: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 500,
    show_progress: bool = True,
    desc: str = "train",
    callback: Callable[[int, float], None] | None = None,
) -> AveragedModel:
    r"""Train ``network`` from the resume ``state`` (:func:`read_resume_state`; ``{}``: from
    the start) up to ``steps``; returns the EMA (``.module`` holds its weights).

    ``micro_loss(model, step, micro)`` is the loss of one micro-batch, computed with the
    Fabric-wrapped ``model`` and drawn from :func:`step_generator`. ``identity`` is stored in
    each checkpoint beside the weights, the EMA, the optimiser and the running loss.
    """
    start = int(state.get("step", 0))
    if state:
        network.load_state_dict(state["network"])
    model, optimizer = fabric.setup(network, optimizer)
    if state:
        # after setup: load_state_dict casts the moments to the parameters' device (loaded
        # before, they stayed on the CPU and a resumed GPU run failed in Adam's first step)
        optimizer.load_state_dict(state["optimizer"])
    ema = AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
    if state:
        ema.load_state_dict(state["ema"])
    rank = fabric.global_rank
    # the running mean of the loss shown in the bar continues across a resume
    running: float | None = state.get("running_loss")

    def save(step: int) -> None:
        if checkpoint_path is None or rank != 0:
            return
        write_checkpoint(checkpoint_path, step, identity, network, ema, optimizer, running)

    model.train()
    bar = tqdm(
        total=steps,
        initial=start,
        disable=progress_disabled(show_progress and rank == 0),
        desc=desc,
    )
    if running is not None:
        bar.set_postfix(loss=f"{running:.4f}")
    completed = start
    try:
        for step in range(start, steps):
            total = 0.0
            for micro in range(accumulate):
                with fabric.no_backward_sync(model, enabled=micro < accumulate - 1):
                    loss = micro_loss(model, step, micro) / accumulate
                    fabric.backward(loss)
                total += float(loss.detach())
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema.update_parameters(network)
            running = total if running is None else 0.98 * running + 0.02 * total
            bar.set_postfix(loss=f"{running:.4f}")
            bar.update(1)
            completed = step + 1
            if callback is not None and rank == 0:
                callback(completed, total)
            if completed % checkpoint_every == 0 and completed < steps:
                save(completed)
    except KeyboardInterrupt:
        save(completed)  # the steps completed so far; a resumed run goes on from there
        raise
    finally:
        bar.close()
    if start < steps:
        save(steps)
    fabric.barrier()
    return ema
