r"""The dataset run itself: shards over Fabric's ranks, one batch explained and written at a
time, the out-dir lock and stop signals (:func:`explain_dataset`)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._utils import check_choice, check_int, make_fabric
from ..bridge.bridge import Bridge
from ..durable import (
    RunStopped,
    StopSignals,
    remove_stale_temporaries,
    text_bytes,
)
from ..regions import REGION_NAMES
from .inputs import list_images, load_batch, readable_items
from .loading import fingerprint, half_dtype, load_bridge, load_model
from .outputs import RunEnvironmentError, claim_folder, is_done, record_path, write_durably
from .service import build_rcsb, explain_batch
from .settings import RunSettings
from .summary import summarise

__all__ = ["RunStopped", "explain_dataset"]


def _stop_together(fabric: Any, stop: StopSignals) -> None:
    # a signal may reach one rank only (``kill`` of the launching process; a scheduler that
    # signals one task): the ranks share the largest signal number received, one small
    # all-reduce per round, and all raise RunStopped together
    signum = stop.received or 0
    if fabric.world_size > 1:
        flag = torch.tensor([signum], dtype=torch.int64, device=fabric.device)
        signum = int(fabric.all_reduce(flag, reduce_op="max").item())
    if signum:
        raise RunStopped(signum)


@contextlib.contextmanager
def _exclusive(fabric: Any, out: Path) -> Iterator[None]:
    # one run per out-dir for the body: rank 0 makes the folders and takes the lock, every
    # rank stops with the same one line when it cannot; the ranks of this run share it
    lock = None
    problem = ""
    if fabric.global_rank == 0:
        try:
            lock = claim_folder(out)
        except RunEnvironmentError as e:
            problem = str(e)
    problem = fabric.broadcast(problem, src=0) if fabric.world_size > 1 else problem
    if problem:
        raise RunEnvironmentError(problem)
    try:
        yield
    finally:
        if lock is not None:
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
    items, skipped = readable_items(items, skip_unreadable)
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
            write_durably(stored, text_bytes(json.dumps(mine, indent=2)))
            # outputs of earlier runs that are not whole (a power cut, a full disk): redone
            recorded = [it.index for it in items if record_path(out, it.index).exists()]
            finished = {i for i in recorded if is_done(out, i)}
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
        rcsb = build_rcsb(forward_func, the_bridge, settings, device)
        b = settings.batch_size
        batches = [items[i : i + b] for i in range(0, len(items), b)]
        # every rank takes the same number of rounds (batch b of round r: b = r * world + rank,
        # none past the end), so that the ranks can agree at each round whether to stop
        rounds = -(-len(batches) // world)
        bar = None
        if rank == 0 and show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), desc="explain-dataset", unit="img", disable=None)
        with StopSignals() as stop:
            for r in range(rounds):
                if bar is not None:  # the global count: records of every rank on the shared disk
                    bar.n = len(os.listdir(out / "records"))
                    bar.refresh()
                # SIGTERM (or Slurm's SIGUSR1) on any rank stops every rank between batches
                _stop_together(fabric, stop)
                k = r * world + rank
                batch = batches[k] if k < len(batches) else []
                if all(
                    it.index in finished if finished is not None else is_done(out, it.index)
                    for it in batch
                ):
                    continue
                x = load_batch(batch, the_bridge).to(device)
                explain_batch(rcsb, batch, x, settings, out, forward_func)
            _stop_together(fabric, stop)
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
        return summarise(out, items, settings, extractor, class_names, redone, skipped)
