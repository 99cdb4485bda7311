import pytest
import torch

from rcsb_captum import Bridge
from rcsb_captum.demo import load_demo_classifier, load_demo_samples


def test_predict_x0_definition(tiny_bridge, tiny_reference):
    x = tiny_reference["input_x"]
    step = 599
    expected = x - tiny_bridge.schedule.std_fwd[step] * tiny_bridge.network(
        x, torch.full((2,), tiny_bridge.schedule.noise_levels[step], dtype=torch.float32)
    )
    assert torch.allclose(tiny_bridge.predict_x0(x, step), expected)


def test_pretrained_bridge_and_default_bridge_for_demo_size(monkeypatch):
    from rcsb_captum import RCSB, MaskRegion

    bridge = Bridge.pretrained("fashion-mnist")
    assert bridge.channels == 1 and bridge.image_size == 32
    assert all(p.dtype == torch.float32 for p in bridge.parameters())
    with pytest.raises(ValueError, match="name must be one of"):
        Bridge.pretrained("imagenet")
    monkeypatch.delenv("RCSB_CAPTUM_BRIDGE", raising=False)
    model = load_demo_classifier()
    x, _ = load_demo_samples()
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:16, 8:16] = 1
    rcsb = RCSB(model, region=MaskRegion(mask), nfe=2, n_samples=1)
    attr = rcsb.attribute(x[:2], seed=0)  # no bridge given: the shipped one for 1 x 32 x 32
    assert attr.shape == (2, 1, 32, 32) and attr.abs().sum() > 0
    assert rcsb.bridge is not None and rcsb.bridge.image_size == 32


def test_check_inputs_and_default_for(tiny_bridge, monkeypatch, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"inputs are 1 x 32 x 32 but the bridge inpaints 3 x 32 x 32 images; use a bridge trained on 1-channel",
    ):
        tiny_bridge.check_inputs(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="built for 32 x 32"):
        tiny_bridge.check_inputs(torch.rand(1, 3, 16, 16))
    tiny_bridge.check_inputs(torch.rand(2, 3, 32, 32))
    monkeypatch.delenv("RCSB_CAPTUM_BRIDGE", raising=False)
    with pytest.raises(ValueError, match="bridge: none given"):
        Bridge.default_for(torch.rand(1, 3, 64, 64))
    assert Bridge.default_for(torch.rand(1, 1, 32, 32)).image_size == 32
    path = tmp_path / "b.pt"
    Bridge.pretrained("fashion-mnist").save(path)
    monkeypatch.setenv("RCSB_CAPTUM_BRIDGE", str(path))
    with pytest.raises(ValueError, match="channels"):  # the env bridge is checked too
        Bridge.default_for(torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize(
    "content,match",
    [
        ({"format": "rcsb_captum.bridge/1"}, "incomplete bridge file"),
        ({"state_dict": {}}, "not an rcsb_captum bridge file"),
        ([1, 2], "holds a list"),
    ],
)
def test_bad_bridge_files(tmp_path, content, match):
    from rcsb_captum.bridge.checkpoints import FORMAT

    if isinstance(content, dict) and "format" in content:
        content["format"] = FORMAT
    path = tmp_path / "bad.pt"
    torch.save(content, path)
    with pytest.raises(ValueError, match=match):
        Bridge.load(path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read"):
        Bridge.load(tmp_path / "junk.pt")


def test_a_bridge_held_in_bf16_runs_with_bf16_precision_only(tmp_path):
    from rcsb_captum import RCSB, MaskRegion
    from rcsb_captum.demo import load_demo_classifier, load_demo_samples

    model = load_demo_classifier()
    x, y = load_demo_samples()
    x, y = x[:2], y[:2]
    masks = torch.zeros(2, 1, 32, 32)
    masks[..., 8:24, 4:28] = 1
    kw = dict(start_step=200, nfe=4, n_samples=1, precision="bf16")
    full = RCSB(model, Bridge.pretrained("fashion-mnist"), MaskRegion(masks), **kw)
    half_bridge = Bridge.pretrained("fashion-mnist", dtype=torch.bfloat16)
    assert half_bridge.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in half_bridge.parameters())
    half = RCSB(model, half_bridge, MaskRegion(masks), **kw)
    a = full.generate(x, target=y, seed=0)
    b = half.generate(x, target=y, seed=0)
    assert b.counterfactuals.dtype == torch.float32  # the sampler stays float32
    outside = (b.regions == 0).expand_as(x)
    assert torch.equal(b.counterfactuals[outside], x[outside])
    # bf16 weights round the weights, not the method: the change moves by a few percent
    assert (a.counterfactuals - b.counterfactuals).abs().max() < 0.1
    with pytest.raises(ValueError, match="holds bf16 weights.*precision='bf16'"):
        RCSB(model, half_bridge, MaskRegion(masks), start_step=200, nfe=2).generate(x, target=y)
    half_bridge.save(tmp_path / "b.pt")
    assert Bridge.load(tmp_path / "b.pt").dtype == torch.float32  # a file loads as float32
    with pytest.raises(ValueError, match="dtype must be"):
        Bridge.pretrained("fashion-mnist").half_weights(torch.int8)
