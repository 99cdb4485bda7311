import pytest
import torch

from rcsb_captum.demo import load_demo_classifier, load_demo_samples


def test_shipped_classifier_classifies_shipped_samples():
    model = load_demo_classifier()
    x, y = load_demo_samples()
    assert x.shape == (500, 1, 32, 32) and 0 <= x.min() and x.max() <= 1
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.88


def test_pick_images_pairs_and_classes():
    from rcsb_captum.demo import PAIRED_CLASSES, pick_images

    _, y = load_demo_samples()
    idx, cf = pick_images(y, y, 6, "pair")
    assert [int(y[i]) for i in idx] == list(PAIRED_CLASSES)
    assert [PAIRED_CLASSES[int(y[i])] for i in idx] == cf.tolist()
    idx, cf = pick_images(y, y, 4, "coat")
    assert cf.tolist() == [4] * 4 and all(int(y[i]) != 4 for i in idx)
    idx, cf = pick_images(y, y, 3, "any")
    assert cf is None and len(idx) == 3
    with pytest.raises(ValueError, match="counterfactual class"):
        pick_images(y, y, 3, "hat")


def test_shipped_robust_oracle_is_accurate_and_hard_to_fool():
    from rcsb_captum.demo import RobustOracleNet, load_demo_robust_oracle

    robust, model = load_demo_robust_oracle(), load_demo_classifier()
    assert isinstance(robust, RobustOracleNet) and not robust.training
    x, y = load_demo_samples()
    with torch.no_grad():
        acc = (robust(x).argmax(1) == y).float().mean()
    assert acc > 0.85
    assert robust.features(x[:2]).shape == (2, 192)
    # an L2 step of 0.5 along the guided classifier's gradient flips it for some images but
    # moves the robust judge for far fewer
    xs = x[:64].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xs), y[:64]), xs)
    step = 0.5 * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    adv = (x[:64] + step).clamp(0, 1)
    with torch.no_grad():
        fooled_model = (model(adv).argmax(1) != model(x[:64]).argmax(1)).sum()
        fooled_robust = (robust(adv).argmax(1) != robust(x[:64]).argmax(1)).sum()
    assert fooled_robust < fooled_model


def test_shipped_oracle_is_another_classifier_that_agrees_mostly():
    from rcsb_captum.demo import OracleNet, load_demo_oracle

    oracle, model = load_demo_oracle(), load_demo_classifier()
    assert isinstance(oracle, OracleNet) and not oracle.training
    x, y = load_demo_samples()
    with torch.no_grad():
        acc = (oracle(x).argmax(1) == y).float().mean()
        agree = (oracle(x).argmax(1) == model(x).argmax(1)).float().mean()
    assert acc > 0.8 and agree > 0.8
    assert oracle.features(x[:2]).shape == (2, 128)


def test_garment_parts_cover_the_garment_with_the_parts_of_its_class():
    from rcsb_captum.demo import load_demo_samples
    from rcsb_captum.demo.parts import PARTS_OF_CLASS, garment_parts

    x, y = load_demo_samples()
    x, y = x[:60], y[:60]
    parts = garment_parts(x, y)
    assert parts.shape == (60, 32, 32) and parts.dtype == torch.long
    garment = x[:, 0] > 0.1
    assert torch.equal(parts > 0, garment)  # every garment pixel has one part, nothing else
    for i in range(60):
        present = set(parts[i].unique().tolist()) - {0}
        assert present <= set(PARTS_OF_CLASS[int(y[i])])
        if int(y[i]) in (0, 2, 4, 6):  # tops: sleeves, collar, torso and hem all there
            assert present == {1, 2, 3, 4}
    tshirt = int((y == 0).nonzero()[0])
    p = parts[tshirt]
    cols = torch.arange(32)
    sleeve_cols = cols[(p == 1).any(0)]
    hem_cols = cols[(p == 4).any(0)]
    # the sleeves are outside the body's columns on both sides
    assert sleeve_cols.min() < hem_cols.min() and sleeve_cols.max() > hem_cols.max()
    with pytest.raises(ValueError, match="one per image"):
        garment_parts(x[:2], [0])
    with pytest.raises(ValueError, match="0-9"):
        garment_parts(x[:1], [10])


def test_part_zones_contain_the_parts_and_leave_room_to_grow():
    from rcsb_captum.demo import load_demo_samples
    from rcsb_captum.demo.parts import garment_parts

    x, y = load_demo_samples()
    tshirt, sneaker = int((y == 0).nonzero()[0]), int((y == 7).nonzero()[0])
    pick = torch.tensor([tshirt, sneaker])
    pixels = garment_parts(x[pick], y[pick])
    zones = garment_parts(x[pick], y[pick], zones=True)
    on = pixels > 0
    assert torch.equal(zones[on], pixels[on])  # the same part where there is garment
    assert (zones[0] == 1).sum() > (pixels[0] == 1).sum()  # room for long sleeves
    assert (zones[1, 0] == 6).any() and not (pixels[1, :4] > 0).any()  # a shaft above the shoe


def test_loading_the_shipped_models_draws_nothing_from_the_global_generator():
    # built on the meta device and loaded: the caller's random stream is left as it was
    from rcsb_captum import Bridge, DiffusionAutoencoder
    from rcsb_captum.demo import load_demo_oracle, load_demo_robust_oracle

    torch.manual_seed(0)
    state = torch.get_rng_state()
    loaders = [load_demo_classifier, load_demo_oracle, load_demo_robust_oracle]
    loaders += [Bridge.pretrained, DiffusionAutoencoder.pretrained]
    for load in loaders:
        model = load()
        assert all(p.is_floating_point() and torch.isfinite(p).all() for p in model.parameters())
        assert torch.equal(torch.get_rng_state(), state), load
    ae = DiffusionAutoencoder.pretrained()
    assert torch.allclose(ae.alphas_cumprod[[0, -1]], torch.tensor([0.9999, 4.0358e-05]), rtol=1e-3)
