import pytest
import torch

from rcsb_captum import Bridge, train_bridge
from rcsb_captum.bridge import bridge_from_checkpoint

CONFIG = {
    "image_size": 16,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1,2",
    "attention_resolutions": "8",
    "num_head_channels": 32,
    "resblock_updown": True,
    "in_channels": 1,
    "out_channels": 1,
}


@pytest.mark.slow
def test_training_resumes_exactly(tmp_path):
    torch.set_flush_denormal(True)
    data = torch.rand(20, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    kw = dict(config=CONFIG, batch_size=4, interval=100, show_progress=False, checkpoint_every=2)
    straight = train_bridge(data, steps=4, checkpoint_path=tmp_path / "a.ckpt", **kw)
    train_bridge(data, steps=2, checkpoint_path=tmp_path / "b.ckpt", **kw)
    resumed = train_bridge(data, steps=4, checkpoint_path=tmp_path / "b.ckpt", **kw)
    for (k, a), (_, b) in zip(
        straight.network.state_dict().items(), resumed.network.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    resumed.save(tmp_path / "bridge.pt")
    assert isinstance(Bridge.load(tmp_path / "bridge.pt"), Bridge)


def test_bridge_from_checkpoint_and_half_precision_file(tmp_path):
    torch.set_flush_denormal(True)
    data = torch.rand(20, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    kw = dict(config=CONFIG, batch_size=4, interval=100, show_progress=False)
    trained = train_bridge(data, steps=3, checkpoint_path=tmp_path / "c.ckpt", **kw)
    loaded = bridge_from_checkpoint(tmp_path / "c.ckpt")  # the EMA weights, as returned
    assert loaded.schedule.interval == 100
    for (k, a), (_, b) in zip(
        trained.network.state_dict().items(), loaded.network.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    loaded.save(tmp_path / "half.pt", dtype=torch.float16)
    half = Bridge.load(tmp_path / "half.pt")
    w, h = trained.network.state_dict(), half.network.state_dict()
    assert all(v.dtype == w[k].dtype for k, v in h.items())  # back to float32 on load
    assert max((h[k] - w[k]).abs().max().item() for k in w if w[k].is_floating_point()) < 1e-2
    with pytest.raises(ValueError, match="not a train_bridge checkpoint"):
        bridge_from_checkpoint(tmp_path / "half.pt")


def _equal_weights(a, b):
    sa, sb = a.network.state_dict(), b.network.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def _data():
    return torch.rand(20, 1, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.slow
def test_interrupt_saves_a_checkpoint_that_resumes(tmp_path, monkeypatch):
    import rcsb_captum.bridge.training as T

    kw = dict(config=CONFIG, batch_size=4, interval=100, show_progress=False, checkpoint_every=50)
    straight = train_bridge(_data(), steps=4, **kw)
    real, calls = T.random_freeform_masks, {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # during step 3 (index 2)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "random_freeform_masks", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train_bridge(_data(), steps=4, checkpoint_path=tmp_path / "i.ckpt", **kw)
    assert torch.load(tmp_path / "i.ckpt", weights_only=True)["step"] == 2
    monkeypatch.setattr(T, "random_freeform_masks", real)
    resumed = train_bridge(_data(), steps=4, checkpoint_path=tmp_path / "i.ckpt", **kw)
    assert _equal_weights(straight, resumed)


@pytest.mark.slow
def test_accumulation_and_bf16_mixed_on_cpu(tmp_path):
    kw = dict(config=CONFIG, batch_size=2, interval=100, show_progress=False)
    one = train_bridge(_data(), steps=2, **kw)
    two = train_bridge(_data(), steps=2, accumulate=2, **kw)
    assert not _equal_weights(one, two)  # the second micro-batch counted
    low = train_bridge(_data(), steps=2, precision="bf16-mixed", **kw)
    for k, v in low.network.state_dict().items():
        assert v.dtype == torch.float32 and torch.isfinite(v).all(), k


def test_presets_have_the_official_sizes():
    from rcsb_captum.bridge import ADMUNet, adm_config_from_create_model
    from rcsb_captum.bridge.presets import default_preset, preset_config

    def params(name, size, channels):
        with torch.device("meta"):
            net = ADMUNet(**adm_config_from_create_model(preset_config(name, size, channels)))
        return sum(p.numel() for p in net.parameters())

    assert params("imagenet-256", 256, 3) == 552_807_171
    assert params("celeba-128", 128, 3) == 105_195_139
    assert params("tiny", 32, 1) == sum(
        p.numel() for p in Bridge.pretrained("fashion-mnist").network.parameters()
    )
    assert params("tiny", 28, 1) < params("small", 28, 1) < 6_000_000
    assert default_preset(28, "cpu") == "tiny" and default_preset(256, "cuda") == "imagenet-256"
    with pytest.raises(ValueError, match="preset"):
        preset_config("huge", 32, 1)


def test_init_from_an_official_checkpoint(tiny_reference, tmp_path):
    path = tmp_path / "latest.pt"
    torch.save({"net": tiny_reference["net"], "ema": {"shadow_params": []}}, path)
    config = dict(tiny_reference["config"])
    data = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    start = Bridge.from_i2sb_checkpoint(path, config=config)
    tuned = train_bridge(
        data,
        config=config,
        steps=1,
        batch_size=2,
        lr=1e-9,
        ema_decay=0.0,
        init=path,
        init_weights="net",
        show_progress=False,
    )
    a, b = start.network.state_dict(), tuned.network.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.slow
def test_cli_trains_on_two_processes_and_resumes_on_one(tmp_path):
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):  # grayscale PNGs: the bridge follows the data's one channel
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / f"{i}.png")
    ckpt, out = tmp_path / "b.ckpt", tmp_path / "b.pt"
    base = [sys.executable, "-m", "rcsb_captum.cli", "train-bridge", str(folder), "--preset"]
    base += ["tiny", "--batch-size", "2", "--checkpoint", str(ckpt), "--out", str(out)]
    two = subprocess.run(
        [*base, "--steps", "2", "--devices", "2", "--accelerator", "cpu"],
        capture_output=True,
        text=True,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    assert torch.load(ckpt, weights_only=True)["step"] == 2
    one = subprocess.run([*base, "--steps", "3"], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    bridge = Bridge.load(out)
    assert bridge.channels == 1 and bridge.image_size == 16
    exported = tmp_path / "e.pt"
    from rcsb_captum.cli import main

    assert main(["export", str(ckpt), str(exported), "--half"]) == 0
    half = Bridge.load(exported).network.state_dict()  # float16 on disk, float32 loaded
    for k, v in bridge.network.state_dict().items():
        assert torch.allclose(half[k], v, atol=1e-3, rtol=1e-2), k


def test_training_on_no_images_is_refused():
    import torch

    from rcsb_captum import train_bridge

    with pytest.raises(ValueError, match="at least one image"):
        train_bridge(torch.zeros(0, 1, 32, 32), steps=1)


def test_callback_steps_a_checkpoint_past_steps_and_the_running_loss(tmp_path):
    kw = dict(config=CONFIG, batch_size=2, interval=100, show_progress=False)
    seen: list[tuple[int, float]] = []
    ckpt = tmp_path / "c.ckpt"
    train_bridge(_data(), steps=2, checkpoint_path=ckpt, callback=lambda *a: seen.append(a), **kw)
    assert [s for s, _ in seen] == [1, 2] and all(loss > 0 for _, loss in seen)
    state = torch.load(ckpt, weights_only=True)
    # the bar's running mean is stored, so a resumed run continues it instead of restarting
    assert state["running_loss"] == pytest.approx(0.98 * seen[0][1] + 0.02 * seen[1][1])
    with pytest.raises(ValueError, match=r"already at step 2, past steps=1.*rcsb-captum export"):
        train_bridge(_data(), steps=1, checkpoint_path=ckpt, **kw)
    # the same number of steps is a finished run: its bridge, no training
    train_bridge(_data(), steps=2, checkpoint_path=ckpt, callback=lambda *a: seen.append(a), **kw)
    assert len(seen) == 2
