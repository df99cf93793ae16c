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

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from minimask import boxes as box_ops
from minimask.classification import Classification
from minimask.config import Config

REASONS = ("score", "small", "nms", "cap")


@dataclass(frozen=True)
class Shortlist:
    """Chapter 6. One image's detections, best first, and every candidate that was dropped."""

    boxes: Tensor  # (D, 4) refined boxes, resized-image pixels
    scores: Tensor  # (D,) class probability, descending
    labels: Tensor  # (D,) int64 class, 1..K (0 = background is never a candidate)
    proposal_index: Tensor  # (D,) int64 row in Classification / Longlist: the lineage link
    candidate_index: Tensor  # (D,) int64 candidate row, proposal * K + label - 1
    dropped: dict[str, Tensor]  # reason ("score", "small", "nms", "cap") -> candidate rows
    suppressed_by: Tensor  # (len(dropped["nms"]),) candidate row of the kept box that suppressed it
    funnel: dict[str, int]  # candidates left after each step
    num_foreground: int  # K

    def candidate(self, row: int) -> tuple[int, int]:
        """(proposal, label) of candidate ``row``."""
        return row // self.num_foreground, row % self.num_foreground + 1

    def reason(self, row: int) -> str:
        """Why candidate ``row`` is not a detection ("kept" if it is one)."""
        for why, rows in self.dropped.items():
            if bool((rows == row).any()):
                return why
        if bool((self.candidate_index == row).any()):
            return "kept"
        raise IndexError(f"candidate {row} out of range (0..{self.funnel['candidates'] - 1})")


def flatten_candidates(c: Classification) -> tuple[Tensor, Tensor, Tensor]:
    """Chapter 6. Every (proposal, foreground class) pair: boxes (P*K, 4), scores, labels.

    Background column dropped, then flattened proposal-major, class-minor, as torchvision
    ``postprocess_detections`` (so kept indices agree with it).
    """
    num_classes = c.probs.shape[1]
    labels = torch.arange(1, num_classes, device=c.probs.device).expand(len(c.probs), num_classes - 1)
    return c.boxes[:, 1:].reshape(-1, 4), c.probs[:, 1:].reshape(-1), labels.reshape(-1)


def select_shortlist(c: Classification, image_size: tuple[int, int], cfg: Config) -> Shortlist:
    """Chapter 6. Threshold, tiny-box rule, per-class NMS and cap, with every drop recorded.

    Mirrors torchvision ``RoIHeads.postprocess_detections`` step by step: score strictly
    greater than ``cfg.box_score_thresh``; both sides >= ``cfg.box_min_size`` (1e-2 px);
    ``torchvision.ops.batched_nms`` with the class as the group and ``cfg.box_nms_thresh``
    (suppresses IoU > thresh); the ``cfg.box_detections_per_img`` best. ``image_size`` is the
    resized (height, width); the boxes in ``c`` are already clipped to it. Detectron2 uses the
    same threshold, NMS and cap but no tiny-box rule here (it drops empty boxes after rescaling).
    """
    if tuple(image_size) != tuple(c.image_size):
        raise ValueError(
            f"select_shortlist: image_size {tuple(image_size)} != Classification.image_size {c.image_size}"
        )
    boxes, scores, labels = flatten_candidates(c)
    rows = torch.arange(len(scores), device=scores.device)
    funnel = {"candidates": len(rows)}
    # 1. a class probability above the threshold (strict >)
    passed = scores > cfg.box_score_thresh
    dropped = {"score": rows[~passed]}
    rows = rows[passed]
    funnel["above_score"] = len(rows)
    # 2. both sides at least box_min_size pixels
    large = box_ops.remove_small(boxes[rows], cfg.box_min_size)
    dropped["small"] = _complement(rows, large)
    rows = rows[large]
    funnel["large_enough"] = len(rows)
    # 3. NMS within each class; keep is sorted by score, descending
    keep = batched_nms(boxes[rows], scores[rows], labels[rows], cfg.box_nms_thresh)
    dropped["nms"] = _complement(rows, keep)
    suppressed_by = _suppressors(dropped["nms"], rows[keep], boxes, labels, cfg.box_nms_thresh)
    rows = rows[keep]
    funnel["after_nms"] = len(rows)
    # 4. the best box_detections_per_img
    dropped["cap"] = rows[cfg.box_detections_per_img :]
    rows = rows[: cfg.box_detections_per_img]
    funnel["kept"] = len(rows)
    k = c.probs.shape[1] - 1
    return Shortlist(
        boxes=boxes[rows],
        scores=scores[rows],
        labels=labels[rows],
        proposal_index=torch.div(rows, k, rounding_mode="floor"),
        candidate_index=rows,
        dropped=dropped,
        suppressed_by=suppressed_by,
        funnel=funnel,
        num_foreground=k,
    )


def _complement(rows: Tensor, keep: Tensor) -> Tensor:
    """``rows`` not selected by index tensor ``keep``, in their original order."""
    mask = torch.ones(len(rows), dtype=torch.bool, device=rows.device)
    mask[keep] = False
    return rows[mask]


def _suppressors(dropped: Tensor, kept: Tensor, boxes: Tensor, labels: Tensor, thresh: float) -> Tensor:
    """For each NMS-dropped candidate, the kept candidate of its class that suppressed it.

    Greedy NMS visits boxes best first, so the suppressor is the first kept box (in keep
    order, i.e. by score) of the same class with IoU > ``thresh``. Computed class by class so
    that memory stays (dropped x kept) per class. If rounding leaves no kept box strictly
    above the threshold, the kept box of highest IoU is named.
    """
    out = torch.full((len(dropped),), -1, dtype=torch.int64, device=dropped.device)
    if len(dropped) == 0:
        return out
    for label in torch.unique(labels[dropped]).tolist():
        d_pos = torch.where(labels[dropped] == label)[0]
        k_rows = kept[labels[kept] == label]
        if len(k_rows) == 0:
            continue
        overlap = box_ops.iou(boxes[dropped[d_pos]], boxes[k_rows])  # (d, k)
        above = overlap > thresh
        first = above.to(torch.uint8).argmax(dim=1)  # first True in keep order
        best = overlap.argmax(dim=1)
        out[d_pos] = k_rows[torch.where(above.any(dim=1), first, best)]
    return out
