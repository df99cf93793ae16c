"""Chapter 8. What a detection's score is, and what it is not.

Mask R-CNN reports one number per detection: the box head's softmax probability of the
detected class, read from the features pooled on the *proposal* (not on the refined box it
reports). This module gathers, for every detection, that number beside the others a reader
might mistake it for: the proposal's objectness (the RPN ranked proposals by it, then
threw it away), the proposal's background probability, the probability left to the other
classes, and how confident the mask itself is. torchvision and Detectron2 return only the
first (``RoIHeads.postprocess_detections``; ``fast_rcnn_inference_single_image``); Mask
Scoring R-CNN multiplies in a learned mask IoU and CenterNet2 multiplies in the proposal
score: the products below show what such rescoring would do, they are not the model's score.

Shape shorthand: ``D`` detections of one image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from minimask.classification import Classification
from minimask.config import Config
from minimask.longlist import Longlist
from minimask.segmentation import Segmentation
from minimask.shortlist import Shortlist


@dataclass(frozen=True)
class Scores:
    """Chapter 8. The final score of each detection and the numbers it is made of (or not)."""

    score: Tensor  # (D,) the model's score: P(label | proposal) from the box head's softmax
    labels: Tensor  # (D,) int64 detected class
    detection_index: Tensor  # (D,) int64 row in the Shortlist: the lineage link
    proposal_index: Tensor  # (D,) int64 the proposal the detection came from (Shortlist.proposal_index)
    background: Tensor  # (D,) P(background | proposal), the same softmax row
    other_classes: Tensor  # (D,) 1 - score - background: what the other K - 1 classes took
    runner_up: Tensor  # (D,) the highest probability of any other foreground class
    objectness: Tensor  # (D,) the proposal's RPN P(object): ranked it, then discarded
    mask_quality: Tensor  # (D,) mean mask probability over the 28x28 cells >= mask_threshold (0 if none)
    mask_fraction: Tensor  # (D,) share of the 28x28 cells >= mask_threshold

    @property
    def with_objectness(self) -> Tensor:
        """(D,) score * objectness: a CenterNet2-style product (not what Mask R-CNN reports)."""
        return self.score * self.objectness

    @property
    def with_mask_quality(self) -> Tensor:
        """(D,) score * mask_quality: a Mask-Scoring-style product (not what Mask R-CNN reports)."""
        return self.score * self.mask_quality


def score_parts(
    longlist: Longlist,
    classification: Classification,
    shortlist: Shortlist,
    segmentation: Segmentation,
    cfg: Config,
) -> Scores:
    """Chapter 8. Take each detection's score apart.

    Follows each detection back through ``Shortlist.proposal_index`` to its proposal's
    softmax row (``Classification.probs``) and objectness (``Longlist.objectness``), and
    summarises its 28x28 mask (``Segmentation.probs``) at ``cfg.mask_threshold``. The score
    itself is unchanged: ``Scores.score`` equals ``Shortlist.scores``, torchvision's
    ``scores``. The mask summary is on the 28x28 grid (independent of the image size), not
    on the pasted pixels.
    """
    if len(segmentation.labels) != len(shortlist.labels):
        raise ValueError(f"score_parts: {len(shortlist.labels)} detections but {len(segmentation.labels)} masks")
    rows = shortlist.proposal_index
    probs = classification.probs[rows]  # (D, K+1): each detection's proposal's row
    background = probs[:, 0]
    score = shortlist.scores
    others = probs[:, 1:].clone()
    others[torch.arange(len(rows), device=rows.device), shortlist.labels - 1] = 0  # take out the winner
    runner_up = others.amax(dim=1) if others.shape[1] else torch.zeros_like(score)
    inside = segmentation.probs >= cfg.mask_threshold  # (D, M, M)
    cells = inside.flatten(1).sum(dim=1)
    mask_sum = (segmentation.probs * inside).flatten(1).sum(dim=1)
    return Scores(
        score=score,
        labels=shortlist.labels,
        detection_index=torch.arange(len(rows), device=rows.device),
        proposal_index=rows,
        background=background,
        other_classes=(1 - score - background).clamp(min=0),
        runner_up=runner_up,
        objectness=longlist.objectness[rows],
        mask_quality=torch.where(cells > 0, mask_sum / cells.clamp(min=1), torch.zeros_like(mask_sum)),
        mask_fraction=cells.to(score.dtype) / max(inside[0].numel() if len(inside) else 1, 1),
    )


# --- chapter 8: is the score calibrated? Reliability of the score against COCO's matches ------------
# (the matches themselves: coco_eval.iou and coco_eval.greedy_match, COCOeval's rule)


@dataclass(frozen=True)
class Reliability:
    """Chapter 8. A reliability diagram's numbers: scores binned, and how often each bin was right."""

    edges: Tensor  # (B + 1,) bin edges over [0, 1]; bin b holds edges[b] < score <= edges[b + 1]
    confidence: Tensor  # (B,) mean score in each bin (NaN where empty)
    accuracy: Tensor  # (B,) fraction of that bin's detections that are correct (NaN where empty)
    count: Tensor  # (B,) int64 detections in each bin

    @property
    def ece(self) -> float:
        """Expected calibration error: sum over bins of count / total * |accuracy - confidence|."""
        full = self.count > 0
        total = int(self.count.sum())
        if total == 0:
            return 0.0
        gap = (self.accuracy[full] - self.confidence[full]).abs()
        return float((self.count[full].double() / total * gap).sum())


def reliability(scores: Tensor, correct: Tensor, bins: int = 10) -> Reliability:
    """Chapter 8. Bin ``scores`` into ``bins`` equal-width bins of (0, 1]; per bin the mean score
    and the fraction of ``correct`` (bool) detections. Guo et al. (2017), "On Calibration of
    Modern Neural Networks", section 2, define the reliability diagram and ECE this way.
    """
    scores = scores.detach().double().cpu()
    correct = correct.detach().cpu().double()
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
    index = (torch.bucketize(scores, edges, right=False) - 1).clamp(0, bins - 1)  # right-closed bins
    count = torch.bincount(index, minlength=bins)
    score_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, scores)
    right_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    nan = torch.full((bins,), float("nan"), dtype=torch.float64)
    confidence = torch.where(count > 0, score_sum / count.clamp(min=1), nan)
    accuracy = torch.where(count > 0, right_sum / count.clamp(min=1), nan)
    return Reliability(edges=edges, confidence=confidence, accuracy=accuracy, count=count)


def expected_calibration_error(scores: Tensor, correct: Tensor, bins: int = 10) -> float:
    """Chapter 8. ECE of ``scores`` against ``correct`` over ``bins`` equal-width bins."""
    return reliability(scores, correct, bins).ece
