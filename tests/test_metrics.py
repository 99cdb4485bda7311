import math

import pytest
import torch
from torch import nn

from rcsb_captum import metrics as M


class Threshold(nn.Module):
    """Class 1 when the top-left quadrant is bright, else class 0 (logits)."""

    def forward(self, x):
        s = x[:, :, :4, :4].mean((1, 2, 3))
        return torch.stack([(0.5 - s) * 20, (s - 0.5) * 20], 1)


def _images(n=6, c=3, size=8, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed)) * 0.4


def test_flip_rate_and_probability_change():
    model = Threshold()
    x = _images()
    cf = x.clone()
    cf[:4, :, :4, :4] = 1.0  # the first four flip to class 1
    assert M.flipped(model, cf, 0).tolist() == [True] * 4 + [False] * 2
    assert M.flip_rate(model, cf, 0) == pytest.approx(4 / 6)
    assert M.flip_rate(model, cf, 0, counterfactual_target=1) == pytest.approx(4 / 6)
    assert M.flip_rate(
        model, cf, [0] * 6, counterfactual_target=torch.zeros(6, dtype=torch.long)
    ) == pytest.approx(2 / 6)
    dp = M.probability_change(model, x, cf, 0, counterfactual_target=1)
    assert (dp[:4] > 0.9).all() and dp[4:].abs().max() < 1e-6
    assert torch.allclose(M.probability_change(model, x, cf, 0), dp, atol=1e-6)
    with pytest.raises(ValueError, match="target"):
        M.flipped(model, cf, [0, 1])


def test_cout_bounds_and_direction():
    model = Threshold()
    x = _images(4, 1)
    cf = x.clone()
    cf[:, :, :4, :4] = 1.0  # the whole change is in the decisive quadrant
    score = M.cout(model, x, cf, 0, 1)
    # the 16 changed pixels (of 64) are pasted first: the flip happens within the first quarter
    # of the 50 steps, so AUC(p_cf) > 0.75 and AUC(p_orig) < 0.25
    assert score.shape == (4,) and (score > 0.7).all() and (score <= 1).all()
    # the reverse: explaining the wrong way round gives a negative score
    assert (M.cout(model, x, cf, 1, 0) < -0.7).all()
    # no change at all: both probabilities stay put, COUT = p_cf - p_orig of the input
    same = M.cout(model, x, x.clone(), 0, 1)
    p = torch.softmax(model(x), 1)
    assert torch.allclose(same, p[:, 1] - p[:, 0], atol=1e-5)
    # counterfactual_target=None uses the counterfactual's own prediction
    assert torch.allclose(M.cout(model, x, cf, 0), score)


def test_cout_ranks_by_change_size():
    # a big change that does not matter and a small one that does: with the decisive pixels
    # ranked last, the flip happens late and COUT is low
    model = Threshold()
    x = torch.zeros(1, 1, 8, 8)
    cf = x.clone()
    cf[:, :, 4:, :] = 1.0  # large, irrelevant change on 32 pixels
    cf[:, :, :4, :4] = 0.9  # smaller, decisive change on 16 pixels
    late = M.cout(model, x, cf, 0, 1, steps=64)
    cf2 = cf.clone()
    cf2[:, :, 4:, :] = 0.5  # now the decisive pixels come first
    early = M.cout(model, x, cf2, 0, 1, steps=64)
    assert early.item() > late.item() + 0.4


def test_closeness_inside_outside():
    x = torch.zeros(2, 3, 4, 4)
    cf = x.clone()
    cf[0, :, 0, 0] = 0.5  # inside the region
    cf[1, 0, 3, 3] = 0.25  # outside the region
    regions = torch.zeros(2, 1, 4, 4)
    regions[:, :, :2, :2] = 1
    d = M.closeness(x, cf, regions)
    assert d["l1"].tolist() == pytest.approx([1.5 / 48, 0.25 / 48])
    assert d["l2"].tolist() == pytest.approx([math.sqrt(3 * 0.25), 0.25])
    assert d["l0"].tolist() == pytest.approx([1 / 16, 1 / 16])
    assert d["l1_inside"].tolist() == pytest.approx([1.5 / 12, 0.0])
    assert d["l0_outside"].tolist() == pytest.approx([0.0, 1 / 12])
    assert d["max_outside"].tolist() == [0.0, 0.25]
    with pytest.raises(ValueError, match="regions"):
        M.closeness(x, cf, regions[:, :, :2])


def test_frechet_distance_matches_closed_form():
    # for diagonal covariances the closed form is |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(5, generator=g), torch.randn(5, generator=g)
    a, b = torch.rand(5, generator=g) + 0.1, torch.rand(5, generator=g) + 0.1
    expected = (mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum()
    got = M.frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b))
    assert got == pytest.approx(expected.item(), rel=1e-6)
    # non-diagonal: rotating both covariances by the same orthogonal matrix changes nothing
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    a64, b64 = torch.diag(a).double(), torch.diag(b).double()
    rotated = M.frechet_distance(mu1 @ q.T.float(), q @ a64 @ q.T, mu2 @ q.T.float(), q @ b64 @ q.T)
    assert rotated == pytest.approx(expected.item(), rel=1e-5)


def test_fid_and_sfid_with_a_feature_extractor():
    g = torch.Generator().manual_seed(1)
    real = torch.rand(400, 2, 4, 4, generator=g)
    flatten = nn.Flatten()
    assert M.fid(real, real, flatten) == pytest.approx(0.0, abs=1e-6)
    shifted = (real + 0.3).clamp(max=2)
    far = M.fid(real, shifted, flatten)
    assert far > 1.0
    # sFID never pairs an image with its own counterfactual: identical sets give a small but
    # positive distance (two independent halves), the shifted set a large one
    same = M.sfid(real, real.clone(), flatten, n_splits=2)
    assert 0 < same < far / 5
    assert M.sfid(real, shifted, flatten) > far / 2
    keep = torch.zeros(400, dtype=torch.bool)
    keep[:300] = True
    assert M.sfid(real, shifted, flatten, keep=keep) > far / 2
    with pytest.raises(ValueError, match="feature_extractor is required"):
        M.fid(real, real, None)


def test_metrics_with_user_networks():
    x = _images(4)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 16))
    assert torch.allclose(M.s3(encoder, x, x.clone()), torch.ones(4), atol=1e-5)
    assert M.fva(encoder, x, x.clone()) == 1.0
    # an encoder whose embedding flips sign: cosine -1, FVA 0
    assert M.fva(lambda t: encoder(t) * (1 - 2 * (t.mean() > 0.3)), x, x + 0.5) == 0.0
    oracle = lambda t: t.flatten(1)[:, :5] - 0.5  # noqa: E731  attributes: first 5 values > 0.5
    cf = x.clone()
    cf.view(4, -1)[:, :2] = 0.9
    assert M.mnac(oracle, x, cf).tolist() == [2.0] * 4
    dist = M.lpips(lambda a, b: (a - b).abs().mean((1, 2, 3)), x, cf)
    assert dist.shape == (4,) and (dist > 0).all()
    assert torch.allclose(M.lpips(lambda a, b: (a - b).abs().mean((1, 2, 3)), x, x), torch.zeros(4))
    for fn in (M.s3, M.fva, M.mnac, M.lpips):
        with pytest.raises(ValueError, match="is required"):
            fn(None, x, x)


def test_report_skips_missing_networks_with_a_message():
    model = Threshold()
    x = _images(8)
    cf = x.clone()
    cf[:, :, :4, :4] = 1.0
    regions = torch.zeros(8, 1, 8, 8)
    regions[:, :, :4, :4] = 1
    with pytest.warns(UserWarning, match="s3, fva, mnac, lpips"):
        row = M.counterfactual_report(model, x, cf, 0, 1, regions, feature_extractor=nn.Flatten())
    assert row["flip_rate"] == 1.0 and row["max_outside"] == 0.0 and row["cout"] > 0.7
    assert "fid" in row and "sfid" in row and "s3" not in row


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda m, x, cf: M.flip_rate(m, cf, 5), ValueError, "outside"),
        (lambda m, x, cf: M.flip_rate(m, cf, 0.0), TypeError, "target"),
        (lambda m, x, cf: M.flip_rate(m, cf, 0, torch.ones(6)), TypeError, "integer"),
        (lambda m, x, cf: M.flip_rate(m, cf * float("nan"), 0), ValueError, "counterfactuals"),
        (lambda m, x, cf: M.cout(m, x, cf * float("nan"), 0), ValueError, "non-finite"),
        (lambda m, x, cf: M.cout(m, x, cf, [0.0] * 6), TypeError, "integer"),
        (lambda m, x, cf: M.cout(m, x, cf, 0, steps=0), ValueError, "steps"),
        (lambda m, x, cf: M.probability_change(m, x, cf, 0, 9), ValueError, "outside"),
        (lambda m, x, cf: M.probability_change(m, x, cf[:3], 0), ValueError, "same shape"),
        (lambda m, x, cf: M.flip_rate(m, cf, 0, batch_size=0), ValueError, "batch_size"),
        (lambda m, x, cf: M.flip_rate(lambda t: t.mean((1, 2, 3)), cf, 0), ValueError, "N x K"),
    ],
)
def test_bad_metric_arguments(call, error, match):
    x = _images()
    with pytest.raises(error, match=match):
        call(Threshold(), x, x.clone())


def test_metrics_leave_a_model_in_train_mode_as_given():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2), nn.Dropout(0.9)).train()
    x = _images()
    a = M.flipped(model, x, 0)
    assert torch.equal(a, M.flipped(model, x, 0))  # dropout off: repeatable
    assert model.training


def test_fid_refuses_sets_of_other_channels():
    import torch

    from rcsb_captum import metrics as M

    with pytest.raises(ValueError, match="same channels"):
        M.fid(torch.rand(4, 1, 8, 8), torch.rand(4, 3, 8, 8), lambda t: t.flatten(1))


def test_counterfactual_records_from_a_result(classifier, tiny_bridge, images):
    from rcsb_captum import RCSB, MaskRegion
    from rcsb_captum.records import RECORD_KEYS, counterfactual_records

    masks = torch.zeros(2, 1, 32, 32)
    masks[..., 8:24, 8:24] = 1
    rcsb = RCSB(classifier, tiny_bridge, MaskRegion(masks), start_step=50, nfe=3, n_samples=1)
    res = rcsb.generate(images, target=0, counterfactual_target=1, seed=0)
    names = [f"c{k}" for k in range(res.probs_after.shape[1])]
    records = counterfactual_records(images, res, names, digits=None)
    assert [list(r) for r in records] == [list(RECORD_KEYS)] * 2
    for i, r in enumerate(records):
        assert r["target"] == "c0" and r["counterfactual_target"] == "c1"
        assert r["p_counterfactual_after"] == float(res.probs_after[i, 1])
        assert r["predicted_after"] == r["top_after"][0][0]
        assert r["region_area"] == 0.25 and r["max_change_outside"] == 0.0
        inside = (res.counterfactuals[i] - images[i]).abs()[:, 8:24, 8:24].mean()
        assert abs(r["l1_inside"] - float(inside)) < 1e-6
