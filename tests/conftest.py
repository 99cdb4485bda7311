import os
from pathlib import Path

import pytest
import torch
from torch import nn

from rcsb_captum import Bridge
from rcsb_captum.bridge.checkpoints import strip_prefix

FIXTURES = Path(__file__).parent / "fixtures"


def pytest_configure(config):
    # pytest-xdist runs each worker as a process of its own: one torch thread each, or the
    # workers' thread pools oversubscribe the cores (on a loaded 2-core machine torch's default
    # threads ran several times slower than one)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_reference():
    return torch.load(FIXTURES / "adm_tiny_reference.pt", weights_only=True)


def tiny_bridge_from_fixture() -> Bridge:
    """The tiny upstream ADM of the fixtures as a bridge (ImageNet-like 3 x 32 x 32)."""
    reference = torch.load(FIXTURES / "adm_tiny_reference.pt", weights_only=True)
    network = Bridge.from_config(reference["config"]).network
    network.load_state_dict(strip_prefix(reference["net"]))
    return Bridge(network, config=reference["config"])


@pytest.fixture(scope="session")
def tiny_bridge(tiny_reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "latest.pt"
    torch.save({"net": tiny_reference["net"]}, path)
    return Bridge.from_i2sb_checkpoint(path, config=tiny_reference["config"])


class TinyClassifier(nn.Module):
    """A small fixed random CNN on 3 x 32 x 32 images in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(4),
            nn.Flatten(),
            nn.Linear(8 * 8 * 8, 5),
        )

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="session")
def classifier():
    return TinyClassifier().eval()


@pytest.fixture()
def images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


# -- dataset runs (tests/test_run.py, tests/test_run_faults.py) --------------------------------


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    """Shipped test images as an ImageFolder: one sub-folder per class index."""
    from PIL import Image

    from rcsb_captum.demo import load_demo_samples

    from .run_helpers import N

    root = tmp_path_factory.mktemp("data")
    x, y = load_demo_samples()
    for i in range(N):
        d = root / str(int(y[i]))
        d.mkdir(exist_ok=True)
        Image.fromarray((x[i, 0] * 255).round().byte().numpy()).save(d / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def reference(folder, tmp_path_factory):
    from .run_helpers import run_dataset

    out = tmp_path_factory.mktemp("ref")
    return out, run_dataset(folder, out)
