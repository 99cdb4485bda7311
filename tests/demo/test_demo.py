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
