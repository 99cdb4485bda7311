import pytest
import torch

from rcsb_captum.infillers import (
    BlurInfiller,
    BridgeInfiller,
    Infiller,
    LocalMeanInfiller,
    MeanInfiller,
    RandomColorNoiseInfiller,
)

INFILLERS = [
    MeanInfiller(),
    MeanInfiller([0.1, 0.2, 0.3]),
    LocalMeanInfiller(5),
    BlurInfiller(2.0),
    RandomColorNoiseInfiller(),
]


@pytest.mark.parametrize("infiller", INFILLERS, ids=repr)
def test_infillers_keep_kept_pixels_exactly(infiller, images):
    keep = (torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3)) > 0.4).float()
    out = infiller(images, keep, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    kept = keep.bool().expand_as(images)
    assert torch.equal(out[kept], images[kept])
    assert not torch.equal(out[~kept], images[~kept])
    assert 0 <= out.min() and out.max() <= 1
    with pytest.raises(ValueError, match="keep"):
        infiller(images, keep[:, :, :16])


def test_infiller_values():
    x = torch.zeros(1, 1, 8, 8)
    x[..., :4] = 1.0  # left half white
    keep = torch.zeros(1, 1, 8, 8)
    keep[..., 0] = 1  # keep the leftmost column (white) ...
    keep[..., 7] = 1  # ... and the rightmost (black)
    mean = MeanInfiller()(x, keep)
    assert torch.allclose(mean[..., 3], torch.full((1, 1, 8), 0.5))
    local = LocalMeanInfiller(3)(x, keep)
    assert local[0, 0, 0, 1] == 1.0 and local[0, 0, 0, 6] == 0.0  # neighbours of kept columns
    assert local[0, 0, 0, 3] == 0.5  # no kept neighbour: the kept-pixel mean
    blur = BlurInfiller(1.0)(x, keep)
    assert 0.5 < blur[0, 0, 0, 3] < 1 and 0 < blur[0, 0, 0, 4] < 0.5


def test_bridge_infiller_keeps_pixels_and_fills_the_rest(tiny_bridge, images):
    keep = torch.ones(2, 1, 32, 32)
    keep[:, :, 8:24, 8:24] = 0
    inf = BridgeInfiller(tiny_bridge, nfe=4)
    out = inf(images, keep, torch.Generator().manual_seed(0))
    kept = keep.bool().expand_as(images)
    assert torch.equal(out[kept], images[kept])
    assert (out[~kept] - images[~kept]).abs().mean() > 0.05
    again = inf(images, keep, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    with pytest.raises(ValueError, match="channels"):
        inf(images[:, :1], keep)


class Broken(Infiller):
    def __init__(self, make):
        self.make = make

    def fill(self, images, keep, generator):
        return self.make(images)


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda x: x * float("nan"), ValueError, "non-finite"),
        (lambda x: x[:1], ValueError, "shaped like"),
        (lambda x: x.numpy(), TypeError, "must return a Tensor"),
    ],
)
def test_infiller_outputs_are_checked(images, make, error, match):
    keep = torch.ones(2, 1, 32, 32)
    with pytest.raises(error, match=match):
        Broken(make)(images, keep)


@pytest.mark.parametrize(
    "args,error,match",
    [
        ((torch.rand(2, 3, 8, 8) * 2, torch.ones(2, 1, 8, 8)), ValueError, r"\[0, 1\]"),
        ((torch.rand(2, 3, 8, 8), torch.ones(2, 1, 4, 4)), ValueError, "keep must be"),
        ((torch.rand(2, 3, 8, 8), [1]), TypeError, "keep must be a Tensor"),
    ],
)
def test_infiller_arguments_are_checked(args, error, match):
    with pytest.raises(error, match=match):
        MeanInfiller()(*args)


def test_bridge_infiller_rejects_images_the_bridge_does_not_fit(tiny_bridge):
    with pytest.raises(ValueError, match="channels"):
        BridgeInfiller(tiny_bridge)(torch.rand(1, 1, 32, 32), torch.ones(1, 1, 32, 32))
    with pytest.raises(TypeError, match="bridge"):
        BridgeInfiller("bridge.pt")
    with pytest.raises(ValueError, match="sigma"):
        BlurInfiller(0.0)


@pytest.mark.parametrize("infiller", INFILLERS, ids=repr)
def test_one_generator_per_row_makes_each_row_independent_of_the_others(infiller, images):
    keep = (torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3)) > 0.4).float()

    def gens():
        return [torch.Generator().manual_seed(s) for s in (11, 12)]

    both = infiller(images, keep, gens())
    second = infiller(images[1:], keep[1:], gens()[1:])
    assert torch.equal(both[1:], second)
    assert torch.equal(both, infiller(images, keep, gens()))


def test_per_row_generators_are_checked(images):
    keep = torch.ones(2, 1, 32, 32)
    with pytest.raises(ValueError, match="one per row of images"):
        RandomColorNoiseInfiller()(images, keep, [torch.Generator()])

    class OneGenerator(Infiller):
        def fill(self, images, keep, generator):
            return torch.rand(images.shape, generator=generator)

    with pytest.raises(TypeError, match="does not set per_row_generators"):
        OneGenerator()(images, keep, [torch.Generator(), torch.Generator()])
    assert OneGenerator()(images, keep, torch.Generator().manual_seed(0)).shape == images.shape
