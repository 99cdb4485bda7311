import pytest
import torch
from captum.attr import (
    FeatureAblation,
    IntegratedGradients,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)

from rcsb_captum import RCSB, AttributionRegion, MaskRegion, RandomRegion, SegmentationRegion
from rcsb_captum.regions import attribution_to_region, default_region, named_region


@pytest.mark.parametrize(
    "method,kwargs",
    [
        (lambda m: NoiseTunnel(IntegratedGradients(m)), dict(nt_samples=2, stdevs=0.05, n_steps=4)),
        (Saliency, {}),
        (lambda m: LayerGradCam(m, m.net[0]), {}),
        (Occlusion, dict(sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8))),
        (FeatureAblation, {}),
    ],
)
def test_attribution_region_sources(classifier, images, method, kwargs):
    region = AttributionRegion(method(classifier), cell_size=4, area=0.25, **kwargs)
    m = region(images, torch.tensor([0, 1]))
    assert m.shape == (2, 1, 32, 32)
    frac = m.mean((1, 2, 3))
    assert torch.all(frac > 0) and torch.all(frac <= 0.25)
    # cells are whole: constant inside each 4 x 4 cell
    cells = m.unfold(2, 4, 4).unfold(3, 4, 4)
    assert torch.all(cells.amax((-1, -2)) == cells.amin((-1, -2)))


def test_attribution_to_region_keeps_the_top_cells():
    a = torch.zeros(1, 3, 8, 8)
    a[0, :, 0:4, 0:4] = 5.0  # strongest cell
    a[0, :, 4:8, 4:8] = -1.0  # second (absolute value)
    a[0, :, 0:4, 4:8] = 0.1
    r = attribution_to_region(a, (8, 8), cell_size=4, area=0.5)
    assert r[0, 0, 0, 0] == 1 and r[0, 0, 7, 7] == 1 and r[0, 0, 0, 7] == 0 and r[0, 0, 7, 0] == 0


def test_default_region_is_integrated_gradients_noise_tunnel(classifier):
    rcsb = RCSB(classifier, None)
    assert isinstance(rcsb.region.method, NoiseTunnel)
    assert (
        rcsb.region.attribute_kwargs["nt_samples"] == 5
        and rcsb.region.attribute_kwargs["stdevs"] == 0.05
    )
    assert (rcsb.guidance_scale, rcsb.start_step, rcsb.nfe, rcsb.n_samples) == (1.5, 600, 100, 2)


@pytest.mark.parametrize("n_steps", [50, 8])
def test_default_region_runs_ig_of_n_steps_in_five_noise_samples(classifier, n_steps):
    seen = []

    def counting(x):
        seen.append(x.shape[0])
        return classifier(x)

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    region = default_region(counting, cell_size=8, n_steps=n_steps)
    masks = region(x, torch.tensor([0, 1]), seeds=[0, 1])
    assert masks.shape == (2, 1, 32, 32)
    assert sum(seen) == 2 * 5 * n_steps  # per image: 5 noisy copies x n_steps IG points
    named = named_region("ig", counting, 8, ig_steps=n_steps)
    assert torch.equal(named(x, torch.tensor([0, 1]), seeds=[0, 1]), masks)
    with pytest.raises(ValueError, match="ig_steps"):
        named_region("ig", counting, 8, ig_steps=0)


def test_ig_steps_with_another_region_is_refused(classifier):
    named_region("saliency", classifier, 8, ig_steps=50)  # the default: accepted
    with pytest.raises(ValueError, match="ig_steps sets the 'ig' region"):
        named_region("saliency", classifier, 8, ig_steps=8)


def test_auto_cell_size():
    from rcsb_captum.regions import auto_cell_size

    assert [auto_cell_size(s, s) for s in (256, 128, 64, 32, 28, 7)] == [16, 16, 8, 4, 3, 1]


def test_cells_need_not_divide_the_image():
    a = torch.zeros(1, 1, 28, 28)
    a[..., 27, 27] = 5.0  # the corner cell is cut to 1 x 1 px by the border
    a[..., 0, 0] = 1.0
    r = attribution_to_region(a, (28, 28), cell_size=3, area=0.02)  # 2 of 100 cells
    assert r.shape == (1, 1, 28, 28)
    assert r[..., 27, 27] == 1 and r[..., 0:3, 0:3].eq(1).all()
    assert r.sum() == 1 + 9


@pytest.mark.parametrize(
    "masks,error,match",
    [
        (torch.full((1, 1, 4, 4), float("nan")), ValueError, "NaN"),
        (torch.full((1, 1, 4, 4), 1.5), ValueError, r"\[0, 1\]"),
        (torch.zeros(1, 2, 4, 4), ValueError, "one channel|N x 1"),
        ("mask", TypeError, "Tensor"),
    ],
)
def test_mask_region_rules(masks, error, match):
    with pytest.raises(error, match=match):
        MaskRegion(masks)


def test_mask_region_threshold_and_numpy():
    soft = torch.tensor([[0.2, 0.5], [0.49, 1.0]])
    assert MaskRegion(soft).masks[0, 0].tolist() == [[0.0, 1.0], [0.0, 1.0]]
    assert MaskRegion(soft.numpy() > 0.4).masks.sum() == 3
    with pytest.raises(ValueError, match="do not fit"):
        MaskRegion(soft)(torch.rand(1, 1, 4, 4))


def test_noise_tunnel_region_is_seeded_per_image(classifier, images):
    region = default_region(classifier, cell_size=8, area=0.25)
    assert region.per_image
    a = region(images, torch.tensor([0, 1]), seeds=[11, 12])
    b = region(images[1:], torch.tensor([1]), seeds=[12])
    assert torch.equal(a[1:], b)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    region(images, torch.tensor([0, 1]), seeds=[11, 12])
    assert torch.equal(torch.get_rng_state(), state)


def test_random_region_arguments():
    with pytest.raises(ValueError, match="area"):
        RandomRegion(area=1.5)
    with pytest.raises(ValueError, match="cell_size"):
        RandomRegion(cell_size=None)
    r = RandomRegion(cell_size=3, area=0.5)(torch.rand(2, 1, 28, 28))
    assert r.shape == (2, 1, 28, 28)


def test_segmentation_region_rejects_float_maps():
    with pytest.raises(TypeError, match="integers"):
        SegmentationRegion(torch.rand(1, 4, 4), labels=[1])(torch.rand(1, 3, 4, 4))


def test_default_region_does_not_warn_about_captum_batch_sizes(classifier):
    import warnings

    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    region = default_region(classifier, cell_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Captum warns when internal_batch_size < examples
        masks = region(x, torch.zeros(16, dtype=torch.long), seeds=list(range(16)))
    assert masks.shape == (16, 1, 32, 32)


def test_mask_region_takes_one_mask_per_input_without_a_channel():
    masks = torch.zeros(3, 8, 8)
    masks[1, :4] = 1
    region = MaskRegion(masks)
    assert region.masks.shape == (3, 1, 8, 8)
    assert torch.equal(region(torch.rand(3, 1, 8, 8))[:, 0], masks)


@pytest.mark.parametrize("cell", [33, 64])
def test_a_cell_larger_than_the_image_is_refused(classifier, images, cell):
    from rcsb_captum import RCSB, RandomRegion

    with pytest.raises(ValueError, match="cell_size .* larger than the 32 x 32 image"):
        RandomRegion(cell_size=cell, area=0.3)(images, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="cell_size .* larger than"):
        RCSB(classifier, cell_size=cell).region(images, torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("size,cell", [(28, 3), (28, "auto"), (30, 4), (32, 4), (256, 16)])
def test_area_caps_the_fraction_of_pixels(size, cell):
    from rcsb_captum.regions import RandomRegion, _resolve_cell_size

    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 1, size, size, generator=g) + 0.01
    c = _resolve_cell_size(cell, size, size)
    for area in (0.1, 0.3, 0.45):
        for r in (
            attribution_to_region(a, (size, size), cell, area),
            RandomRegion(cell, area)(torch.zeros(3, 1, size, size)),
        ):
            frac = r.mean((1, 2, 3))
            # never above the cap, and at most one whole cell below it
            assert (frac <= area + 1e-6).all(), (area, frac)
            assert (frac > area - c * c / size**2 - 1e-6).all(), (area, frac)
            if size % c == 0:  # a grid that divides the image: the official floor(area * cells)
                cells = (size // c) ** 2
                assert torch.allclose(frac, torch.full((3,), int(area * cells) / cells))


class _FakeSegmenter:
    """Scores a fixed square per image, higher towards its centre; records its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, images, prompts):
        self.calls.append(list(prompts))
        n, _, h, w = images.shape
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        d = ((yy - h / 2).abs() + (xx - w / 2).abs()).float()
        score = (1 - d / d.max()).clamp(0, 1) * (d < h / 4)
        return score.expand(n, 1, h, w).clone()


def test_text_region_threshold_area_prompts_and_errors():
    from rcsb_captum import TextRegion, TextSegmenter

    seg = _FakeSegmenter()
    assert isinstance(seg, TextSegmenter)
    x = torch.rand(2, 3, 32, 32)
    binary = TextRegion(seg, "the sleeves", threshold=0.5)(x)
    assert binary.shape == (2, 1, 32, 32) and set(binary.unique().tolist()) == {0.0, 1.0}
    assert seg.calls[-1] == ["the sleeves", "the sleeves"]
    top = TextRegion(seg, ["a", "b"], area=0.05)(x)
    assert torch.allclose(top.mean((1, 2, 3)), torch.full((2,), int(0.05 * 1024) / 1024))
    assert (top <= (seg(x, ["a", "b"]) > 0)).all()  # only scored pixels
    # a large area keeps only what the segmenter scored (never unscored background)
    wide = TextRegion(seg, "a", area=0.9)(x)
    assert wide.sum() == (seg(x, ["a"] * 2) > 0).sum()
    with pytest.raises(ValueError, match="2 prompts for 3 images"):
        TextRegion(seg, ["a", "b"])(torch.rand(3, 3, 32, 32))
    with pytest.raises(ValueError, match="selects nothing in image"):
        TextRegion(lambda im, p: torch.zeros(len(im), 1, 32, 32), "a")(x)
    with pytest.raises(ValueError, match="N x 1 x H x W"):
        TextRegion(lambda im, p: torch.zeros(len(im), 32, 32), "a")(x)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TextRegion(lambda im, p: torch.full((len(im), 1, 32, 32), 2.0), "a")(x)
    with pytest.raises(ValueError, match="prompt"):
        TextRegion(seg, "  ")
    with pytest.raises(TypeError, match="segmenter must be callable"):
        TextRegion("langsam", "a")


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_regions_draw_from_their_own_generator_bit_for_bit(classifier, nt_type):
    import threading

    from rcsb_captum._utils import GLOBAL_RNG_LOCK, seeded_global_rng

    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 1, 2])
    opts = dict(nt_type=nt_type, nt_samples=3, stdevs=0.1, n_steps=4)
    region = AttributionRegion(NoiseTunnel(IntegratedGradients(classifier)), 8, 0.25, **opts)
    # Captum's NoiseTunnel itself, one image at a time under torch.manual_seed(seed)
    want = []
    for i, seed in enumerate([7, 8, 9]):
        with seeded_global_rng(seed):
            nt = NoiseTunnel(IntegratedGradients(classifier))
            want.append(nt.attribute(x[i : i + 1].requires_grad_(), target=y[i : i + 1], **opts))
    state = torch.get_rng_state()
    # no global state: the region is drawn while another thread holds the global-RNG lock
    got: list[torch.Tensor] = []
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with GLOBAL_RNG_LOCK:
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    worker = threading.Thread(target=lambda: got.append(region.attributions(x, y, seeds=[7, 8, 9])))
    worker.start()
    worker.join(120)
    release.set()
    holder.join()
    assert got, "the NoiseTunnel region waited for torch's global generator"
    assert torch.equal(got[0], torch.cat(want).detach())
    assert torch.equal(torch.get_rng_state(), state)


def test_noise_tunnel_options_it_does_not_reproduce_fall_back_to_the_seeded_global_rng(classifier):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    opts = dict(nt_samples=4, nt_samples_batch_size=2, stdevs=0.1, n_steps=4)
    region = AttributionRegion(NoiseTunnel(IntegratedGradients(classifier)), 8, 0.25, **opts)
    a = region.attributions(x, torch.tensor([0, 1]), seeds=[1, 2])
    torch.manual_seed(123)  # another global state does not matter
    assert torch.equal(region.attributions(x, torch.tensor([0, 1]), seeds=[1, 2]), a)
