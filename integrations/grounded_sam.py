r"""Text-prompted regions from GroundingDINO and SAM, as in RCSB's LangSAM regions.

GroundingDINO (Liu et al., ECCV 2024) finds the boxes that a prompt names, SAM (Kirillov et
al., ICCV 2023) turns each box into a mask; the official RCSB code wraps the pair as LangSAM
with a box threshold of 0.3 and a text threshold of 0.25. This adapter runs the models that
``transformers`` provides and meets :class:`rcsb_captum.regions.TextSegmenter`, so that
:class:`~rcsb_captum.TextRegion` and ``rcsb-captum explain --region text --prompt ...`` can
use it. Install with ``pip install 'rcsb-captum[text]'``; the weights come from the Hugging
Face hub on first use (or from local folders written by ``save_pretrained``).

Examples::

    >>> from rcsb_captum import RCSB, TextRegion
    >>> from rcsb_captum.integrations.grounded_sam import GroundedSAM
    >>> segmenter = GroundedSAM.from_pretrained()            # grounding-dino-tiny + sam-vit-base
    >>> region = TextRegion(segmenter, "the dog's head")
    >>> RCSB(model, bridge, region=region).generate(images, target=207, seed=0)
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from rcsb_captum.checks import check_int, check_number, format_images
from rcsb_captum.regions import DEFAULT_TEXT_MODELS

__all__ = ["DEFAULT_DETECTOR", "DEFAULT_SAM", "GroundedSAM"]

#: Hub ids of the default models (``rcsb_captum.regions.DEFAULT_TEXT_MODELS``).
DEFAULT_DETECTOR, DEFAULT_SAM = DEFAULT_TEXT_MODELS


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:  # the core never needs it
        raise ImportError("text regions need transformers: pip install 'rcsb-captum[text]'") from e
    return transformers


def _prompt(text: str) -> str:
    # GroundingDINO's convention: lower case, phrases ending with a period
    text = text.strip().lower()
    return text if text.endswith(".") else text + "."


class GroundedSAM:
    r"""``(images, prompts) -> N x 1 x H x W`` scores in ``[0, 1]``: for each image, the
    boxes GroundingDINO finds for its prompt (box score above ``box_threshold``, a prompt token
    above ``text_threshold``), each turned into SAM's mask probabilities (the sigmoid of its
    logits, on the image's grid), and the maximum over the boxes; 0 where no box was found.

    Args:
        detector, detector_processor: A ``GroundingDinoForObjectDetection`` and its processor.
        sam, sam_processor: A ``SamModel`` and its processor.
        box_threshold (float): GroundingDINO's box score threshold (LangSAM's 0.3).
        text_threshold (float): Its text-token threshold (LangSAM's 0.25).
        batch_size (int): Images per GroundingDINO call (SAM runs per image, on its boxes).
        device (str or torch.device, optional): Where the models run (default: where they are).
    """

    def __init__(
        self,
        detector: Any,
        detector_processor: Any,
        sam: Any,
        sam_processor: Any,
        *,
        box_threshold: float = 0.3,
        text_threshold: float = 0.25,
        batch_size: int = 8,
        device: str | torch.device | None = None,
    ) -> None:
        self.box_threshold = check_number(box_threshold, "box_threshold", 0, 1)
        self.text_threshold = check_number(text_threshold, "text_threshold", 0, 1)
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.detector = detector.eval()
        self.sam = sam.eval()
        if device is not None:
            self.detector.to(device)
            self.sam.to(device)
        self.detector_processor = detector_processor
        self.sam_processor = sam_processor

    @classmethod
    def from_pretrained(
        cls,
        detector: str | os.PathLike[str] = DEFAULT_DETECTOR,
        sam: str | os.PathLike[str] = DEFAULT_SAM,
        **kwargs: Any,
    ) -> GroundedSAM:
        r"""Load both models and their processors from hub ids or local folders
        (``save_pretrained`` output); ``kwargs`` go to the constructor."""
        tf = _transformers()
        detector, sam = os.fspath(detector), os.fspath(sam)
        return cls(
            tf.GroundingDinoForObjectDetection.from_pretrained(detector),
            tf.GroundingDinoProcessor.from_pretrained(detector),
            tf.SamModel.from_pretrained(sam),
            tf.SamProcessor.from_pretrained(sam),
            **kwargs,
        )

    @property
    def device(self) -> torch.device:
        return next(self.detector.parameters()).device

    def boxes(self, images: Tensor, prompts: Sequence[str]) -> list[Tensor]:
        r"""Per image, the ``B x 4`` boxes (``x0, y0, x1, y1`` in pixels of the image) found for
        its prompt; ``B`` may be 0."""
        return self._boxes(self._rgb(images), prompts)

    def _boxes(self, images: Tensor, prompts: Sequence[str]) -> list[Tensor]:
        # images already checked and RGB (see _rgb)
        if len(prompts) != images.shape[0]:
            raise ValueError(f"prompts: need one per image ({images.shape[0]}), got {len(prompts)}")
        h, w = images.shape[-2:]
        post = self.detector_processor.post_process_grounded_object_detection
        # transformers renamed box_threshold to threshold (4.5x); accept both
        box_kw = (
            "threshold" if "threshold" in inspect.signature(post).parameters else "box_threshold"
        )
        found: list[Tensor] = []
        for s in range(0, images.shape[0], self.batch_size):
            chunk = images[s : s + self.batch_size]
            text = [_prompt(p) for p in prompts[s : s + self.batch_size]]
            inputs = self.detector_processor(
                images=list(chunk.cpu()), text=text, return_tensors="pt", do_rescale=False
            ).to(self.device)
            with torch.no_grad():
                outputs = self.detector(**inputs)
            results = post(
                outputs,
                inputs["input_ids"],
                text_threshold=self.text_threshold,
                target_sizes=[(h, w)] * chunk.shape[0],
                **{box_kw: self.box_threshold},
            )
            found += [r["boxes"].detach().float().cpu().clamp_min(0) for r in results]
        return found

    def __call__(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        rgb = self._rgb(images)
        n, _, h, w = rgb.shape
        scores = torch.zeros(n, 1, h, w)
        for i, boxes in enumerate(self._boxes(rgb, prompts)):
            if boxes.shape[0] == 0:
                continue
            inputs = self.sam_processor(
                images=[rgb[i].cpu()],
                input_boxes=[boxes.tolist()],
                return_tensors="pt",
                do_rescale=False,
            ).to(self.device)
            with torch.no_grad():
                out = self.sam(
                    pixel_values=inputs["pixel_values"],
                    input_boxes=inputs["input_boxes"],
                    multimask_output=False,
                )
            logits = self.sam_processor.image_processor.post_process_masks(
                out.pred_masks.cpu(),
                inputs["original_sizes"].cpu(),
                inputs["reshaped_input_sizes"].cpu(),
                binarize=False,
            )[0]  # boxes x 1 x H x W
            scores[i, 0] = torch.sigmoid(logits.float()).amax(dim=(0, 1))
        return scores.to(images.device)

    @staticmethod
    def _rgb(images: Tensor) -> Tensor:
        images = format_images(images, "images")
        if images.shape[1] == 1:
            return images.expand(-1, 3, -1, -1)
        if images.shape[1] != 3:
            raise ValueError(f"images must have 1 or 3 channels, got {images.shape[1]}")
        return images
