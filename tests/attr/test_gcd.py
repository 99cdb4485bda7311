import pytest
import torch
from torch import nn

from rcsb_captum import BBLIG, GCD, RCSB, AttributionRegion, Bridge, CounterfactualDirections
from rcsb_captum.autoencoder import LatentAutoencoder

D, SIDE = 4, 4


class LinearAE(LatentAutoencoder):
    """z = W x (orthonormal rows); the stochastic code is the rest of x, so decoding is exact
    and moving z moves the image along W's rows."""

    def __init__(self) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(
            torch.randn(SIDE * SIDE, D, generator=torch.Generator().manual_seed(0))
        )
        self.register_buffer("w", q.T.contiguous())  # D x 16

    def encode(self, images):
        return images.flatten(1) @ self.w.T

    def encode_stochastic(self, images, z):
        return images.flatten(1) - z @ self.w

    def decode(self, z, noise=None):
        flat = z @ self.w + (noise if noise is not None else 0)
        return flat.view(-1, 1, SIDE, SIDE)


class OneCoordinate(nn.Module):
    """Class 1 iff latent coordinate 0 exceeds 1.0."""

    def __init__(self, ae: LinearAE) -> None:
        super().__init__()
        self.ae = ae

    def forward(self, x):
        s = (x.flatten(1) @ self.ae.w[0]) - 1.0
        return torch.stack([-2 * s, 2 * s], 1)


def _images(n, seed=1):
    return torch.rand(n, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(seed)) * 0.4


@pytest.fixture(scope="module")
def toy():
    ae = LinearAE()
    model = OneCoordinate(ae)
    x = _images(1)
    gcd = GCD(
        model,
        ae,
        n_iters=2,
        n_batches=2,
        batch_size=64,
        proxy_epochs=150,
        max_step=4.0,
        line_steps=16,
        noise_distribution="normal",
        noise_stds=(0.2, 0.5, 1.0),
        refine_rounds=0,  # the official search (the refinement has tests of its own)
    )
    dirs = gcd.find(x, seed=0)
    return ae, model, dirs


def test_directions_find_the_decisive_coordinate_and_transfer(toy):
    ae, model, dirs = toy
    assert dirs.source_class == 0 and len(dirs) == 2 * (2 + 4)  # per iteration
    assert torch.allclose(dirs.directions.norm(dim=1), torch.ones(len(dirs)), atol=1e-5)
    g = dirs.best("g")
    assert abs(float(dirs.directions[g, 0])) > 0.9  # the g-direction is latent coordinate 0
    assert dirs.flipped[g]
    others = _images(50, seed=2)
    with torch.no_grad():
        at_step = (model(dirs.apply(ae, others)).argmax(1) == 1).float().mean()
        farther = model(dirs.apply(ae, others, step=2 * float(dirs.steps[g]))).argmax(1) == 1
    # global: the direction found on one image flips most others at the source's step (images
    # farther from the boundary need more), and all of them a little farther along
    assert at_step > 0.6 and farther.float().mean() > 0.95


def test_official_transfer_sweeps_both_signs_and_names_the_step(toy):
    ae, model, dirs = toy
    g = dirs.best("g")
    others = _images(20, seed=2)
    res = dirs.transfer(model, ae, others, index=g, n_steps=33, max_step=4.0)
    assert set(res) == {
        "transferred",
        "reached",
        "third",
        "step",
        "reached_step",
        "reached_forward",
        "third_forward",
    }
    # coordinate 0 of these images is below the boundary 1.0 and 4 units always cross it
    assert res["transferred"].all() and not res["third"].any()
    assert torch.equal(res["reached"], res["transferred"])  # two classes: leaving is reaching
    # the smallest step that flips: the image's distance to the boundary along the direction
    d = dirs.directions[g]
    need = (1.0 - ae.encode(others)[:, 0]) / d[0]
    grid = 8.0 / 32  # the spacing of the sweep
    assert ((res["step"] - need).abs() <= grid + 1e-5).all()
    # the opposite direction transfers as well (the sweep covers both signs)
    flipped = CounterfactualDirections(
        -dirs.directions, dirs.kinds, dirs.steps, dirs.flipped, dirs.source_class
    )
    back = flipped.transfer(model, ae, others, index=g, n_steps=33, max_step=4.0)
    assert back["transferred"].all() and torch.allclose(back["step"], -res["step"])
    # along its own sense only: the direction crosses (its step is positive), its negative not
    assert (res["step"] > 0).all() and torch.equal(res["reached_forward"], res["reached"])
    assert not back["reached_forward"].any() and not back["third_forward"].any()
    too_short = dirs.transfer(model, ae, others, index=g, n_steps=5, max_step=0.01)
    assert not too_short["transferred"].any() and (too_short["step"] == 0).all()


def test_directions_save_load_round_trip(toy, tmp_path):
    _, _, dirs = toy
    dirs.save(tmp_path / "d.pt")
    back = CounterfactualDirections.load(tmp_path / "d.pt")
    assert torch.equal(back.directions, dirs.directions) and back.kinds == dirs.kinds
    assert torch.equal(back.steps, dirs.steps) and back.source_class == dirs.source_class
    assert torch.equal(back.share, dirs.share) and back.meta["n_source_images"] == 1
    # a file written before the share existed reads back without it, best() as then
    old = torch.load(tmp_path / "d.pt", weights_only=True)
    del old["share"]
    torch.save(old, tmp_path / "old.pt")
    assert CounterfactualDirections.load(tmp_path / "old.pt").share is None
    assert CounterfactualDirections.load(tmp_path / "old.pt").best() == dirs.best()
    torch.save({"format": "other"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="CounterfactualDirections.save"):
        CounterfactualDirections.load(tmp_path / "x.pt")


def test_gcd_only_queries_the_classifier(toy):
    ae, model, _ = toy

    class NoGrad(nn.Module):
        def forward(self, x):
            assert not torch.is_grad_enabled(), "GCD took a gradient through the classifier"
            return model(x)

    # the cpu preset's endpoint refinement included: it too only queries
    dirs = GCD(NoGrad(), ae, n_iters=1, n_batches=1, batch_size=16, proxy_epochs=5).find(
        _images(1), seed=0
    )
    assert len(dirs) == 7 and dirs.kinds[-1] == "e"


@pytest.mark.parametrize("approx", [True, False])
def test_bblig_completeness(toy, approx):
    ae, model, dirs = toy
    x = _images(4, seed=3)
    lig = BBLIG(model, ae, direction=dirs, n_steps=64, approx_grad=approx)
    attr, delta = lig.attribute(x, target=0, return_convergence_delta=True)
    assert attr.shape == x.shape
    # a linear decoder makes the latent path straight in pixel space: the finite-difference
    # estimate is complete up to float error, the left Riemann sum of exact gradients to
    # O(1 / n_steps)
    tol = 1e-4 if approx else 0.05
    assert delta.abs().max() < tol, delta


class CurvedAE(LinearAE):
    """LinearAE whose renders bend: moving z also adds a pattern that grows with sin(3 z_1)."""

    def decode(self, z, noise=None):
        pattern = torch.linspace(-1, 1, SIDE * SIDE).view(1, 1, SIDE, SIDE)
        return super().decode(z, noise) + 0.3 * torch.sin(3 * z[:, 1]).view(-1, 1, 1, 1) * pattern


def test_bblig_path_integral_is_complete_on_a_curved_path():
    ae = CurvedAE()
    model = OneCoordinate(ae)
    x = _images(4, seed=3)
    d = torch.tensor([1.0, 1.0, 0.0, 0.0]) / 2**0.5
    kw = dict(direction=d, n_steps=16)
    path, delta_path = BBLIG(model, ae, **kw).attribute(
        x, target=0, step=3.0, return_convergence_delta=True
    )
    straight, delta_straight = BBLIG(model, ae, integral="straight", **kw).attribute(
        x, target=0, step=3.0, return_convergence_delta=True
    )
    # the path method telescopes: complete whatever the path's shape
    assert delta_path.abs().max() < 1e-5
    # IG's straight-line formula on the rendered points is not, once the path bends
    assert delta_straight.abs().max() > 1e-3
    _, exact = BBLIG(model, ae, approx_grad=False, n_steps=256, direction=d).attribute(
        x, target=0, step=3.0, return_convergence_delta=True
    )
    assert exact.abs().max() < 0.05  # autograd: the Riemann error only
    with pytest.raises(ValueError, match="integral"):
        BBLIG(model, ae, integral="curved")


def test_bblig_as_rcsb_region_source(toy):
    ae, model, dirs = toy
    lig = BBLIG(model, ae, direction=dirs, n_steps=8)
    region = AttributionRegion(lig, cell_size=2, area=0.25)
    masks = region(_images(2, seed=4), torch.tensor([0, 0]))
    assert masks.shape == (2, 1, SIDE, SIDE) and masks.mean() == pytest.approx(0.25)
    bridge = Bridge.from_config(
        {
            "image_size": SIDE,
            "num_channels": 32,
            "num_res_blocks": 1,
            "channel_mult": "1",
            "attention_resolutions": "",
            "in_channels": 1,
            "out_channels": 1,
        }
    )
    res = RCSB(model, bridge, region, start_step=20, nfe=2, n_samples=1).generate(
        _images(2, seed=4), target=0, seed=0
    )
    assert torch.equal(res.regions, masks)


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda ae, m: GCD(m, "ae"), TypeError, "LatentAutoencoder"),
        (lambda ae, m: GCD(m, ae, config="fast"), ValueError, "preset"),
        (lambda ae, m: GCD(m, ae, config={"n_iters": 2}), TypeError, "GCDConfig"),
        (lambda ae, m: GCD(m, ae, n_iter=3), TypeError, "unknown GCD setting"),
        (lambda ae, m: GCD(m, ae, n_iters=0), ValueError, "n_iters"),
        (lambda ae, m: GCD(m, ae, noise_stds=(0.1, -1.0)), ValueError, r"noise_stds\[1\]"),
        (lambda ae, m: GCD(m, ae, config="paper", noise_stds=(0.1,)), ValueError, "normal"),
        (lambda ae, m: GCD(m, ae, config="cpu", max_norm=2.0), ValueError, "uniform_norm"),
        (lambda ae, m: GCD(m, ae, noise_distribution="gauss"), ValueError, "noise_distribution"),
        (lambda ae, m: GCD(m, ae, class_term="target"), ValueError, "class_term"),
        (lambda ae, m: GCD(m, ae, g_weights=((1.0,),)), ValueError, "2 entries"),
        (lambda ae, m: GCD(m, ae, proxy_hidden=()), TypeError, "non-empty"),
        (lambda ae, m: GCD(m, ae).find(_images(1)[:0]), ValueError, "image"),
        (lambda ae, m: GCD(m, ae).find(_images(1) + 1), ValueError, r"\[0, 1\]"),
        (
            lambda ae, m: GCD(m, ae).find(_images(1), target=0, counterfactual_target=0),
            ValueError,
            "differ",
        ),
        (lambda ae, m: BBLIG(m, ae).attribute(_images(1)), ValueError, "direction"),
        (
            lambda ae, m: BBLIG(m, ae, direction=torch.ones(3)).attribute(_images(1)),
            ValueError,
            "entries",
        ),
        (lambda ae, m: BBLIG(m, ae, n_steps=0), ValueError, "n_steps"),
        (
            lambda ae, m: BBLIG(m, ae, direction=torch.ones(D)).attribute(_images(1), target=0.5),
            TypeError,
            "target",
        ),
    ],
)
def test_bad_arguments(toy, make, error, match):
    ae, model, _ = toy
    with pytest.raises(error, match=match):
        make(ae, model)


class ThreeClasses(nn.Module):
    """Class 0 at the source; class 1 past a far boundary along latent coordinate 0, class 2
    past a nearer one along coordinate 1."""

    def __init__(self, ae: LinearAE, z0: torch.Tensor) -> None:
        super().__init__()
        self.ae, self.z0 = ae, z0

    def forward(self, x):
        z = x.flatten(1) @ self.ae.w.T - self.z0
        zero = torch.zeros_like(z[:, 0])
        return torch.stack([zero, 3 * (z[:, 0] - 1.5), 3 * (z[:, 1] - 0.8)], 1)


def test_named_pair_directions_head_for_the_target_not_the_nearest_class():
    ae = LinearAE()
    x = _images(1)
    model = ThreeClasses(ae, ae.encode(x))
    kw = dict(n_iters=2, n_batches=2, batch_size=64, proxy_epochs=150, max_step=3.0, line_steps=24)
    kw.update(noise_distribution="uniform_norm", max_norm=1.5, n_hessian=0)
    pair = GCD(model, ae, **kw).find(x, target=0, counterfactual_target=1, seed=0)
    nearest = GCD(model, ae, class_term="source", **kw).find(
        x, target=0, counterfactual_target=1, seed=0
    )
    d_pair = pair.directions[pair.best("g")]
    d_near = nearest.directions[nearest.best("g")]
    # the pair's log-odds: the direction is coordinate 0, and the line search reaches class 1
    assert d_pair[0] > 0.9 and pair.flipped[pair.best("g")]
    # log p(source) alone: the gradient leans to the nearer class 2
    assert d_near[1] > d_near[0] > 0
    with torch.no_grad():
        reached = model(pair.apply(ae, x)).argmax(1)
    assert int(reached) == 1


def test_find_repeats_with_its_seed_and_leaves_the_global_generator_alone(toy):
    ae, model, _ = toy
    kw = dict(n_iters=2, n_batches=1, batch_size=16, proxy_epochs=5, line_steps=4)
    kw.update(refine_rounds=2, refine_pairs=4)
    state = torch.random.get_rng_state()
    a = GCD(model, ae, **kw).find(_images(1), seed=3)
    torch.manual_seed(123)  # the proxies' initial weights come from the call's seed
    b = GCD(model, ae, **kw).find(_images(1), seed=3)
    assert torch.equal(a.directions, b.directions) and a.kinds == b.kinds
    assert a.kinds[0] == "g(1,0)@0" and a.kinds[-2:] == ["h3@1", "e"]
    torch.random.set_rng_state(state)
    GCD(model, ae, **kw).find(_images(1), seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    # one proxy refitted on every query: the directions of its last fit only
    once = GCD(model, ae, proxy_data="cumulative", **kw).find(_images(1), seed=3)
    assert once.kinds == ["g(1,0)", "g(0.05,1)", "h0", "h1", "h2", "h3", "e"]


def test_uniform_norm_perturbations_are_spread_up_to_max_norm():
    ae = LinearAE()
    x = _images(1)
    z_src = ae.encode(x)
    seen = []

    class Spy(LinearAE):
        def decode(self, z, noise=None):
            seen.append((z - z_src).norm(dim=1))
            return super().decode(z, noise)

    spy = Spy()
    spy.w = ae.w
    GCD(OneCoordinate(ae), spy, config="paper", n_iters=1, n_batches=4, proxy_epochs=1).find(
        x, seed=0
    )
    norms = torch.cat(seen[:4])  # the queries; the line search comes after
    assert len(norms) == 4 * 128 and norms.max() <= 1.0 + 1e-5
    # uniform on [0, 1]: mean 1/2, a quarter below 1/4
    assert abs(float(norms.mean()) - 0.5) < 0.05
    assert abs(float((norms < 0.25).float().mean()) - 0.25) < 0.06


def test_gcd_config_presets_round_trip_and_overrides():
    from rcsb_captum.config import GCDConfig

    paper = GCDConfig.preset("paper")
    assert paper == GCDConfig() and paper.n_iters == 52 and paper.line_steps == 128
    cpu = GCDConfig.preset("cpu", n_iters=6)
    assert cpu.n_iters == 6 and cpu.batch_size == 64
    assert (cpu.refine_rounds, cpu.refine_rate) == (24, 0.2) and paper.refine_rounds == 0
    # JSON turns tuples into lists; reading them back gives the same frozen config
    import json

    assert GCDConfig.from_json(json.loads(json.dumps(cpu.to_json()))) == cpu
    # settings recorded before the loop's new fields read back as what they ran with
    old = {k: v for k, v in cpu.to_json().items() if k not in GCDConfig._BEFORE}
    back = GCDConfig.from_json(old)
    assert (back.noise_distribution, back.class_term, back.proxy_data) == (
        "normal",
        "source",
        "cumulative",
    )
    # ... also when they lack the fields added since (refinement, off before it existed)
    older = {k: v for k, v in old.items() if k not in GCDConfig._ADDED_OFF}
    off = {k: getattr(paper, k) for k in GCDConfig._ADDED_OFF}
    assert GCDConfig.from_json(older) == back.replace(**off)
    assert GCDConfig.from_json(older).refine_rounds == 0
    # a partial dict is not such a record: the other fields take today's defaults
    assert GCDConfig.from_json({"n_iters": 2}).proxy_data == "per_iteration"
    assert cpu.diff(paper)["n_iters"] == (6, 52)


def test_bblig_takes_captum_tuples_noise_tunnel_and_clamps_noisy_inputs():
    from captum.attr import NoiseTunnel
    from captum.metrics import sensitivity_max

    ae = LinearAE()
    model = OneCoordinate(ae)
    x = _images(2)
    direction = torch.ones(D)
    plain = BBLIG(model, ae, direction=direction, n_steps=4)
    a = plain.attribute(x, target=0)
    (t,) = plain.attribute((x,), target=0)  # a 1-tuple in, a 1-tuple out
    assert torch.equal(t, a)
    noisy = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="input_range='clamp'"):
        plain.attribute(noisy, target=0)
    clamped = BBLIG(model, ae, direction=direction, n_steps=4, input_range="clamp")
    assert torch.equal(clamped.attribute(noisy, target=0), clamped.attribute(noisy.clamp(0, 1), 0))
    torch.manual_seed(0)
    smooth = NoiseTunnel(clamped).attribute(x, target=0, nt_samples=3, stdevs=0.1)
    assert smooth.shape == x.shape and torch.isfinite(smooth).all()
    sens = sensitivity_max(clamped.attribute, x, target=0, n_perturb_samples=2)
    assert sens.shape == (2,) and torch.isfinite(sens).all()
    with pytest.raises(ValueError, match="input_range must be one of"):
        BBLIG(model, ae, input_range="wrap")


def test_several_source_images_share_one_direction_and_the_median_step():
    ae = LinearAE()
    model = OneCoordinate(ae)
    x = _images(3, seed=4)
    gap = 1.0 - ae.encode(x)[:, 0]  # how far each image is from the boundary along w[0]
    assert bool((gap > 0).all()) and len(set(gap.tolist())) == 3
    kw = dict(n_iters=2, n_batches=2, batch_size=64, proxy_epochs=150, max_step=3.0)
    kw.update(line_steps=30, noise_distribution="normal", noise_stds=(0.2, 0.5), n_hessian=0)
    dirs = GCD(model, ae, **kw).find(x, seed=0)
    assert dirs.source_class == 0 and dirs.meta["n_source_images"] == 3
    i = dirs.best("g")
    d = dirs.directions[i]
    assert d[0] > 0.85 and bool(dirs.flipped[i])
    # the line search stops where half of the images (two of three) have crossed
    median = float(gap.sort().values[1]) / float(d[0])
    assert median - 1e-6 <= float(dirs.steps[i]) <= median + 0.1 + 1e-6
    assert dirs.share.shape == (len(dirs),) and float(dirs.share[i]) == 1.0
    # each image's decision changes along the shared direction
    with torch.no_grad():
        moved = model(dirs.apply(ae, x, step=float(gap.max()) / float(d[0]) + 0.1)).argmax(1)
    assert moved.tolist() == [1, 1, 1]


def test_best_prefers_the_direction_that_moves_more_source_images():
    def found(flipped, share=None):
        steps = torch.tensor([1.0, 5.0, 0.5])
        kinds = ["g(1,0)", "h0", "h1"]
        return CounterfactualDirections(torch.eye(3), kinds, steps, flipped, 0, 1, share=share)

    flipped = torch.tensor([True, True, False])
    dirs = found(flipped, share=torch.tensor([0.5, 1.0, 0.25]))
    assert dirs.best() == 1 and dirs.best("g") == 0
    # one source image (share = flipped): the flipping direction with the smallest step
    assert found(flipped, share=flipped.float()).best() == 0
    # none flipped: the smallest step
    assert found(torch.zeros(3, dtype=torch.bool)).best() == 2
    # the refined direction among equal shares, whatever its step; not over a larger share
    refined = CounterfactualDirections(
        torch.eye(3),
        ["g(1,0)", "h0", "e"],
        torch.tensor([1.0, 0.5, 2.0]),
        torch.ones(3, dtype=torch.bool),
        0,
        1,
        share=torch.tensor([1.0, 1.0, 1.0]),
    )
    assert refined.best() == 2 and refined.best("h") == 1 and refined.best(("g", "h")) == 1
    refined.share = torch.tensor([1.0, 1.0, 0.75])
    assert refined.best() == 1


def test_endpoint_refinement_turns_a_poor_direction_to_the_decisive_one():
    # the class changes along latent coordinate 0 only; started from a direction mostly
    # along coordinate 1, the black-box refinement at radius 3 turns it to coordinate 0
    ae = LinearAE()
    model = OneCoordinate(ae)
    x = _images(3, seed=4)
    gcd = GCD(model, ae, refine_rounds=8, refine_pairs=16, refine_rate=0.4)
    z = ae.encode(x)
    start = torch.tensor([0.3, 1.0, 0.0, 0.0])
    gen = torch.Generator().manual_seed(0)
    v = gcd._refine(z, ae.encode_stochastic(x, z), start, 0, 1, gen)
    assert abs(float(v.norm()) - 1) < 1e-5
    assert float(v[0]) > 0.95 > float(start[0] / start.norm())
    # a direction that cannot be improved stays where it is (within the last rounds' turn)
    v = gcd._refine(z, ae.encode_stochastic(x, z), torch.tensor([1.0, 0, 0, 0]), 0, 1, gen)
    assert float(v[0]) > 0.95


def test_find_with_refinement_adds_one_line_searched_direction_and_repeats():
    ae = LinearAE()
    model = OneCoordinate(ae)
    x = _images(3, seed=4)
    kw = dict(n_iters=1, n_batches=1, batch_size=32, proxy_epochs=50, max_step=3.0)
    kw.update(line_steps=12, noise_distribution="normal", noise_stds=(0.2, 0.5), n_hessian=1)
    plain = GCD(model, ae, refine_rounds=0, **kw).find(x, seed=0)
    refined = GCD(model, ae, refine_rounds=3, refine_pairs=8, **kw).find(x, seed=0)
    again = GCD(model, ae, refine_rounds=3, refine_pairs=8, **kw).find(x, seed=0)
    assert refined.kinds == [*plain.kinds, "e"]
    # the search before the refinement is unchanged by it
    assert torch.equal(refined.directions[:-1], plain.directions)
    assert torch.equal(refined.directions, again.directions)
    e = refined.directions[-1]
    assert abs(float(e.norm()) - 1) < 1e-5 and float(e[0]) > 0.8
    assert bool(refined.flipped[-1]) and float(refined.share[-1]) == 1.0
    assert refined.meta["settings"]["refine_rounds"] == 3


def test_refine_turns_a_given_direction_on_other_images_and_checks_its_arguments():
    ae = LinearAE()
    model = OneCoordinate(ae)
    x = _images(4, seed=5)
    gcd = GCD(model, ae, refine_rounds=8, refine_pairs=16, refine_rate=0.4, line_steps=12)
    start = torch.tensor([0.3, 1.0, 0.0, 0.0])
    out = gcd.refine(x, start, target=0, counterfactual_target=1, seed=0)
    assert out.kinds == ["e"] and out.meta["n_source_images"] == 4
    e = out.directions[0]
    assert abs(float(e.norm()) - 1) < 1e-5 and float(e[0]) > 0.95
    assert bool(out.flipped[0]) and (out.source_class, out.target_class) == (0, 1)
    assert torch.equal(gcd.refine(x, start, 0, 1, seed=0).directions, out.directions)
    # found directions: their best() is refined, their classes are the defaults
    found = CounterfactualDirections(
        start[None] / start.norm(), ["g(1,0)"], torch.ones(1), torch.ones(1, dtype=torch.bool), 0, 1
    )
    again = gcd.refine(x, found, seed=0)
    assert (again.source_class, again.target_class) == (0, 1)
    assert torch.allclose(again.directions, out.directions, atol=1e-4)  # start renormalised
    for call, err, match in [
        (lambda: GCD(model, ae, refine_rounds=0).refine(x, start), ValueError, "refine_rounds"),
        (lambda: gcd.refine(x, torch.ones(3)), ValueError, "latent's shape"),
        (lambda: gcd.refine(x, torch.zeros(4)), ValueError, "non-zero"),
        (lambda: gcd.refine(x, [1.0, 0, 0, 0]), TypeError, "direction"),
        (lambda: gcd.refine(x, start, target=0, counterfactual_target=0), ValueError, "differ"),
    ]:
        with pytest.raises(err, match=match):
            call()
