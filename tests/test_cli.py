import numpy as np
import pytest
import torch
from PIL import Image

from rcsb_captum import Bridge
from rcsb_captum.cli import main
from rcsb_captum.config import RCSBConfig
from rcsb_captum.demo import load_demo_classifier, load_demo_samples


def _written(out):
    # every front end writes one layout: per-image records and tensors, a manifest, a summary
    import json

    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    tensors = [torch.load(out / "tensors" / f"{r['index']:07d}.pt") for r in records]
    settings = json.loads((out / "settings.json").read_text())
    return records, tensors, settings


def test_cli_train_bridge_on_a_folder(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "b.pt"
    assert (
        main(
            [
                "train-bridge",
                str(folder),
                "--grayscale",
                "--image-size",
                "16",
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    bridge = Bridge.load(out)
    assert bridge.channels == 1 and bridge.image_size == 16


def test_cli_demo_writes_figure_and_results(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--n-images", "2", "--nfe", "3", "--out-dir", str(out), "--region", "saliency"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert str(out / "examples.png") in printed and str(out / "summary.md") in printed
    assert Image.open(out / "examples.png").size[0] > 500
    records, tensors, settings = _written(out)
    assert settings["region"] == "saliency" and len(records) == 2
    assert settings["area"] == 0.6  # the demo's default preset, realistic
    assert all(r["max_change_outside"] == 0 for r in records)
    assert all(abs(r["region_area"] - 0.6) < 0.02 for r in records)
    assert [r["path"] for r in records] == ["shipped sample 0", "shipped sample 2"]
    assert "Shirt" in (out / "summary.md").read_text()  # class names in the summary
    assert main([*args, "--preset", "paper"]) == 0  # the official setting: area 0.3
    records, _, _ = _written(out)
    assert all(abs(r["region_area"] - 0.3) < 0.02 for r in records)
    with pytest.raises(SystemExit):
        main(["demo", "--region", "lime"])


def test_cli_demo_runs_the_presets_own_steps(tmp_path):
    # a preset's steps and IG steps reach the demo unless --nfe is given; every config flag
    # of explain is a flag of demo too
    out = tmp_path / "demo"
    args = ["demo", "--n-images", "1", "--out-dir", str(out)]
    assert main([*args, "--preset", "fast_10x"]) == 0
    settings = _written(out)[2]
    assert settings["nfe"] == 25 and settings["ig_steps"] == 4
    assert main([*args, "--preset", "fast_10x", "--nfe", "12", "--guidance-scale", "2"]) == 0
    settings = _written(out)[2]
    assert settings["nfe"] == 12 and settings["guidance_scale"] == 2.0
    assert main([*args, "--preset", "fast_10x", "--nfe", "4", "--region", "saliency"]) == 0


def test_cli_explain_with_exported_model_and_mask(tmp_path, capsys):
    x, _ = load_demo_samples()
    files = []
    for i in range(2):
        files.append(tmp_path / f"img{i}.png")
        Image.fromarray((x[i, 0].numpy() * 255).astype(np.uint8)).save(files[-1])
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:20, 4:28] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    batch = torch.export.Dim("batch")
    program = torch.export.export(load_demo_classifier(), (x[:2],), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "model.pt2")
    out = tmp_path / "ex"
    args = ["explain", *map(str, files), "--model", str(tmp_path / "model.pt2"), "--nfe", "3"]
    args += ["--guidance-interval", "2", "--precision", "bf16"]  # accepted, passed to RCSB
    assert main([*args, "--mask", str(tmp_path / "mask.png"), "--out-dir", str(out)]) == 0
    records, tensors, settings = _written(out)
    assert settings["guidance_interval"] == 2 and settings["precision"] == "bf16"
    for t in tensors:
        region = t["region"]
        assert region[:, 8:20, 4:28].eq(1).all() and region.sum() == 12 * 24
        outside = (region == 0).expand_as(t["input"])
        assert torch.equal(t["counterfactual"][outside], t["input"][outside])
    assert [r["path"] for r in records] == list(map(str, files))
    assert "manifest.jsonl" in capsys.readouterr().out


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert main(["explain", str(text)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rcsb-captum explain: error: images:") and "\n" not in err
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(image)
    bad_model = tmp_path / "model.pt"
    bad_model.write_bytes(b"\x00corrupted")
    assert main(["explain", str(image), "--model", str(bad_model)]) == 2
    err = capsys.readouterr().err.strip()
    assert "model: could not load" in err and "\n" not in err
    assert main(["explain", str(image), "--model", str(tmp_path / "missing.pt")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_every_option_has_help():
    from rcsb_captum.cli import _parser

    parser = _parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def _two_images(tmp_path):
    x, _ = load_demo_samples()
    files = []
    for i in range(2):
        files.append(tmp_path / f"img{i}.png")
        Image.fromarray((x[i, 0].numpy() * 255).astype(np.uint8)).save(files[-1])
    return x[:2], [str(f) for f in files]


def test_cli_explain_torchscript_quietly_with_class_names_and_probabilities(tmp_path, capsys):
    import warnings

    x, files = _two_images(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(load_demo_classifier(), x).save(str(tmp_path / "model.ts"))
    names = ",".join(f"class {k}" for k in range(10))
    out = tmp_path / "ex"
    args = ["explain", *files, "--model", str(tmp_path / "model.ts"), "--nfe", "2"]
    args += ["--region", "saliency", "--class-names", names, "--out-dir", str(out)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(args) == 0
    assert not [w for w in caught if "deprecated" in str(w.message)]  # torch.jit.load's
    records, tensors, _ = _written(out)
    for r in records:
        assert 0 <= r["p_target_after"] <= 1 and 0 <= r["p_target_before"] <= 1
        top = r["top_after"]
        assert len(top) == 3 and top[0][0] == r["predicted_after"]
        assert top[0][1] >= top[1][1] >= top[2][1]
    assert "class " in (out / "summary.md").read_text()  # the names given
    assert tensors[0]["probs_after"].shape == (10,)
    assert main([*args[:-2], "--class-names", "a,a", "--out-dir", str(out)]) == 2
    assert "class_names: names must be unique" in capsys.readouterr().err


def test_cli_explain_a_static_batch_export_runs_in_chunks(tmp_path, capsys):
    x, files = _two_images(tmp_path)
    program = torch.export.export(load_demo_classifier(), (x[:1],))  # batch fixed at 1
    torch.export.save(program, tmp_path / "static.pt2")
    out = tmp_path / "ex"
    args = ["explain", *files, "--model", str(tmp_path / "static.pt2"), "--nfe", "2"]
    assert main([*args, "--region", "saliency", "--out-dir", str(out)]) == 0
    # a model exported for another image size: one line saying how to export it
    small = torch.export.export(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10)),
        (torch.zeros(1, 1, 28, 28),),
    )
    torch.export.save(small, tmp_path / "small.pt2")
    capsys.readouterr()
    args = ["explain", *files, "--model", str(tmp_path / "small.pt2"), "--nfe", "2"]
    assert main([*args, "--region", "saliency", "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "rejects inputs of shape" in err and "dynamic_shapes" in err


def test_cli_train_bridge_says_what_it_trains(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / f"{i}.png")
    args = ["train-bridge", str(folder), "--steps", "1", "--batch-size", "2"]
    args += ["--out", str(tmp_path / "b.pt"), "--checkpoint", str(tmp_path / "c.ckpt")]
    assert main(args) == 0
    plan = capsys.readouterr().out.splitlines()[0]
    assert "3 images of 1 channel(s), 16 x 16 px" in plan and "tiny" in plan
    assert "M parameters" in plan and "steps 0 -> 1 (from scratch)" in plan
    assert main([*args[:3], "2", *args[4:]]) == 0
    assert "resuming" in capsys.readouterr().out
    steps_back = [*args[:3], "1", *args[4:]]
    assert main(steps_back) == 2  # the checkpoint is at step 2: refused, one line
    assert "already at step 2" in capsys.readouterr().err


def test_cli_help_shows_defaults():
    from rcsb_captum.cli import _parser

    text = _parser()._subparsers._group_actions[0].choices["train-bridge"].format_help()
    assert "(default: 20000)" in text and "(default: 0.0005)" in text


def test_default_threads_divide_the_cores_among_the_processes(monkeypatch):
    import argparse
    import os

    from rcsb_captum.cli import _threads

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    ns = argparse.Namespace
    assert _threads(ns(threads=3)) == 3  # given
    assert _threads(ns(threads=0)) == 8
    assert _threads(ns(threads=0, devices=2, accelerator="cpu")) == 4
    assert _threads(ns(threads=0, devices=16, accelerator="cpu")) == 1  # never below one
    assert _threads(ns(threads=0, devices=2, accelerator="cuda")) == 8


def test_main_leaves_the_callers_threads_as_they_were(tmp_path):
    import os

    before = torch.get_num_threads()
    omp = os.environ.get("OMP_NUM_THREADS")
    assert main(["explain", str(tmp_path / "missing.png"), "--threads", "1"]) == 2
    assert torch.get_num_threads() == before and os.environ.get("OMP_NUM_THREADS") == omp


def test_half_bridge_needs_a_half_precision(tmp_path, capsys):
    _, files = _two_images(tmp_path)
    assert main(["explain", files[0], "--half-bridge", "--nfe", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--half-bridge" in err and "bf16 or fp16" in err and "\n" not in err


def test_cli_adaptive_region_flags_reach_the_config():
    from rcsb_captum.cli import _config, _parser

    args = _parser().parse_args(
        ["explain", "x.png", "--preset", "realistic", "--area-steps", "0.45,0.6"]
    )
    cfg = _config(args)
    assert cfg.area_steps == (0.45, 0.6) and cfg.guidance_adam == "image"
    args = _parser().parse_args(["explain", "x.png", "--area-steps", "none"])
    assert _config(args).area_steps == ()
    with pytest.raises(SystemExit):
        _parser().parse_args(["explain", "x.png", "--area-steps", "big"])


def test_cli_noise_temperature_reaches_the_config():
    from rcsb_captum.cli import _config, _parser

    args = _parser().parse_args(["explain", "x.png", "--noise-temperature", "0.6"])
    assert _config(args).noise_temperature == 0.6
    assert _config(_parser().parse_args(["explain", "x.png"])).noise_temperature == (
        RCSBConfig().noise_temperature
    )
    with pytest.raises((SystemExit, ValueError)):
        _config(_parser().parse_args(["explain", "x.png", "--noise-temperature", "-1"]))
