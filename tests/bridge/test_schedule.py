import numpy as np
import pytest
import torch

from rcsb_captum import BridgeSchedule
from rcsb_captum.bridge import space_indices

from ..conftest import FIXTURES

SCHEDULE = np.load(FIXTURES / "i2sb_schedule_reference.npz")


@pytest.mark.parametrize("interval,beta_max", [(1000, 1.0), (500, 1.0), (1000, 0.3)])
@pytest.mark.parametrize(
    "name", ["betas", "std_fwd", "std_bwd", "mu_x0", "mu_x1", "std_sb", "noise_levels"]
)
def test_schedule_matches_reference(interval, beta_max, name):
    s = BridgeSchedule(interval=interval, beta_max=beta_max)
    ref = SCHEDULE[f"i{interval}_b{beta_max}_{name}"]
    assert getattr(s, name).dtype == np.float64
    np.testing.assert_allclose(getattr(s, name), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("key", [k for k in SCHEDULE.files if k.startswith("space_indices")])
def test_space_indices_match_reference(key):
    _, _, n, count = key.split("_")
    assert space_indices(int(n), int(count)) == SCHEDULE[key].tolist()


def test_posterior_interpolates_between_estimate_and_state():
    s = BridgeSchedule()
    x0, xn = torch.zeros(1, 3), torch.ones(1, 3)
    out = s.posterior(0, 500, xn, x0)
    a, b, _ = s.posterior_coefficients(0, 500)
    assert torch.allclose(out, torch.full_like(out, b))
    assert a + b == pytest.approx(1.0)
    with pytest.raises(ValueError, match="prev_step"):
        s.posterior(500, 100, xn, x0)


def test_marginal_takes_one_step_per_sample():
    s = BridgeSchedule()
    x0, x1 = torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
    steps = torch.tensor([0, 499, 999])
    batched = s.marginal(steps, x0, x1)
    for i, n in enumerate(steps.tolist()):
        assert torch.allclose(batched[i], s.marginal(n, x0[i : i + 1], x1[i : i + 1])[0])
    noisy = s.marginal(steps, x0, x1, ot_ode=False, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(noisy, batched)
    with pytest.raises(ValueError, match="one step per sample"):
        s.marginal(torch.tensor([1, 2]), x0, x1)
    with pytest.raises(ValueError, match="one step per sample"):
        s.marginal(torch.tensor([1.0, 2.0, 3.0]), x0, x1)
    with pytest.raises(ValueError, match=r"step must be in \[0, 999\]"):
        s.marginal(torch.tensor([0, 1, 1000]), x0, x1)
