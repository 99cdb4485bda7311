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


V_PATCHED = {**CONFIG, "prediction": "v", "patch": 2, "channel_mult": (1,)}


def _random_weights(ae, std=0.05):
    torch.manual_seed(0)
    for p in ae.parameters():  # no zero-initialised output layers
        torch.nn.init.normal_(p, std=std)
    return ae


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_denoise_inverts_the_parameterisation(prediction, monkeypatch):
    # a decoder that outputs the true target must give back the true x0 and eps
    ae = DiffusionAutoencoder({**CONFIG, "prediction": prediction}).eval()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=g) * 1.6 - 0.8
    eps = torch.randn(4, 1, 8, 8, generator=g)
    t = torch.tensor([0, 30, 60, 99])
    a = ae.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    target = eps if prediction == "eps" else a.sqrt() * eps - (1 - a).sqrt() * x0
    monkeypatch.setattr(ae, "network", lambda x, t, z: target)
    for clip in (True, False):  # x0 inside [-1, 1]: clipping changes nothing
        got_x0, got_eps = ae.denoise(x_t, t, torch.zeros(4, 8), clip=clip)
        torch.testing.assert_close(got_x0, x0, atol=2e-4, rtol=0)
        torch.testing.assert_close(got_eps, eps, atol=2e-4, rtol=0)


def test_denoise_clips_x0_and_rederives_eps():
    ae = _random_weights(DiffusionAutoencoder(CONFIG).eval(), std=0.3)
    x_t = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 3
    t = torch.tensor([99, 90, 70, 50, 20, 5])
    raw_x0, _ = ae.denoise(x_t, t, torch.zeros(6, 8), clip=False)
    assert raw_x0.abs().max() > 1.5  # the case that clipping is for
    x0, eps = ae.denoise(x_t, t, torch.zeros(6, 8))
    assert x0.min() >= -1 and x0.max() <= 1
    torch.testing.assert_close(x0, raw_x0.clamp(-1, 1))
    a = ae.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(a.sqrt() * x0 + (1 - a).sqrt() * eps, x_t, atol=1e-5, rtol=1e-5)


def test_patched_decoder_shapes_and_bad_configs():
    ae = _random_weights(DiffusionAutoencoder(V_PATCHED).eval())
    assert ae.unet.in_channels == 4 and ae.patch == 2 and ae.prediction == "v"
    x = torch.randn(3, 1, 8, 8)
    out = ae.network(x, torch.tensor([1, 50, 99]), torch.randn(3, 8))
    assert out.shape == x.shape
    # each output pixel depends on its own patch: a change in one corner patch moves the output
    y = x.clone()
    y[:, :, :2, :2] += 1
    moved = (ae.network(y, torch.tensor([1, 50, 99]), torch.randn(3, 8)) - out).abs()
    assert moved.sum() > 0
    with pytest.raises(ValueError, match="patch must divide image_size 8"):
        DiffusionAutoencoder({**CONFIG, "patch": 3})
    with pytest.raises(ValueError, match="prediction must be one of"):
        DiffusionAutoencoder({**CONFIG, "prediction": "x0"})


def test_files_without_the_new_keys_load_as_eps_unpatched(tmp_path):
    ae = DiffusionAutoencoder(CONFIG)
    ae.save(tmp_path / "old.pt")
    obj = torch.load(tmp_path / "old.pt", weights_only=True)
    assert "prediction" not in obj["config"]  # as files written before these options
    back = DiffusionAutoencoder.load(tmp_path / "old.pt")
    assert back.prediction == "eps" and back.patch == 1


@pytest.mark.slow
@pytest.mark.parametrize("config", [CONFIG, V_PATCHED], ids=["eps", "v-patch2"])
def test_training_resumes_exactly_and_files_round_trip(tmp_path, config):
    data = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(config=config, batch_size=4, show_progress=False, checkpoint_every=2)
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


def test_warm_start_goes_on_from_a_finished_file(tmp_path):
    from rcsb_captum.autoencoder import warm_start_diffae

    data = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(config={**V_PATCHED, "encoder_pool": "flatten"}, batch_size=4, show_progress=False)
    first = train_diffae(data, steps=3, **kw)
    first.save(tmp_path / "ae.pt", dtype=torch.float16)
    finished = DiffusionAutoencoder.load(tmp_path / "ae.pt")
    warm_start_diffae(finished, tmp_path / "warm.ckpt", step=3)
    # resumed at its own step, nothing to train: the file's weights come back
    same = train_diffae(data, steps=3, checkpoint_path=tmp_path / "warm.ckpt", **kw)
    a, b = finished.state_dict(), same.state_dict()
    assert all(torch.equal(a[k].float(), b[k]) for k in a if k not in ("z_mean", "z_std"))
    # and on from there: the weights move, the checkpoint counts on from step 3
    more = train_diffae(data, steps=5, checkpoint_path=tmp_path / "warm.ckpt", **kw)
    assert not torch.equal(more.state_dict()["encoder.head.weight"], b["encoder.head.weight"])
    state = torch.load(tmp_path / "warm.ckpt", weights_only=True)
    assert state["step"] == 5
    with pytest.raises(ValueError, match="already at step 5"):
        train_diffae(data, steps=4, checkpoint_path=tmp_path / "warm.ckpt", **kw)
    with pytest.raises(TypeError, match="DiffusionAutoencoder"):
        warm_start_diffae(object(), tmp_path / "x.ckpt", step=0)
    with pytest.raises(ValueError, match="step"):
        warm_start_diffae(finished, tmp_path / "x.ckpt", step=-1)


def test_widen_code_keeps_the_function_and_the_new_dimensions_train(tmp_path):
    from rcsb_captum.autoencoder import warm_start_diffae, widen_code

    data = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    config = {**V_PATCHED, "encoder_pool": "flatten"}
    narrow = train_diffae(data, config=config, steps=3, batch_size=4, show_progress=False)
    wide = widen_code(narrow, 12, seed=1)
    assert wide.z_dim == 12 and wide.config == {**config, "z_dim": 12}
    assert narrow.z_dim == 8  # left as it was
    x = data[:3]
    z, zw = narrow.encode(x), wide.encode(x)
    assert torch.equal(zw[:, :8], z)
    assert zw[:, 8:].abs().sum() > 0  # the new rows are drawn, not zero
    # the decoder reads only the old dimensions until trained: the same renders, whatever
    # the new dimensions hold
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    zw[:, 8:] = 5.0
    assert torch.equal(wide.decode(zw, noise, steps=4), narrow.decode(z, noise, steps=4))
    assert torch.equal(
        widen_code(narrow, 12, seed=1).state_dict()["encoder.head.weight"],
        wide.state_dict()["encoder.head.weight"],
    )  # repeats with the seed
    # trained on, the new dimensions reach the decoder
    warm_start_diffae(wide, tmp_path / "wide.ckpt", step=3)
    more = train_diffae(
        data,
        config=wide.config,
        steps=5,
        batch_size=4,
        show_progress=False,
        checkpoint_path=tmp_path / "wide.ckpt",
    )
    assert more.state_dict()["unet.cond_embed.0.weight"][:, 8:].abs().sum() > 0
    with pytest.raises(ValueError, match="z_dim"):
        widen_code(narrow, 4)
    with pytest.raises(TypeError, match="DiffusionAutoencoder"):
        widen_code(object(), 12)


def test_whiten_code_keeps_the_renders_and_whitens_the_code():
    from rcsb_captum.autoencoder import whiten_code

    config = {**V_PATCHED, "encoder_pool": "flatten", "code_classes": 3}
    ae = _random_weights(DiffusionAutoencoder(config).eval())
    data = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ae.fit_latent_stats(data)
    white = whiten_code(ae, data)
    assert white.z_dim == 8 and ae.z_dim == 8 and white.config == ae.config
    z = white.encode(data)
    # the code on the fitting images: mean 0, covariance the identity (not just unit std)
    assert z.mean(0).abs().max() < 1e-4
    assert torch.allclose(torch.cov(z.T), torch.eye(8), atol=1e-4)
    assert not torch.allclose(torch.cov(ae.encode(data).T), torch.eye(8), atol=0.1)
    # the same function: renders and the code head's logits, through the other code
    x, noise = data[:4], torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    r = ae.decode(ae.encode(x), noise, steps=5)
    assert torch.allclose(white.decode(white.encode(x), noise, steps=5), r, atol=1e-5)
    with torch.no_grad():
        raw, raw_w = ae.semantic(data), white.semantic(data)
        assert torch.allclose(white.code_head(raw_w), ae.code_head(raw), atol=1e-5)
    # an affine map of the old code (so a linear probe reads the same)
    affine = torch.cat([raw, torch.ones(64, 1)], 1).double()
    fit = torch.linalg.lstsq(affine, raw_w.double()).solution
    assert torch.allclose(affine @ fit, raw_w.double(), atol=1e-4)
    # fewer components: the leading ones of the full whitening
    four = whiten_code(ae, data, z_dim=4)
    assert four.z_dim == 4 and four.config == {**config, "z_dim": 4}
    assert torch.allclose(four.encode(data), z[:, :4], atol=1e-4)
    assert not torch.equal(four.decode(four.encode(x), noise, steps=5), r)  # drops detail
    with pytest.raises(ValueError, match="z_dim"):
        whiten_code(ae, data, z_dim=9)
    with pytest.raises(ValueError, match="images"):
        whiten_code(ae, data[:8])
    with pytest.raises(TypeError, match="DiffusionAutoencoder"):
        whiten_code(object(), data)


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
    # the shipped code is whitened (whiten_code): on 500 held-out images its covariance is
    # near the identity (off the diagonal at most 0.22; 0.83 before whitening)
    cov = torch.cov(ae.encode(x).T)
    assert cov.shape == (128, 128)
    assert torch.allclose(cov, torch.eye(128), atol=0.3)
    x = x[:4]
    z = ae.encode(x)
    assert z.shape == (4, 128) and z.abs().mean() < 3  # standardised codes
    rec = ae.decode(z, ae.encode_stochastic(x, z))
    assert (rec - x).square().mean() < 0.02
    with pytest.raises(ValueError, match="name"):
        DiffusionAutoencoder.pretrained("celeba")


@pytest.mark.slow
def test_training_refuses_a_checkpoint_past_steps_or_of_another_config(tmp_path):
    # the resume contract of train_bridge: one skeleton (rcsb_captum._training)
    data = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(batch_size=4, show_progress=False, checkpoint_path=tmp_path / "a.ckpt")
    train_diffae(data, config=CONFIG, steps=2, **kw)
    with pytest.raises(ValueError, match="already at step 2, past steps=1"):
        train_diffae(data, config=CONFIG, steps=1, **kw)
    with pytest.raises(ValueError, match="written for another config"):
        train_diffae(data, config={**CONFIG, "z_dim": 4}, steps=3, **kw)
    torch.save({"step": 1, "model": {}}, tmp_path / "old.ckpt")  # an older trainer's file
    with pytest.raises(ValueError, match="not a training checkpoint of this version"):
        train_diffae(
            data, config=CONFIG, steps=3, **{**kw, "checkpoint_path": tmp_path / "old.ckpt"}
        )


def test_flatten_encoder_keeps_the_layout_and_bad_options_are_named():
    from rcsb_captum.autoencoder.diffae import SemanticEncoder

    flat = SemanticEncoder(1, 8, width=4, pool="flatten", image_size=16)
    mean = SemanticEncoder(1, 8, width=4, pool="mean", image_size=16)
    assert flat.head.in_features == 32 * 2 * 2 and mean.head.in_features == 32
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    assert flat(x).shape == mean(x).shape == (3, 8)
    # the last 2 x 2 feature map, its cells swapped: the averaged code cannot tell, the
    # flattened one does
    feats = flat.body(x)
    swapped = feats.flip(-1)
    assert not torch.allclose(flat.head(feats.flatten(1)), flat.head(swapped.flatten(1)))
    pooled = mean.body[:-1](x)
    assert torch.allclose(mean.head(pooled.mean((2, 3))), mean.head(pooled.flip(-1).mean((2, 3))))
    ae = DiffusionAutoencoder({**CONFIG, "image_size": 16, "encoder_pool": "flatten"})
    assert ae.semantic(torch.rand(2, 1, 16, 16)).shape == (2, 8)
    with pytest.raises(ValueError, match="encoder_pool must be one of"):
        DiffusionAutoencoder({**CONFIG, "encoder_pool": "max"})
    with pytest.raises(ValueError, match=r"p2_gamma must be in \[0,"):
        DiffusionAutoencoder({**CONFIG, "p2_gamma": -1})


def test_p2_weighting_scales_each_steps_loss_by_one_minus_alpha_bar():
    # the same draws, the loss weighted by (1 + SNR)^-gamma = (1 - a)^gamma <= 1
    data = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    losses = {}
    for gamma in (0.0, 1.0):
        seen = []
        train_diffae(
            data,
            config={**V_PATCHED, "p2_gamma": gamma},
            steps=1,
            batch_size=4,
            show_progress=False,
            callback=lambda step, loss: seen.append(loss),  # noqa: B023 (used at once)
        )
        losses[gamma] = seen[0]
    assert 0 < losses[1.0] < losses[0.0]


def test_supervised_code_variant_trains_a_classifier_on_z_and_needs_labels():
    data = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    config = {**V_PATCHED, "code_classes": 3, "code_class_weight": 1.0}
    kw = dict(config=config, steps=1, batch_size=4, show_progress=False)
    seen = []
    ae = train_diffae(data, labels, callback=lambda step, loss: seen.append(loss), **kw)
    assert ae.code_head is not None and ae.code_head.out_features == 3
    plain = []
    train_diffae(
        data,
        config=V_PATCHED,
        steps=1,
        batch_size=4,
        show_progress=False,
        callback=lambda step, loss: plain.append(loss),
    )
    assert seen[0] > plain[0] + 0.5  # + the cross-entropy of 3 classes (~ln 3)
    with pytest.raises(ValueError, match="needs the labels"):
        train_diffae(data, **kw)
    with pytest.raises(ValueError, match=r"labels has classes outside \[0, 2\]: \[1, 2, 3\]"):
        train_diffae(data, labels + 1, **kw)
    with pytest.raises(TypeError, match="labels must hold integer classes"):
        train_diffae(data, labels.float(), **kw)
    with pytest.raises(ValueError, match=r"labels must give one class or one per input \(8\)"):
        train_diffae(data, labels[:7], **kw)
