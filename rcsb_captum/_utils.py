r"""Shared input handling for the whole package, in the spirit of Captum's ``_utils/common.py``.

One home for each rule the methods, region sources, in-fillers and metrics share:

- :func:`format_images`: what an image batch must be (a tensor, ``N x C x H x W``, a floating
  dtype, finite, in ``[0, 1]``) and how other dtypes are treated.
- :func:`format_classes`: Captum's ``target`` forms (int, list, tensor, numpy) as one class per
  input, range-checked.
- :func:`as_generator`, :func:`image_seeds`, :func:`image_generator`, :func:`seeded_global_rng`:
  the seed rule. ``seed=None`` draws a fresh seed from torch's global generator (a random
  result, like every unseeded torch call); an int fixes every draw of the call; the draws that
  belong to image ``i`` of a batch come from a generator seeded with ``image_seeds(seed)[i]``,
  so an image's result depends on ``(seed, i)`` only, not on the batch it was sampled with.
- :func:`check_logits`: what a classifier must return.
- :func:`model_left_as_given`: run a user's model in eval mode for a call and put every
  module's mode back afterwards.
- :func:`flush_denormal`: flush-to-zero on CPU for the duration of a call.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)

__all__ = [
    "as_generator",
    "base_seed",
    "check_choice",
    "check_int",
    "check_logits",
    "check_number",
    "derive_seed",
    "deterministic_kernels",
    "flush_denormal",
    "format_classes",
    "format_images",
    "images_in_range",
    "image_generator",
    "image_seeds",
    "make_fabric",
    "model_left_as_given",
    "seeded_global_rng",
]

ClassesLike = int | list[int] | tuple[int, ...] | Tensor | np.ndarray | None
SeedLike = int | torch.Generator | None


# -- images ----------------------------------------------------------------------------------


def format_images(
    inputs: Any,
    name: str = "inputs",
    *,
    check_range: bool = True,
    allow_empty: bool = False,
) -> Tensor:
    r"""Check an image batch and return it as a floating tensor.

    Accepted: a ``torch.Tensor`` of shape ``N x C x H x W`` with a floating dtype (float16,
    bfloat16, float32, float64; returned as given), finite, in ``[0, 1]``. Integer and bool
    tensors are rejected with a message that says how to convert them (an 8-bit image is
    ``x.float() / 255``; guessing the scale silently would be wrong for other integer data).

    Raises:
        TypeError: not a tensor, or not a floating dtype.
        ValueError: wrong number of dimensions, an empty batch, non-finite values, or values
            outside ``[0, 1]`` (when ``check_range``).
    """
    if not isinstance(inputs, Tensor):
        hint = " (convert with torch.as_tensor)" if isinstance(inputs, np.ndarray) else ""
        raise TypeError(f"{name} must be a torch.Tensor, got {type(inputs).__name__}{hint}")
    if not inputs.is_floating_point():
        raise TypeError(
            f"{name} must have a floating dtype with values in [0, 1], got {inputs.dtype}; "
            "for 8-bit images pass x.float() / 255"
        )
    if inputs.ndim != 4:
        raise ValueError(f"{name} must be N x C x H x W, got shape {tuple(inputs.shape)}")
    if inputs.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is an empty batch (shape {tuple(inputs.shape)})")
    if min(inputs.shape[1:]) == 0:
        raise ValueError(f"{name} has an empty dimension (shape {tuple(inputs.shape)})")
    if inputs.numel() and not bool(torch.isfinite(inputs).all()):
        raise ValueError(f"{name} contain non-finite values (NaN or inf)")
    if check_range and inputs.numel() and (inputs.min() < 0 or inputs.max() > 1):
        raise ValueError(
            f"{name} must be images in [0, 1], got values in [{float(inputs.min()):.4g}, "
            f"{float(inputs.max()):.4g}]; wrap a model that wants normalised input with "
            "rcsb_captum.NormalizedModel and pass [0, 1] images"
        )
    return inputs


# -- classes ---------------------------------------------------------------------------------


def format_classes(
    value: Any,
    n: int,
    num_classes: int | None,
    name: str = "target",
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Captum's ``target`` forms as a ``LongTensor`` of ``n`` classes.

    Accepted: a Python or numpy integer (the same class for every input), a list / tuple /
    1-d tensor / numpy array of integers with one entry per input (or one entry in all).
    Floats, bools, strings and ``None`` are rejected; so are classes outside
    ``[0, num_classes - 1]`` when ``num_classes`` is known.
    """
    if value is None:
        raise TypeError(f"{name} must be an int, a list of ints or a tensor, got None")
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (numbers.Integral, list, tuple, Tensor, np.ndarray)
    ):
        raise TypeError(
            f"{name} must be an int, a list of ints or a tensor of ints, got {type(value).__name__}"
        )
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        raise ValueError(
            f"{name}: a list of tuples (Captum's form for models whose output has more than two "
            "dimensions) has no meaning here: the classifier must return N x K logits; give "
            "one class per input (an int, a list of ints or a tensor)"
        )
    try:
        t = torch.as_tensor(value, device=device)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must hold integer classes, got {value!r}") from e
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer classes, got dtype {t.dtype}")
    if t.ndim > 1 and t.numel() != max(t.shape):
        raise ValueError(f"{name} must be one class per input, got shape {tuple(t.shape)}")
    t = t.long().flatten()
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{name} must give one class or one per input ({n}), got {t.numel()}")
    if num_classes is not None and n and ((t < 0).any() or (t >= num_classes).any()):
        raise ValueError(
            f"{name} has classes outside [0, {num_classes - 1}]: {sorted(set(t.tolist()))}"
        )
    return t.clone()


def check_logits(logits: Any, n: int, name: str = "forward_func") -> Tensor:
    r"""A classifier's output must be an ``N x K`` floating tensor with ``K >= 2``, finite."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must return a Tensor of logits N x K, got {type(logits).__name__}")
    if logits.ndim != 2 or logits.shape[0] != n or logits.shape[1] < 2:
        raise ValueError(
            f"{name} must return logits of shape N x K (N = {n} inputs, K >= 2 classes), got "
            f"shape {tuple(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise TypeError(f"{name} must return floating-point logits, got dtype {logits.dtype}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(f"{name} returned non-finite logits (NaN or inf)")
    return logits


# -- numbers ---------------------------------------------------------------------------------


def check_int(value: Any, name: str, low: int | None = None, high: int | None = None) -> int:
    r"""An integer argument (Python or numpy ints; not bool, not float) within ``[low, high]``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def images_in_range(inputs: Any, input_range: str = "check") -> Tensor:
    r"""The images as float32 in ``[0, 1]`` (detached): checked by :func:`format_images`
    (``input_range="check"``), or clamped into ``[0, 1]`` (``"clamp"``: for inputs that only
    leave the range by added noise, as Captum's NoiseTunnel, ``sensitivity_max`` and Quantus'
    robustness metrics make them)."""
    check_choice(input_range, "input_range", ("check", "clamp"))
    try:
        x = format_images(inputs, check_range=input_range == "check").detach().float()
    except ValueError as e:
        if "[0, 1]" not in str(e):
            raise
        raise ValueError(
            f"{e}; inputs that only leave [0, 1] by added noise (Captum's NoiseTunnel, "
            "sensitivity_max, Quantus' robustness metrics) are explained clamped with "
            "input_range='clamp'"
        ) from None
    return x.clamp(0, 1) if input_range == "clamp" else x


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    r"""``value`` when it is one of ``choices``; otherwise a ``ValueError`` naming ``name``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_number(
    value: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
) -> float:
    r"""A finite real number within ``[low, high]`` (``(low, high]`` when ``low_open``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    below = low is not None and (value <= low if low_open else value < low)
    if below or (high is not None and value > high):
        left = "(" if low_open else "["
        raise ValueError(f"{name} must be in {left}{low}, {high}], got {value}")
    return value


# -- seeds -----------------------------------------------------------------------------------


def _fresh_seed() -> int:
    # seed=None: a random result, drawn (once) from torch's global generator like any torch call
    return int(torch.randint(2**62, (1,)).item())


def as_generator(
    seed: SeedLike, device: torch.device | str = "cpu", name: str = "seed"
) -> torch.Generator:
    r"""A ``torch.Generator`` from ``seed``: a generator is used as given; an int seeds a new
    one on ``device``; ``None`` seeds a new one from torch's global generator."""
    if isinstance(seed, torch.Generator):
        return seed
    value = _fresh_seed() if seed is None else check_int(seed, name, 0)
    return torch.Generator(device=device).manual_seed(value)


def base_seed(seed: SeedLike, name: str = "seed") -> int:
    r"""The integer the per-image seeds derive from: the int itself, a draw from a given
    generator (so a generator advances as it would for any other use), or a fresh seed."""
    if isinstance(seed, torch.Generator):
        return int(torch.randint(2**62, (1,), generator=seed, device=seed.device).item())
    if seed is None:
        return _fresh_seed()
    return check_int(seed, name, 0)


# independent streams of per-image seeds: one for the sampler's draws, one for region sources;
# CALL_STREAM seeds one generator for a whole call (keyed by its first index), for code that
# takes no per-image generators (a user's in-filler in FIDO)
SAMPLING_STREAM, REGION_STREAM, CALL_STREAM = 0, 1, 2


def derive_seed(*keys: int) -> int:
    r"""``numpy.random.SeedSequence(keys)`` reduced to 62 bits: independent seeds for distinct
    key tuples, the same on every machine and in every process."""
    words = np.random.SeedSequence(list(keys)).generate_state(2, np.uint32)
    return (int(words[0]) << 30) ^ int(words[1])


def image_seeds(seed: int, n: int, offset: int = 0, stream: int = SAMPLING_STREAM) -> list[int]:
    r"""The seed of image ``offset + i`` for ``i < n``: ``derive_seed(seed, index, stream)``.
    Independent for every ``(seed, index, stream)``."""
    return [derive_seed(seed, index, stream) for index in range(offset, offset + n)]


def per_input(args: Sequence[Any], n: int, fn: Callable[[Tensor], Tensor]) -> tuple:
    r"""Extra forward arguments ``args`` with ``fn`` applied to each tensor of ``n`` rows (an
    argument given per input, to be cut, repeated or moved with the inputs); the others as they
    are."""
    return tuple(fn(a) if isinstance(a, Tensor) and a.ndim and a.shape[0] == n else a for a in args)


def image_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    r"""A generator on ``device`` seeded with one of :func:`image_seeds`."""
    return torch.Generator(device=device).manual_seed(seed)


#: held while torch's global generator is seeded and restored (:func:`seeded_global_rng`)
GLOBAL_RNG_LOCK = threading.RLock()


@contextlib.contextmanager
def seeded_global_rng(seed: int | None, device: torch.device | str = "cpu") -> Iterator[None]:
    r"""Seed torch's global generator(s) for the body and restore them afterwards.

    For code that draws from the global generator and takes no ``generator`` (Captum's
    ``NoiseTunnel``, user region callables): the draws repeat with ``seed`` and the caller's
    global random state is left exactly as it was. ``seed=None`` only saves and restores (for
    code whose draws must not leak into the caller's stream, e.g. a network's initialisation
    before its weights are loaded).

    The body runs under :data:`GLOBAL_RNG_LOCK`, one process-wide lock: the global generator is
    one per process, so two threads seeding and restoring it at once would draw each other's
    numbers. Seeded calls in parallel threads therefore give the results of the same calls made
    alone, at the price of running these sections one at a time.
    """
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    with (
        GLOBAL_RNG_LOCK,
        torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"),
    ):
        if seed is not None:
            torch.manual_seed(seed)
        yield


# -- the user's model ------------------------------------------------------------------------


def built_without_drawing(factory: Callable[[], ModuleT]) -> ModuleT:
    r"""``factory()`` built on the meta device, then given empty CPU storage: no weight is
    initialised, so torch's global generator is not drawn from (and no time is spent on an
    initialisation that the loaded weights replace). The caller fills every parameter and
    buffer: a strict ``load_state_dict`` and the module's non-persistent buffers."""
    with torch.device("meta"):
        module = factory()
    return module.to_empty(device="cpu")


def _modules(forward_func: Callable[..., Any]) -> list[nn.Module]:
    owner = forward_func if isinstance(forward_func, nn.Module) else None
    if owner is None:  # a bound method of a module, e.g. model.forward or model.logits
        bound = getattr(forward_func, "__self__", None)
        owner = bound if isinstance(bound, nn.Module) else None
    return list(owner.modules()) if owner is not None else []


@contextlib.contextmanager
def model_left_as_given(*funcs: Callable[..., Any] | None) -> Iterator[None]:
    r"""Run ``nn.Module`` callables in eval mode for the body, then restore each module's
    ``training`` flag. Dropout and batch-norm statistics of a model in train mode would make
    results random and change the model; the library's gradients are taken with
    ``torch.autograd.grad`` for the inputs only, so no ``.grad`` of a parameter is written."""
    modes: dict[nn.Module, bool] = {}
    for f in funcs:
        if f is None:
            continue
        for m in _modules(f):
            modes.setdefault(m, m.training)
    try:
        for m in modes:
            m.training = False
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


# -- Lightning Fabric --------------------------------------------------------------------------


def make_fabric(
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    precision: str = "32-true",
    strategy: str = "auto",
) -> Any:
    r"""A ``lightning_fabric.Fabric`` (or the same class from the ``lightning`` package),
    imported only when a dataset run or a training run asks for one."""
    try:
        from lightning_fabric import Fabric
    except ImportError:  # pragma: no cover - the `lightning` package ships the same class
        try:
            from lightning.fabric import Fabric  # type: ignore[no-redef]
        except ImportError as e:
            raise ImportError(
                "dataset runs and bridge training need lightning-fabric: "
                "pip install lightning-fabric"
            ) from e
    return Fabric(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        precision=precision,  # type: ignore[arg-type]
        strategy=strategy,
    )


# -- repeatable CUDA kernels -------------------------------------------------------------------


@contextlib.contextmanager
def deterministic_kernels(enabled: bool = True) -> Iterator[None]:
    r"""Deterministic cuDNN and PyTorch kernels for the body (``cudnn.deterministic``, no
    ``cudnn.benchmark``, ``torch.use_deterministic_algorithms(True, warn_only=True)``), then
    the caller's settings back. On CUDA the default kernels of convolution backward passes
    add in a varying order; RCSB's Adam-normalised guidance lifts those last-bit differences
    to visible ones, so without this a seed would not repeat a result on a GPU."""
    if not enabled:
        yield
        return
    import torch.backends.cudnn as cudnn

    before = (
        cudnn.deterministic,
        cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    try:
        cudnn.deterministic, cudnn.benchmark = True, False
        if not before[2]:  # a caller's strict setting is kept as it is
            torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = before[0], before[1]
        torch.use_deterministic_algorithms(before[2], warn_only=before[3])


# -- CPU speed -------------------------------------------------------------------------------


def _flushing() -> bool:
    # no getter exists for torch.set_flush_denormal; a denormal survives a multiplication by
    # one exactly when flush-to-zero / denormals-are-zero are off
    return float(torch.tensor([1e-40], dtype=torch.float32).mul(1.0).item()) == 0.0


@contextlib.contextmanager
def flush_denormal(enabled: bool = True) -> Iterator[None]:
    r"""Flush denormal floats to zero on the CPU for the body, then restore the previous
    setting. Denormals (tiny values in Adam moments, attention and normalisation) make the
    guided step 3-7x slower on x86 CPUs; the results differ only below ``1e-38``."""
    if not enabled:
        yield
        return
    before = _flushing()
    changed = not before and torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if changed:
            torch.set_flush_denormal(False)


def gaussian_blur(x: Tensor, sigma: float, border: str = "zeros") -> Tensor:
    r"""Each channel of ``N x C x H x W`` ``x`` blurred with a separable Gaussian of standard
    deviation ``sigma`` pixels, truncated at ``ceil(3 sigma)``. ``border``: ``"zeros"`` (values
    near the border lose the part of their kernel outside the image) or ``"reflect"`` (the
    radius is capped below the image size). ``sigma == 0`` returns ``x``."""
    if sigma == 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    if border == "reflect":
        radius = max(1, min(radius, x.shape[-1] - 1, x.shape[-2] - 1))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    row, col = k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    if border == "reflect":
        x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
        return F.conv2d(F.conv2d(x, row, groups=c), col, groups=c)
    check_choice(border, "border", ("zeros", "reflect"))
    x = F.conv2d(x, row, padding=(0, radius), groups=c)
    return F.conv2d(x, col, padding=(radius, 0), groups=c)


def progress_disabled(show: bool) -> bool | None:
    r"""tqdm's ``disable`` for a ``show_progress`` flag: ``True`` hides the bar; ``None`` lets
    tqdm hide it by itself when the output is not a terminal (a log file gets no bar lines)."""
    return None if show else True


def captum_attribute(method: Callable[..., Any]) -> Callable[..., Any]:
    r"""Decorate an ``attribute`` method as Captum decorates its own: ``inputs`` may be a
    Tensor or a 1-tuple of one (Captum's ``TensorOrTupleOfTensorsGeneric``, what its metrics and
    wrappers pass), the result comes back in the same form, and the method is wrapped by
    ``captum.log.log_usage`` so that ``attribute.__wrapped__`` exists (Captum's ``NoiseTunnel``
    calls it). A longer tuple is refused with a message naming the way to pass the rest."""
    import functools

    from captum.log import log_usage

    @functools.wraps(method)
    def attribute(self: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        as_tuple = isinstance(inputs, tuple)
        if as_tuple:
            if len(inputs) != 1:
                raise ValueError(
                    f"inputs: {type(self).__name__} explains one image tensor, got a tuple of "
                    f"{len(inputs)}; pass the images alone (or as a 1-tuple) and the model's "
                    "other inputs as additional_forward_args"
                )
            inputs = inputs[0]
        out = method(self, inputs, *args, **kwargs)
        return (out,) if as_tuple else out

    return log_usage()(attribute)
