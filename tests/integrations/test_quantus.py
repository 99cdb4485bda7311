import copy
import warnings

import numpy as np
import pytest
import torch
from captum.attr import Saliency

from rcsb_captum import AttributionRegion
from rcsb_captum import metrics as M

quantus = pytest.importorskip("quantus")
from rcsb_captum.integrations import quantus as Q  # noqa: E402


def saliency_region(model):  # a factory: built on the model Quantus passes
    return AttributionRegion(Saliency(model), cell_size=8, area=0.25)


@pytest.fixture()
def batch(classifier):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    y = classifier(x).argmax(1)
    return x.numpy(), y.numpy()


def _kwargs(tiny_bridge, **extra):
    return {
        "bridge": tiny_bridge,
        "region_from_model": saliency_region,
        "nfe": 3,
        "seed": 0,
        **extra,
    }


def test_explain_func_signature_and_outputs(classifier, tiny_bridge, batch):
    x, y = batch
    a = Q.explain(classifier, x, y, **_kwargs(tiny_bridge), method="RCSB", softmax=False)
    assert isinstance(a, np.ndarray) and a.shape == x.shape and a.dtype == np.float32
    region = Q.explain(classifier, x, y, output="region", **_kwargs(tiny_bridge))
    assert region.shape == (4, 1, 32, 32) and region.mean() == pytest.approx(0.25)
    assert np.all(a[np.broadcast_to(region == 0, a.shape)] == 0)  # zero outside the region
    cf = Q.explain(classifier, x, y, output="counterfactual", **_kwargs(tiny_bridge))
    np.testing.assert_allclose(x - cf, a, atol=1e-6)
    with pytest.raises(ValueError, match="output"):
        Q.explain(classifier, x, y, output="mask", **_kwargs(tiny_bridge))
    # the region is built on the model passed in: a randomised model gives another region
    other = copy.deepcopy(classifier)
    torch.nn.init.normal_(other.net[0].weight, std=1.0)
    region_other = Q.explain(other, x, y, output="region", **_kwargs(tiny_bridge))
    assert not np.array_equal(region, region_other)
    with pytest.raises(ValueError, match="not both"):
        Q.explain(classifier, x, y, region=saliency_region(classifier), **_kwargs(tiny_bridge))


def test_metrics_match_the_library(classifier, tiny_bridge, batch):
    x, y = batch
    kw = _kwargs(tiny_bridge, counterfactual_target=(y + 1) % 5)
    a = Q.explain(classifier, x, y, **kw)
    xt, at, yt = torch.tensor(x), torch.tensor(a), torch.tensor(y)
    cf = torch.tensor((y + 1) % 5)
    valid = Q.CounterfactualValidity(counterfactual_target=(y + 1) % 5)(
        model=classifier, x_batch=x, y_batch=y, a_batch=a
    )
    assert valid == M.flipped(classifier, xt - at, yt, cf).float().tolist()
    any_class = Q.CounterfactualValidity()(model=classifier, x_batch=x, y_batch=y, a_batch=a)
    assert any_class == M.flipped(classifier, xt - at, yt).float().tolist()
    c = Q.CounterfactualTransition(counterfactual_target=(y + 1) % 5)(
        model=classifier, x_batch=x, y_batch=y, a_batch=a
    )
    np.testing.assert_allclose(c, M.cout(classifier, xt, xt - at, yt, cf).numpy(), atol=1e-6)
    l1 = Q.CounterfactualCloseness("l1")(model=classifier, x_batch=x, y_batch=y, a_batch=a)
    np.testing.assert_allclose(l1, np.abs(a).reshape(4, -1).mean(1), rtol=1e-5)
    with pytest.raises(ValueError, match="norm"):
        Q.CounterfactualCloseness("l3")


def test_quantus_evaluate_runs_our_explainer_and_metrics(classifier, tiny_bridge, batch):
    x, y = batch
    cf = (y + 1) % 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = quantus.evaluate(
            metrics={
                "validity": Q.CounterfactualValidity(),
                "cout": Q.CounterfactualTransition(steps=10),
                "prob": Q.ProbabilityChange(),
                "l1": Q.CounterfactualCloseness(),
                "sparseness": quantus.Sparseness(disable_warnings=True),
                "randomisation": quantus.MPRT(
                    disable_warnings=True, return_last_correlation=True, skip_layers=True
                ),
            },
            xai_methods={"RCSB": Q.explain},
            model=classifier,
            x_batch=x,
            y_batch=y,
            explain_func_kwargs=_kwargs(tiny_bridge, counterfactual_target=cf),
        )
    r = results["RCSB"]
    assert set(r) == {"validity", "cout", "prob", "l1", "sparseness", "randomisation"}
    # the metrics got the counterfactual class through explain_func_kwargs and scored RCSB's
    # own attributions: recompute them directly
    a = Q.explain(classifier, x, y, **_kwargs(tiny_bridge, counterfactual_target=cf))
    expected = M.flipped(classifier, torch.tensor(x - a), torch.tensor(y), torch.tensor(cf))
    assert r["validity"] == expected.float().tolist()
    assert len(r["cout"]) == 4 and all(-1 <= v <= 1 for v in r["cout"])
    assert all(v > 0 for v in r["l1"]) and len(r["sparseness"]) == 4
    assert np.all(np.isfinite(np.asarray(r["randomisation"], dtype=float)))


def test_road_and_irof_on_colour_images(classifier, batch):
    x, y = batch
    a = np.abs(Saliency(classifier).attribute(torch.tensor(x), target=torch.tensor(y)).numpy())
    road = quantus.ROAD(
        percentages=[5, 20, 50], perturb_func=Q.road_perturb_func, display_progressbar=False
    )(model=classifier, x_batch=x, y_batch=y, a_batch=a, device="cpu")
    assert set(road) == {5, 20, 50} and all(0 <= v <= 1 for v in road.values())
    irof = quantus.IROF(perturb_func=Q.irof_perturb_func, return_aggregate=False)(
        model=classifier, x_batch=x, y_batch=y, a_batch=a, device="cpu"
    )
    assert len(irof) == 4 and np.all(np.isfinite(irof))
    # the perturbations touch whole pixels: every channel of a chosen pixel changes
    out = Q.road_perturb_func(x[0], np.array([5, 1024 + 5, 2048 + 7]), noise=0.0)
    changed = np.argwhere((out != x[0]).any(0))
    assert {tuple(p) for p in changed} <= {(0, 5), (0, 7)}
    mask = np.zeros((1, 1, 32, 32), dtype=bool)
    mask[..., :4, :4] = True
    out = Q.irof_perturb_func(x[:1], mask)
    assert (out[0, :, :4, :4] != x[0, :, :4, :4]).all() and np.array_equal(
        out[0, :, 4:], x[0, :, 4:]
    )


def test_explain_rejects_misspelled_keywords_and_float_targets(classifier, tiny_bridge, batch):
    x, y = batch
    kw = dict(bridge=tiny_bridge, start_step=50, nfe=2, n_samples=1)
    with pytest.raises(TypeError, match="guidance_scal"):
        Q.explain(classifier, x, y, guidance_scal=2.0, **kw)
    with pytest.raises(TypeError, match="integer classes"):
        Q.explain(classifier, x, y.astype(float), **kw)
    # keys Quantus adds for its own explain funcs are accepted
    out = Q.explain(classifier, x, y, method="RCSB", softmax=False, **kw)
    assert out.shape == x.shape


def test_explain_channels_last(classifier, tiny_bridge, batch):
    x, y = batch
    kw = dict(bridge=tiny_bridge, start_step=50, nfe=2, n_samples=1, seed=0)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match="channels-last"):
        Q.explain(classifier, nhwc, y, **kw)
    a = Q.explain(classifier, nhwc, y, channel_first=False, **kw)
    b = Q.explain(classifier, x, y, **kw)
    assert a.shape == nhwc.shape
    assert np.allclose(a, b.transpose(0, 2, 3, 1), atol=1e-6)


@pytest.mark.parametrize(
    "metric",
    [
        lambda: quantus.MaxSensitivity(nr_samples=2, disable_warnings=True),
        lambda: quantus.AvgSensitivity(nr_samples=2, disable_warnings=True),
        lambda: quantus.LocalLipschitzEstimate(nr_samples=2, disable_warnings=True),
    ],
)
def test_quantus_robustness_metrics_run_with_clamped_inputs(classifier, tiny_bridge, batch, metric):
    # Quantus perturbs the inputs with noise that leaves [0, 1]: input_range="clamp" explains
    # them clamped; without it the message names the option
    x, y = batch
    kw = _kwargs(tiny_bridge, input_range="clamp")
    scores = metric()(
        model=classifier,
        x_batch=x[:2],
        y_batch=y[:2],
        explain_func=Q.explain,
        explain_func_kwargs=kw,
        device="cpu",
    )
    assert np.all(np.isfinite(np.asarray(scores, dtype=float)))
    with pytest.raises(ValueError, match="input_range='clamp'"):
        metric()(
            model=classifier,
            x_batch=x[:2],
            y_batch=y[:2],
            explain_func=Q.explain,
            explain_func_kwargs=_kwargs(tiny_bridge),
            device="cpu",
        )
