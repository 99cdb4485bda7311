import dataclasses
import json
import os
import shutil
import subprocess

import pytest
import torch
from PIL import Image

from rcsb_captum.dataset_runs import (
    RunSettings,
    explain_dataset,
    list_images,
    parse_class_map,
    parse_class_names,
    resolve_bridge_config,
)
from rcsb_captum.demo import load_demo_samples

from .run_helpers import FAST, SETTINGS, N, _cli, _manifest, _tensors

pytest.importorskip("lightning_fabric")


def test_list_images_forms(folder, tmp_path):
    items, classes = list_images(folder)
    assert [it.index for it in items] == list(range(N)) and classes is None
    _, labels = load_demo_samples()
    assert sorted(it.label for it in items) == sorted(labels[:N].tolist())
    named = tmp_path / "named"
    for name in ("shirt", "coat"):
        (named / name).mkdir(parents=True)
        Image.fromarray(torch.zeros(4, 4).byte().numpy()).save(named / name / "a.png")
    assert [it.label for it in list_images(named)[0]] == [0, 1]  # ImageFolder: sorted names
    by_model = list_images(named, class_names=["x", "shirt", "y", "coat"])[0]
    assert [it.label for it in by_model] == [3, 1]
    with pytest.raises(ValueError, match="not in class_names"):
        list_images(named, class_names=["shirt"])
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a comment\n{items[0].path} 3\n{items[1].path}\n")
    listed, _ = list_images(listing)
    assert [(it.label, it.path) for it in listed] == [(3, items[0].path), (None, items[1].path)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        list_images(tmp_path / "empty")
    (tmp_path / "bad.txt").write_text("missing.png\n")
    with pytest.raises(ValueError, match="names no file"):
        list_images(tmp_path / "bad.txt")


def test_parse_class_map(tmp_path):
    assert parse_class_map(None) is None and parse_class_map("3") == 3
    assert parse_class_map("6:0,0:6") == {6: 0, 0: 6}
    (tmp_path / "m.json").write_text('{"1": 2}')
    assert parse_class_map(str(tmp_path / "m.json")) == {1: 2}
    with pytest.raises(ValueError, match="counterfactual_target"):
        parse_class_map("shirt")


def test_parse_class_names_and_bridge_configs(tmp_path):
    assert parse_class_names(None) is None and parse_class_names("a, b") == ["a", "b"]
    (tmp_path / "names.txt").write_text("# the classes\ncat\n\ndog\n")
    assert parse_class_names(str(tmp_path / "names.txt")) == ["cat", "dog"]
    with pytest.raises(ValueError, match="non-empty"):
        parse_class_names("a,,b")
    assert resolve_bridge_config("celeba-128")["interval"] == 500
    assert resolve_bridge_config({"image_size": 8}) == {"image_size": 8}
    (tmp_path / "c.json").write_text('{"image_size": 64}')
    assert resolve_bridge_config(str(tmp_path / "c.json")) == {"image_size": 64}
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ValueError, match="JSON object"):
        resolve_bridge_config(str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match="neither one of"):
        resolve_bridge_config("imagenet-1024")


def test_cli_explain_dataset_with_the_demo_model_names_classes(folder, tmp_path):
    from rcsb_captum.cli import main
    from rcsb_captum.demo import FASHION_MNIST_CLASSES

    data = tmp_path / "data"
    for src in sorted(folder.glob("*/*.png"))[:3]:
        (data / src.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, data / src.parent.name / src.name)
    out = tmp_path / "out"
    args = ["explain-dataset", str(data), "--out-dir", str(out), "--accelerator", "cpu"]
    assert main([*args, "--quiet", *FAST[:6], "--region", "saliency"]) == 0  # --model demo
    text = (out / "summary.md").read_text()
    labels = {int(p.parent.name) for p in data.glob("*/*.png")}
    assert all(f"| {FASHION_MNIST_CLASSES[k]} |" in text for k in labels)
    assert json.loads((out / "summary.json").read_text())["classes"] == list(FASHION_MNIST_CLASSES)


@pytest.mark.slow
def test_single_process_run_writes_everything(reference, folder):
    out, summary = reference
    manifest = _manifest(out)
    assert [r["index"] for r in manifest] == list(range(N))
    assert summary["images"] == N and 0 <= summary["flip_rate"] <= 1
    assert all(r["max_change_outside"] == 0 for r in manifest)
    for name in ("summary.json", "summary.md", "examples.png", "settings.json"):
        assert (out / name).exists(), name
    assert len(list((out / "images").glob("*_counterfactual.png"))) == N
    t = torch.load(out / "tensors" / "0000000.pt")
    outside = (t["region"] == 0).expand_as(t["input"])
    assert torch.equal(t["counterfactual"][outside], t["input"][outside])
    # the same out_dir with other settings is refused, not mixed
    other = RunSettings.of(nfe=5, start_step=80, n_samples=1, batch_size=3)
    with pytest.raises(ValueError, match="other settings"):
        explain_dataset(
            folder,
            "rcsb_captum.demo:load_demo_classifier",
            "fashion-mnist",
            out,
            other,
            accelerator="cpu",
            show_progress=False,
        )


@pytest.mark.slow
def test_two_processes_share_the_work(reference, folder, tmp_path):
    ref, _ = reference
    out = tmp_path / "ddp"
    done = subprocess.run(_cli(folder, out, "--devices", "2"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = _manifest(out)
    assert [r["index"] for r in manifest] == list(range(N))  # each image exactly once
    a, b = _tensors(ref), _tensors(out)
    assert a.keys() == b.keys()
    for k in a:
        # the same draws; the processes differ only in float rounding (their thread counts
        # differ), which Adam's normalisation of the guidance can lift to ~1e-3 in a pixel
        assert torch.equal(a[k]["region"], b[k]["region"]), k
        diff = (a[k]["counterfactual"] - b[k]["counterfactual"]).abs()
        assert diff.max() < 2e-2 and diff.mean() < 1e-4, k


@pytest.mark.slow
def test_a_run_started_before_an_option_existed_resumes(reference, folder, tmp_path):
    ref, summary = reference
    out = tmp_path / "older"
    shutil.copytree(ref, out)
    stored = json.loads((out / "settings.json").read_text())
    for key in (
        "guidance_norm",
        "guidance_schedule",
        "sampler",
        "guidance_grad",
        "guidance_interval",
        "guidance_switch",
        "noise_temperature",
    ):  # (not ig_steps: the reference's 4 is not the default)
        del stored[key]  # written by a version without these options (their defaults)
    (out / "settings.json").write_text(json.dumps(stored))
    run = lambda s: explain_dataset(  # noqa: E731
        folder,
        "rcsb_captum.demo:load_demo_classifier",
        "fashion-mnist",
        out,
        s,
        accelerator="cpu",
        show_progress=False,
    )
    again = run(SETTINGS)
    assert again["images"] == summary["images"]
    with pytest.raises(ValueError, match="other settings"):
        run(dataclasses.replace(SETTINGS, rcsb=SETTINGS.rcsb.replace(guidance_norm="rms")))


def _run_in(folder, out, model="rcsb_captum.demo:load_demo_classifier", settings=SETTINGS):
    return explain_dataset(
        folder, model, "fashion-mnist", out, settings, accelerator="cpu", show_progress=False
    )


@pytest.mark.slow
def test_a_finished_run_refuses_another_model_naming_it(reference, folder, tmp_path):
    ref, _ = reference
    out = tmp_path / "copy"
    shutil.copytree(ref, out)
    with pytest.raises(ValueError, match=r"model_sha256 differ"):
        _run_in(folder, out, model="rcsb_captum.demo:load_demo_oracle")
    with pytest.raises(ValueError, match=r"nfe differ \(nfe: 4 in settings.json, 5 now\)"):
        _run_in(
            folder, out, settings=dataclasses.replace(SETTINGS, rcsb=SETTINGS.rcsb.replace(nfe=5))
        )
    # the same folder spelt with a trailing slash is the same run
    again = _run_in(str(folder) + os.sep, out)
    assert again["images"] == N


def test_a_failed_start_leaves_no_settings(folder, tmp_path):
    out = tmp_path / "fresh"
    with pytest.raises(FileNotFoundError, match="model"):
        _run_in(folder, out, model=str(tmp_path / "missing.pt"))
    assert not (out / "settings.json").exists()


def test_settings_round_trip_and_carry_every_rcsb_option():
    s = RunSettings.of("near_paper_4x", region="saliency", counterfactual_target={1: 2}, seed=3)
    assert s.rcsb.nfe == 95 and s.region == "saliency"
    assert RunSettings.from_json(json.loads(json.dumps(s.to_json()))) == s
    from rcsb_captum.config import config_fields

    assert {f.name for f in config_fields()} <= set(s.to_json())


@pytest.mark.slow
def test_success_is_a_flip_and_misclassified_images_count_apart(folder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(folder, data)
    # one image filed under a wrong class: the model does not predict its "label"
    first = sorted(data.glob("*/*.png"))[0]
    wrong = data / str((int(first.parent.name) + 1) % 10)
    wrong.mkdir(exist_ok=True)
    first.rename(wrong / first.name)
    summary = _run_in(data, tmp_path / "out")
    records = _manifest(tmp_path / "out")
    bad = [r for r in records if r["misclassified_before"]]
    assert len(bad) >= 1 and not any(r["success"] for r in bad)
    assert summary["misclassified_before"] == len(bad)
    assert summary["explained"] == N - len(bad)
    for r in records:
        if r["success"]:
            assert r["predicted_before"] == r["target"] != r["predicted_after"]
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "Success rule" in text and "## Per explained class" in text and "SHA-256" in text
