import pytest
import torch

from rcsb_captum import RCSB, MaskRegion
from rcsb_captum.bridge.schedule import BridgeSchedule, space_indices
from rcsb_captum.guidance import (
    REFERENCE_NUMEL,
    SHIFTS,
    ClassifierGuidance,
    gaussian_smooth,
    shift_image,
)
from rcsb_captum.sampler import guidance_weights, sample_rcsb


def _guidance(normalization: str, scale: float = 1.5) -> ClassifierGuidance:
    return ClassifierGuidance(
        lambda x: x.flatten(1)[:, :3],
        target=torch.zeros(2, dtype=torch.long),
        counterfactual_target=None,
        scale=scale,
        norm=normalization,
    )


def _first_update(normalization: str, shape, weight: float = 1.0) -> torch.Tensor:
    grad = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    return _guidance(normalization).step(grad, weight)


def test_rms_is_the_official_l2_at_the_papers_resolution():
    shape = (3, 256, 256)
    assert torch.equal(_first_update("rms", shape), _first_update("l2", shape))


@pytest.mark.parametrize("shape", [(1, 32, 32), (3, 128, 128), (3, 512, 512)])
def test_rms_gives_every_size_the_papers_per_element_strength(shape):
    l2 = _first_update("l2", shape).flatten(1)
    rms = _first_update("rms", shape).flatten(1)
    # "l2": the first update's norm is the scale whatever the size ...
    assert torch.allclose(l2.norm(dim=1), torch.full((2,), 1.5), rtol=1e-5)
    # ... "rms": its root mean square is the scale over sqrt(3 * 256 * 256)
    target = 1.5 / REFERENCE_NUMEL**0.5
    assert torch.allclose(rms.pow(2).mean(1).sqrt(), torch.full((2,), target), rtol=1e-5)


def test_step_weight_scales_the_update_linearly():
    shape = (1, 8, 8)
    assert torch.allclose(_first_update("l2", shape, 0.25), 0.25 * _first_update("l2", shape))


def test_sigma_schedule_fades_with_the_noise_level():
    schedule = BridgeSchedule(interval=1000)
    grid = space_indices(600, 26)
    steps = [n for n in grid[1:]][::-1]  # first step first, as the sampler walks them
    w = guidance_weights(schedule, steps, "sigma")
    assert w[0] == 1.0 and all(a > b for a, b in zip(w, w[1:], strict=False))
    assert w[-1] == pytest.approx(schedule.std_fwd[steps[-1]] / schedule.std_fwd[steps[0]])
    assert guidance_weights(schedule, steps, "constant") == [1.0] * len(steps)
    with pytest.raises(ValueError, match="guidance_schedule"):
        guidance_weights(schedule, steps, "cosine")


def _box(n=2):
    m = torch.zeros(n, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    return m


_OPTIONS_KW = dict(start_step=200, nfe=10, n_samples=1)


def _guided_inputs(classifier):
    # conftest's ``images`` (function-scoped) twice over, here for the module-scoped baseline
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    x = images.repeat(2, 1, 1, 1)
    return x, (classifier(x).argmax(1) + 1) % 5


@pytest.fixture(scope="module")
def unguided_probability(classifier, tiny_bridge):
    # the counterfactual class's mean probability without guidance: one run that every
    # option below is compared with (at scale 0 an option has nothing to change); it keeps
    # the outside exact and repeats with its seed, as the guided runs must
    x, cf = _guided_inputs(classifier)
    rcsb = RCSB(classifier, tiny_bridge, MaskRegion(_box(4)), guidance_scale=0.0, **_OPTIONS_KW)
    res = rcsb.generate(x, counterfactual_target=cf, seed=0)
    outside = (res.regions == 0).expand_as(x)
    assert torch.equal(res.counterfactuals[outside], x[outside])
    assert torch.equal(rcsb.generate(x, counterfactual_target=cf, seed=0).samples, res.samples)
    return res.probs_after.gather(1, cf[:, None]).mean().item()


@pytest.mark.parametrize(
    "options",
    [
        dict(guidance_norm="rms"),
        dict(guidance_schedule="sigma"),
        dict(guidance_smoothing=1.0),
        dict(guidance_interval=3),
        dict(guidance_grad="xt-x0"),
        dict(guidance_shifts=5),
        dict(guidance_adam="image"),
        dict(guidance_until=0.9),
    ],
    ids=["rms", "sigma", "smoothing", "interval", "xt-x0", "shifts", "adam-image", "until"],
)
def test_new_guidance_options_keep_outside_exact_repeat_and_guide(
    classifier, tiny_bridge, options, unguided_probability
):
    x, cf = _guided_inputs(classifier)
    # rms at 3 x 32 x 32 needs sqrt(3 * 256 * 256 / (3 * 32 * 32)) = 8 times l2's scale
    strong = 24.0 if options.get("guidance_norm") == "rms" else 3.0
    rcsb = RCSB(
        classifier,
        tiny_bridge,
        MaskRegion(_box(4)),
        guidance_scale=strong,
        **_OPTIONS_KW,
        **options,
    )
    res = rcsb.generate(x, counterfactual_target=cf, seed=0)
    outside = (res.regions == 0).expand_as(x)
    assert torch.equal(res.counterfactuals[outside], x[outside])
    assert torch.equal(rcsb.generate(x, counterfactual_target=cf, seed=0).samples, res.samples)
    assert res.probs_after.gather(1, cf[:, None]).mean().item() > unguided_probability


def test_rms_equals_l2_at_the_equivalent_scale(classifier, tiny_bridge, images):
    kw = dict(start_step=100, nfe=5, n_samples=1)
    ratio = (REFERENCE_NUMEL / images[0].numel()) ** 0.5  # 8 at 3 x 32 x 32
    l2 = RCSB(classifier, tiny_bridge, MaskRegion(_box()), guidance_scale=1.5, **kw)
    rms = RCSB(
        classifier,
        tiny_bridge,
        MaskRegion(_box()),
        guidance_scale=1.5 * ratio,
        guidance_norm="rms",
        **kw,
    )
    a = l2.generate(images, target=0, seed=0).samples
    b = rms.generate(images, target=0, seed=0).samples
    assert torch.allclose(a, b, atol=1e-5)
    sigma = RCSB(
        classifier, tiny_bridge, MaskRegion(_box()), guidance_schedule="sigma", **kw
    ).generate(images, target=0, seed=0)
    assert not torch.allclose(sigma.samples, a, atol=1e-4)  # the schedule matters


def test_gaussian_smooth_spreads_a_point_as_a_gaussian():
    x = torch.zeros(1, 2, 21, 21)
    x[0, 1, 10, 10] = 1.0
    y = gaussian_smooth(x, 1.5)
    assert torch.equal(gaussian_smooth(x, 0), x)
    assert torch.equal(y[0, 0], torch.zeros(21, 21))  # channels stay apart
    assert y.sum().item() == pytest.approx(1.0, abs=1e-6)  # mass kept away from the border
    ratio = (y[0, 1, 10, 11] / y[0, 1, 10, 10]).item()
    assert ratio == pytest.approx(torch.exp(torch.tensor(-1 / (2 * 1.5**2))).item(), rel=1e-5)
    assert torch.allclose(y[0, 1], y[0, 1].T)  # isotropic


def test_smoothing_blurs_the_gradient_before_adam():
    grad = torch.zeros(1, 1, 16, 16)
    grad[0, 0, 8, 8] = 1.0
    official = _guidance("l2").step(grad)
    smooth = ClassifierGuidance(
        lambda x: x.flatten(1)[:, :3],
        target=torch.zeros(1, dtype=torch.long),
        counterfactual_target=None,
        scale=1.5,
        smoothing=1.0,
    ).step(grad)
    # a point gradient: Adam's first step moves one pixel; blurred first, its neighbours too
    assert (official != 0).sum() == 1
    assert (smooth != 0).sum() == 49  # a 7 x 7 kernel (radius ceil(3 sigma))


def _sample(bridge, images, guidance, nfe, **options):
    """``sample_rcsb`` of the box region from step 100, hole noise from seed 0."""
    return sample_rcsb(
        bridge,
        images,
        _box(),
        guidance,
        start_step=100,
        nfe=nfe,
        generator=torch.Generator().manual_seed(0),
        **options,
    )


class _ConstantUpdate(ClassifierGuidance):
    """Guidance whose update ignores the gradient; counts the classifier's calls."""

    calls = 0

    def objective(self, x0_hat):
        self.calls += 1
        return super().objective(x0_hat)

    def step(self, grad, weight=1.0):
        return torch.full_like(grad, 0.01 * weight)


@pytest.mark.parametrize("grad", ["xt", "x0"])
@pytest.mark.parametrize("schedule", ["constant", "sigma"])
def test_interval_reuses_the_last_update_and_skips_the_classifier(
    classifier, tiny_bridge, images, grad, schedule
):
    def run(interval):
        target = torch.zeros(2, dtype=torch.long)
        guidance = _ConstantUpdate(classifier, target=target, counterfactual_target=None, scale=1.5)
        out = _sample(
            tiny_bridge,
            images,
            guidance,
            7,
            guidance_grad=grad,
            guidance_schedule=schedule,
            guidance_interval=interval,
        )
        return out, guidance.calls

    every, calls1 = run(1)
    assert calls1 == 7
    for interval, calls in ((2, 4), (3, 3), (7, 1), (50, 1)):
        # while the update is the same at every step, reusing it is the every-step loop
        out, n = run(interval)
        assert n == calls  # the gradient is taken at steps 0, k, 2k, ... only
        assert torch.allclose(out, every, atol=1e-6)


@pytest.mark.parametrize(
    "grad, switch",
    [("xt", 0.5), ("x0", 0.5), ("xt-x0", 0.5), ("xt-x0", 0.8), ("xt-x0", 0.0), ("xt-x0", 1.0)],
)
def test_xt_x0_backpropagates_through_the_bridge_while_the_noise_is_high(
    classifier, tiny_bridge, images, grad, switch
):
    calls = []  # per network call: is a graph being built through it?
    hook = tiny_bridge.network.register_forward_hook(
        lambda module, args, out: calls.append(out.requires_grad)
    )
    try:
        guidance = ClassifierGuidance(
            classifier,
            target=torch.zeros(2, dtype=torch.long),
            counterfactual_target=None,
            scale=1.5,
        )
        _sample(tiny_bridge, images, guidance, 10, guidance_grad=grad, guidance_switch=switch)
    finally:
        hook.remove()
    grid = space_indices(100, 11)
    steps = [n for n in grid[1:]][::-1]
    std = tiny_bridge.schedule.std_fwd
    high = [float(std[n]) >= switch * float(std[steps[0]]) for n in steps]
    expected = {"xt": [True] * 10, "x0": [False] * 10, "xt-x0": high}[grad]
    assert calls == expected
    if grad == "xt-x0" and 0 < switch < 1:
        assert 0 < sum(high) < 10  # the switch happens inside the trajectory
    if switch == 1.0:
        assert calls[1:] == [False] * 9  # only the first step's noise level is not below it


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(guidance_interval=0), "guidance_interval"),
        (dict(guidance_switch=1.5, guidance_grad="xt-x0"), "guidance_switch"),
        (dict(guidance_switch=0.75), "guidance_switch applies to guidance_grad='xt-x0'"),
        (dict(guidance_switch=float("nan"), guidance_grad="xt-x0"), "guidance_switch"),
        (dict(guidance_grad="x1"), "guidance_grad"),
        (dict(guidance_smoothing=-1.0), "guidance_smoothing"),
        (dict(guidance_smoothing=float("nan")), "guidance_smoothing"),
        (dict(guidance_norm="l1"), "guidance_norm"),
        (dict(guidance_schedule="linear"), "guidance_schedule"),
        (dict(guidance_shifts=0), "guidance_shifts"),
        (dict(guidance_shifts=10), "guidance_shifts"),
        (dict(guidance_adam="band"), "guidance_adam"),
        (dict(guidance_until=0.0), "guidance_until"),
        (dict(guidance_until=1.5), "guidance_until"),
    ],
)
def test_bad_guidance_options(classifier, tiny_bridge, kwargs, match):
    with pytest.raises(ValueError, match=match):
        RCSB(classifier, tiny_bridge, **kwargs)


def test_guidance_interval_must_be_an_integer(classifier, tiny_bridge):
    with pytest.raises(TypeError, match="guidance_interval"):
        RCSB(classifier, tiny_bridge, guidance_interval=2.0)


def test_shift_image_moves_without_wrapping():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    right = shift_image(x, 0, 1)
    assert torch.equal(right[..., 1:], x[..., :-1]) and right[..., 0].abs().sum() == 0
    up = shift_image(x, -1, 0)
    assert torch.equal(up[..., :-1, :], x[..., 1:, :]) and up[..., -1, :].abs().sum() == 0
    assert shift_image(x, 0, 0) is x


def test_shifted_objective_is_the_mean_over_the_shifted_copies():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x0 = torch.randn(2, 1, 4, 4)
    cf = torch.tensor([1, 2])
    kw = dict(target=torch.zeros(2, dtype=torch.long), counterfactual_target=cf, scale=1.0)
    shifted = ClassifierGuidance(net, shifts=5, **kw).objective(x0)
    plain = ClassifierGuidance(net, **kw)
    by_hand = sum(
        plain.objective(shift_image((x0 + 1) / 2, dy, dx) * 2 - 1) for dy, dx in SHIFTS[:5]
    )
    assert torch.allclose(shifted, by_hand / 5, atol=1e-5)


def test_image_adam_keeps_the_gradients_shape():
    grad = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    g = ClassifierGuidance(
        lambda x: x,
        target=torch.zeros(2, dtype=torch.long),
        counterfactual_target=None,
        scale=1.0,
        adam="image",
    )
    update = g.step(grad)
    # one normaliser per image: the update is the gradient times a positive scalar per image
    ratio = update / grad
    assert torch.allclose(ratio, ratio.flatten(1)[:, :1].view(2, 1, 1, 1).expand_as(ratio))
    assert torch.allclose(update.flatten(1).norm(dim=1), torch.ones(2))
    pixel = _guidance("l2").step(grad)
    # the official per-element Adam gives the sign: every element the same size
    first = pixel.abs().flatten(1)[:, :1].view(2, 1, 1, 1)
    assert torch.allclose(pixel.abs(), first.expand_as(pixel), rtol=1e-2)


def test_until_zeroes_the_update_of_samples_past_the_threshold():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x0 = torch.randn(2, 1, 4, 4)
    kw = dict(target=torch.zeros(2, dtype=torch.long), scale=1.0)
    # sample 0's counterfactual class is the one the net already prefers, sample 1's is not
    with torch.no_grad():
        p = torch.softmax(net((x0 + 1) / 2), 1)
    cf = torch.stack([p[0].argmax(), p[1].argmin()])
    until = float(p[0, cf[0]]) - 1e-4
    assert float(p[1, cf[1]]) < until
    g = ClassifierGuidance(net, counterfactual_target=cf, until=until, **kw)
    x = x0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(g.objective(x), x)
    update = g.step(grad)
    assert update[0].abs().sum() == 0 and update[1].abs().sum() > 0
    # always (1, the official) guides both and never records a decision
    always = ClassifierGuidance(net, counterfactual_target=cf, **kw)
    always.objective(x0)
    assert always.reached is None


def test_until_reached_at_once_is_plain_inpainting(classifier, tiny_bridge, images):
    kw = dict(start_step=100, nfe=5, n_samples=1)
    x = images.repeat(2, 1, 1, 1)
    cf = (classifier(x).argmax(1) + 1) % 5
    plain = RCSB(classifier, tiny_bridge, MaskRegion(_box(4)), guidance_scale=0.0, **kw)
    # every sample is "past" a threshold this small at every step: the bridge alone samples
    stopped = RCSB(classifier, tiny_bridge, MaskRegion(_box(4)), guidance_until=1e-30, **kw)
    a = plain.generate(x, counterfactual_target=cf, seed=0).samples
    b = stopped.generate(x, counterfactual_target=cf, seed=0).samples
    assert torch.allclose(a, b, atol=1e-6)
