import numpy as np
import pytest
import torch
from PIL import Image

from rcsb_captum import Bridge
from rcsb_captum.cli import main
from rcsb_captum.demo import load_demo_classifier, load_demo_samples


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
    import json

    out = tmp_path / "demo"
    args = ["demo", "--n-images", "2", "--nfe", "3", "--out-dir", str(out), "--region", "saliency"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert str(out / "counterfactuals.png") in printed
    assert Image.open(out / "counterfactuals.png").size[0] > 500
    rec = json.loads((out / "results.json").read_text())
    assert rec["settings"]["region"] == "saliency" and len(rec["images"]) == 2
    assert rec["settings"]["preset"] == "realistic"  # the demo's default, area 0.45
    assert all(r["max_abs_change_outside"] == 0 for r in rec["images"])
    assert all(abs(r["region_area"] - 0.45) < 0.02 for r in rec["images"])
    assert (out / "results.csv").read_text().count("\n") == 3
    assert main([*args, "--preset", "paper"]) == 0  # the official setting: area 0.3
    rec = json.loads((out / "results.json").read_text())
    assert all(abs(r["region_area"] - 0.3) < 0.02 for r in rec["images"])
    with pytest.raises(SystemExit):
        main(["demo", "--region", "lime"])


def test_cli_explain_with_exported_model_and_mask(tmp_path, capsys):
    import json

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
    saved = torch.load(out / "counterfactuals.pt", weights_only=True)
    region = saved["regions"]
    assert region[:, :, 8:20, 4:28].eq(1).all() and region.sum() == 2 * 12 * 24
    outside = (region == 0).expand_as(saved["inputs"])
    assert torch.equal(saved["counterfactuals"][outside], saved["inputs"][outside])
    assert torch.equal(saved["attributions"], saved["inputs"] - saved["counterfactuals"])
    records = json.loads((out / "results.json").read_text())
    assert [r["image"] for r in records] == list(map(str, files))
    assert "counterfactuals.png" in capsys.readouterr().out


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
