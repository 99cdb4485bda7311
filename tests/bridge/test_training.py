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
