import numpy as np
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
