r"""The guided, truncated, region-constrained I2SB sampling loop of RCSB (official
``sobieskibj/rcsb`` sampling loop).

``ddpm_dps_sampling`` of ``sobieskibj/rcsb`` (``src/inpainters/src_cddb/i2sb/diffusion.py``),
re-stated: start from the OT-ODE bridge marginal at ``start_step - 1`` between the image and its
noise-filled copy, walk the I2SB step grid down with the OT-ODE posterior, shift ``x_n`` by the
guidance before each posterior step (x̂0 is the pre-guidance estimate, not recomputed) and
replace the pixels outside the region by their start values after each step.

Precision: the state ``x_n``, x̂0, the guidance state and the posterior run in float32 whatever
``precision`` says; only the network's forward (and its backward, for the guidance gradient)
runs under autocast. Nothing in the loop reads a value back to the host: a NaN from the network
or the classifier is recorded on the device with its step and reported after the loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import get_args

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._utils import check_choice, check_int, check_number, progress_disabled
from .bridge.bridge import Bridge
from .bridge.schedule import BridgeSchedule, space_indices
from .config import GuidanceGrad, GuidanceSchedule, Sampler
from .guidance import ClassifierGuidance

__all__ = [
    "INTEGRATORS",
    "GUIDANCE_GRADS",
    "GuidedEstimate",
    "GUIDANCE_SCHEDULES",
    "PRECISIONS",
    "SAMPLERS",
    "autocast",
    "guidance_weights",
    "native_bf16",
    "resolve_precision",
    "StepContext",
    "bridge_mean",
    "dbim2_step",
    "heun_step",
    "i2sb_step",
    "i3sb_coefficients",
    "i3sb_step",
    "sample_rcsb",
]

#: The bridge network's dtype under autocast, per ``precision`` (``"auto"`` resolves to one
#: of these, :func:`resolve_precision`).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Where the classifier's gradient is taken (``guidance_grad``; the choices are the config's type).
GUIDANCE_GRADS: tuple[str, ...] = get_args(GuidanceGrad)
#: The bridge integrators (``sampler``).
SAMPLERS: tuple[str, ...] = get_args(Sampler)
#: How the guidance scale varies along the steps (``guidance_schedule``).
GUIDANCE_SCHEDULES: tuple[str, ...] = get_args(GuidanceSchedule)


def guidance_weights(schedule: BridgeSchedule, steps: Sequence[int], kind: str) -> list[float]:
    r"""Per-step multipliers of the guidance scale over the trajectory's steps ``steps`` (grid
    indices, first step first). ``"constant"``: 1 at every step (the official).
    ``"sigma"``: ``sigma_n / sigma_first``, the bridge's noise level relative to the first
    step's, so the push fades as the trajectory settles and the last, nearly noiseless steps
    (where a pixel-wise push can no longer be smoothed by the bridge) are left almost
    unguided."""
    if check_choice(kind, "guidance_schedule", GUIDANCE_SCHEDULES) == "constant":
        return [1.0] * len(steps)
    std = schedule.std_fwd
    return [float(std[n] / std[steps[0]]) for n in steps]


def native_bf16(device: torch.device) -> bool:
    r"""Whether bf16 autocast is expected to beat float32 on ``device``: CUDA devices that
    compute bf16 without emulation (Ampere and newer), and CPUs with AMX-BF16 (matrix tiles).

    On CPUs with only AVX512-BF16 the gain was not reliable: measured with the shipped models
    (2 cores, ``benchmarks/realism.py --time``), bf16 ran a guided step 1.3-1.4x faster on an
    AMD EPYC and 0.84x as fast (slower) on an Intel Xeon, both reporting ``avx512_bf16``; without
    it, 1.3-1.5x slower. The choice is made from the device's flags, never from a timing, so
    that a result does not depend on the machine's load; pass ``precision="bf16"`` where it
    measures faster."""
    if device.type == "cuda":
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch before the argument existed
            return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type != "cpu":
        return False
    caps = getattr(torch.cpu, "get_capabilities", None)
    if caps is not None:
        return bool(caps().get("amx_bf16"))
    try:  # older torch: the kernel's CPU flags
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read().split()
    except OSError:
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    r"""``precision`` with ``"auto"`` made concrete for ``device``: ``"bf16"`` where
    :func:`native_bf16`, else ``"fp32"``; the other names are returned as they are."""
    check_choice(precision, "precision", (*PRECISIONS, "auto"))
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    r"""``torch.autocast`` for ``"bf16"`` / ``"fp16"`` on ``device``; a no-op for ``"fp32"``."""
    dtype = PRECISIONS[check_choice(precision, "precision", sorted(PRECISIONS))]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def checkpointed_blocks(bridge: Bridge, enabled: bool) -> Iterator[None]:
    r"""Turn on per-block activation checkpointing (non-reentrant ``torch.utils.checkpoint``)
    of the bridge's ADM blocks for the body, then restore each block's setting."""
    blocks = [m for m in bridge.modules() if hasattr(m, "use_checkpoint")]
    before = [bool(getattr(m, "use_checkpoint")) for m in blocks]  # noqa: B009
    try:
        if enabled:
            for m in blocks:
                setattr(m, "use_checkpoint", True)  # noqa: B010
        yield
    finally:
        for m, b in zip(blocks, before, strict=True):
            setattr(m, "use_checkpoint", b)  # noqa: B010


def _hole_noise(
    images: Tensor, generator: torch.Generator | Sequence[torch.Generator] | None
) -> Tensor:
    # one generator per image: image i's noise does not depend on the rest of the batch
    if generator is None or isinstance(generator, torch.Generator):
        device = generator.device if generator is not None else images.device
        eps = torch.randn(images.shape, generator=generator, dtype=images.dtype, device=device)
        return eps.to(images.device)
    if len(generator) != images.shape[0]:
        raise ValueError(f"generator: need one per image ({images.shape[0]}), got {len(generator)}")
    return torch.stack(
        [
            torch.randn(images.shape[1:], generator=g, dtype=images.dtype, device=g.device).to(
                images.device
            )
            for g in generator
        ]
    )


class _Region:
    r"""The region constraint: the pixels outside ``mask`` keep their start values."""

    def __init__(self, mask: Tensor, start: Tensor) -> None:
        self.mask, self.start = mask, start

    def keep(self, x: Tensor) -> Tensor:
        return torch.where(self.mask, x, self.start)


Estimate = Callable[[Tensor, int], Tensor]


class GuidedEstimate:
    r"""How the classifier's gradient enters a step: returns ``(x_tilde, x0_hat)``, the guided
    state and the bridge's x̂0 (taken before the guidance shift, as the official loop does).

    ``guidance_grad`` ``"xt"`` back-propagates the classifier's objective through the bridge
    to ``x_n``; ``"x0"`` takes it at x̂0 (no backward pass through the bridge); ``"xt-x0"``
    switches from the first to the second once the noise level falls below ``guidance_switch``
    times the first step's. With ``guidance_interval`` k > 1 the gradient is taken at every
    k-th step only and the last update is applied again in between, rescaled by the schedule's
    weight. Adam, the adaptive normalisation, smoothing and shifts live in the
    :class:`~rcsb_captum.guidance.ClassifierGuidance` it drives.
    """

    def __init__(
        self,
        guidance: ClassifierGuidance | None,
        estimate: Estimate,
        schedule: BridgeSchedule,
        steps: Sequence[int],
        *,
        guidance_grad: str = "xt",
        guidance_schedule: str = "constant",
        guidance_interval: int = 1,
        guidance_switch: float = 0.5,
    ) -> None:
        self.guidance = guidance
        self.estimate = estimate
        self.guided = guidance is not None and guidance.scale != 0
        self.weights = guidance_weights(schedule, steps, guidance_schedule)
        self.interval = check_int(guidance_interval, "guidance_interval", 1)
        switch = check_number(guidance_switch, "guidance_switch", 0, 1)
        sigma = schedule.std_fwd
        self.at_x0 = [
            guidance_grad == "x0"
            or (guidance_grad == "xt-x0" and float(sigma[n]) < switch * float(sigma[steps[0]]))
            for n in steps
        ]
        self.last_update: Tensor | None = None  # the latest update and its step's weight
        self.last_weight = 1.0

    def __call__(self, i: int, x: Tensor, n: int) -> tuple[Tensor, Tensor]:
        w = self.weights[i]
        if not self.guided:
            with torch.no_grad():
                return x, self.estimate(x, n)
        assert self.guidance is not None
        if self.last_update is not None and i % self.interval != 0:  # reuse the last update
            with torch.no_grad():
                x0_hat = self.estimate(x, n)
            return x + self.last_update * (w / self.last_weight), x0_hat
        if self.at_x0[i]:  # the classifier's gradient at x0_hat
            with torch.no_grad():
                x0_hat = self.estimate(x, n)
            with torch.enable_grad():
                x0_in = x0_hat.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(self.guidance.objective(x0_in), x0_in)
        else:  # through the bridge, to x_n
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(True)
                x0_hat = self.estimate(x_in, n)
                (grad,) = torch.autograd.grad(self.guidance.objective(x0_hat), x_in)
            x0_hat = x0_hat.detach()
        self.last_update, self.last_weight = self.guidance.step(grad, w), w
        return x + self.last_update, x0_hat


@dataclass
class StepContext:
    r"""What an integrator may use besides the state and the step's x̂0.

    Attributes:
        schedule (BridgeSchedule): The bridge's schedule.
        estimate (callable): ``estimate(x, n)``, the bridge's x̂0 (a network forward).
        region (_Region): The region constraint (``region.keep(x)``).
        x1 (Tensor): The bridge's other end, I2SB's corrupted image in ``[-1, 1]`` (the input
            outside the region, the scaled noise fill inside).
        eta (float): Stochasticity of the non-Markovian step (``"i3sb"``; 0: deterministic).
        noise (callable): ``noise()``, fresh standard normal noise like the state, drawn from
            the per-image generators (so an image's draw does not depend on the batch).
        history (list): ``(n, x0_hat)`` of the earlier steps, the latest last (multistep).
        first (bool): This is the trajectory's first step.
    """

    schedule: BridgeSchedule
    estimate: Estimate
    region: _Region
    x1: Tensor
    eta: float = 0.0
    noise: Callable[[], Tensor] | None = None
    history: list[tuple[int, Tensor]] = field(default_factory=list)
    first: bool = True


def i2sb_step(ctx: StepContext, x: Tensor, x0_hat: Tensor, n: int, prev: int) -> Tensor:
    r"""I2SB's OT-ODE posterior step from grid index ``n`` to ``prev`` (the official)."""
    return ctx.schedule.posterior(prev, n, x, x0_hat, ot_ode=True).detach()


def heun_step(ctx: StepContext, x: Tensor, x0_hat: Tensor, n: int, prev: int) -> Tensor:
    r"""Heun's second-order step of ``dx/ds = (x - x0_hat(x, s)) / s`` with ``s = sigma^2``
    (Karras et al., NeurIPS 2022, Alg. 1): one more bridge forward at ``prev``; the plain
    (I2SB) step into ``s = 0``."""
    if prev == 0:
        return i2sb_step(ctx, x, x0_hat, n, prev)
    schedule = ctx.schedule
    s_n = float(schedule.std_fwd[n]) ** 2
    s_prev = float(schedule.std_fwd[prev]) ** 2
    d1 = (x - x0_hat) / s_n
    x_euler = ctx.region.keep(x + (s_prev - s_n) * d1)
    with torch.no_grad():
        x0_next = ctx.estimate(x_euler, prev)
    d2 = (x_euler - x0_next) / s_prev
    return (x + (s_prev - s_n) * (d1 + d2) / 2).detach()


def bridge_mean(schedule: BridgeSchedule, m: int, x0: Tensor, x1: Tensor) -> Tensor:
    r"""The bridge marginal's mean at grid index ``m``, ``mu_x0[m] x0 + mu_x1[m] x1`` (I2SB
    eq. 11); its standard deviation is ``schedule.std_sb[m]``."""
    return float(schedule.mu_x0[m]) * x0 + float(schedule.mu_x1[m]) * x1


def i3sb_coefficients(
    schedule: BridgeSchedule, n: int, prev: int, eta: float
) -> tuple[float, float]:
    r"""``(k, g)`` of I3SB's non-Markovian step from ``n`` to ``prev``: the weight of the
    state's deviation from the bridge mean and the standard deviation of the fresh noise.

    ``g = eta * sigma_prev * sqrt(sigma_n^2 - sigma_prev^2) / sigma_n`` (the I2SB posterior's
    standard deviation times ``eta``), capped at ``std_sb[prev]``, and ``k = sqrt(std_sb[prev]^2
    - g^2) / std_sb[n]`` (Wang et al., "Implicit Image-to-Image Schrödinger Bridge", Pattern
    Recognition 2025; ``wangya22/I3SB``, ``i3sb_p_posterior``, where ``k`` is written with the
    forward and backward standard deviations: ``sigma sigma-bar / sqrt(sigma^2 + sigma-bar^2)``
    is ``std_sb``). Computed in float64."""
    var_n = schedule.std_fwd[n] ** 2
    var_prev = schedule.std_fwd[prev] ** 2
    g = eta * (var_prev * (var_n - var_prev) / var_n) ** 0.5
    sb_prev, sb_n = schedule.std_sb[prev], schedule.std_sb[n]
    g = min(g, sb_prev)
    k = max(sb_prev**2 - g**2, 0.0) ** 0.5 / sb_n
    return float(k), float(g)


def i3sb_step(ctx: StepContext, x: Tensor, x0_hat: Tensor, n: int, prev: int) -> Tensor:
    r"""I3SB's non-Markovian step (Wang et al., Pattern Recognition 2025, the DDIM analogue of
    I2SB on unchanged I2SB checkpoints): ``x_prev = mean(prev) + k (x - mean(n)) + g eps``
    with ``mean(m) = mu_x0[m] x0_hat + mu_x1[m] x1`` (x1 the corrupted image) and ``(k, g)``
    from :func:`i3sb_coefficients`; no noise into step 0. At ``eta = 0`` it is deterministic and
    equals DBIM's first-order step (Zheng et al., "Diffusion Bridge Implicit Models", ICLR
    2025) for this bridge, whose marginal is ``N(mu_x0 x0 + mu_x1 x1, std_sb^2)``. As in
    I3SB's sampler, the first step of a trajectory is I2SB's posterior step."""
    if ctx.first:
        return i2sb_step(ctx, x, x0_hat, n, prev)
    k, g = i3sb_coefficients(ctx.schedule, n, prev, ctx.eta)
    s = ctx.schedule
    out = bridge_mean(s, prev, x0_hat, ctx.x1) + k * (x - bridge_mean(s, n, x0_hat, ctx.x1))
    if g > 0 and prev > 0:
        assert ctx.noise is not None
        out = out + g * ctx.noise()
    return out.detach()


def _lam(schedule: BridgeSchedule, m: int) -> float:
    # DBIM's exponential-integrator variable for this bridge: mu_x0 / std_sb
    return float(schedule.mu_x0[m] / schedule.std_sb[m])


def dbim2_step(ctx: StepContext, x: Tensor, x0_hat: Tensor, n: int, prev: int) -> Tensor:
    r"""Second-order multistep solver of DBIM's deterministic bridge ODE (Zheng et al., ICLR
    2025, the high-order samplers), in the form of DPM-Solver++(2M) (Lu et al., 2022): with
    ``y = (x - mu_x1 x1) / std_sb`` and ``lam = mu_x0 / std_sb`` the ODE is ``dy/dlam =
    x0_hat``; the first-order step ``y' = y + (lam' - lam) x0_hat`` is :func:`i3sb_step` at
    ``eta = 0``, and the second-order one replaces ``x0_hat`` by ``x0_hat + (x0_hat -
    x0_prev) h / (2 h_prev)`` (``h = lam' - lam``, ``h_prev`` the previous step's), reusing the
    previous step's estimate: no extra network forward. First order at the first step (no
    history) and into step 0 (DPM-Solver++'s lower order at the final step)."""
    s = ctx.schedule
    lam_n, lam_prev = _lam(s, n), _lam(s, prev)
    d = x0_hat
    if ctx.history and prev > 0:
        n_last, x0_last = ctx.history[-1]
        h, h_last = lam_prev - lam_n, lam_n - _lam(s, n_last)
        d = x0_hat + (h / (2 * h_last)) * (x0_hat - x0_last)
    c_n, c_prev = float(s.std_sb[n]), float(s.std_sb[prev])
    y = (x - float(s.mu_x1[n]) * ctx.x1) / c_n
    y_prev = y + (lam_prev - lam_n) * d
    return (float(s.mu_x1[prev]) * ctx.x1 + c_prev * y_prev).detach()


Integrator = Callable[[StepContext, Tensor, Tensor, int, int], Tensor]

#: The integrators by name (``sample_rcsb(sampler=...)``).
INTEGRATORS: dict[str, Integrator] = {
    "i2sb": i2sb_step,
    "heun": heun_step,
    "i3sb": i3sb_step,
    "dbim2": dbim2_step,
}


def sample_rcsb(
    bridge: Bridge,
    images: Tensor,
    region: Tensor,
    guidance: ClassifierGuidance | None,
    start_step: int = 600,
    nfe: int = 100,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    show_progress: bool = False,
    precision: str = "fp32",
    gradient_checkpointing: bool = False,
    guidance_grad: str = "xt",
    sampler: str = "i2sb",
    guidance_schedule: str = "constant",
    guidance_interval: int = 1,
    guidance_switch: float = 0.5,
    noise_temperature: float = 1.0,
    sampler_eta: float = 0.0,
    callback: Callable[[int, Tensor, Tensor], None] | None = None,
) -> Tensor:
    r"""Counterfactuals in ``[0, 1]``; pixels where ``region == 0`` equal ``images`` bit for bit.

    The loop: for each step, :class:`GuidedEstimate` gives the guided state and x̂0, the
    integrator named by ``sampler`` (:data:`INTEGRATORS`) steps to the next noise level, and
    the pixels outside the region are put back.

    Args:
        bridge (Bridge): The inpainting bridge.
        images (Tensor): ``N x C x H x W`` float32 in ``[0, 1]``.
        region (Tensor): ``N x 1 x H x W`` binary, 1 = may change.
        guidance (ClassifierGuidance, optional): ``None`` gives plain (unguided) inpainting.
        start_step (int): Truncation ``S`` (the trajectory starts at grid index ``S - 1``).
        nfe (int): Number of network evaluations (steps).
        generator (torch.Generator or sequence of them, optional): Source of the hole noise;
            one generator per image makes each image's draw independent of the batch.
        show_progress (bool): tqdm bar over the steps.
        precision (str): ``"fp32"``, ``"bf16"`` or ``"fp16"``: autocast of the network;
            ``"auto"``: bf16 where the device computes it natively (:func:`native_bf16`),
            else fp32.
        gradient_checkpointing (bool): Activation checkpointing of the network's blocks.
        guidance_grad (str): ``"xt"``: the classifier's gradient back-propagated through the
            bridge to ``x_n`` (the official RCSB); ``"x0"``: the classifier's gradient at the
            estimate x̂0, applied to ``x_n`` with no backward pass through the bridge (as
            FastDiME, Weng et al. 2024): one network forward per step instead of a forward and
            a backward. ``"xt-x0"``: ``"xt"`` while the noise level is at least
            ``guidance_switch`` times the first step's, ``"x0"`` after: since
            ``x0_hat = x_n - sigma_n * net(x_n)``, ``d x0_hat / d x_n = I - sigma_n * d net /
            d x_n`` tends to the identity as ``sigma_n`` falls, so the cheap gradient is the
            exact one's low-noise limit.
        sampler (str): ``"i2sb"``: I2SB's OT-ODE posterior step (the official). ``"heun"``:
            the same probability-flow ODE integrated with Heun's second-order method. With
            ``s = sigma_n^2`` the OT-ODE posterior ``x' = x0_hat + (s' / s)(x - x0_hat)`` is
            exactly the Euler step of ``dx/ds = (x - x0_hat(x, s)) / s``; ``"heun"`` adds one
            network forward at ``s'`` and averages the two slopes (Karras et al., NeurIPS
            2022, Alg. 1), and takes the plain Euler (I2SB) step into ``s' = 0``. It reduces
            to ``"i2sb"`` whenever the two estimates of x0 agree. ``"i3sb"``: I3SB's
            non-Markovian step (Wang et al., Pattern Recognition 2025) with ``sampler_eta``:
            it keeps the part of the state the x̂0 estimate does not explain, scaled to the
            bridge marginal's spread (:func:`i3sb_step`; at ``eta = 0`` DBIM's first-order
            step). ``"dbim2"``: the second-order multistep solver of the same bridge ODE
            (DBIM's high-order sampler, :func:`dbim2_step`), no extra network forward.
        guidance_schedule (str): ``"constant"`` (the official) or ``"sigma"`` (the scale
            fades with the noise level; see :func:`guidance_weights`).
        guidance_interval (int): The classifier's gradient is taken at every
            ``guidance_interval``-th step (1, the official: every step). In between, the bridge
            runs forward only (no graph, no backward pass, no classifier) and the last guidance
            update is applied again, rescaled by the schedule's weight: the gradient is taken
            as constant over ``guidance_interval`` neighbouring steps, so the total push matches
            the every-step loop at about ``(1 + 0.4 (k - 1)) / k`` of its cost (a bare forward
            costs about 0.4 of a guided step on the shipped models); docs, "Speed and realism".
        guidance_switch (float): With ``guidance_grad="xt-x0"``: the noise level, relative to
            the first step's, below which the gradient is taken at x̂0 (0.5: about the first
            half of the steps through the bridge; 1: all but the first step at x̂0; 0: none).
        noise_temperature (float): Standard deviation of the Gaussian noise that fills the
            region in the corrupted image ``x1`` (1: I2SB's inpainting corruption, the
            official). Below 1 the trajectory starts at a lower temperature, as in reduced-
            temperature sampling of flows and diffusion models (Kingma & Dhariwal, Glow,
            NeurIPS 2018; the truncation trick of Brock et al., ICLR 2019): the OT-ODE maps
            the fill deterministically to x0, and a small bridge passes part of the noise's
            pattern through as invented texture. At 0 the region starts as the input blended
            toward mid-grey (the fill's mean), with no noise: the same start for every seed.
        sampler_eta (float): With ``sampler="i3sb"``: the stochasticity of I3SB's
            non-Markovian step (0, the default: deterministic; I3SB's own default is 0.6 at 25
            steps). Its noise is drawn, after the region's fill, from the same per-image
            generators.
        callback (callable, optional): ``callback(step, state, x0_hat)`` after each step
            (0-based step, the state in ``[-1, 1]`` after the step, the step's x̂0), for
            figures, tests and benchmarks; it must not modify the tensors.

    Raises:
        FloatingPointError: the network or the classifier produced NaN / inf; says at which
            step of the trajectory it first happened.
    """
    schedule = bridge.schedule
    integrate = INTEGRATORS[check_choice(sampler, "sampler", SAMPLERS)]
    check_choice(guidance_grad, "guidance_grad", GUIDANCE_GRADS)
    if not 2 <= start_step <= schedule.interval:
        raise ValueError(f"start_step must be in [2, {schedule.interval}], got {start_step}")
    if not 1 <= nfe <= start_step - 1:
        raise ValueError(f"nfe must be in [1, start_step - 1 = {start_step - 1}], got {nfe}")
    precision = resolve_precision(precision, images.device)
    held = bridge.dtype
    if (
        held != torch.float32
        and PRECISIONS[check_choice(precision, "precision", sorted(PRECISIONS))] != held
    ):
        name = next((k for k, v in PRECISIONS.items() if v == held), str(held))
        raise ValueError(
            f"precision: the bridge holds {name} weights, so it must run with "
            f"precision={name!r} (got {precision!r}); or load it in float32"
        )
    device = images.device
    x_gt = images * 2 - 1
    mask = region.to(images.dtype).expand_as(images).bool()
    check_number(noise_temperature, "noise_temperature", 0)
    # the official corruption is N(0, 1) in the region (x * 1.0 is x bit for bit)
    x1 = torch.where(mask, _hole_noise(images, generator) * noise_temperature, x_gt)
    x = schedule.marginal(start_step - 1, x_gt, x1, ot_ode=True)
    x = torch.where(mask, x, x_gt)  # exact outside the region (mu_x0 + mu_x1 == 1)
    grid = space_indices(start_step, nfe + 1)
    pairs = list(zip(grid[:-1], grid[1:], strict=True))[::-1]

    def estimate(x_in: Tensor, n: int) -> Tensor:
        with autocast(precision, device):
            out = bridge.predict_x0(x_in, n)
        return out.float()

    guide = GuidedEstimate(
        guidance,
        estimate,
        schedule,
        [n for _, n in pairs],
        guidance_grad=guidance_grad,
        guidance_schedule=guidance_schedule,
        guidance_interval=guidance_interval,
        guidance_switch=guidance_switch,
    )
    state = _Region(mask, x)
    eta = check_number(sampler_eta, "sampler_eta", 0)
    if eta and sampler != "i3sb":
        raise ValueError(f"sampler_eta applies to sampler='i3sb' only, got sampler={sampler!r}")
    ctx = StepContext(
        schedule,
        estimate,
        state,
        x1,
        eta=eta,
        noise=lambda: torch.where(mask, _hole_noise(images, generator), 0.0),
    )
    # first step (grid index) with a non-finite estimate, -1 while none: kept on the device
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    with checkpointed_blocks(bridge, gradient_checkpointing and guide.guided):
        for i, (prev, n) in tqdm(
            enumerate(pairs),
            total=len(pairs),
            disable=progress_disabled(show_progress),
            desc="RCSB",
            leave=False,
        ):
            x_tilde, x0_hat = guide(i, x, n)
            x = state.keep(integrate(ctx, x_tilde, x0_hat, n, prev))
            ctx.history.append((n, x0_hat))
            del ctx.history[:-2]  # what a multistep integrator may read
            ctx.first = False
            here = torch.full((), n, dtype=torch.long, device=device)  # a fill, not a host copy
            first_bad = torch.where(~torch.isfinite(x).all() & (first_bad < 0), here, first_bad)
            if callback is not None:
                callback(i, x, x0_hat)
    if int(first_bad) >= 0:
        step = int(first_bad)
        index = [n for _, n in pairs].index(step)
        raise FloatingPointError(
            f"sampling produced NaN or inf at step {index + 1} of {len(pairs)} (bridge step "
            f"{step}): the classifier's logits or the bridge's estimate became non-finite "
            "(check forward_func on images in [0, 1], guidance_scale and precision)"
        )
    out = (x.clamp(-1, 1) + 1) / 2
    # bit-for-bit: outside the region return the caller's pixels, not a round trip through [-1, 1]
    return torch.where(mask, out, images)
