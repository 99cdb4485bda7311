import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# scripts/ is not a package: its modules are run as scripts, with scripts/ on sys.path
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from fashion_mnist import load_fashion_mnist, read_idx  # noqa: E402


def test_read_idx(tmp_path):
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = (
        bytes([0, 0, 8, 3])
        + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
        + data.tobytes()
    )
    (tmp_path / "x.idx").write_bytes(raw)
    assert np.array_equal(read_idx(tmp_path / "x.idx"), data)


def test_load_fashion_mnist_pads_and_checks(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    labels = np.array([3, 7], dtype=np.uint8)

    def idx(data, code):
        head = bytes([0, 0, code, data.ndim]) + b"".join(
            int(d).to_bytes(4, "big") for d in data.shape
        )
        return head + data.tobytes()

    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx(images, 8))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx(labels, 8))
    x, y = load_fashion_mnist("test", root=tmp_path)
    assert x.shape == (2, 1, 32, 32) and y.tolist() == [3, 7]
    assert torch.equal(x[:, 0, 2:30, 2:30], torch.from_numpy(images).float() / 255)
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST"):
        load_fashion_mnist("train", root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("val", root=tmp_path)
