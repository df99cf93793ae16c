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

import numpy as np
import torch
from torch import Tensor

from minimask import coco_eval
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


# --- chapter 8: judging each detection, and choosing a score threshold per class ------------------


def judge(target: dict[str, Tensor], output: dict[str, Tensor], mask_threshold: float) -> tuple[Tensor, ...]:
    """Chapter 8. One image's detections judged at IoU 0.5 by COCOeval's matching, twice.

    ``target``: the image's ground truth (torchvision's contract, with ``masks`` and
    ``iscrowd``); ``output``: the model's ``boxes``, ``labels``, ``scores``, ``masks``
    (``Tensor[D, 1, H, W]``). Returns ``(by_box, mask_ok, own_iou, near)``: ``by_box`` (D,)
    int64 the object each detection matched by box IoU (``coco_eval.greedy_match``: -1 none,
    -2 a crowd region); ``mask_ok`` (D,) bool matched by mask IoU; ``own_iou`` (D,) the mask
    IoU with the object its box matched (0 where none); ``near`` (D,) bool box IoU >= 0.5 with
    some object, whatever its class.
    """
    crowd = target["iscrowd"].tolist()
    rles = coco_eval.encode_masks(output["masks"], mask_threshold)
    mask_iou = torch.as_tensor(coco_eval.iou(rles, coco_eval.encode(target["masks"]), crowd))
    box_iou = torch.as_tensor(coco_eval.iou(output["boxes"], target["boxes"], crowd))
    by_box, by_mask = (
        torch.tensor(
            coco_eval.greedy_match(iou.numpy(), output["scores"], output["labels"], target["labels"], crowd)[0],
            dtype=torch.int64,
        )
        for iou in (box_iou, mask_iou)
    )
    own = torch.zeros(len(by_box), dtype=torch.float64)
    hit = by_box >= 0
    own[hit] = mask_iou[hit.nonzero()[:, 0], by_box[hit]].double()
    near = (box_iou >= coco_eval.IOU_MATCH).any(1) if box_iou.numel() else torch.zeros(len(by_box), dtype=torch.bool)
    return by_box, by_mask >= 0, own, near


@dataclass(frozen=True)
class OperatingPoint:
    """Chapter 8. One class's precision-recall curve (COCOeval's, IoU 0.5, area "all", 100
    detections) and two score thresholds read from it."""

    category_id: int
    recall: np.ndarray  # (R,) COCOeval's recall grid (params.recThrs: 0, 0.01, ..., 1)
    precision: np.ndarray  # (R,) eval["precision"]: the best precision at this recall or beyond; 0 past reach
    scores: np.ndarray  # (R,) eval["scores"]: the score of the detection with which recall reaches recall[r]
    target: float  # the precision asked for
    at_target: int  # the highest recall point whose precision >= target (-1: none)
    at_f1: int  # the recall point of the highest F1 = 2 p r / (p + r) (-1: no correct detection)
    objects: int  # the class's objects (not crowd)
    kept_precision: tuple[float, float]  # (target, F1): precision of the detections scoring >= each threshold
    kept_recall: tuple[float, float]  # (target, F1): recall of those detections

    def threshold(self, which: str = "target") -> float:
        """The score threshold of the ``"target"`` or ``"f1"`` point (NaN where there is none)."""
        r = self.at_target if which == "target" else self.at_f1
        return float(self.scores[r]) if r >= 0 else float("nan")

    @property
    def f1(self) -> float:
        """The highest F1 on the curve."""
        if self.at_f1 < 0:
            return 0.0
        p, r = self.precision[self.at_f1], self.recall[self.at_f1]
        return float(2 * p * r / (p + r))


def _kept(ev, k: int, area: int, threshold: float) -> tuple[float, float]:
    """Precision and recall at IoU 0.5 of category index ``k``'s detections scoring >= threshold,
    from COCOeval's per-image matches (``evalImgs``, as ``accumulate`` reads them)."""
    per_area, images = len(ev.params.areaRng), len(ev.params.imgIds)
    max_det = ev.params.maxDets[-1]
    hits, objects = [], 0
    for e in ev.evalImgs[k * per_area * images + area * images : k * per_area * images + (area + 1) * images]:
        if e is None:
            continue
        scores = np.asarray(e["dtScores"][:max_det])
        keep = (scores >= threshold) & ~e["dtIgnore"][0, :max_det]
        hits.append(e["dtMatches"][0, :max_det][keep] > 0)
        objects += int((np.asarray(e["gtIgnore"]) == 0).sum())
    hit = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    precision = float(hit.mean()) if hit.size else float("nan")
    return precision, (float(hit.sum()) / objects if objects else float("nan"))


def operating_points(ev, target: float = 0.9) -> list[OperatingPoint]:
    """Chapter 8. Per class, the score threshold that reaches precision ``target`` with the most
    recall, and the one of the highest F1, read from an evaluated COCOeval
    (``coco_eval.evaluate``).

    ``ev.eval["precision"]`` and ``ev.eval["scores"]`` (shape ``[T, R, K, A, M]``) are read at
    IoU 0.5 (``T = 0``), area "all" and the most detections. COCOeval's precision is
    interpolated: at recall ``r`` it is the best precision at ``r`` or beyond, so a threshold
    read from it can keep detections whose own precision is lower; ``kept_precision`` and
    ``kept_recall`` are the realised numbers (COCOeval's matches of the detections scoring at
    least the threshold). One entry per ``ev.params.catIds``.
    """
    if ev.params.iouThrs[0] != coco_eval.IOU_MATCH:
        raise ValueError(f"operating_points: the first IoU threshold is {ev.params.iouThrs[0]}, not 0.5")
    area = ev.params.areaRngLbl.index("all")
    recall = np.asarray(ev.params.recThrs, dtype=np.float64)
    out = []
    for k, category in enumerate(ev.params.catIds):
        precision = np.asarray(ev.eval["precision"][0, :, k, area, -1], dtype=np.float64)
        scores = np.asarray(ev.eval["scores"][0, :, k, area, -1], dtype=np.float64)
        reached = np.nonzero(precision >= target)[0]
        at_target = int(reached[-1]) if reached.size else -1
        f1 = np.where(precision > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
        at_f1 = int(np.argmax(f1)) if f1.max() > 0 else -1
        kept = [_kept(ev, k, area, float(scores[r])) if r >= 0 else (float("nan"),) * 2 for r in (at_target, at_f1)]
        gts = sum(int((np.asarray(e["gtIgnore"]) == 0).sum()) for e in ev.evalImgs
                  if e is not None and e["category_id"] == category and e["aRng"] == ev.params.areaRng[area])  # fmt: skip
        out.append(
            OperatingPoint(
                category_id=int(category),
                recall=recall,
                precision=precision,
                scores=scores,
                target=float(target),
                at_target=at_target,
                at_f1=at_f1,
                objects=gts,
                kept_precision=(kept[0][0], kept[1][0]),
                kept_recall=(kept[0][1], kept[1][1]),
            )
        )
    return out
