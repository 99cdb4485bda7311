"""The few-step integrators against their equations (I3SB's non-Markovian step, DBIM's
first- and second-order solvers), on closed-form estimates and on the tiny reference bridge."""

import math

import pytest
import torch
from torch import nn

from rcsb_captum import RCSB, Bridge, MaskRegion
from rcsb_captum.bridge.schedule import BridgeSchedule, space_indices
from rcsb_captum.sampler import bridge_mean, i3sb_coefficients, sample_rcsb


def _box(n=2):
    m = torch.zeros(n, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    return m


class StepEstimate(Bridge):
    """x0_hat(x, n) = A + lam_n * B: an estimate that depends on the step only (DBIM's
    variable lam = mu_x0 / std_sb), with every call's state recorded."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__(nn.Conv2d(3, 3, 1))
        self.a, self.b = a, b
        self.calls: list[tuple[int, torch.Tensor]] = []

    def lam(self, n: int) -> float:
        s = self.schedule
        return float(s.mu_x0[n] / s.std_sb[n])

    def predict_x0(self, x_t, step):
        self.calls.append((int(step), x_t.detach().clone()))
        return (self.a + self.lam(int(step)) * self.b).expand_as(x_t) + 0 * x_t


def _run(bridge, images, sampler, eta=0.0, nfe=6, start=300, seed=0):
    states = []
    out = sample_rcsb(
        bridge,
        images,
        _box(),
        None,
        start_step=start,
        nfe=nfe,
        generator=torch.Generator().manual_seed(seed),
        sampler=sampler,
        sampler_eta=eta,
        callback=lambda i, x, x0: states.append(x.clone()),
    )
    return out, states


def _x1(images, seed=0):
    # the corrupted image of sample_rcsb: N(0, 1) in the region, the input outside
    mask = _box().expand_as(images).bool()
    eps = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return torch.where(mask, eps, images * 2 - 1)


def test_i3sb_coefficients_follow_the_paper():
    s = BridgeSchedule(interval=1000)
    n, prev = 500, 450
    sig_n, sig_p = s.std_fwd[n], s.std_fwd[prev]
    bar_n, bar_p = s.std_bwd[n], s.std_bwd[prev]
    for eta in (0.0, 0.3, 0.6, 1.0):
        k, g = i3sb_coefficients(s, n, prev, eta)
        # I3SB's g_n and k, written with the forward and backward deviations
        alpha = math.sqrt(sig_n**2 - sig_p**2)
        g_ref = eta * sig_p * alpha / math.sqrt(sig_p**2 + alpha**2)
        k_ref = math.sqrt(sig_p**2 * bar_p**2 - g_ref**2 * (sig_p**2 + bar_p**2)) / (sig_n * bar_n)
        k_ref *= math.sqrt((bar_n**2 + sig_n**2) / (sig_p**2 + bar_p**2))
        assert g == pytest.approx(g_ref, rel=1e-12)
        assert k == pytest.approx(k_ref, rel=1e-10)
    # at eta = 1 the noise is the I2SB posterior's
    _, g = i3sb_coefficients(s, n, prev, 1.0)
    assert g**2 == pytest.approx(s.posterior_coefficients(prev, n)[2], rel=1e-12)
    # a noise above the marginal's spread is capped there and the state's deviation dropped
    k, g = i3sb_coefficients(s, n, prev, 1e6)
    assert (k, g) == (0.0, pytest.approx(float(s.std_sb[prev])))


def test_i3sb_at_eta_0_telescopes_after_its_first_step(images):
    # with a step-independent estimate each step maps the deviation from the bridge mean by
    # std_sb[prev] / std_sb[n], so from the second state on the deviation at step m is the
    # second state's times std_sb[m] / std_sb[second]
    x0 = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    bridge = StepEstimate(x0, torch.zeros_like(x0))
    out, states = _run(bridge, images, "i3sb", nfe=6)
    grid = space_indices(300, 7)[::-1][1:]  # the state after step i sits at grid[i]
    s, x1, inside = bridge.schedule, _x1(images), _box().expand_as(images).bool()
    dev0 = states[0] - bridge_mean(s, grid[0], x0, x1)
    for i in range(1, len(states) - 1):
        ratio = float(s.std_sb[grid[i]] / s.std_sb[grid[0]])
        expected = bridge_mean(s, grid[i], x0, x1) + ratio * dev0
        assert torch.allclose(states[i][inside], expected[inside], atol=1e-5)
    # the first step is I2SB's posterior
    plain, plain_states = _run(bridge, images, "i2sb", nfe=6)
    assert torch.allclose(states[0], plain_states[0], atol=1e-6)
    assert not torch.allclose(states[2], plain_states[2], atol=1e-3)


def test_dbim2_is_exact_for_an_estimate_linear_in_lambda(images):
    # DBIM's ODE dy/dlam = x0_hat(lam) with y = (x - mu_x1 x1) / std_sb: for x0_hat = A + lam B
    # the solution is y(lam') = y(lam) + A (lam' - lam) + B (lam'^2 - lam^2) / 2, which the
    # second-order multistep step reproduces exactly and the first-order one does not
    g = torch.Generator().manual_seed(4)
    a = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    b = (torch.rand(1, 3, 32, 32, generator=g) - 0.5) * 0.02
    s = BridgeSchedule(interval=1000)
    x1, inside = _x1(images), _box().expand_as(images).bool()
    grid = space_indices(300, 9)[::-1][1:]

    def y(x, m):
        return (x - float(s.mu_x1[m]) * x1) / float(s.std_sb[m])

    errors = {}
    for sampler in ("dbim2", "i3sb"):
        bridge = StepEstimate(a, b)
        _, states = _run(bridge, images, sampler, nfe=8)
        lam = bridge.lam
        worst = 0.0
        for i in range(1, len(states) - 2):  # from the second state, up to the last into 0
            m0, m1 = grid[i], grid[i + 1]
            exact = (
                y(states[i], m0) + a * (lam(m1) - lam(m0)) + b * (lam(m1) ** 2 - lam(m0) ** 2) / 2
            )
            rel = (y(states[i + 1], m1) - exact)[inside].abs().max() / exact[inside].abs().max()
            worst = max(worst, float(rel))
        errors[sampler] = worst
    assert errors["dbim2"] < 1e-5
    assert errors["i3sb"] > 100 * errors["dbim2"]


def test_i3sb_noise_comes_from_the_per_image_generators(images):
    x0 = torch.zeros(1, 3, 32, 32)
    bridge = StepEstimate(x0, torch.zeros_like(x0))
    a, _ = _run(bridge, images, "i3sb", eta=0.6)
    b, _ = _run(bridge, images, "i3sb", eta=0.6)
    c, _ = _run(bridge, images, "i3sb", eta=0.6, seed=1)
    d, _ = _run(bridge, images, "i3sb", eta=0.0)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, d)
    outside = ~_box().expand_as(images).bool()
    assert torch.equal(a[outside], images[outside])


@pytest.mark.parametrize(
    ("sampler", "grad"), [("i3sb", "xt"), ("dbim2", "x0"), ("i3sb", "xt-x0"), ("dbim2", "xt")]
)
def test_few_step_samplers_with_the_reference_bridge(
    classifier, tiny_bridge, images, sampler, grad
):
    kw = dict(start_step=100, nfe=4, n_samples=1, sampler=sampler, guidance_grad=grad)
    if sampler == "i3sb":
        kw["sampler_eta"] = 0.6
    rcsb = RCSB(classifier, tiny_bridge, MaskRegion(_box()), **kw)
    a = rcsb.generate(images, target=0, seed=0)
    assert torch.equal(a.samples, rcsb.generate(images, target=0, seed=0).samples)
    outside = (a.regions == 0).expand_as(images)
    assert torch.equal(a.counterfactuals[outside], images[outside])
    assert torch.isfinite(a.counterfactuals).all()
    # batch-independent: the second image alone, at its index, gives the same result
    alone = rcsb.generate(images[1:], target=0, seed=0, index_offset=1, region=_box(1))
    assert torch.allclose(alone.samples[0], a.samples[1], atol=1e-6)
    plain = RCSB(
        classifier,
        tiny_bridge,
        MaskRegion(_box()),
        start_step=100,
        nfe=4,
        n_samples=1,
        guidance_grad=grad,
    ).generate(images, target=0, seed=0)
    assert not torch.allclose(plain.samples, a.samples)


def test_bad_sampler_options_name_the_option(classifier, tiny_bridge, images):
    for bad in (-0.1, float("nan"), "0.5"):
        with pytest.raises((ValueError, TypeError), match="sampler_eta"):
            RCSB(classifier, tiny_bridge, sampler="i3sb", sampler_eta=bad)
    with pytest.raises(ValueError, match="sampler_eta"):
        RCSB(classifier, tiny_bridge, sampler="dbim2", sampler_eta=0.5)
    with pytest.raises(ValueError, match="sampler"):
        RCSB(classifier, tiny_bridge, sampler="dbim3")
    with pytest.raises(ValueError, match="sampler_eta"):
        sample_rcsb(tiny_bridge, images, _box(), None, nfe=2, sampler="i2sb", sampler_eta=0.3)
