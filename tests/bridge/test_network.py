import json

import pytest
import torch

from rcsb_captum.bridge import ADMUNet, adm_config_from_create_model

from ..conftest import FIXTURES


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


def test_checkpointing_gives_the_same_gradients(tiny_bridge):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def grad(checkpointing):
        for m in tiny_bridge.modules():
            if hasattr(m, "use_checkpoint"):
                m.use_checkpoint = checkpointing
        xi = x.clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(tiny_bridge.predict_x0(xi, 500).square().sum(), xi)
        return g

    try:
        plain, checked = grad(False), grad(True)
    finally:
        grad(False)
    assert torch.allclose(plain, checked, atol=1e-5)
