"""The GroundingDINO + SAM adapter on tiny, randomly initialised models built from their
configs (no download): shapes, thresholds, batching, local folders, the RCSB text region."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from rcsb_captum import RCSB, TextRegion  # noqa: E402
from rcsb_captum.integrations.grounded_sam import GroundedSAM  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "the", "shirt", "sleeve"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    tf = transformers
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("vocab")
    (folder / "vocab.txt").write_text("\n".join(VOCAB))
    tokenizer = tf.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    size = {"shortest_edge": 128, "longest_edge": 128}  # the 4th level is 2 x 2, not 1 x 1
    detector = tf.GroundingDinoForObjectDetection(
        tf.GroundingDinoConfig(
            backbone_config=tf.SwinConfig(
                image_size=128,
                patch_size=4,
                embed_dim=8,
                depths=[1, 1, 1, 1],
                num_heads=[1, 1, 1, 1],
                window_size=2,
                out_indices=[2, 3, 4],
            ),
            text_config=tf.BertConfig(
                vocab_size=len(VOCAB),
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=16,
                max_position_embeddings=64,
            ),
            d_model=32,
            encoder_layers=1,
            decoder_layers=2,
            num_queries=8,
            encoder_ffn_dim=16,
            decoder_ffn_dim=16,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            max_text_len=16,
            encoder_n_points=2,
            decoder_n_points=2,
        )
    )
    detector_processor = tf.GroundingDinoProcessor(
        image_processor=tf.GroundingDinoImageProcessor(size=size), tokenizer=tokenizer
    )
    sam = tf.SamModel(
        tf.SamConfig(
            vision_config=tf.SamVisionConfig(
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=64,
                patch_size=8,
                output_channels=16,
                mlp_dim=32,
                global_attn_indexes=[0],
                window_size=4,
                num_pos_feats=8,
            ),
            prompt_encoder_config=tf.SamPromptEncoderConfig(
                hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4
            ),
            mask_decoder_config=tf.SamMaskDecoderConfig(
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                mlp_dim=32,
                iou_head_hidden_dim=16,
            ),
        )
    )
    sam_processor = tf.SamProcessor(
        image_processor=tf.SamImageProcessor(
            size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}
        )
    )
    return detector, detector_processor, sam, sam_processor


def _images(n=3, c=1, size=32):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(1))


def test_scores_shapes_range_and_thresholds(parts):
    x = _images()
    loose = GroundedSAM(*parts, box_threshold=0.0, text_threshold=0.0)
    boxes = loose.boxes(x.expand(-1, 3, -1, -1), ["a shirt sleeve"] * 3)
    assert len(boxes) == 3 and all(b.ndim == 2 and b.shape[1] == 4 for b in boxes)
    assert all(len(b) > 0 and (b[:, 2:] <= 32 + 1e-4).all() for b in boxes)  # image pixels
    scores = loose(x, ["a shirt sleeve"] * 3)  # 1-channel images are read as RGB
    assert scores.shape == (3, 1, 32, 32) and 0 <= scores.min() and scores.max() <= 1
    assert (scores > 0).any()
    # a box threshold no box can pass: no box, a zero mask
    strict = GroundedSAM(*parts, box_threshold=1.0)
    assert all(len(b) == 0 for b in strict.boxes(x.expand(-1, 3, -1, -1), ["the shirt"] * 3))
    assert strict(x, ["the shirt"] * 3).abs().sum() == 0


def test_batching_does_not_change_the_scores(parts):
    x = _images(3, c=3)
    one = GroundedSAM(*parts, box_threshold=0.0, text_threshold=0.0, batch_size=1)
    all_ = GroundedSAM(*parts, box_threshold=0.0, text_threshold=0.0, batch_size=3)
    a = one(x, ["a sleeve", "the shirt", "a sleeve"])
    b = all_(x, ["a sleeve", "the shirt", "a sleeve"])
    assert torch.allclose(a, b, atol=1e-5)


def test_from_local_folders(parts, tmp_path):
    detector, detector_processor, sam, sam_processor = parts
    detector.save_pretrained(tmp_path / "dino")
    detector_processor.save_pretrained(tmp_path / "dino")
    sam.save_pretrained(tmp_path / "sam")
    sam_processor.save_pretrained(tmp_path / "sam")
    loaded = GroundedSAM.from_pretrained(
        tmp_path / "dino", tmp_path / "sam", box_threshold=0.0, text_threshold=0.0, device="cpu"
    )
    x = _images(2, c=3)
    direct = GroundedSAM(*parts, box_threshold=0.0, text_threshold=0.0)
    assert torch.allclose(loaded(x, ["a shirt"] * 2), direct(x, ["a shirt"] * 2), atol=1e-5)


def test_bad_inputs(parts):
    seg = GroundedSAM(*parts)
    with pytest.raises(ValueError, match="one per image"):
        seg.boxes(_images(2, c=3), ["a shirt"])
    with pytest.raises(ValueError, match="1 or 3 channels"):
        seg(_images(1, c=2), ["a shirt"])
    with pytest.raises(ValueError, match="box_threshold"):
        GroundedSAM(*parts, box_threshold=1.5)


def test_text_region_drives_rcsb(parts, tiny_bridge, classifier):
    x = _images(2, c=3)
    seg = GroundedSAM(*parts, box_threshold=0.0, text_threshold=0.0)
    region = TextRegion(seg, "the sleeves", area=0.2)
    rcsb = RCSB(classifier, tiny_bridge, region, start_step=50, nfe=2, n_samples=1)
    res = rcsb.generate(x, target=0, seed=0)
    assert torch.allclose(res.regions.mean((1, 2, 3)), torch.full((2,), 0.2), atol=1 / 1024)
    outside = (res.regions == 0).expand_as(x)
    assert torch.equal(res.counterfactuals[outside], x[outside])


def test_cli_explain_region_text(parts, tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    from rcsb_captum.cli import main
    from rcsb_captum.demo import load_demo_samples

    detector, detector_processor, sam, sam_processor = parts
    for model, processor, name in (
        (detector, detector_processor, "dino"),
        (sam, sam_processor, "sam"),
    ):
        model.save_pretrained(tmp_path / name)
        processor.save_pretrained(tmp_path / name)
    x, _ = load_demo_samples()
    files = []
    for i in range(2):
        files.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray((x[i, 0].numpy() * 255).astype(np.uint8)).save(files[-1])
    models = f"{tmp_path / 'dino'},{tmp_path / 'sam'}"
    out = tmp_path / "ex"
    args = ["explain", *files, "--region", "text", "--prompt", "the sleeves", "--area", "0.1"]
    args += ["--text-models", models, "--nfe", "2", "--out-dir", str(out)]
    code = main(args)
    err = capsys.readouterr().err
    if code == 2:  # random models may see nothing at LangSAM's thresholds: one clear line
        assert "selects nothing" in err and "\n" not in err.strip()
    else:
        assert code == 0
        manifest = (out / "manifest.jsonl").read_text().splitlines()
        assert all(0 < json.loads(line)["region_area"] <= 0.1 for line in manifest)
    assert main(["explain", files[0], "--region", "text", "--nfe", "2"]) == 2
    assert "--region text needs --prompt" in capsys.readouterr().err
