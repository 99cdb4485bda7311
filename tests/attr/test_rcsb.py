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


# -- the bad-input sweep: one case of each kind of bad input ---------------------------------------


class Returns(torch.nn.Module):
    """A classifier whose output is replaced by ``make(logits)``."""

    def __init__(self, base, make):
        super().__init__()
        self.base, self.make = base, make

    def forward(self, x):
        return self.make(self.base(x))


def _nan_after_calls(base, calls):
    state = {"n": 0}

    def f(x):
        state["n"] += 1
        out = base(x)
        return out * float("nan") if state["n"] > calls else out

    return f


@pytest.mark.parametrize(
    "inputs,error,match",
    [
        (torch.rand(2, 3, 32, 32).half(), None, None),  # converted, returned in float16
        (torch.rand(2, 3, 32, 32).double(), None, None),
        ((torch.rand(2, 3, 32, 32) * 255).to(torch.uint8), TypeError, "floating dtype"),
        (torch.ones(2, 3, 32, 32, dtype=torch.bool), TypeError, "floating dtype"),
        (torch.rand(0, 3, 32, 32), ValueError, "empty batch"),
        (torch.rand(2, 3, 32, 32).numpy(), TypeError, "torch.Tensor"),
    ],
)
def test_input_dtypes(classifier, tiny_bridge, inputs, error, match):
    rcsb = RCSB(classifier, tiny_bridge, MaskRegion(box_mask()), **FAST)
    if error is None:
        res = rcsb.generate(inputs, seed=0)
        assert res.counterfactuals.dtype == inputs.dtype
        outside = (res.regions == 0).expand_as(inputs)
        assert torch.equal(res.counterfactuals[outside], inputs[outside])
        assert rcsb.attribute(inputs, seed=0).dtype == inputs.dtype
    else:
        with pytest.raises(error, match=match):
            rcsb.generate(inputs, seed=0)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(guidance_scale=-1.0), ValueError, "guidance_scale"),
        (dict(guidance_scale=float("nan")), ValueError, "guidance_scale must be finite"),
        (dict(guidance_scale=float("inf")), ValueError, "guidance_scale must be finite"),
        (dict(guidance_scale="1.5"), TypeError, "guidance_scale"),
        (dict(nfe=5.0), TypeError, "nfe must be an integer"),
        (dict(nfe=0), ValueError, "nfe"),
        (dict(nfe=200, start_step=100), ValueError, "nfe must be at most"),
        (dict(start_step=1), ValueError, "start_step"),
        (dict(n_samples=0), ValueError, "n_samples"),
        (dict(n_samples=True), TypeError, "n_samples"),
        (dict(classifier_input="sigmoid"), ValueError, "classifier_input"),
        (dict(precision="fp8"), ValueError, "precision"),
        (dict(cell_size=4), ValueError, "shape the default region"),
        (dict(area=0.2), ValueError, "shape the default region"),
        (dict(bridge="bridge.pt"), TypeError, "bridge must be a rcsb_captum.Bridge"),
        (dict(region=3), TypeError, "region must be callable"),
    ],
)
def test_bad_constructor_arguments(classifier, tiny_bridge, kwargs, error, match):
    args = dict(bridge=tiny_bridge, region=MaskRegion(box_mask()))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        RCSB(classifier, **args)


def test_bad_cell_size_and_area_of_the_default_region(classifier, tiny_bridge):
    with pytest.raises(ValueError, match="area"):
        RCSB(classifier, tiny_bridge, area=0.0)
    with pytest.raises(ValueError, match="cell_size"):
        RCSB(classifier, tiny_bridge, cell_size="big")
    with pytest.raises(ValueError, match="cell_size"):
        RCSB(classifier, tiny_bridge, cell_size=0)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(internal_batch_size=0), ValueError, "internal_batch_size"),
        (dict(internal_batch_size=1.5), TypeError, "internal_batch_size"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed=1.5), TypeError, "seed"),
        (dict(target=torch.tensor([0.0, 1.0])), TypeError, "integer classes"),
        (dict(target=True), TypeError, "target"),
        (dict(target="cat"), TypeError, "target"),
        (dict(target=-1), ValueError, "outside"),
        (dict(target=[(0, 1), (1, 2)]), ValueError, "list of tuples"),
        (dict(counterfactual_target=[0.5, 1.5]), TypeError, "counterfactual_target"),
        (dict(region=torch.full((2, 1, 32, 32), 0.01)), ValueError, "empty"),
        (dict(region=torch.full((2, 1, 32, 32), 2.0)), ValueError, r"\[0, 1\]"),
        (dict(region=-box_mask()), ValueError, r"\[0, 1\]"),
        (dict(region=box_mask().masked_fill(box_mask() == 0, float("nan"))), ValueError, "NaN"),
        (dict(region=lambda x, t: None), TypeError, "None"),
        (dict(region=lambda x, t: "mask"), TypeError, "region must be a Tensor"),
        (dict(region=lambda x: box_mask()), TypeError, r"\(inputs, target\)"),
        (dict(region=lambda x, t: box_mask() * float("nan")), ValueError, "NaN"),
        (dict(region=lambda x, t: box_mask()[:, :, :16]), ValueError, "N x 1 x H x W"),
    ],
)
def test_bad_call_arguments(classifier, tiny_bridge, images, kwargs, error, match):
    rcsb = RCSB(classifier, tiny_bridge, MaskRegion(box_mask()), **FAST)
    with pytest.raises(error, match=match):
        rcsb.generate(images, **kwargs)


def test_region_callable_may_return_numpy(classifier, tiny_bridge, images):
    rcsb = RCSB(classifier, tiny_bridge, lambda x, t: box_mask().numpy(), **FAST)
    assert torch.equal(rcsb.generate(images, seed=0).regions, box_mask())


def test_soft_masks_are_binarised_at_one_half(classifier, tiny_bridge, images):
    soft = box_mask() * 0.7 + 0.2  # 0.9 inside the box, 0.2 outside
    res = RCSB(classifier, tiny_bridge, MaskRegion(soft), **FAST).generate(images, seed=0)
    assert torch.equal(res.regions, box_mask())


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda y: y[:, :1], ValueError, "K >= 2"),
        (lambda y: y[:, 0], ValueError, "N x K"),
        (lambda y: (y,), TypeError, "Tensor of logits"),
        (lambda y: y * float("nan"), ValueError, "non-finite logits"),
        (lambda y: y.argmax(1, keepdim=True).expand(-1, 5), TypeError, "floating-point"),
    ],
)
def test_bad_model_outputs(classifier, tiny_bridge, images, make, error, match):
    rcsb = RCSB(Returns(classifier, make), tiny_bridge, MaskRegion(box_mask()), **FAST)
    with pytest.raises(error, match=match):
        rcsb.generate(images, seed=0)


def test_nan_during_sampling_stops_with_the_step(classifier, tiny_bridge, images):
    # finite on the inputs, NaN from the third classifier call on: a NaN gradient mid-way
    f = _nan_after_calls(classifier, 3)
    rcsb = RCSB(f, tiny_bridge, MaskRegion(box_mask()), **FAST)
    with pytest.raises(FloatingPointError, match=r"at step \d+ of 5"):
        rcsb.generate(images, target=0, seed=0)


# -- what a call must leave as it was ------------------------------------------------------


def test_seed_fixes_the_default_region_without_touching_the_global_generator(classifier):
    from rcsb_captum import Bridge

    bridge = Bridge.from_config(
        {
            "image_size": 32,
            "num_channels": 32,
            "num_res_blocks": 1,
            "channel_mult": "1,2",
            "attention_resolutions": "",
            "in_channels": 3,
            "out_channels": 3,
        }
    )
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    rcsb = RCSB(classifier, bridge, start_step=20, nfe=2, n_samples=1)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = rcsb.generate(x, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)  # another global state must not matter
    b = rcsb.generate(x, seed=0)
    assert torch.equal(a.regions, b.regions) and torch.equal(a.samples, b.samples)
    # each image's region and samples depend on (seed, index) only, not on the batch (up to
    # the float rounding of batched kernels)
    c = rcsb.generate(x[:1], seed=0)
    assert torch.equal(c.regions, a.regions[:1])
    assert torch.allclose(c.samples, a.samples[:1], atol=1e-6)


def test_results_do_not_depend_on_the_batch(classifier, tiny_bridge, images):
    rcsb = RCSB(classifier, tiny_bridge, MaskRegion(box_mask(1)), **FAST)
    both = rcsb.generate(images, target=0, seed=5)
    one = rcsb.generate(images[:1], target=0, seed=5)
    split = rcsb.generate(images, target=0, seed=5, internal_batch_size=1)
    assert torch.allclose(both.samples[:1], one.samples, atol=1e-6)
    assert torch.allclose(both.samples, split.samples, atol=1e-6)


def test_random_region_depends_on_seed_and_index_only(classifier, tiny_bridge, images):
    from rcsb_captum import RandomRegion

    region = RandomRegion(cell_size=8, area=0.25, seed=0)
    assert torch.equal(region(images), region(images))  # same object, same call, same region
    rcsb = RCSB(classifier, tiny_bridge, region, **FAST)
    a = rcsb.generate(images, seed=1).regions
    assert torch.equal(rcsb.generate(images[1:], seed=1).regions, a[:1])
    assert not torch.equal(rcsb.generate(images, seed=2).regions, a)


def test_model_in_train_mode_is_left_as_given(tiny_bridge, images):
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.Dropout(0.5),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 32 * 32, 3),
    ).train()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    rcsb = RCSB(model, tiny_bridge, MaskRegion(box_mask()), **FAST)
    a = rcsb.generate(images, target=0, seed=0)
    b = rcsb.generate(images, target=0, seed=0)
    assert torch.equal(a.samples, b.samples)  # dropout is off during the call
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, buffers[k]), k  # BatchNorm statistics untouched
    assert all(p.grad is None for p in model.parameters())


def test_nan_counterfactuals_are_never_successes(classifier, tiny_bridge, images):
    # a NaN mid-way stops the run (see above); a finite run reports success from real argmax
    rcsb = RCSB(classifier, tiny_bridge, MaskRegion(box_mask()), **FAST)
    res = rcsb.generate(images, target=0, seed=0)
    assert torch.isfinite(res.samples).all()
    pred = classifier(res.counterfactuals).argmax(1)
    assert torch.equal(res.success, pred != 0)


def test_default_cell_size_fits_28_pixel_images(classifier):
    from rcsb_captum import Bridge

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 3))
    bridge = Bridge.from_config(
        {
            "image_size": 28,
            "num_channels": 32,
            "num_res_blocks": 1,
            "channel_mult": "1,2",
            "attention_resolutions": "",
            "in_channels": 1,
            "out_channels": 1,
        }
    )
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    res = RCSB(model, bridge, start_step=20, nfe=2, n_samples=1).generate(x, seed=0)
    assert res.regions.shape == (2, 1, 28, 28)
    # cells of 3 px (auto) on a 10 x 10 grid whose last row and column are cut by the border:
    # 30 of 100 cells, at most 30 full 3 x 3 cells of pixels
    assert 0 < res.regions.mean() <= 30 * 9 / (28 * 28)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_stays_close_to_fp32(classifier, tiny_bridge, images, precision):
    rcsb = RCSB(classifier, tiny_bridge, MaskRegion(box_mask()), guidance_scale=0.0, **FAST)
    ref = rcsb.generate(images, target=0, seed=0)
    rcsb.precision = precision
    low = rcsb.generate(images, target=0, seed=0)
    outside = (ref.regions == 0).expand_as(images)
    assert torch.equal(low.counterfactuals[outside], images[outside])
    # documented tolerance: autocast of the bridge changes pixels by < 0.05 on this bridge
    assert (low.samples - ref.samples).abs().max() < 0.05
    assert not torch.equal(low.samples, ref.samples)  # the autocast does act


def test_gradient_checkpointing_gives_the_same_counterfactuals(classifier, tiny_bridge, images):
    rcsb = RCSB(classifier, tiny_bridge, MaskRegion(box_mask()), **FAST)
    ref = rcsb.generate(images, target=0, seed=0)
    rcsb.gradient_checkpointing = True
    ck = rcsb.generate(images, target=0, seed=0)
    assert torch.allclose(ck.samples, ref.samples, atol=1e-5)
    blocks = [m for m in tiny_bridge.modules() if hasattr(m, "use_checkpoint")]
    assert blocks and not any(m.use_checkpoint for m in blocks)  # restored afterwards


def test_x0_guidance_keeps_outside_exact_repeats_and_guides(classifier, tiny_bridge, images):
    x = images.repeat(2, 1, 1, 1)
    cf = (classifier(x).argmax(1) + 1) % 5
    kw = dict(start_step=200, nfe=10, n_samples=1, guidance_grad="x0")
    probs = {}
    for scale in (0.0, 3.0):
        rcsb = RCSB(classifier, tiny_bridge, MaskRegion(box_mask(4)), guidance_scale=scale, **kw)
        res = rcsb.generate(x, counterfactual_target=cf, seed=0)
        outside = (res.regions == 0).expand_as(x)
        assert torch.equal(res.counterfactuals[outside], x[outside])
        assert torch.equal(rcsb.generate(x, counterfactual_target=cf, seed=0).samples, res.samples)
        probs[scale] = res.probs_after.gather(1, cf[:, None]).mean().item()
    assert probs[3.0] > probs[0.0]
    with pytest.raises(ValueError, match="guidance_grad"):
        RCSB(classifier, tiny_bridge, guidance_grad="x1")


def test_inputs_that_require_grad(classifier, tiny_bridge, images):
    x = images.clone().requires_grad_(True)
    res = RCSB(classifier, tiny_bridge, MaskRegion(box_mask()), **FAST).generate(x, seed=0)
    assert res.counterfactuals.grad_fn is None
    outside = (res.regions == 0).expand_as(x)
    assert torch.equal(res.counterfactuals[outside], images[outside])


def test_regions_are_the_ones_a_seeded_call_uses(classifier, tiny_bridge, images):
    rcsb = RCSB(classifier, tiny_bridge, start_step=50, nfe=2, n_samples=1)
    masks = rcsb.regions(images, seed=3)
    assert torch.equal(masks, rcsb.regions(images, seed=3))
    res = rcsb.generate(images, seed=3)
    assert torch.equal(masks, res.regions)
    assert masks.shape == (2, 1, 32, 32)


# -- the adaptive region (area_steps) ------------------------------------------------------

ADAPTIVE = dict(start_step=100, nfe=4, n_samples=1, ig_steps=2, cell_size=4, area=0.2)


def test_adaptive_region_grows_only_unstable_inputs_along_one_ranking(classifier, tiny_bridge):
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    plain = RCSB(classifier, tiny_bridge, **ADAPTIVE)
    first = plain.regions(x, seed=0)
    base = plain.generate(x, seed=0)
    assert base.stability is None
    # a threshold nobody reaches: every input is drawn again at each area, ending at the last
    grow = plain.generate(x, seed=0, area_steps=(0.3, 0.5), stability=1.0)
    area = grow.regions.flatten(1).mean(1)
    assert torch.allclose(area, torch.full((3,), 0.5), atol=0.02)
    assert torch.all(grow.regions >= first)  # nested: the first region is inside the last
    assert grow.stability is not None and grow.stability.shape == (3,)
    outside = (grow.regions == 0).expand_as(x)
    assert torch.equal(grow.counterfactuals[outside], x[outside])
    # a threshold everyone reaches: nothing is drawn again, the plain result comes back
    same = plain.generate(x, seed=0, area_steps=(0.3, 0.5), stability=0.0)
    assert torch.equal(same.counterfactuals, base.counterfactuals)
    assert torch.equal(same.regions, first)
    # an input's result does not depend on the rest of the call
    part = plain.generate(x[1:], seed=0, index_offset=1, area_steps=(0.3, 0.5), stability=1.0)
    assert torch.equal(part.counterfactuals, grow.counterfactuals[1:])


def test_adaptive_region_needs_an_attribution_ranking(classifier, tiny_bridge, images):
    rcsb = RCSB(classifier, tiny_bridge, MaskRegion(box_mask()), **FAST)
    with pytest.raises(ValueError, match="area_steps .*AttributionRegion.*MaskRegion"):
        rcsb.generate(images, seed=0, area_steps=(0.5,))
    own = RCSB(classifier, tiny_bridge, **ADAPTIVE)  # area 0.2
    with pytest.raises(ValueError, match="larger than the region's area 0.2"):
        own.generate(images, seed=0, area_steps=(0.2, 0.5))


def test_per_input_extra_arguments_follow_samples_and_chunks(tiny_bridge):
    seen = []

    def model(x, bias):
        seen.append(bias.shape[0] == x.shape[0])
        return torch.stack([x.mean((1, 2, 3)) + bias, -x.mean((1, 2, 3))], 1)

    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    res = RCSB(model, tiny_bridge, MaskRegion(box_mask(3)), **FAST).generate(
        x,
        target=0,
        additional_forward_args=torch.tensor([0.0, 5.0, 0.0]),
        seed=0,
        internal_batch_size=2,
    )
    assert all(seen) and len(seen) > 3
    assert res.probs_before[1, 0] > 0.99 and res.probs_after[1, 0] > 0.99


def test_escalation_redraws_only_the_inputs_that_did_not_flip(
    classifier, tiny_bridge, images, monkeypatch
):
    from rcsb_captum.config import PRESETS, RCSBConfig

    # a cheap stage for the tiny bridge: a strong push
    monkeypatch.setitem(
        PRESETS, "tiny-stage", dict(start_step=100, nfe=5, guidance_scale=20.0, n_samples=1)
    )
    x = images.repeat(2, 1, 1, 1)
    base = dict(start_step=100, nfe=3, n_samples=1, guidance_scale=0.0)
    rcsb = RCSB(classifier, tiny_bridge, MaskRegion(box_mask(4)), **base)
    plain = rcsb.generate(x, target=0, seed=0)
    esc = rcsb.generate(x, target=0, seed=0, escalation=("tiny-stage",))
    assert esc.stage is not None and plain.stage is not None
    assert plain.stage.tolist() == [0, 0, 0, 0]
    failed = ~plain.success
    # the inputs that flipped keep their result; the others take the stage's where it ranks
    # higher, and the stage's result is that of the stage's setting called directly
    assert torch.equal(esc.counterfactuals[~failed], plain.counterfactuals[~failed])
    assert bool((esc.stage[~failed] == 0).all())
    stage_cfg = RCSBConfig(**base).stage("tiny-stage")
    assert stage_cfg.n_samples == 1 and stage_cfg.escalation == ()
    assert stage_cfg.nfe == 5 and stage_cfg.guidance_scale == 20.0
    direct = RCSB(classifier, tiny_bridge, MaskRegion(box_mask(4)), config=stage_cfg).generate(
        x, target=0, seed=0
    )
    moved = esc.stage == 1
    assert bool(moved.any())
    # the stage runs on the failed inputs only, the direct call on all four: another batch
    # size can take other kernels (bits differ by CPU and thread count), so a tolerance
    torch.testing.assert_close(
        esc.counterfactuals[moved], direct.counterfactuals[moved], atol=1e-5, rtol=0
    )
    assert bool(esc.success.float().mean() >= plain.success.float().mean())
    # an input's result does not depend on the others in the batch
    alone = rcsb.generate(
        x[3:], target=0, seed=0, escalation=("tiny-stage",), index_offset=3, region=box_mask(1)
    )
    assert torch.allclose(alone.counterfactuals[0], esc.counterfactuals[3], atol=1e-5)
    assert alone.stage.tolist() == esc.stage[3:].tolist()


def test_escalation_names_must_be_presets(classifier, tiny_bridge):
    with pytest.raises(ValueError, match=r"escalation\[1\]"):
        RCSB(classifier, tiny_bridge, escalation=("fast", "nope"))
    with pytest.raises(ValueError, match=r"escalation\[0\]"):
        RCSB(classifier, tiny_bridge, escalation=(3,))
    with pytest.raises(TypeError, match="escalation"):
        RCSB(classifier, tiny_bridge, escalation="fast")


def test_guidance_reference_nfe_rescales_the_scale_and_adams_memory(
    classifier, tiny_bridge, images
):
    from rcsb_captum.config import RCSBConfig
    from rcsb_captum.guidance import guidance_for_steps

    assert guidance_for_steps(RCSBConfig(nfe=20)) == (1.5, (0.9, 0.999))
    scale, (b1, b2) = guidance_for_steps(RCSBConfig(nfe=20, guidance_reference_nfe=100))
    assert scale == pytest.approx(7.5)
    assert b1 == pytest.approx(0.9**5) and b2 == pytest.approx(0.999**5)
    # at its own number of steps the reference changes nothing, bit for bit
    kw = dict(start_step=100, nfe=5, n_samples=1)
    plain = RCSB(classifier, tiny_bridge, MaskRegion(box_mask()), **kw)
    same = RCSB(classifier, tiny_bridge, MaskRegion(box_mask()), guidance_reference_nfe=5, **kw)
    assert torch.equal(
        plain.generate(images, target=0, seed=0).samples,
        same.generate(images, target=0, seed=0).samples,
    )
    longer = RCSB(
        classifier, tiny_bridge, MaskRegion(box_mask()), guidance_reference_nfe=50, **kw
    ).generate(images, target=0, seed=0)
    assert not torch.allclose(longer.samples, plain.generate(images, target=0, seed=0).samples)
    for bad in (-1, 2.5, "100"):
        with pytest.raises((ValueError, TypeError), match="guidance_reference_nfe"):
            RCSB(classifier, tiny_bridge, guidance_reference_nfe=bad)


def test_attribute_takes_captums_tuple_form_and_is_decorated(classifier, tiny_bridge, images):
    rcsb = RCSB(classifier, tiny_bridge, MaskRegion(box_mask()), **FAST)
    plain = rcsb.attribute(images, target=0, seed=0)
    (as_tuple,) = rcsb.attribute((images,), target=0, seed=0)
    assert torch.equal(plain, as_tuple)
    assert hasattr(RCSB.attribute, "__wrapped__")  # what Captum's NoiseTunnel calls
    with pytest.raises(ValueError, match="additional_forward_args"):
        rcsb.attribute((images, images), target=0, seed=0)


def test_a_tensor_of_masks_is_a_fixed_region(classifier, tiny_bridge, images):
    a = RCSB(classifier, tiny_bridge, box_mask(), **FAST).generate(images, target=0, seed=0)
    b = RCSB(classifier, tiny_bridge, MaskRegion(box_mask()), **FAST).generate(
        images, target=0, seed=0
    )
    assert torch.equal(a.samples, b.samples) and torch.equal(a.regions, b.regions)


def test_seeded_calls_in_parallel_threads_equal_the_same_calls_alone(classifier, tiny_bridge):
    from concurrent.futures import ThreadPoolExecutor

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    # the default region (IG in Captum's NoiseTunnel, which draws from the global generator)
    rcsb = RCSB(classifier, tiny_bridge, start_step=100, nfe=3, n_samples=1, ig_steps=4)
    seeds = list(range(6))
    alone = {s: rcsb.attribute(x, target=0, seed=s) for s in seeds}
    state = torch.get_rng_state()
    for _ in range(2):
        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(lambda s: rcsb.attribute(x, target=0, seed=s), seeds))
        got = dict(zip(seeds, results, strict=True))
        for s in seeds:
            assert torch.allclose(got[s], alone[s], atol=1e-5), s
    assert torch.equal(torch.get_rng_state(), state)  # the caller's global stream untouched


def test_stable_selection_keeps_the_most_stable_flipped_sample(classifier, tiny_bridge, images):
    from rcsb_captum.stability import transform_stability

    opts = dict(start_step=100, nfe=3, n_samples=3, guidance_scale=20.0)
    region = MaskRegion(box_mask())
    confident = RCSB(classifier, tiny_bridge, region, **opts).generate(images, target=0, seed=4)
    stable = RCSB(classifier, tiny_bridge, region, sample_selection="stable", **opts).generate(
        images, target=0, seed=4
    )
    # the same samples, another choice among them
    assert torch.equal(stable.samples, confident.samples)
    flat = stable.samples.flatten(0, 1)
    s = transform_stability(classifier, flat, torch.zeros(6, dtype=torch.long)).view(2, 3)
    key = stable.sample_success.float() * 2 + s
    for i in range(2):
        assert torch.equal(stable.counterfactuals[i], stable.samples[i, key[i].argmax()])
    # the confident rule ranks by p(not target) instead; at least one of them is a flip here
    assert stable.sample_success.any()
    p_not = 1 - torch.softmax(classifier(flat), 1)[:, 0].view(2, 3)
    want = (confident.sample_success.float() * 2 + p_not.detach()).argmax(1)
    for i in range(2):
        assert torch.equal(confident.counterfactuals[i], confident.samples[i, want[i]])


def test_sample_selection_is_checked_and_kept_by_escalation_stages():
    from rcsb_captum.config import RCSBConfig

    with pytest.raises(ValueError, match="sample_selection"):
        RCSBConfig(sample_selection="best")
    cfg = RCSBConfig.preset("realistic_fast")
    assert cfg.stage("realistic").sample_selection == cfg.sample_selection
