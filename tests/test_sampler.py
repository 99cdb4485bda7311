import pytest
import torch
from torch import nn

from rcsb_captum import RCSB, Bridge, MaskRegion
from rcsb_captum.sampler import sample_rcsb


class ConstantEstimate(Bridge):
    """A bridge whose x0 estimate is the same image at every state and step."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__(nn.Conv2d(3, 3, 1))
        self.x0 = x0

    def predict_x0(self, x_t, step):
        return self.x0.expand_as(x_t) + 0 * x_t


def _box(n=2):
    m = torch.zeros(n, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    return m


def test_heun_reduces_to_the_i2sb_posterior_when_the_estimates_agree(images):
    x0 = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    bridge = ConstantEstimate(x0)
    kw = dict(start_step=300, nfe=7)
    euler = sample_rcsb(
        bridge, images, _box(), None, generator=torch.Generator().manual_seed(0), **kw
    )
    heun = sample_rcsb(
        bridge,
        images,
        _box(),
        None,
        generator=torch.Generator().manual_seed(0),
        sampler="heun",
        **kw,
    )
    assert torch.allclose(heun, euler, atol=1e-6)


def test_heun_with_a_real_network(classifier, tiny_bridge, images):
    kw = dict(start_step=100, nfe=4, n_samples=1)
    heun = RCSB(classifier, tiny_bridge, MaskRegion(_box()), sampler="heun", **kw)
    a = heun.generate(images, target=0, seed=0)
    b = heun.generate(images, target=0, seed=0)
    assert torch.equal(a.samples, b.samples)
    outside = (a.regions == 0).expand_as(images)
    assert torch.equal(a.counterfactuals[outside], images[outside])
    plain = RCSB(classifier, tiny_bridge, MaskRegion(_box()), **kw).generate(
        images, target=0, seed=0
    )
    assert not torch.allclose(plain.samples, a.samples)  # the second evaluation matters
    with pytest.raises(ValueError, match="sampler"):
        RCSB(classifier, tiny_bridge, sampler="ddim")


class RecordingEstimate(ConstantEstimate):
    """Records the state of the first network call (the trajectory's start)."""

    def predict_x0(self, x_t, step):
        if not hasattr(self, "start"):
            self.start = x_t.detach().clone()
        return super().predict_x0(x_t, step)


def _start(images, temperature, seed=0):
    bridge = RecordingEstimate(torch.zeros(1, 3, 32, 32))
    sample_rcsb(
        bridge,
        images,
        _box(),
        None,
        start_step=300,
        nfe=3,
        generator=torch.Generator().manual_seed(seed),
        noise_temperature=temperature,
    )
    return bridge.start


def test_noise_temperature_scales_the_fill_of_the_region(images):
    cold, half, warm = (_start(images, t) for t in (0.0, 0.5, 1.0))
    inside = _box().bool().expand_as(images)
    # the start is mu_x0 * x + mu_x1 * (temperature * eps) in the region, the input outside
    assert torch.allclose(half - cold, 0.5 * (warm - cold), atol=1e-6)
    assert (warm - cold)[inside].abs().mean() > 0.05
    assert torch.equal(cold[~inside], warm[~inside])
    # at temperature 0 the start does not depend on the noise's seed
    assert torch.equal(_start(images, 0.0, seed=1), cold)
    assert not torch.equal(_start(images, 1.0, seed=1), warm)


def test_noise_temperature_with_a_real_network(classifier, tiny_bridge, images):
    kw = dict(start_step=100, nfe=4, n_samples=1)
    cold = RCSB(classifier, tiny_bridge, MaskRegion(_box()), noise_temperature=0.5, **kw)
    a = cold.generate(images, target=0, seed=0)
    assert torch.equal(a.samples, cold.generate(images, target=0, seed=0).samples)
    outside = (a.regions == 0).expand_as(images)
    assert torch.equal(a.counterfactuals[outside], images[outside])
    plain = RCSB(classifier, tiny_bridge, MaskRegion(_box()), **kw).generate(
        images, target=0, seed=0
    )
    assert not torch.allclose(plain.samples, a.samples)
    for bad in (-0.1, float("nan"), "0.5"):
        with pytest.raises((ValueError, TypeError), match="noise_temperature"):
            RCSB(classifier, tiny_bridge, noise_temperature=bad)
    with pytest.raises(ValueError, match="noise_temperature"):
        sample_rcsb(tiny_bridge, images, _box(), None, nfe=2, noise_temperature=-1.0)


def test_auto_precision_is_bf16_only_where_native(classifier, tiny_bridge, images, monkeypatch):
    import rcsb_captum.sampler as S

    kw = dict(start_step=100, nfe=3, n_samples=1)
    runs = {}
    for p in ("fp32", "bf16"):
        runs[p] = RCSB(classifier, tiny_bridge, MaskRegion(_box()), precision=p, **kw).generate(
            images, target=0, seed=0
        )
    for native, same in ((False, "fp32"), (True, "bf16")):
        monkeypatch.setattr(S, "native_bf16", lambda device, native=native: native)
        assert S.resolve_precision("auto", images.device) == same
        auto = RCSB(classifier, tiny_bridge, MaskRegion(_box()), precision="auto", **kw)
        assert torch.equal(auto.generate(images, target=0, seed=0).samples, runs[same].samples)
    assert S.resolve_precision("fp16", images.device) == "fp16"
    with pytest.raises(ValueError, match="precision"):
        S.resolve_precision("int8", images.device)


def test_native_bf16_reads_the_cpu_flags(monkeypatch):
    import rcsb_captum.sampler as S

    cpu = torch.device("cpu")
    monkeypatch.setattr(
        torch.cpu, "get_capabilities", lambda: {"avx512_bf16": False}, raising=False
    )
    assert S.native_bf16(cpu) is False
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": True}, raising=False)
    assert S.native_bf16(cpu) is True
    assert S.native_bf16(torch.device("meta")) is False
