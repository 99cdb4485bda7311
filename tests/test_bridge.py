import json

import numpy as np
import pytest
import torch

from rcsb_captum import Bridge, BridgeSchedule
from rcsb_captum.bridge import ADMUNet, adm_config_from_create_model, space_indices

from .conftest import FIXTURES

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


def test_tiny_adm_reproduces_reference_output(tiny_reference, tiny_bridge):
    with torch.no_grad():
        out = tiny_bridge.network(tiny_reference["input_x"], tiny_reference["input_t"])
    assert (out - tiny_reference["expected_output"]).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "name",
    ["adm_i2sb_imagenet256_state_dict_shapes.json", "adm_rcsb_celeba128_state_dict_shapes.json"],
)
def test_official_configs_have_official_keys_and_shapes(name):
    ref = json.loads((FIXTURES / name).read_text())
    with torch.device("meta"):
        net = ADMUNet(**adm_config_from_create_model(ref["config"]))
    mine = [("diffusion_model." + k, list(v.shape)) for k, v in net.state_dict().items()]
    assert mine == list(ref["state_dict_shapes"].items())  # same keys, shapes and order
    assert sum(p.numel() for p in net.parameters()) == ref["num_parameters"]


def test_i2sb_checkpoint_round_trip_net_and_ema(tiny_reference, tmp_path):
    net = tiny_reference["net"]
    ema = {
        "decay": 0.99,
        "num_updates": 3,
        "collected_params": None,
        "shadow_params": [torch.full_like(v, 0.5) for k, v in net.items()],
    }
    path = tmp_path / "latest.pt"
    torch.save({"net": net, "ema": ema, "optimizer": {}, "sched": {}}, path)
    b = Bridge.from_i2sb_checkpoint(path, config=dict(tiny_reference["config"], interval=500))
    assert b.schedule.interval == 500
    for k, v in b.network.state_dict().items():
        assert torch.equal(v, net["diffusion_model." + k])
    assert all(not p.requires_grad for p in b.parameters())
    e = Bridge.from_i2sb_checkpoint(path, config=tiny_reference["config"], weights="ema")
    assert all(torch.all(p == 0.5) for p in e.network.parameters())
    # our own format carries its config
    b.save(tmp_path / "ours.pt")
    c = Bridge.load(tmp_path / "ours.pt")
    assert c.schedule.interval == 500
    x = tiny_reference["input_x"]
    assert torch.equal(c.predict_x0(x, 10), b.predict_x0(x, 10))


def test_checkpoint_mismatch_is_a_clear_error(tiny_reference, tmp_path):
    net = dict(tiny_reference["net"])
    net.pop("diffusion_model.out.2.bias")
    net["diffusion_model.extra"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save({"net": net}, path)
    with pytest.raises(ValueError, match="missing: out.2.bias.*unexpected: extra"):
        Bridge.from_i2sb_checkpoint(path, config=tiny_reference["config"])
    with pytest.raises(ValueError, match="no 'ema' entry"):
        Bridge.from_i2sb_checkpoint(path, config=tiny_reference["config"], weights="ema")
    with pytest.raises(FileNotFoundError):
        Bridge.from_i2sb_checkpoint(tmp_path / "nope.pt")


def test_predict_x0_definition(tiny_bridge, tiny_reference):
    x = tiny_reference["input_x"]
    step = 599
    expected = x - tiny_bridge.schedule.std_fwd[step] * tiny_bridge.network(
        x, torch.full((2,), tiny_bridge.schedule.noise_levels[step], dtype=torch.float32)
    )
    assert torch.allclose(tiny_bridge.predict_x0(x, step), expected)
