import numpy as np
import pytest
import torch
from PIL import Image

from rcsb_captum import Bridge
from rcsb_captum.cli import main
from rcsb_captum.datasets import read_idx
from rcsb_captum.pretrained import load_demo_classifier, load_demo_samples


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


def test_shipped_classifier_classifies_shipped_samples():
    model = load_demo_classifier()
    x, y = load_demo_samples()
    assert x.shape == (500, 1, 32, 32) and 0 <= x.min() and x.max() <= 1
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.88


def test_read_idx(tmp_path):
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = (
        bytes([0, 0, 8, 3])
        + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
        + data.tobytes()
    )
    (tmp_path / "x.idx").write_bytes(raw)
    assert np.array_equal(read_idx(tmp_path / "x.idx"), data)


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


def test_pick_images_pairs_and_classes():
    from rcsb_captum.demo import PAIRED_CLASSES, pick_images

    _, y = load_demo_samples()
    idx, cf = pick_images(y, y, 6, "pair")
    assert [int(y[i]) for i in idx] == list(PAIRED_CLASSES)
    assert [PAIRED_CLASSES[int(y[i])] for i in idx] == cf.tolist()
    idx, cf = pick_images(y, y, 4, "coat")
    assert cf.tolist() == [4] * 4 and all(int(y[i]) != 4 for i in idx)
    idx, cf = pick_images(y, y, 3, "any")
    assert cf is None and len(idx) == 3
    with pytest.raises(ValueError, match="counterfactual class"):
        pick_images(y, y, 3, "hat")


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
    assert all(r["max_abs_change_outside"] == 0 for r in rec["images"])
    assert all(abs(r["region_area"] - 0.3) < 0.02 for r in rec["images"])
    assert (out / "results.csv").read_text().count("\n") == 3
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
