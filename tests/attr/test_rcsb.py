import pytest
import torch

from rcsb_captum import RCSB, MaskRegion, SegmentationRegion

FAST = dict(start_step=100, nfe=5, n_samples=2)


def box_mask(n=2):
    m = torch.zeros(n, 1, 32, 32)
    m[:, :, 8:24, 8:24] = 1
    return m


def test_outside_region_is_bit_exact_and_seed_repeats(classifier, tiny_bridge, images):
    rcsb = RCSB(classifier, tiny_bridge, MaskRegion(box_mask()), **FAST)
    res = rcsb.generate(images, seed=3)
    outside = (res.regions == 0).expand_as(images)
    for s in range(res.samples.shape[1]):
        assert torch.equal(res.samples[:, s][outside], images[outside])
    assert res.counterfactuals.min() >= 0 and res.counterfactuals.max() <= 1
    assert not torch.equal(res.counterfactuals, images)
    again = rcsb.generate(images, seed=3)
    assert torch.equal(again.samples, res.samples)
    attr = rcsb.attribute(images, seed=3)
    assert torch.equal(attr, images - res.counterfactuals)
    assert torch.all(attr[outside] == 0)
    other = rcsb.generate(images, seed=4)
    assert not torch.equal(other.samples, res.samples)


def test_guidance_raises_counterfactual_probability(classifier, tiny_bridge, images):
    x = images.repeat(2, 1, 1, 1)
    pred = classifier(x).argmax(1)
    cf = (pred + 1) % 5
    probs = {}
    for scale in (0.0, 3.0):
        rcsb = RCSB(
            classifier,
            tiny_bridge,
            MaskRegion(box_mask(4)),
            guidance_scale=scale,
            start_step=200,
            nfe=10,
            n_samples=1,
        )
        res = rcsb.generate(x, counterfactual_target=cf, seed=0)
        probs[scale] = res.probs_after.gather(1, cf[:, None]).mean().item()
    assert probs[3.0] > probs[0.0]


@pytest.mark.parametrize("target", [None, 1, [1, 2], torch.tensor([1, 2]), torch.tensor(2)])
def test_captum_target_forms(classifier, tiny_bridge, images, target):
    res = RCSB(classifier, tiny_bridge, MaskRegion(box_mask()), **FAST).generate(
        images, target=target, seed=0
    )
    if target is None:
        assert torch.equal(res.target, classifier(images).argmax(1))
    else:
        assert torch.equal(res.target, torch.as_tensor(target).expand(2))


def test_internal_batch_size_gives_the_same_result(classifier, tiny_bridge, images):
    rcsb = RCSB(classifier, tiny_bridge, MaskRegion(box_mask()), **FAST)
    a = rcsb.attribute(images, target=0, seed=0)
    assert a.shape == images.shape
    b = rcsb.generate(images, target=0, seed=0, internal_batch_size=1)
    assert b.samples.shape == (2, 2, 3, 32, 32)


def test_segmentation_and_callable_regions(classifier, tiny_bridge, images):
    seg = torch.zeros(2, 32, 32, dtype=torch.long)
    seg[:, :16] = 3
    region = SegmentationRegion(seg, labels=[3])
    assert torch.equal(region(images)[:, 0], (seg == 3).float())
    res = RCSB(classifier, tiny_bridge, region, **FAST).generate(images, seed=0)
    assert torch.equal(res.counterfactuals[:, :, 16:], images[:, :, 16:])
    res2 = RCSB(classifier, tiny_bridge, lambda x, t: box_mask(), **FAST).generate(images, seed=0)
    assert torch.equal(res2.regions, box_mask())


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(inputs=torch.rand(3, 32, 32)), ValueError, "N x C x H x W"),
        (dict(inputs=torch.rand(2, 3, 32, 32) * 2), ValueError, r"\[0, 1\]"),
        (dict(inputs=torch.full((2, 3, 32, 32), float("nan"))), ValueError, "non-finite"),
        (dict(target=7), ValueError, "target has classes outside"),
        (dict(target=[1, 2, 3]), ValueError, "one per input"),
        (dict(target=1.5), TypeError, "target"),
        (dict(target=1, counterfactual_target=1), ValueError, "must differ"),
        (dict(region=torch.zeros(2, 1, 32, 32)), ValueError, "empty"),
        (dict(region=torch.ones(2, 1, 16, 16)), ValueError, "do not fit"),
    ],
)
def test_bad_inputs(classifier, tiny_bridge, images, kwargs, error, match):
    kwargs.setdefault("inputs", images)
    rcsb = RCSB(classifier, tiny_bridge, MaskRegion(box_mask()), **FAST)
    with pytest.raises(error, match=match):
        rcsb.generate(**kwargs)


def test_missing_bridge_is_a_clear_error(classifier, images, monkeypatch):
    monkeypatch.delenv("RCSB_CAPTUM_BRIDGE", raising=False)
    with pytest.raises(ValueError, match="bridge: none given"):
        RCSB(classifier, None, MaskRegion(box_mask())).generate(images)


def test_bridge_channels_must_fit(classifier, tiny_bridge):
    with pytest.raises(ValueError, match="channels"):
        RCSB(classifier, tiny_bridge, MaskRegion(box_mask()), **FAST).generate(
            torch.rand(2, 1, 32, 32)
        )


def test_bridge_image_size_must_fit(classifier, tiny_bridge):
    with pytest.raises(ValueError, match="built for 32 x 32"):
        RCSB(classifier, tiny_bridge, MaskRegion(torch.ones(1, 1, 64, 64)), **FAST).generate(
            torch.rand(1, 3, 64, 64)
        )


def test_additional_forward_args_reach_the_classifier_and_the_region(tiny_bridge, images):
    seen = []

    def model(x, shift):
        return torch.stack([x.mean((1, 2, 3)) + shift, -x.mean((1, 2, 3))], 1)

    def region(x, target, shift):
        seen.append(shift)
        return box_mask()

    res = RCSB(model, tiny_bridge, region, **FAST).generate(
        images, target=0, additional_forward_args=5.0, seed=0
    )
    assert seen == [5.0]
    assert torch.all(res.probs_before[:, 0] > 0.99)  # the shift of 5 was applied
