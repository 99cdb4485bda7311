import pytest
import torch

from rcsb_captum.bridge import random_freeform_masks


def test_masks_respect_area_and_seed():
    g = torch.Generator().manual_seed(0)
    m = random_freeform_masks(64, 32, (0.1, 0.4), generator=g)
    frac = m.mean((1, 2, 3))
    assert m.shape == (64, 1, 32, 32) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert frac.min() >= 0.09 and frac.max() <= 0.41
    again = random_freeform_masks(64, 32, (0.1, 0.4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(m, again)


def test_masks_follow_the_package_seed_rule():
    a = random_freeform_masks(4, 16, (0.1, 0.4), generator=3)
    b = random_freeform_masks(4, 16, (0.1, 0.4), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="seed"):
        random_freeform_masks(4, 16, generator=-1)
