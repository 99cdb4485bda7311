import pytest
import torch

from rcsb_captum.autoencoder import DiffusionAutoencoder, train_diffae

CONFIG = {
    "image_size": 8,
    "channels": 1,
    "z_dim": 8,
    "encoder_width": 8,
    "model_channels": 32,
    "channel_mult": (1, 2),
    "num_res_blocks": 1,
    "attention_resolutions": (),
    "num_head_channels": 32,
    "timesteps": 100,
}


def test_ddim_inversion_reconstructs_and_z_changes_the_render():
    torch.manual_seed(0)
    ae = DiffusionAutoencoder(CONFIG, encode_steps=100, decode_steps=100).eval()
    for p in ae.parameters():  # no zero-initialised output layers: z must matter
        torch.nn.init.normal_(p, std=0.05)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    z = ae.encode(x)
    x_t = ae.encode_stochastic(x, z)
    r = ae.decode(z, x_t)
    # deterministic DDIM with every step is invertible up to discretisation error
    assert (r - x).abs().max() < 0.05
    assert not torch.allclose(ae.decode(z + 5.0, x_t), r, atol=1e-3)
    assert torch.equal(ae.decode(z, x_t), r)  # deterministic


@pytest.mark.slow
def test_training_resumes_exactly_and_files_round_trip(tmp_path):
    data = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(config=CONFIG, batch_size=4, show_progress=False, checkpoint_every=2)
    straight = train_diffae(data, steps=4, checkpoint_path=tmp_path / "a.ckpt", **kw)
    train_diffae(data, steps=2, checkpoint_path=tmp_path / "b.ckpt", **kw)
    resumed = train_diffae(data, steps=4, checkpoint_path=tmp_path / "b.ckpt", **kw)
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    resumed.save(tmp_path / "ae.pt", dtype=torch.float16)
    back = DiffusionAutoencoder.load(tmp_path / "ae.pt")
    assert back.z_dim == 8 and back.image_shape == (1, 8, 8)
    with pytest.raises(ValueError, match="not an rcsb_captum DiffAE file"):
        DiffusionAutoencoder.load(tmp_path / "a.ckpt")


def test_bad_arguments():
    ae = DiffusionAutoencoder(CONFIG)
    with pytest.raises(ValueError, match="z must be N x 8"):
        ae.decode(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="noise must be"):
        ae.decode(torch.zeros(2, 8), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ae.encode(torch.full((1, 1, 8, 8), 2.0))
    with pytest.raises(ValueError, match="encode_steps"):
        DiffusionAutoencoder(CONFIG, encode_steps=0)


@pytest.mark.slow
def test_shipped_diffae_reconstructs_held_out_images():
    from rcsb_captum.demo import load_demo_samples

    ae = DiffusionAutoencoder.pretrained("fashion-mnist", encode_steps=20, decode_steps=20)
    x, _ = load_demo_samples()
    x = x[:4]
    z = ae.encode(x)
    assert z.shape == (4, 64) and z.abs().mean() < 3  # standardised codes
    rec = ae.decode(z, ae.encode_stochastic(x, z))
    assert (rec - x).square().mean() < 0.02
    with pytest.raises(ValueError, match="name"):
        DiffusionAutoencoder.pretrained("celeba")
