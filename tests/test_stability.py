import pytest
import torch

from rcsb_captum.stability import (
    STABILITY_BLURS,
    STABILITY_SHIFTS,
    stability_transforms,
    transform_stability,
)

K = len(STABILITY_SHIFTS) + len(STABILITY_BLURS)


def test_transforms_are_shifts_then_blurs():
    x = torch.rand(3, 2, 9, 9, generator=torch.Generator().manual_seed(0))
    t = stability_transforms(x).view(K, 3, 2, 9, 9)
    # (0, 1): one column to the right, the first column repeated
    assert torch.equal(t[0][..., 1:], x[..., :-1])
    assert torch.equal(t[0][..., 0], x[..., 0])
    # (-1, 0): one row up, the last row repeated
    assert torch.equal(t[3][..., :-1, :], x[..., 1:, :])
    assert torch.equal(t[3][..., -1, :], x[..., -1, :])
    # a constant image is left as it is by every transformation
    c = torch.full((1, 1, 9, 9), 0.3)
    assert torch.allclose(stability_transforms(c), c.expand(K, 1, 9, 9))


def _pixel_classifier(x):
    # class 1 iff the centre pixel is bright: a single-pixel (non-robust) feature
    z = (x[:, 0, 4, 4] - 0.5) * 50
    return torch.stack([-z, z], 1)


def _mass_classifier(x):
    # class 1 iff the image is bright overall: survives shifts and blurs
    z = (x.mean((1, 2, 3)) - 0.5) * 50
    return torch.stack([-z, z], 1)


def test_a_single_pixel_change_is_unstable_a_broad_one_stable():
    dot = torch.zeros(1, 1, 9, 9)
    dot[..., 4, 4] = 1.0  # flips the pixel classifier to class 1
    blob = torch.full((1, 1, 9, 9), 0.9)
    t0, cf1 = torch.tensor([0]), torch.tensor([1])
    assert _pixel_classifier(dot).argmax(1).item() == 1
    assert transform_stability(_pixel_classifier, dot, t0, cf1).item() < 0.1
    assert transform_stability(_mass_classifier, blob, t0, cf1).item() > 0.99
    # no counterfactual class: the probability of leaving the target
    assert transform_stability(_mass_classifier, blob, t0).item() > 0.99
    assert transform_stability(_mass_classifier, blob, cf1).item() < 0.01


def test_batches_and_extra_arguments_do_not_change_the_result():
    x = torch.rand(5, 1, 9, 9, generator=torch.Generator().manual_seed(1))
    t, cf = torch.zeros(5, dtype=torch.long), torch.ones(5, dtype=torch.long)
    whole = transform_stability(_mass_classifier, x, t, cf)
    assert torch.allclose(transform_stability(_mass_classifier, x, t, cf, batch_size=2), whole)
    seen = []

    def model(x, bias):
        seen.append(bias.shape[0] == x.shape[0])
        return _mass_classifier(x) + bias[:, None] * torch.tensor([0.0, 1.0])

    out = transform_stability(model, x, t, cf, (torch.zeros(5),), batch_size=2)
    assert torch.allclose(out, whole) and all(seen)


def test_bad_logits_are_refused():
    with pytest.raises((TypeError, ValueError), match="forward_func"):
        transform_stability(lambda x: x.mean(), torch.rand(2, 1, 9, 9), torch.tensor([0, 1]))
