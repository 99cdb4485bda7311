import pytest
import torch

from rcsb_captum import Bridge


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


def test_a_net_entry_that_is_not_a_state_dict_is_named(tmp_path):
    import torch

    from rcsb_captum import Bridge

    path = tmp_path / "latest.pt"
    torch.save({"net": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="'net' entry must be a state dict"):
        Bridge.from_i2sb_checkpoint(path)


def test_a_corrupt_file_is_one_line(tmp_path):
    from rcsb_captum import Bridge

    path = tmp_path / "bridge.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError) as info:
        Bridge.load(path)
    assert "\n" not in str(info.value) and "could not read" in str(info.value)


def test_official_bridges_by_name_build_the_official_networks():
    import json

    from rcsb_captum.bridge import ADMUNet, adm_config_from_create_model
    from rcsb_captum.bridge.checkpoints import OFFICIAL_BRIDGES, official_bridge_config

    from ..conftest import FIXTURES

    fixtures = {
        "imagenet-256": "adm_i2sb_imagenet256_state_dict_shapes.json",
        "celebahq-256": "adm_i2sb_imagenet256_state_dict_shapes.json",
        "celeba-128": "adm_rcsb_celeba128_state_dict_shapes.json",
    }
    assert set(OFFICIAL_BRIDGES) == set(fixtures)
    for name, fixture in fixtures.items():
        config = official_bridge_config(name)
        interval = config.pop("interval")
        assert interval == (500 if name == "celeba-128" else 1000)
        ref = json.loads((FIXTURES / fixture).read_text())
        with torch.device("meta"):
            net = ADMUNet(**adm_config_from_create_model(config))
        assert sum(p.numel() for p in net.parameters()) == ref["num_parameters"], name
        assert [k for k in net.state_dict()] == [
            k.removeprefix("diffusion_model.") for k in ref["state_dict_shapes"]
        ]
    with pytest.raises(ValueError, match="bridge config must be one of"):
        official_bridge_config("imagenet-512")
