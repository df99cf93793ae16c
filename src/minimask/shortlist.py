"""Chapter 6. Which (proposal, class) pairs become detections.

Every proposal offers one candidate per foreground class: its probability for that class
and its box refined for that class. Four filters, in torchvision's order
(``RoIHeads.postprocess_detections``, ``models/detection/roi_heads.py``): a score
threshold, a tiny-box rule, NMS within each class, and a cap per image. Unlike torchvision,
the result keeps each detection's proposal and every dropped candidate with its reason;
Detectron2 ``fast_rcnn_inference_single_image`` (``roi_heads/fast_rcnn.py``) keeps the
proposal index too.

Shape shorthand: ``P`` proposals, ``K`` foreground classes, ``P * K`` candidates, ``D``
detections. A candidate row is ``proposal * K + (label - 1)``: proposal-major, class-minor,
background column removed, as torchvision flattens them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from torchvision.ops import batched_nms
from torchvision.ops import nms as tv_nms

from minimask import boxes as box_ops
from minimask.classification import Classification
from minimask.config import Config
from minimask.fates import CODE, KEPT, Filtered, NmsStep, drop
from minimask.transform import boxes_to_original


@dataclass(frozen=True)
class Shortlist(Filtered):
    """Chapter 6. One image's detections, best first, and the fate of every candidate.

    Rows of ``boxes`` ... ``candidate_index`` are detections; ``fate`` has one code per
    candidate (``proposal * K + label - 1``): ``kept`` or the step that dropped it
    (``STEPS``, in order). ``dropped``, ``funnel`` and ``suppressed_by`` (per candidate) are
    derived (``fates.Filtered``).
    """

    STEPS: ClassVar[tuple[str, ...]] = ("score_threshold", "small_box", "nms", "cap")

    boxes: Tensor  # (D, 4) refined boxes, resized-image pixels
    scores: Tensor  # (D,) class probability, descending
    labels: Tensor  # (D,) int64 class, 1..K (0 = background is never a candidate)
    proposal_index: Tensor  # (D,) int64 row in Classification (= Longlist row at inference)
    candidate_index: Tensor  # (D,) int64 candidate row, proposal * K + label - 1
    fate: Tensor  # (P * K,) int8 code in fates.FATES for every candidate
    nms: NmsStep  # the per-class NMS: its input candidates and decision (suppressors on demand)
    num_foreground: int  # K
    boxes_orig: Tensor | None = None  # (D, 4) the boxes in original-image pixels (given original_size)
    order: tuple[str, ...] = ()  # the steps in the order they ran, where not STEPS (Detectron2's rules)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def candidate(self, row: int) -> tuple[int, int]:
        """(proposal, label) of candidate ``row``."""
        return row // self.num_foreground, row % self.num_foreground + 1


def flatten_candidates(c: Classification) -> tuple[Tensor, Tensor, Tensor]:
    """Chapter 6. Every (proposal, foreground class) pair: boxes (P*K, 4), scores, labels.

    Background column dropped, then flattened proposal-major, class-minor, as torchvision
    ``postprocess_detections`` (so kept indices agree with it).
    """
    num_classes = c.probs.shape[1]
    labels = torch.arange(1, num_classes, device=c.probs.device).expand(len(c.probs), num_classes - 1)
    return c.boxes[:, 1:].reshape(-1, 4), c.probs[:, 1:].reshape(-1), labels.reshape(-1)


def nms_per_class(boxes: Tensor, scores: Tensor, labels: Tensor, rows: Tensor, cfg: Config) -> NmsStep:
    """Chapter 6. NMS at IoU > ``cfg.box_nms_thresh`` within each class, over the candidates ``rows``.

    ``torchvision.ops.batched_nms`` with the class as the group; ``keep`` is sorted by score,
    best first. ``cfg.background_class`` "last" groups by Detectron2's class index, label - 1
    (``fast_rcnn_inference_single_image``: ``filter_inds``): the same groups.
    """
    groups = labels[rows] - 1 if cfg.background_class == "last" else labels[rows]
    keep = batched_nms(boxes[rows], scores[rows], groups, cfg.box_nms_thresh)
    return NmsStep(
        rows=rows, boxes=boxes[rows], scores=scores[rows], groups=groups, keep=keep, threshold=cfg.box_nms_thresh
    )


def nonempty_in_original(
    boxes: Tensor, image_size: tuple[int, int], original_size: tuple[int, int], cfg: Config
) -> Tensor:
    """Chapter 11. Positions of the ``boxes`` whose sides, mapped to ``original_size``, exceed ``cfg.box_min_size``.

    Detectron2's tiny-box rule (``cfg.small_box_removal`` "after_rescale"): after the cap,
    ``detector_postprocess`` rescales the boxes (``transform.boxes_to_original``) and keeps
    ``Boxes.nonempty``.
    """
    mapped = boxes_to_original(boxes, image_size, original_size, cfg)
    w, h = mapped[:, 2] - mapped[:, 0], mapped[:, 3] - mapped[:, 1]
    return torch.where((w > cfg.box_min_size) & (h > cfg.box_min_size))[0]


def select_shortlist(c: Classification, cfg: Config, original_size: tuple[int, int] | None = None) -> Shortlist:
    """Chapter 6. Threshold, tiny-box rule, per-class NMS and cap, with every candidate's fate.

    Mirrors torchvision ``RoIHeads.postprocess_detections`` step by step: 1. score strictly
    greater than ``cfg.box_score_thresh``; 2. both sides >= ``cfg.box_min_size`` (1e-2 px);
    3. per-class NMS (``nms_per_class``, suppresses IoU > ``cfg.box_nms_thresh``); 4. the
    ``cfg.box_detections_per_img`` best. The boxes of ``c`` are already clipped to its
    ``image_size`` (resized height, width); ``original_size`` gives ``boxes_orig``.
    Detectron2 uses the same threshold, NMS and cap but removes tiny boxes after rescaling:
    ``cfg.small_box_removal`` "after_rescale" skips step 2 and, after the cap, drops the
    detections ``nonempty_in_original`` rejects (fate ``small_box``; chapter 11).
    """
    boxes, scores, labels = flatten_candidates(c)
    passed = scores > cfg.box_score_thresh  # 1. strict >
    fate = torch.where(passed, KEPT, CODE["score_threshold"]).to(torch.int8)
    rows = torch.where(passed)[0]
    if cfg.small_box_removal == "before_nms":  # 2.
        rows = drop(fate, "small_box", rows, box_ops.remove_small(boxes[rows], cfg.box_min_size))
    nms = nms_per_class(boxes, scores, labels, rows, cfg)  # 3.
    rows = drop(fate, "nms", rows, nms.keep)
    fate[rows[cfg.box_detections_per_img :]] = CODE["cap"]  # 4.
    rows = rows[: cfg.box_detections_per_img]
    after = cfg.small_box_removal == "after_rescale" and original_size is not None
    if after:
        rows = drop(fate, "small_box", rows, nonempty_in_original(boxes[rows], c.image_size, original_size, cfg))
    k = c.probs.shape[1] - 1
    return Shortlist(
        boxes=boxes[rows],
        scores=scores[rows],
        labels=labels[rows],
        proposal_index=torch.div(rows, k, rounding_mode="floor"),
        candidate_index=rows,
        fate=fate,
        nms=nms,
        num_foreground=k,
        boxes_orig=None if original_size is None else boxes_to_original(boxes[rows], c.image_size, original_size, cfg),
        order=("score_threshold", "nms", "cap", "small_box") if after else (),
    )


def select_class_agnostic(c: Classification, cfg: Config) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Chapter 6. The shortlist with one NMS over all classes, an alternative neither torchvision
    nor Detectron2 offers in ``postprocess_detections`` / ``fast_rcnn_inference``: score strictly
    greater than ``cfg.box_score_thresh``, then ``torchvision.ops.nms`` at ``cfg.box_nms_thresh``
    ignoring the labels, then the ``cfg.box_detections_per_img`` best (no tiny-box rule).
    Returns ``(rows, boxes, scores, labels)``: candidate rows (as ``flatten_candidates``) best first.
    """
    boxes, scores, labels = flatten_candidates(c)
    rows = torch.where(scores > cfg.box_score_thresh)[0]
    rows = rows[tv_nms(boxes[rows], scores[rows], cfg.box_nms_thresh)][: cfg.box_detections_per_img]
    return rows, boxes[rows], scores[rows], labels[rows]
