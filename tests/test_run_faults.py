"""Faults that machines, clusters and servers do to dataset runs: SIGTERM, a full disk,
damaged outputs (what a power cut leaves), a second run on the same folder. Each asserts the
exit status or error, a one-line message, no temporary file left, and a rerun that gives every
image once with the undisturbed run's results."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from rcsb_captum import durable
from rcsb_captum.dataset_runs import RunEnvironmentError
from rcsb_captum.durable import RunLock, atomic_write, text_bytes

from .run_helpers import N, _cli, _manifest, _tensors, run_dataset, start_and_wait

pytest.importorskip("lightning_fabric")


def _temporaries(out):
    return [p for p in out.rglob("*") if ".tmp" in p.name]


def _rerun_finishes(cmd, out):
    # the same command again: exit 0 and every image once in the manifest
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [r["index"] for r in _manifest(out)] == list(range(N))


def _same_as(ref, out):
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [strip(r) for r in _manifest(out)] == [strip(r) for r in _manifest(ref)]
    a, b = _tensors(ref), _tensors(out)
    for k in a:
        assert torch.equal(a[k]["counterfactual"], b[k]["counterfactual"]), k


def test_atomic_write_leaves_no_temporary_on_failure(tmp_path):
    target = tmp_path / "f.json"
    atomic_write(target, text_bytes("old"))

    def full(f):
        f.write(b"new, half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, full)
    assert target.read_text() == "old" and _temporaries(tmp_path) == []


# a process that writes `new` over `old` with atomic_write and is killed (SIGKILL) at one
# point of the write: half-way through the bytes, before the file's fsync, before the rename,
# after the rename (before the folder's fsync)
_KILLED_WRITE = """
import importlib.util, os, signal, sys
from pathlib import Path

# the module alone (it needs only the standard library): no torch import, a fast process
spec = importlib.util.spec_from_file_location("durable", sys.argv[3])
durable = importlib.util.module_from_spec(spec)
spec.loader.exec_module(durable)
phase, target = sys.argv[1], Path(sys.argv[2])
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)

def write(f):
    f.write(b"new, first half ")
    if phase == "writing":
        f.flush()
        die()
    f.write(b"second half")

if phase == "before-fsync":
    durable.os.fsync = die
if phase == "before-rename":
    durable.os.replace = die
if phase == "after-rename":
    durable._fsync_dir = die
durable.atomic_write(target, write)
"""


@pytest.mark.parametrize("phase", ["writing", "before-fsync", "before-rename", "after-rename"])
def test_kill_9_at_each_point_of_a_write_leaves_the_old_file_or_the_new(phase, tmp_path):
    target = tmp_path / "records" / "0000003.json"
    target.parent.mkdir()
    target.write_bytes(b"old")
    module = durable.__file__
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITE, phase, str(target), module])
    assert proc.returncode == -signal.SIGKILL
    content = target.read_bytes()
    if phase == "after-rename":
        assert content == b"new, first half second half" and _temporaries(tmp_path) == []
    else:
        assert content == b"old"  # never a mix, never a truncated file
        assert len(_temporaries(tmp_path)) == 1  # the killed run's leftover ...
        removed = durable.remove_stale_temporaries(tmp_path)  # ... which the next run removes
        assert len(removed) == 1 and _temporaries(tmp_path) == []
    assert target.read_bytes() == content


def test_a_full_disk_is_one_line_and_the_rerun_finishes(reference, folder, tmp_path, monkeypatch):
    ref, _ = reference
    out = tmp_path / "full"
    real, calls = durable.atomic_write, {"n": 0}

    def filling(path, write):  # the disk fills up after 10 files
        calls["n"] += 1
        if calls["n"] > 10:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, write)

    monkeypatch.setattr("rcsb_captum.dataset_runs.outputs.atomic_write", filling)
    with pytest.raises(RunEnvironmentError) as e:
        run_dataset(folder, out)
    message = str(e.value)
    assert "no space left" in message and "rerun" in message and "\n" not in message
    assert _temporaries(out) == []
    monkeypatch.setattr("rcsb_captum.dataset_runs.outputs.atomic_write", real)
    run_dataset(folder, out)
    _same_as(ref, out)


def _can_mount_tmpfs(tmp):
    # a user and mount namespace (unshare -rm) lets an unprivileged process mount a tmpfs
    probe = tmp / "probe"
    probe.mkdir()
    cmd = ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"]
    try:
        return subprocess.run(cmd, capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.mark.slow
def test_a_real_full_disk_is_one_line_and_the_rerun_finishes(reference, folder, tmp_path):
    # the run writes its out-dir on a 320 KB tmpfs (an image's files take ~65 KB), then what
    # it left is copied to a real disk and the same command finishes the run there
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("cannot mount a tmpfs here (unshare -rm)")
    ref, _ = reference
    small, kept = tmp_path / "small", tmp_path / "kept"
    small.mkdir()
    kept.mkdir()
    run = " ".join(f"'{a}'" for a in _cli(folder, small))
    script = (
        f"mount -t tmpfs -o size=320k tmpfs {small} && {{ {run}; echo $? > {tmp_path}/rc; }}"
        f" && cp -a {small}/. {kept}/"
    )
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int((tmp_path / "rc").read_text()) == 2, proc.stderr[-2000:]  # as documented
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no space left" in lines[0] and "Traceback" not in proc.stderr
    assert lines[0].count(str(small)) == 1, lines[0]  # the file, named once
    assert _temporaries(kept) == []
    done = sorted(int(p.stem) for p in (kept / "records").glob("*.json"))
    assert 1 <= len(done) < N
    _rerun_finishes(_cli(folder, kept), kept)
    _same_as(ref, kept)


def test_damaged_outputs_are_redone_and_listed(reference, folder, tmp_path):
    ref, _ = reference
    out = tmp_path / "damaged"
    shutil.copytree(ref, out)
    (out / "tensors" / "0000001.pt").write_bytes(b"")  # a power cut's 0-byte file
    rec = out / "records" / "0000004.json"
    rec.write_text(rec.read_text()[:15])  # a truncated record
    (out / "images" / "0000007_region.png").unlink()
    (out / "records" / "0000002.json.tmp999").write_text("{")  # a killed run's leftover
    summary = run_dataset(folder, out)
    assert summary["redone_damaged"] == [1, 4, 7]
    assert _temporaries(out) == []
    _same_as(ref, out)


def test_a_second_run_on_the_same_folder_is_refused_naming_the_holder(folder, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    lock = RunLock(out)
    with lock.held():
        with pytest.raises(RunEnvironmentError, match=f"pid {os.getpid()}"):
            run_dataset(folder, out)
    assert not (out / "records").exists() or not list((out / "records").iterdir())
    run_dataset(folder, out)  # once released, the folder is free


@pytest.mark.parametrize(
    "signum, status, word",
    [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "interrupted")],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_stop_signal_keeps_finished_images_and_the_rerun_resumes(
    reference, folder, tmp_path, signum, status, word
):
    # SIGTERM stops between batches; SIGINT (Ctrl-C) at once, a write included
    ref, _ = reference
    out = tmp_path / "stopped"
    cmd = _cli(folder, out)
    proc = start_and_wait(cmd, out, stderr=subprocess.PIPE)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and word in lines[0] and "Traceback" not in err
    done = sorted(int(p.stem) for p in (out / "records").glob("*.json"))
    assert 3 <= len(done) < N
    if signum == signal.SIGTERM:
        assert len(done) % 3 == 0  # whole batches, none half-written
    assert _temporaries(out) == []
    for tensors in _tensors(out).values():  # every tensor file left loads
        assert torch.isfinite(tensors["counterfactual"]).all()
    _rerun_finishes(cmd, out)
    _same_as(ref, out)
    json.loads((out / "summary.json").read_text())


# the CLI run, SIGKILLed half-way through writing the file named argv[1] (its temporary file
# holds half the bytes); argv[2:] is the command line of `rcsb_captum.cli`
_KILLED_RUN = """
import os, signal, sys
from rcsb_captum import cli
from rcsb_captum.dataset_runs import outputs

name, real = sys.argv[1], outputs.atomic_write

def dying(path, write):
    if path.name != name:
        return real(path, write)
    def half(f):
        f.write(b"half")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, half)

outputs.atomic_write = dying
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_kill_9_while_writing_each_file_of_an_image_then_the_rerun_finishes(
    reference, folder, tmp_path
):
    # batches of 3: killed while writing image 3's region PNG (the first of its batch), image
    # 7's tensor file (the middle one) and image 11's record (the last of the last batch);
    # each rerun keeps the finished images and redoes the rest
    ref, _ = reference
    out = tmp_path / "killed"
    args = _cli(folder, out)[3:]  # after `python -m rcsb_captum.cli`
    for name in ("0000003_region.png", "0000007.pt", "0000011.json"):
        proc = subprocess.run(
            [sys.executable, "-c", _KILLED_RUN, name, *args], capture_output=True, text=True
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        assert any(p.name.startswith(name + ".tmp") for p in _temporaries(out)), name
        done = sorted(int(p.stem) for p in (out / "records").glob("*.json"))
        assert done == list(range(int(name[:7]))), (name, done)  # the killed image is not
    _rerun_finishes(_cli(folder, out), out)
    assert _temporaries(out) == []
    _same_as(ref, out)
    a, b = _tensors(ref), _tensors(out)
    assert all(torch.equal(a[k]["samples"], b[k]["samples"]) for k in a)  # bit-identical


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_every_rank(reference, folder, tmp_path):
    # `kill` of the launching process reaches rank 0 only: the ranks agree at each round and
    # all stop between batches with one line each (no rank left to crash at a barrier)
    ref, _ = reference
    out = tmp_path / "term2"
    cmd = _cli(folder, out, "--devices", "2", "--batch-size", "1")  # 6 rounds of 2 batches
    proc = start_and_wait(cmd, out, stderr=subprocess.PIPE)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err and "Error" not in err, err[-2000:]
    assert err.count("stopped by SIGTERM") == 2  # one line per rank
    done = sorted(int(p.stem) for p in (out / "records").glob("*.json"))
    assert 3 <= len(done) < N
    assert _temporaries(out) == []
    # the rest on one process: the same settings, so it resumes the two-process run
    _rerun_finishes(_cli(folder, out, "--batch-size", "1"), out)
    a, b = _tensors(ref), _tensors(out)
    for k in a:  # batches of 1 and two processes: the same draws, float rounding apart (as without the signal)
        assert torch.equal(a[k]["region"], b[k]["region"]), k
        assert (a[k]["counterfactual"] - b[k]["counterfactual"]).abs().max() < 2e-2, k


def test_unreadable_images_are_all_named_or_skipped(folder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(folder, data)
    bad = sorted(data.rglob("*.png"))[:3]
    bad[0].write_bytes(b"")  # 0-byte
    bad[1].write_bytes(bad[1].read_bytes()[:40])  # truncated
    bad[2].write_bytes(os.urandom(200))  # random bytes
    with pytest.raises(ValueError) as e:
        run_dataset(data, tmp_path / "refused")
    message = str(e.value)
    assert "3 unreadable" in message and all(str(p) in message for p in bad)
    assert "--skip-unreadable" in message and not (tmp_path / "refused" / "settings.json").exists()
    out = tmp_path / "skipped"
    summary = run_dataset(data, out, skip_unreadable=True)
    assert summary["images"] == N - 3
    assert sorted(summary["skipped_unreadable"]) == sorted(str(p) for p in bad)
    assert "Skipped (unreadable)" in (out / "summary.md").read_text()


def test_a_corrupted_model_file_is_one_line_unless_verbose(folder, tmp_path):
    import sys

    bad = tmp_path / "model.pt2"
    bad.write_bytes(os.urandom(3000))
    image = str(sorted(folder.rglob("*.png"))[0])
    cmd = [sys.executable, "-m", "rcsb_captum.cli", "explain", image, "--model", str(bad)]
    quiet = subprocess.run(cmd, capture_output=True, text=True)
    assert quiet.returncode == 2
    lines = [line for line in quiet.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model: could not load" in lines[0], quiet.stderr[-2000:]
    loud = subprocess.run([*cmd, "--verbose"], capture_output=True, text=True)
    assert loud.returncode == 2 and "Traceback" in loud.stderr
