"""RCSB as Captum's own code calls it: NoiseTunnel, captum.metrics, the tuple form, the
`attribute.__wrapped__` that Captum's wrappers call, on the tiny reference bridge."""

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.metrics import infidelity, sensitivity_max

from rcsb_captum import RCSB, MaskRegion

KW = dict(start_step=100, nfe=3, n_samples=1)


def _box(n):
    m = torch.zeros(n, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    return m


class _EveryRow(MaskRegion):
    """The same box for any number of inputs (NoiseTunnel and the metrics grow the batch)."""

    def __init__(self):
        super().__init__(_box(1))


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_averages_counterfactual_differences(classifier, tiny_bridge, images, nt_type):
    rcsb = RCSB(classifier, tiny_bridge, _EveryRow(), input_range="clamp", **KW)
    torch.manual_seed(0)
    a = NoiseTunnel(rcsb).attribute(
        images, target=0, nt_samples=2, nt_samples_batch_size=1, nt_type=nt_type, seed=0
    )
    assert a.shape == images.shape and torch.isfinite(a).all()
    outside = (_box(2) == 0).expand_as(images)
    # each noisy copy's difference is zero outside the region, so every average is too
    assert torch.equal(a[outside], torch.zeros_like(a[outside]))
    assert a[~outside].abs().sum() > 0
    # without the clamp the noisy inputs leave [0, 1] and the message names the option
    plain = RCSB(classifier, tiny_bridge, _EveryRow(), **KW)
    with pytest.raises(ValueError, match="input_range='clamp'"):
        NoiseTunnel(plain).attribute(images, target=0, nt_samples=2, seed=0)


def test_captum_metrics_run_on_rcsb(classifier, tiny_bridge, images):
    rcsb = RCSB(classifier, tiny_bridge, _EveryRow(), input_range="clamp", **KW)
    sens = sensitivity_max(rcsb.attribute, images, target=0, n_perturb_samples=2, seed=0)
    assert sens.shape == (2,) and torch.isfinite(sens).all()

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.01
        return noise, inputs - noise

    attr = rcsb.attribute(images, target=0, seed=0)
    infid = infidelity(classifier, perturb, images, attr, target=0, n_perturb_samples=2)
    assert infid.shape == (2,) and torch.isfinite(infid).all()


def test_clamped_inputs_keep_their_own_pixels_outside(classifier, tiny_bridge, images):
    rcsb = RCSB(classifier, tiny_bridge, MaskRegion(_box(2)), input_range="clamp", **KW)
    noisy = images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    res = rcsb.generate(noisy, target=0, seed=0)
    outside = (res.regions == 0).expand_as(images)
    assert torch.equal(res.counterfactuals[outside], noisy[outside])
    inside = res.counterfactuals[~outside]
    assert inside.min() >= 0 and inside.max() <= 1
    # in range, clamp and check give the same bits
    a = rcsb.generate(images, target=0, seed=0).samples
    b = RCSB(classifier, tiny_bridge, MaskRegion(_box(2)), **KW).generate(images, target=0, seed=0)
    assert torch.equal(a, b.samples)
    with pytest.raises(ValueError, match="input_range"):
        RCSB(classifier, tiny_bridge, input_range="wrap")


@pytest.mark.parametrize("method", ["FIDO", "BBMP"])
def test_fido_and_bbmp_take_captum_tuples_and_clamp_noisy_inputs(classifier, images, method):
    from rcsb_captum import BBMP, FIDO
    from rcsb_captum.infillers import MeanInfiller

    cls = {"FIDO": FIDO, "BBMP": BBMP}[method]
    plain = cls(classifier, MeanInfiller(0.5), mask_size=4, steps=3)
    a = plain.attribute(images, target=0, seed=0)
    (t,) = plain.attribute((images,), target=0, seed=0)  # a 1-tuple in, a 1-tuple out
    assert torch.equal(t, a)
    noisy = images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="input_range='clamp'"):
        plain.attribute(noisy, target=0, seed=0)
    clamped = cls(classifier, MeanInfiller(0.5), mask_size=4, steps=3, input_range="clamp")
    assert torch.equal(
        clamped.attribute(noisy, target=0, seed=0),
        clamped.attribute(noisy.clamp(0, 1), target=0, seed=0),
    )
    sens = sensitivity_max(clamped.attribute, images, target=0, n_perturb_samples=2, seed=0)
    assert sens.shape == (2,) and torch.isfinite(sens).all()
    with pytest.raises(ValueError, match="input_range must be one of"):
        cls(classifier, input_range="wrap")
