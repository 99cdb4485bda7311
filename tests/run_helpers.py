"""What the dataset-run tests share: the run's smallest settings, the CLI command, readers."""

import json
import signal
import subprocess
import sys
import time

import torch

from rcsb_captum.dataset_runs import RunSettings

N = 12
# the smallest settings: 4 steps, one sample, a region from IG of 4 steps (the default 50 took
# two thirds of a run)
FAST = ["--nfe", "4", "--start-step", "80", "--n-samples", "1", "--batch-size", "3"]
FAST += ["--ig-steps", "4"]
SETTINGS = RunSettings.of(
    nfe=4, start_step=80, n_samples=1, batch_size=3, cell_size="auto", ig_steps=4
)


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
        "--threads",  # the in-process reference runs with one thread too: bits depend on it
        "1",
        *FAST,
        *extra,
    ]


def _manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _tensors(out):
    return {p.name: torch.load(p) for p in sorted((out / "tensors").glob("*.pt"))}


def run_dataset(folder, out, settings=SETTINGS, **kwargs):
    """explain_dataset on the shipped demo models, on the CPU, quietly."""
    from rcsb_captum.dataset_runs import explain_dataset

    # one thread, as the CLI runs of the tests (--threads 1): a run's bits depend on the thread
    # count, and the default differs between machines and environments (OMP_NUM_THREADS)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return explain_dataset(
            folder,
            "rcsb_captum.demo:load_demo_classifier",
            "fashion-mnist",
            out,
            settings,
            accelerator="cpu",
            show_progress=False,
            **kwargs,
        )
    finally:
        torch.set_num_threads(before)


def _default_sigint():
    # a shell's background job starts with SIGINT ignored and its children inherit that (then
    # Python raises no KeyboardInterrupt): give the run the default, as in a terminal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_and_wait(cmd, out, stderr=subprocess.DEVNULL):
    """Start the CLI run ``cmd`` and return it once some but not all records are written."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=stderr, text=True, preexec_fn=_default_sigint
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        records = list((out / "records").glob("*.json")) if (out / "records").exists() else []
        if 3 <= len(records) < N:
            break
        time.sleep(0.05)
    return proc
