import numpy as np
import pytest
import torch
from torch import nn

from rcsb_captum import _utils as U


@pytest.mark.parametrize(
    "value,error,match",
    [
        ([[0.5]], TypeError, "torch.Tensor"),
        (np.zeros((1, 1, 2, 2), np.float32), TypeError, "torch.as_tensor"),
        (torch.zeros(1, 1, 2, 2, dtype=torch.uint8), TypeError, "x.float\\(\\) / 255"),
        (torch.zeros(1, 2, 2), ValueError, "N x C x H x W"),
        (torch.zeros(0, 1, 2, 2), ValueError, "empty batch"),
        (torch.zeros(1, 0, 2, 2), ValueError, "empty dimension"),
        (torch.full((1, 1, 2, 2), float("inf")), ValueError, "non-finite"),
        (torch.full((1, 1, 2, 2), -0.1), ValueError, r"\[0, 1\]"),
    ],
)
def test_format_images_rejects(value, error, match):
    with pytest.raises(error, match=match):
        U.format_images(value)


def test_format_images_accepts_float_dtypes_as_given():
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = torch.rand(2, 1, 3, 3).to(dtype)
        assert U.format_images(x) is x
    assert U.format_images(torch.full((1, 1, 2, 2), 5.0), check_range=False).max() == 5


@pytest.mark.parametrize(
    "value,expected",
    [
        (2, [2, 2, 2]),
        (np.int64(1), [1, 1, 1]),
        ([0, 1, 2], [0, 1, 2]),
        ((2, 1, 0), [2, 1, 0]),
        (torch.tensor([1, 1, 0]), [1, 1, 0]),
        (torch.tensor(2), [2, 2, 2]),
        (torch.tensor([[0], [1], [2]]), [0, 1, 2]),
        (np.array([2, 0, 1]), [2, 0, 1]),
    ],
)
def test_format_classes_captum_forms(value, expected):
    assert U.format_classes(value, 3, 3).tolist() == expected


@pytest.mark.parametrize(
    "value,error,match",
    [
        (None, TypeError, "got None"),
        (True, TypeError, "got bool"),
        (1.0, TypeError, "got float"),
        ("1", TypeError, "got str"),
        ([0.0, 1.0, 2.0], TypeError, "integer classes"),
        (torch.tensor([True, False, True]), TypeError, "integer classes"),
        ([0, 1], ValueError, "one per input \\(3\\)"),
        (torch.ones(3, 2, dtype=torch.long), ValueError, "one class per input"),
        (3, ValueError, "outside \\[0, 2\\]"),
        (-1, ValueError, "outside"),
    ],
)
def test_format_classes_rejects(value, error, match):
    with pytest.raises(error, match=match):
        U.format_classes(value, 3, 3)


def test_numbers():
    assert U.check_int(np.int32(3), "k", 1) == 3
    with pytest.raises(TypeError, match="k must be an integer"):
        U.check_int(3.0, "k")
    with pytest.raises(TypeError, match="k must be an integer"):
        U.check_int(True, "k")
    with pytest.raises(ValueError, match=r"k must be in \[1, inf\]"):
        U.check_int(0, "k", 1)
    assert U.check_number(2, "s", 0) == 2.0
    with pytest.raises(ValueError, match="finite"):
        U.check_number(float("nan"), "s")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        U.check_number(0.0, "a", 0, 1, low_open=True)


def test_image_seeds_are_per_index_and_stream():
    a = U.image_seeds(0, 4)
    assert a == U.image_seeds(0, 4)  # deterministic
    assert U.image_seeds(0, 2, offset=2) == a[2:]  # an image's seed is its own
    assert len(set(a)) == 4
    assert set(U.image_seeds(0, 4, stream=U.REGION_STREAM)).isdisjoint(a)
    assert U.image_seeds(1, 4) != a
    assert all(0 <= s < 2**62 for s in a)


def test_base_seed_and_as_generator():
    assert U.base_seed(5) == 5
    g = torch.Generator().manual_seed(0)
    first = U.base_seed(g)
    assert first != U.base_seed(g)  # a generator advances
    assert U.as_generator(g) is g
    a = torch.rand(3, generator=U.as_generator(7))
    assert torch.equal(a, torch.rand(3, generator=U.as_generator(7)))
    with pytest.raises(ValueError, match="seed"):
        U.as_generator(-3)


def test_seeded_global_rng_repeats_and_restores():
    torch.manual_seed(1)
    before = torch.get_rng_state()
    with U.seeded_global_rng(42):
        a = torch.randn(3)
    with U.seeded_global_rng(42):
        b = torch.randn(3)
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), before)


def test_model_left_as_given_restores_modes():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.BatchNorm1d(2))
    model.train()
    model[1].eval()  # a mixed state comes back mixed
    with U.model_left_as_given(model.forward):
        assert not any(m.training for m in model.modules())
    assert model.training and not model[1].training and model[2].training
    with pytest.raises(RuntimeError):
        with U.model_left_as_given(model):
            raise RuntimeError("boom")
    assert model.training
    with U.model_left_as_given(lambda x: x, None):  # plain callables are fine
        pass


def test_check_logits():
    assert U.check_logits(torch.zeros(2, 3), 2).shape == (2, 3)
    with pytest.raises(TypeError, match="Tensor of logits"):
        U.check_logits([0.0], 1)
    with pytest.raises(ValueError, match="N x K"):
        U.check_logits(torch.zeros(3, 3), 2)


def test_flush_denormal_is_scoped():
    torch.set_flush_denormal(False)
    assert not U._flushing()
    with U.flush_denormal():
        assert U._flushing() or not torch.set_flush_denormal(True)  # no FTZ on this CPU
    assert not U._flushing()
    torch.set_flush_denormal(True)
    with U.flush_denormal():
        pass
    assert U._flushing()  # a caller's own setting is kept
    torch.set_flush_denormal(False)
