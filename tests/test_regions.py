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

from rcsb_captum import RCSB, AttributionRegion
from rcsb_captum.regions import attribution_to_region


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
