import json

import pytest
import torch

from rcsb_captum import RCSB, MaskRegion
from rcsb_captum.cli import _config, _parser
from rcsb_captum.config import PRESETS, RCSBConfig, config_fields, defaults_table


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_round_trip(name):
    cfg = RCSBConfig.preset(name)
    assert RCSBConfig.from_json(json.dumps(cfg.to_json())) == cfg
    assert RCSBConfig.from_json(cfg.to_json()) == cfg
    for key, value in PRESETS[name].items():
        assert getattr(cfg, key) == value


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(nfe=0), ValueError, "nfe"),
        (dict(nfe=2.0), TypeError, "nfe"),
        (dict(nfe=600), ValueError, "nfe must be at most start_step - 1"),
        (dict(guidance_grad="x1"), ValueError, "guidance_grad"),
        (dict(precision="int8"), ValueError, "precision"),
        (dict(guidance_scale=float("nan")), ValueError, "guidance_scale"),
        (dict(guidance_scale=-1.0), ValueError, "guidance_scale"),
        (dict(area=0.0), ValueError, "area"),
        (dict(area=1.5), ValueError, "area"),
        (dict(cell_size=0), ValueError, "cell_size"),
        (dict(cell_size="big"), ValueError, "cell_size"),
        (dict(gradient_checkpointing=1), TypeError, "gradient_checkpointing"),
        (dict(guidance_shifts=10), ValueError, "guidance_shifts"),
        (dict(guidance_switch=0.7), ValueError, "guidance_switch applies"),
    ],
)
def test_bad_values_name_the_option(kwargs, error, match):
    with pytest.raises(error, match=match):
        RCSBConfig(**kwargs)


def test_unknown_options_are_refused_everywhere(classifier, tiny_bridge):
    with pytest.raises(TypeError, match="unknown RCSB option.*'nfes'"):
        RCSBConfig().replace(nfes=3)
    with pytest.raises(TypeError, match="unknown RCSB option"):
        RCSBConfig.from_json({"nfes": 3})
    with pytest.raises(TypeError, match="unknown RCSB option"):
        RCSB(classifier, tiny_bridge, nfes=3)
    with pytest.raises(ValueError, match="preset"):
        RCSBConfig.preset("slow")


def test_rcsb_takes_a_config_a_preset_name_and_overrides(classifier, tiny_bridge):
    rcsb = RCSB(classifier, tiny_bridge, config="fast", nfe=20)
    assert rcsb.config == RCSBConfig.preset("fast", nfe=20)
    assert (rcsb.nfe, rcsb.n_samples, rcsb.precision) == (20, 1, "auto")
    rcsb.nfe = 30  # attribute writes are checked like the constructor's
    assert rcsb.config.nfe == 30
    with pytest.raises(ValueError, match="nfe"):
        rcsb.nfe = 0


def test_per_call_overrides_equal_a_constructor_with_them(classifier, tiny_bridge, images):
    m = torch.zeros(2, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    kw = dict(start_step=100, n_samples=1, nfe=5)
    base = RCSB(classifier, tiny_bridge, MaskRegion(m), **kw)
    per_call = base.attribute(images, target=0, seed=0, guidance_scale=3.0, nfe=7)
    built = RCSB(classifier, tiny_bridge, MaskRegion(m), **{**kw, "nfe": 7}, guidance_scale=3.0)
    assert torch.equal(per_call, built.attribute(images, target=0, seed=0))
    assert base.config.nfe == 5  # the call did not change the object
    with pytest.raises(ValueError, match="shape the default region"):
        base.attribute(images, target=0, seed=0, area=0.5)


def test_cli_flags_are_generated_from_every_field():
    parser = _parser()
    help_text = parser._subparsers._group_actions[0].choices["explain"].format_help()
    for f in config_fields():
        assert "--" + f.name.replace("_", "-") in help_text, f.name
    ds = parser.parse_args(
        [
            "explain-dataset",
            "imgs",
            "--model",
            "m.pt2",
            "--bridge",
            "b.pt",
            "--out-dir",
            "o",
            "--preset",
            "near_paper_4x",
            "--nfe",
            "60",
            "--classifier-input",
            "minmax",
            "--gradient-checkpointing",
            "--no-deterministic",
        ]
    )
    cfg = _config(ds)
    assert cfg == RCSBConfig.preset(
        "near_paper_4x",
        nfe=60,
        classifier_input="minmax",
        gradient_checkpointing=True,
        deterministic=False,
    )
    ex = parser.parse_args(["explain", "x.png", "--guidance-adam", "image", "--cell-size", "auto"])
    assert _config(ex) == RCSBConfig(guidance_adam="image")


def test_quantus_adapter_accepts_every_option():
    pytest.importorskip("quantus")
    from rcsb_captum.integrations.quantus import _RCSB_KEYS

    assert {f.name for f in config_fields()} <= set(_RCSB_KEYS)


def test_defaults_table_lists_every_option():
    table = defaults_table()
    for f in config_fields():
        assert f"`{f.name}`" in table


def test_area_steps_are_checked_and_round_trip():
    from rcsb_captum.config import RCSBConfig

    cfg = RCSBConfig(area_steps=[0.45, 0.6], stability=0.9)
    assert cfg.area_steps == (0.45, 0.6)
    assert RCSBConfig.from_json(cfg.to_json()) == cfg
    assert RCSBConfig().area_steps == ()
    with pytest.raises(ValueError, match="area_steps must be increasing"):
        RCSBConfig(area_steps=(0.6, 0.45))
    with pytest.raises(ValueError, match=r"area_steps\[1\]"):
        RCSBConfig(area_steps=(0.45, 1.5))
    with pytest.raises(ValueError, match="stability applies with area_steps only"):
        RCSBConfig(stability=0.9)


def test_the_config_types_are_the_only_list_of_choices():
    import typing

    from rcsb_captum import config, guidance, sampler

    assert sampler.SAMPLERS == typing.get_args(config.Sampler)
    assert set(sampler.PRECISIONS) | {"auto"} == set(typing.get_args(config.Precision))
    assert guidance.ADAM_MODES == typing.get_args(config.AdamMode)
    assert set(sampler.INTEGRATORS) == set(sampler.SAMPLERS)
