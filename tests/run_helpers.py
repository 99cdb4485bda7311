"""What the dataset-run tests share: the run's smallest settings, the CLI command, readers."""

import json
import sys

import torch

from rcsb_captum.run import RunSettings

N = 12
FAST = ["--nfe", "4", "--start-step", "80", "--n-samples", "1", "--batch-size", "3"]
SETTINGS = RunSettings.of(nfe=4, start_step=80, n_samples=1, batch_size=3, cell_size="auto")


def _cli(folder, out, *extra):
    return [
        sys.executable,
        "-m",
        "rcsb_captum.cli",
        "explain-dataset",
        str(folder),
        "--model",
        "rcsb_captum.demo:load_demo_classifier",
        "--bridge",
        "fashion-mnist",
        "--out-dir",
        str(out),
        "--accelerator",
        "cpu",
        "--quiet",
        *FAST,
        *extra,
    ]


def _manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _tensors(out):
    return {p.name: torch.load(p) for p in sorted((out / "tensors").glob("*.pt"))}
