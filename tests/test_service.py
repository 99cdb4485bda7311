"""The explain-and-write service every front end uses (rcsb_captum.dataset_runs.service)."""

import json

import pytest
import torch

from rcsb_captum import Bridge, MaskRegion
from rcsb_captum.dataset_runs import RunEnvironmentError, RunSettings
from rcsb_captum.dataset_runs.service import build_rcsb, explain_images
from rcsb_captum.demo import load_demo_classifier, load_demo_samples
from rcsb_captum.durable import RunLock
from rcsb_captum.regions import AttributionRegion


@pytest.fixture(scope="module")
def demo():
    x, y = load_demo_samples()
    return load_demo_classifier(), Bridge.pretrained("fashion-mnist"), x[:3], y[:3]


def test_a_named_region_takes_the_presets_other_options(demo):
    model, bridge, _, _ = demo
    # fast_10x sets ig_steps=4, which only the "ig" region takes: saliency still builds
    rcsb = build_rcsb(model, bridge, RunSettings.of("fast_10x", region="saliency"))
    assert isinstance(rcsb.region, AttributionRegion) and rcsb.config.nfe == 25
    ig = build_rcsb(model, bridge, RunSettings.of("fast_10x"))
    assert ig.config.ig_steps == 4


def test_explain_images_writes_the_layout_and_cuts_per_image_masks(demo, tmp_path):
    model, bridge, x, y = demo
    masks = torch.zeros(3, 1, 32, 32)
    for i in range(3):
        masks[i, :, 4 * i : 4 * i + 12, 6:26] = 1
    # no escalation: near_paper_4x's 95 Adam-normalised steps carry the batch size's float
    # rounding to up to 0.05 in a few pixels on some CPUs (docs/reproducibility.md)
    settings = RunSettings.of("fast_10x", nfe=2, escalation=(), batch_size=2, seed=3)
    summary = explain_images(model, bridge, x, tmp_path, settings, labels=y.tolist(), region=masks)
    assert summary["images"] == 3 and summary["max_change_outside"] == 0
    manifest = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [r["index"] for r in manifest] == [0, 1, 2]
    assert [r["label"] for r in manifest] == y.tolist()
    for i in range(3):  # each image got its own mask although the batches hold two
        t = torch.load(tmp_path / "tensors" / f"{i:07d}.pt")
        assert torch.equal(t["region"], masks[i])
        outside = (masks[i] == 0).expand_as(x[i])
        assert torch.equal(t["counterfactual"][outside], x[i][outside])
    assert json.loads((tmp_path / "settings.json").read_text())["nfe"] == 2
    # image 0 alone, its mask as a fixed region source: the same result
    again = tmp_path / "again"
    explain_images(
        model, bridge, x[:1], again, settings, labels=y[:1].tolist(), region=MaskRegion(masks[:1])
    )
    a = torch.load(tmp_path / "tensors" / "0000000.pt")
    b = torch.load(again / "tensors" / "0000000.pt")
    # the same draws; only float rounding differs with the batch's size
    assert torch.equal(a["region"], b["region"])
    assert (a["counterfactual"] - b["counterfactual"]).abs().max() < 2e-2


def test_explain_images_refuses_a_folder_another_run_holds(demo, tmp_path):
    model, bridge, x, y = demo
    with RunLock(tmp_path).held():
        with pytest.raises(RunEnvironmentError, match="in use by another run"):
            explain_images(model, bridge, x[:1], tmp_path, RunSettings.of("fast_10x", nfe=2))
    with pytest.raises(ValueError, match="labels: expected 1"):
        explain_images(model, bridge, x[:1], tmp_path, labels=[1, 2])
