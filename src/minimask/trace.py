"""Chapter 10. The trace: why is this box here, and why was that object missed?

Every stage keeps a record of one forward (``model.run``): which anchors became proposals
(``Longlist.fate``), what each proposal's K+1 probabilities and refined boxes were
(``Classification``), which (proposal, class) candidates became detections
(``Shortlist.fate``, with the suppressor of every candidate NMS removed), and each
detection's mask. This module joins those records; it never runs a stage a second time.

- ``explain(model, image, target=None) -> Trace``: one image, one ``model.run``.
  ``Trace.detections`` is each final detection's lineage (anchor -> proposal -> refined box
  -> mask); ``Trace.fate(stage, row)`` follows any anchor, proposal or candidate to the step
  that dropped it. With a target: ``Trace.matches``, ``Trace.misses`` (each missed object,
  the stage and step that lost it, and the numbers behind it) and ``Trace.false_positives``
  (each unmatched detection, with TIDE's error kind).
- ``explain_dataset(model, dataset) -> Report``: the misses by stage and reason and the false
  positives by kind, per class and per COCO size, with the box AP that fixing each would
  recover (pycocotools ``COCOeval`` on corrected results), and the images behind each count.

Matching is pycocotools' (``COCOeval.evaluateImg`` at IoU 0.5): per class, detections in
descending score order (the ``max_dets`` best of each class), each takes the unmatched
non-crowd object it overlaps most (IoU >= 0.5); a detection whose best overlap is a crowd
region is ignored, neither a match nor a false positive. Crowd objects are never missed.

Neither torchvision nor Detectron2 keeps this lineage: torchvision's
``RegionProposalNetwork.filter_proposals`` and ``RoIHeads.postprocess_detections`` drop the
indices; Detectron2's ``fast_rcnn_inference`` returns the kept proposal indices only.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor

from minimask import boxes as box_ops
from minimask.fates import CODE, FATES, KEPT
from minimask.longlist import Longlist
from minimask.shortlist import Shortlist
from minimask.transform import resize_boxes

STAGES: tuple[str, ...] = ("longlist", "classification", "shortlist", "segmentation")
# the stage records' step names -> the trace's reason codes
LONGLIST_REASONS: dict[str, str] = {
    "pre_nms_top_k": "pre_nms_top_k",
    "small_box": "small_box",
    "score_threshold": "score_threshold",
    "nms": "rpn_nms",
    "cap": "post_nms_top_k",
}
SHORTLIST_REASONS: dict[str, str] = {
    "score_threshold": "score_threshold",
    "small_box": "small_box",
    "nms": "class_nms",
    "cap": "detection_cap",
}
# every (stage, reason) a miss can have, in pipeline order (the tables' row order)
MISS_CAUSES: tuple[tuple[str, str], ...] = (
    ("longlist", "localisation"),
    *(("longlist", r) for r in LONGLIST_REASONS.values()),
    ("classification", "localisation"),
    ("classification", "background"),
    ("classification", "wrong_class"),
    *(("shortlist", r) for r in SHORTLIST_REASONS.values()),
    ("segmentation", "mask_iou"),
)
FP_KINDS: tuple[str, ...] = ("classification", "localisation", "both", "duplicate", "background")
SIZES: tuple[str, ...] = ("small", "medium", "large")  # COCO: area < 32^2, < 96^2, larger
IOU_MATCH = 0.5  # pycocotools' loosest threshold; TIDE's foreground threshold
IOU_BACKGROUND = 0.1  # TIDE's background threshold


def coco_size(area: float) -> str:
    """COCO's size bin of an object of ``area`` pixels (pycocotools ``Params.areaRng``)."""
    return "small" if area < 32**2 else "medium" if area < 96**2 else "large"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n:,}{suffix}"


# --- records --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Anchor:
    """The anchor a detection (or a proposal) grew from."""

    row: int  # row in Objectness / Longlist.fate
    level: int  # 0 = P2 ... 4 = P6
    cell: tuple[int, int]  # (y, x) on its level's map
    size: float  # Config.anchor_sizes[level] entry
    aspect_ratio: float  # height / width
    box: tuple[float, float, float, float]  # xyxy, resized-image pixels


@dataclass(frozen=True)
class Lineage:
    """One final detection, stage by stage (boxes in resized-image pixels unless ``_orig``)."""

    detection: int  # row in Shortlist / Segmentation / the model's output
    anchor: Anchor
    objectness: float  # the anchor's P(object)
    level_rank: int  # rank of its objectness among its level's anchors (1 = best)
    level_top_k: int  # rpn_pre_nms_top_n_test: the level keeps ranks 1..level_top_k
    longlist_rank: int  # its proposal's row in the longlist + 1 (1 = best objectness)
    proposal: int  # row in Longlist / Classification
    proposal_box: Tensor  # (4,)
    roi_level: int  # the map RoIAlign read for the box head (0 = P2)
    class_probs: Tensor  # (K+1,) softmax, background first
    label: int
    candidate: int  # row in Shortlist.fate: proposal * K + label - 1
    refined_box: Tensor  # (4,)
    suppressed: list[tuple[int, float]]  # class NMS: (candidate row, IoU) it removed
    box_orig: Tensor  # (4,) the reported box, original-image pixels
    mask_probs: Tensor | None  # (28, 28) soft mask on the box (None: run without masks)
    mask: Tensor | None  # (H, W) soft mask pasted into the original image (None: as mask_probs)
    score: float

    def describe(self) -> str:
        a = self.anchor
        return (
            f"detection {self.detection}: anchor P{a.level + 2} cell {a.cell} size {a.size:g} ratio "
            f"{a.aspect_ratio:g}, objectness {self.objectness:.3f} (ranked {_ordinal(self.level_rank)} of its "
            f"level, keeps {self.level_top_k:,}), longlist rank {self.longlist_rank}; class {self.label} "
            f"p={self.class_probs[self.label]:.3f} (background {self.class_probs[0]:.3f}); "
            f"suppressed {len(self.suppressed)} candidates; score {self.score:.3f}"
        )


@dataclass(frozen=True)
class Fate:
    """Where one anchor, proposal or candidate ended: ``stage`` "kept" or the stage that dropped it."""

    stage: str  # "longlist", "shortlist" or "kept"
    step: str  # a fates.FATES code: "kept" or the step
    row: int  # the row in that stage's input (anchor row, or candidate row)
    suppressor: int = -1  # NMS: the kept row (same stage) that removed it
    iou: float = float("nan")  # NMS: IoU with the suppressor
    detection: int = -1  # kept: the detection it became

    def __str__(self) -> str:
        if self.stage == "kept":
            return f"kept: detection {self.detection}"
        s = f"dropped in the {self.stage} at {self.step} (row {self.row})"
        if self.suppressor >= 0:
            s += f", suppressed by row {self.suppressor} at IoU {self.iou:.2f}"
        return s


@dataclass(frozen=True)
class Match:
    """A ground-truth object and the detection pycocotools matched to it (box IoU >= 0.5)."""

    gt_index: int
    detection: int
    box_iou: float
    mask_iou: float


@dataclass(frozen=True)
class Miss:
    """A non-crowd object no detection matched, and the decision that lost it (see ``attribute``)."""

    gt_index: int
    label: int
    stage: str  # "longlist", "classification", "shortlist" or "segmentation"
    reason: str  # see MISS_CAUSES
    numbers: dict[str, Any] = field(default_factory=dict)
    row: int = -1  # the representative row: an anchor (longlist), a proposal, or a candidate

    def sentence(self) -> str:
        """The cause in words, with its numbers."""
        n = self.numbers
        r = self.reason
        if self.stage == "longlist" and r == "localisation":
            return (
                f"no proposal covers it at IoU {n['iou_threshold']}: best proposal IoU {n['best_proposal_iou']:.2f}, "
                f"best anchor IoU {n['best_anchor_iou']:.2f}"
            )
        if r == "pre_nms_top_k":
            return (
                f"its best covering anchor (IoU {n['anchor_iou']:.2f}, its proposal {n['proposal_iou']:.2f}): objectness "
                f"ranked {_ordinal(n['level_rank'])} of its level (P{n['level'] + 2}); the level keeps {n['top_k']:,} "
                "before NMS"
            )
        if self.stage == "longlist" and r == "small_box":
            return f"its proposal (IoU {n['proposal_iou']:.2f}) has a side of {n['side']:.3g} px < rpn_min_size {n['min_size']:g}"
        if self.stage == "longlist" and r == "score_threshold":
            return f"its proposal (IoU {n['proposal_iou']:.2f}) has objectness {n['objectness']:.3f} < rpn_score_thresh {n['threshold']:g}"
        if r == "rpn_nms":
            return (
                f"its proposal (IoU {n['proposal_iou']:.2f}, objectness {n['objectness']:.3f}) was suppressed by anchor "
                f"{n['suppressor']} (IoU {n['suppressor_iou']:.2f} > {n['threshold']:g}), which covers the object at "
                f"IoU {n['suppressor_object_iou']:.2f}"
            )
        if r == "post_nms_top_k":
            return (
                f"its proposal (IoU {n['proposal_iou']:.2f}) ranked {_ordinal(n['rank'])} after NMS; the image keeps "
                f"{n['cap']:,}"
            )
        if self.stage == "classification" and r == "localisation":
            return (
                f"a proposal covered it (IoU {n['proposal_iou']:.2f}) but its class-{self.label} refined box reached "
                f"only IoU {n['refined_iou']:.2f} (p={n['probability']:.3f})"
            )
        if r == "background":
            return (
                f"its best proposal (IoU {n['refined_iou']:.2f}) was called background (p={n['background']:.3f}); "
                f"p(class {self.label}) = {n['probability']:.3f} <= {n['threshold']:g}"
            )
        if r == "wrong_class":
            return (
                f"its best proposal (IoU {n['refined_iou']:.2f}) was called class {n['argmax']} "
                f"(p={n['argmax_probability']:.3f}); p(class {self.label}) = {n['probability']:.3f} <= {n['threshold']:g}"
            )
        if r == "score_threshold":
            return f"its best candidate (IoU {n['refined_iou']:.2f}) scored {n['probability']:.3f} <= box_score_thresh {n['threshold']:g}"
        if self.stage == "shortlist" and r == "small_box":
            return f"its refined box has a side of {n['side']:.3g} px < box_min_size {n['min_size']:g}"
        if r == "class_nms":
            who = f"object {n['suppressor_match']}" if n["suppressor_match"] >= 0 else "no object"
            return (
                f"its best candidate (IoU {n['refined_iou']:.2f}, p={n['probability']:.3f}) was suppressed by "
                f"detection {n['suppressor_detection']} (IoU {n['suppressor_iou']:.2f} > {n['threshold']:g}), "
                f"matched to {who}"
            )
        if r == "detection_cap":
            return (
                f"its best candidate (IoU {n['refined_iou']:.2f}, p={n['probability']:.3f}) ranked {_ordinal(n['rank'])}; "
                f"the image keeps {n['cap']:,} detections"
            )
        if r == "mask_iou":
            return (
                f"detection {n['detection']} matched its box (IoU {n['box_iou']:.2f}) but its mask reaches IoU "
                f"{n['mask_iou']:.2f} < {n['iou_threshold']}"
            )
        return f"{self.stage}: {r} {n}"

    def __str__(self) -> str:
        return (
            f"object {self.gt_index} (class {self.label}) lost in the {self.stage} [{self.reason}]: {self.sentence()}"
        )


@dataclass(frozen=True)
class FalsePositive:
    """An unmatched detection and TIDE's kind of error (``FP_KINDS``)."""

    detection: int
    label: int
    score: float
    kind: str
    gt_index: int  # the object behind the kind (-1 for background)
    iou: float  # box IoU with that object (the best IoU with any object for background)

    def __str__(self) -> str:
        about = (
            f" (object {self.gt_index}, IoU {self.iou:.2f})" if self.gt_index >= 0 else f" (best IoU {self.iou:.2f})"
        )
        return f"detection {self.detection} (class {self.label}, score {self.score:.3f}): {self.kind}{about}"


# --- matching as pycocotools ----------------------------------------------------------------------
def xywh(boxes: Tensor) -> list[list[float]]:
    """xyxy -> COCO [x, y, w, h], the arithmetic of ``evaluate.to_coco_results`` (float32)."""
    boxes = boxes.detach().cpu()
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()


def coco_match(
    ious: np.ndarray,
    det_scores: list[float],
    det_labels: list[int],
    gt_labels: list[int],
    gt_crowd: list[int],
    iou_threshold: float = IOU_MATCH,
    max_dets: int = 100,
) -> tuple[list[int], list[int]]:
    """pycocotools' greedy matching of one image at one IoU threshold, every class.

    ``ious`` (D, G): ``pycocotools.mask.iou`` with the crowd flags (a crowd region's IoU is
    intersection over the detection's area). Returns ``det_match`` (D,): the object each
    detection matched, -1 none, -2 ignored (matched a crowd region, or past ``max_dets``);
    ``gt_match`` (G,): the detection each object matched, -1 none. Same loop as
    ``COCOeval.evaluateImg``: per class, detections by descending score (stable), objects
    non-crowd first; equal IoUs go to the later object.
    """
    det_match = [-1] * len(det_scores)
    gt_match = [-1] * len(gt_labels)
    for label in sorted(set(det_labels) | set(gt_labels)):
        dets = [d for d in range(len(det_scores)) if det_labels[d] == label]
        dets = sorted(dets, key=lambda d: -det_scores[d])  # stable, as np.argsort(kind="mergesort")
        for d in dets[max_dets:]:
            det_match[d] = -2
        dets = dets[:max_dets]
        gts = [g for g in range(len(gt_labels)) if gt_labels[g] == label]
        gts = sorted(gts, key=lambda g: gt_crowd[g])  # non-crowd first (stable)
        taken: set[int] = set()
        for d in dets:
            best, m = min(iou_threshold, 1 - 1e-10), -1
            for g in gts:
                if g in taken and not gt_crowd[g]:
                    continue
                if m > -1 and not gt_crowd[m] and gt_crowd[g]:
                    break
                if ious[d, g] < best:
                    continue
                best, m = ious[d, g], g
            if m == -1:
                continue
            if gt_crowd[m]:
                det_match[d] = -2
            else:
                det_match[d], gt_match[m] = m, d
                taken.add(m)
    return det_match, gt_match


def _rles(masks: np.ndarray) -> list[dict]:
    """(N, H, W) bool/uint8 -> pycocotools RLEs."""
    if len(masks) == 0:
        return []
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


# --- the trace of one image -----------------------------------------------------------------------
class Trace:
    """Chapter 10. The join of one image's stage records: lineage, fates, and (with a target) errors.

    Everything is computed on first use (``cached_property``): an explained image costs what is
    asked of it. Boxes of the stages are in resized-image pixels; ``target`` is in original-image
    pixels (torchvision's contract) and is resized here for the stage comparisons, while the
    matching uses original pixels, as evaluation does.
    """

    def __init__(self, run, index: int, config, target: dict[str, Tensor] | None = None) -> None:
        self.run = run
        self.index = index
        self.config = config
        self.objectness = run.objectness[index]
        self.longlist: Longlist = run.longlist[index]
        self.classification = run.classification[index]
        self.shortlist: Shortlist = run.shortlist[index]
        # None for a run made with until="shortlist": boxes only, no mask IoU (misses by box)
        self.segmentation = None if run.segmentation is None else run.segmentation[index]
        self.image_size = tuple(run.batch.image_sizes[index])
        self.original_size = tuple(run.batch.original_sizes[index])
        self.target = None if target is None else {k: v.detach().cpu() for k, v in target.items()}
        self._mask_rles: dict[int, dict] | None = None  # given masks of some detections (use_masks)

    def __len__(self) -> int:
        return len(self.shortlist)

    # -- lineage ---------------------------------------------------------------------------------
    def anchor(self, row: int) -> Anchor:
        """The anchor of Objectness row ``row``: level, cell, size and aspect ratio."""
        o, cfg = self.objectness, self.config
        level, cell = int(o.anchor_level[row]), int(o.anchor_in_cell[row])
        sizes = cfg.anchor_sizes[level]
        return Anchor(
            row=int(row),
            level=level,
            cell=(int(o.y[row]), int(o.x[row])),
            size=float(sizes[cell % len(sizes)]),
            aspect_ratio=float(cfg.aspect_ratios[cell // len(sizes)]),
            box=tuple(float(v) for v in o.anchors[row].tolist()),
        )

    def level_rank(self, row: int) -> int:
        """Rank (1 = best) of anchor ``row``'s logit among its level's anchors."""
        o = self.objectness
        rows = o.level_rows(int(o.anchor_level[row]))
        return int((o.logits[rows].detach() > o.logits[row].detach()).sum()) + 1

    def lineage(self, detection: int) -> Lineage:
        """Detection ``detection``'s lineage (``Trace.detections[detection]``)."""
        s, c, ll, seg = self.shortlist, self.classification, self.longlist, self.segmentation
        if not 0 <= detection < len(s):
            raise IndexError(f"detection {detection} out of range: the image has {len(s)} detections")
        p = int(s.proposal_index[detection])
        a = int(ll.anchor_index[p])
        cand = int(s.candidate_index[detection])
        label = int(s.labels[detection])
        gone = torch.where(s.suppressed_by == cand)[0]
        ious = self._class_nms_iou[gone] if len(gone) else torch.zeros(0)
        return Lineage(
            detection=detection,
            anchor=self.anchor(a),
            objectness=float(torch.sigmoid(self.objectness.logits[a].detach())),
            level_rank=self.level_rank(a),
            level_top_k=self.config.rpn_pre_nms_top_n_test,
            longlist_rank=p + 1,
            proposal=p,
            proposal_box=ll.boxes[p].detach().cpu(),
            roi_level=int(c.roi_level[p]),
            class_probs=c.probs[p].detach().cpu(),
            label=label,
            candidate=cand,
            refined_box=s.boxes[detection].detach().cpu(),
            suppressed=[(int(r), float(v)) for r, v in zip(gone.tolist(), ious.tolist(), strict=True)],
            box_orig=self.boxes_orig[detection].detach().cpu(),
            mask_probs=None if seg is None else seg.probs[detection].detach().cpu(),
            mask=None if seg is None else seg.masks[detection, 0].detach().cpu(),
            score=float(s.scores[detection]),
        )

    @cached_property
    def _class_nms_iou(self) -> Tensor:
        return self.shortlist.nms.iou_with_suppressor(len(self.shortlist.fate))

    @cached_property
    def detections(self) -> list[Lineage]:
        """Every final detection's lineage, best first (the model's output order)."""
        return [self.lineage(d) for d in range(len(self.shortlist))]

    # -- fates -----------------------------------------------------------------------------------
    def fate(self, stage: str, row: int) -> Fate:
        """Where a row ended, followed to the end of the pipeline.

        ``stage`` "longlist" (or "anchor"): ``row`` is an anchor (Objectness row); "classification"
        (or "proposal"): a longlist proposal; "shortlist" (or "candidate"): a (proposal, class)
        candidate ``proposal * K + label - 1``. A kept anchor is followed to its proposal, a
        proposal to its candidates: it is kept if any of them became a detection (the best such),
        else its fate is that of its most probable foreground class's candidate.
        """
        ll, s = self.longlist, self.shortlist
        if stage in ("longlist", "anchor"):
            step = ll.fate_of(row)
            if step != "kept":
                sup = int(ll.suppressed_by[row])
                iou = float(ll.nms.iou_with_suppressor(len(ll.fate))[row]) if sup >= 0 else float("nan")
                return Fate("longlist", step, row, sup, iou)
            proposal = int(torch.where(ll.anchor_index == row)[0][0])
            return self.fate("classification", proposal)
        if stage in ("classification", "proposal"):
            if not 0 <= row < len(ll):
                raise IndexError(f"proposal {row} out of range: the longlist has {len(ll)} proposals")
            k = s.num_foreground
            rows = torch.arange(row * k, (row + 1) * k)
            kept = rows[s.fate[rows] == KEPT]
            if len(kept):
                dets = [int(torch.where(s.candidate_index == r)[0][0]) for r in kept.tolist()]
                return self.fate("shortlist", int(kept[int(np.argmin(dets))]))
            best = int(self.classification.probs[row, 1:].argmax())
            return self.fate("shortlist", row * k + best)
        if stage in ("shortlist", "candidate"):
            step = s.fate_of(row)
            if step == "kept":
                return Fate("kept", "kept", row, detection=int(torch.where(s.candidate_index == row)[0][0]))
            sup = int(s.suppressed_by[row])
            iou = float(s.nms.iou_with_suppressor(len(s.fate))[row]) if sup >= 0 else float("nan")
            return Fate("shortlist", step, row, sup, iou)
        raise ValueError(f"stage {stage!r}: expected 'longlist', 'classification' or 'shortlist'")

    # -- matching --------------------------------------------------------------------------------
    def _need_target(self) -> dict[str, Tensor]:
        if self.target is None:
            raise ValueError("this Trace has no target: explain(model, image, target) to match, miss and judge")
        return self.target

    @cached_property
    def _crowd(self) -> list[int]:
        t = self._need_target()
        return [int(v) for v in t.get("iscrowd", torch.zeros(len(t["boxes"]), dtype=torch.int64)).tolist()]

    @cached_property
    def boxes_orig(self) -> Tensor:
        """(D, 4) the reported boxes, original-image pixels."""
        if self.segmentation is not None:
            return self.segmentation.boxes_orig
        if self.shortlist.boxes_orig is None:
            raise ValueError("this Shortlist was made without original_size: no boxes in original pixels")
        return self.shortlist.boxes_orig

    @cached_property
    def box_ious(self) -> np.ndarray:
        """(D, G) box IoU of every detection with every object, original pixels, as pycocotools."""
        t = self._need_target()
        dets = xywh(self.boxes_orig)
        gts = xywh(t["boxes"])
        if not dets or not gts:
            return np.zeros((len(dets), len(gts)))
        return np.asarray(mask_utils.iou(dets, gts, self._crowd)).reshape(len(dets), len(gts))

    @cached_property
    def _det_rles(self) -> list[dict]:
        masks = self.segmentation.masks[:, 0].detach().cpu() >= self.config.mask_threshold
        return _rles(masks.numpy())

    @cached_property
    def _gt_rles(self) -> list[dict]:
        t = self._need_target()
        return _rles(t["masks"].numpy().astype(bool)) if "masks" in t else []

    def use_masks(self, rles: dict[int, dict]) -> None:
        """Give the binary masks (COCO RLEs, original pixels) of some detections, for a trace of a
        run made without masks (``until="shortlist"``): ``mask_iou`` and the mask misses read them
        (``explain_dataset`` computes the masks of the box-matched detections only)."""
        self._mask_rles = dict(rles)

    def mask_iou(self, detection: int, gt_index: int) -> float:
        """Mask IoU (pycocotools) of a detection's mask (>= mask_threshold) with an object's mask
        (nan without masks: no target masks, or a run made without them and none given)."""
        if not self._gt_rles:
            return float("nan")
        if self._mask_rles is not None:
            rle = self._mask_rles.get(detection)
        else:
            rle = None if self.segmentation is None else self._det_rles[detection]
        if rle is None:
            return float("nan")
        crowd = [self._crowd[gt_index]]
        return float(np.asarray(mask_utils.iou([rle], [self._gt_rles[gt_index]], crowd))[0, 0])

    @cached_property
    def _matching(self) -> tuple[list[int], list[int]]:
        t = self._need_target()
        return coco_match(
            self.box_ious,
            self.shortlist.scores.tolist(),
            self.shortlist.labels.tolist(),
            t["labels"].tolist(),
            self._crowd,
        )

    @cached_property
    def matches(self) -> list[Match]:
        """Every matched object, in object order: its detection, box IoU and mask IoU."""
        _, gt_match = self._matching
        return [Match(g, d, float(self.box_ious[d, g]), self.mask_iou(d, g)) for g, d in enumerate(gt_match) if d >= 0]

    # -- misses ----------------------------------------------------------------------------------
    @cached_property
    def gt_boxes_resized(self) -> Tensor:
        """(G, 4) the objects' boxes in the resized image, where the stages work."""
        return resize_boxes(self._need_target()["boxes"].float(), self.original_size, self.image_size)

    @cached_property
    def misses(self) -> list[Miss]:
        """Every object not matched by box, or matched with mask IoU < 0.5.

        Attribution rule. Boxes in resized-image pixels; a box "covers" the
        object at IoU >= 0.5 (the matching threshold); K = its class.

        1. Candidates: the class-K candidate of every proposal whose class-K
           refined box covers the object, less detections matched to another
           object. If any was dropped, the object was lost at the step
           (``Shortlist.STEPS`` order) that dropped the last of them; the
           representative is the most probable candidate dropped there.
           ``score_threshold`` is blamed on classification when that
           proposal's most probable class is background ("background") or
           another class ("wrong_class"), on the shortlist when it is K;
           ``nms`` -> "class_nms" (the suppressing detection and the object
           it matched), ``cap`` -> "detection_cap", "small_box".
        2. Else, if a longlist proposal covers it: lost in classification,
           "localisation" (refinement moved every covering proposal off it).
        3. Else, if the decoded, clipped box of some anchor covers it: lost in
           the longlist at the step (``Longlist.STEPS`` order) that dropped
           the last of those anchors; the representative is the highest
           objectness dropped there: "pre_nms_top_k", "small_box",
           "score_threshold", "rpn_nms" (with its suppressor),
           "post_nms_top_k".
        4. Else: lost in the longlist, "localisation": no anchor's proposal
           ever covered it (the best proposal and anchor IoUs are given).
        5. Matched by box, mask IoU < 0.5: "segmentation", "mask_iou".
        """
        labels = self._need_target()["labels"].tolist()
        det_match, gt_match = self._matching
        out = []
        for g, d in enumerate(gt_match):
            if self._crowd[g]:
                continue  # a crowd region is never missed
            if d < 0:
                out.append(self.attribute(g, det_match))
                continue
            m = self.mask_iou(d, g)
            if not math.isnan(m) and m < IOU_MATCH:
                numbers = {
                    "detection": d,
                    "box_iou": float(self.box_ious[d, g]),
                    "mask_iou": m,
                    "iou_threshold": IOU_MATCH,
                }
                cause = ("segmentation", "mask_iou")
                out.append(Miss(g, labels[g], *cause, numbers, d))
        return out

    def attribute(self, g: int, det_match: list[int] | None = None) -> Miss:
        """The decision that lost object ``g`` (the rule in ``misses``)."""
        if det_match is None:
            det_match = self._matching[0]
        t = self._need_target()
        label = int(t["labels"][g])
        gt = self.gt_boxes_resized[g : g + 1]
        s, c, ll, o, cfg = self.shortlist, self.classification, self.longlist, self.objectness, self.config
        k = s.num_foreground
        base = {"iou_threshold": IOU_MATCH}
        # 1. candidates of the object's class whose refined box covers it
        if len(c.boxes):
            refined = c.boxes[:, label].detach()
            refined_iou = box_ops.iou(refined, gt)[:, 0]
            probs = c.probs[:, label].detach()
            proposals = torch.where(refined_iou >= IOU_MATCH)[0]
            rows = proposals * k + label - 1
            det_of = {int(r): i for i, r in enumerate(s.candidate_index.tolist())}
            fate = s.fate[rows].tolist()
            dropped = [i for i, f in enumerate(fate) if f != KEPT]
            taken = [i for i, f in enumerate(fate) if f == KEPT and det_match[det_of[int(rows[i])]] >= 0]
            if dropped:
                order = {CODE[st]: n for n, st in enumerate(Shortlist.STEPS)}
                last = max(order[fate[i]] for i in dropped)
                at = [i for i in dropped if order[fate[i]] == last]
                i = max(at, key=lambda j: float(probs[proposals[j]]))
                p, row = int(proposals[i]), int(rows[i])
                step = Shortlist.STEPS[last]
                n = dict(base, refined_iou=float(refined_iou[p]), probability=float(probs[p]), proposal=p)
                if step == "score_threshold":
                    n["threshold"] = cfg.box_score_thresh
                    top = int(c.probs[p].argmax())
                    n.update(background=float(c.probs[p, 0]), argmax=top, argmax_probability=float(c.probs[p, top]))
                    if top == 0:
                        return Miss(g, label, "classification", "background", n, row)
                    if top != label:
                        return Miss(g, label, "classification", "wrong_class", n, row)
                    return Miss(g, label, "shortlist", "score_threshold", n, row)
                if step == "small_box":
                    b = c.boxes[p, label]
                    n.update(side=float(torch.minimum(b[2] - b[0], b[3] - b[1])), min_size=cfg.box_min_size)
                    return Miss(g, label, "shortlist", "small_box", n, row)
                if step == "nms":
                    sup = int(s.suppressed_by[row])
                    sd = det_of.get(sup, -1)
                    n.update(
                        threshold=cfg.box_nms_thresh,
                        suppressor=sup,
                        suppressor_detection=sd,
                        suppressor_iou=float(s.nms.iou_with_suppressor(len(s.fate))[row]),
                        suppressor_match=det_match[sd] if sd >= 0 else -1,
                    )
                    return Miss(g, label, "shortlist", "class_nms", n, row)
                # cap: rank among the candidates that survived NMS
                survivors = s.nms.rows[s.nms.keep]
                n.update(rank=int(torch.where(survivors == row)[0][0]) + 1, cap=cfg.box_detections_per_img)
                return Miss(g, label, "shortlist", "detection_cap", n, row)
            if len(proposals) and not taken:  # kept, unmatched: past COCO's max_dets, or IoU rounding
                p = int(proposals[0])
                n = dict(base, refined_iou=float(refined_iou[p]), probability=float(probs[p]), proposal=p)
                n.update(rank=len(s), cap=cfg.box_detections_per_img)
                return Miss(g, label, "shortlist", "detection_cap", n, int(rows[0]))
        # 2. proposals that cover it, refined off it
        if len(ll):
            prop_iou = box_ops.iou(ll.boxes.detach(), gt)[:, 0]
            best = int(prop_iou.argmax())
            if prop_iou[best] >= IOU_MATCH:
                refined_iou = box_ops.iou(c.boxes[best : best + 1, label].detach(), gt)[0, 0]
                n = dict(
                    base,
                    proposal_iou=float(prop_iou[best]),
                    refined_iou=float(refined_iou),
                    probability=float(c.probs[best, label]),
                    proposal=best,
                )
                return Miss(g, label, "classification", "localisation", n, best)
        # 3. anchors whose proposal covers it, all dropped in the longlist
        clipped = box_ops.clip(o.proposals.detach(), self.image_size)
        anchor_prop_iou = box_ops.iou(clipped, gt)[:, 0]
        anchor_iou = box_ops.iou(o.anchors, gt)[:, 0]
        covering = torch.where(anchor_prop_iou >= IOU_MATCH)[0]
        if len(covering) == 0:
            n = dict(
                base,
                best_proposal_iou=float(anchor_prop_iou.max()) if len(anchor_prop_iou) else 0.0,
                best_anchor_iou=float(anchor_iou.max()) if len(anchor_iou) else 0.0,
                best_anchor=int(anchor_prop_iou.argmax()) if len(anchor_prop_iou) else -1,
            )
            return Miss(g, label, "longlist", "localisation", n, n["best_anchor"])
        order = {CODE[st]: n for n, st in enumerate(Longlist.STEPS)}
        fate = ll.fate[covering].tolist()
        last = max(order[f] for f in fate)
        at = covering[torch.tensor([order[f] == last for f in fate])]
        logits = o.logits.detach()
        a = int(at[int(logits[at].argmax())])
        step = Longlist.STEPS[last]
        reason = LONGLIST_REASONS[step]
        n = dict(
            base,
            anchor=a,
            level=int(o.anchor_level[a]),
            anchor_iou=float(anchor_iou[a]),
            proposal_iou=float(anchor_prop_iou[a]),
            objectness=float(torch.sigmoid(logits[a])),
        )
        if step == "pre_nms_top_k":
            n.update(level_rank=self.level_rank(a), top_k=cfg.rpn_pre_nms_top_n_test)
        elif step == "small_box":
            b = clipped[a]
            n.update(side=float(torch.minimum(b[2] - b[0], b[3] - b[1])), min_size=cfg.rpn_min_size)
        elif step == "score_threshold":
            n.update(threshold=cfg.rpn_score_thresh)
        elif step == "nms":
            sup = int(ll.suppressed_by[a])
            n.update(
                threshold=cfg.rpn_nms_thresh,
                suppressor=sup,
                suppressor_iou=float(ll.nms.iou_with_suppressor(len(ll.fate))[a]),
                suppressor_object_iou=float(anchor_prop_iou[sup]),
            )
        else:  # cap
            survivors = ll.nms.rows[ll.nms.keep]
            n.update(rank=int(torch.where(survivors == a)[0][0]) + 1, cap=cfg.rpn_post_nms_top_n_test)
        return Miss(g, label, "longlist", reason, n, a)

    def ledger(self, g: int) -> dict[str, int]:
        """Object ``g`` followed through every step: how many rows still cover it (IoU >= 0.5).

        Keys in pipeline order: "anchors" (anchors whose decoded, clipped box covers it), then
        "longlist: <step>" for each longlist step (those surviving it), "proposals" (longlist
        proposals covering it, whatever their anchor), "candidates" (class-K_g candidates whose
        refined box covers it, less detections matched to another object), "shortlist: <step>" for each shortlist step, and "matched"
        (1 if a detection matched it). The miss's step is where a count first drops to 0
        (``misses`` names it; the counts are Matterport's recall after each step, for one object).
        """
        t = self._need_target()
        label = int(t["labels"][g])
        gt = self.gt_boxes_resized[g : g + 1]
        o, ll, c, s = self.objectness, self.longlist, self.classification, self.shortlist
        clipped = box_ops.clip(o.proposals.detach(), self.image_size)
        covering = torch.where(box_ops.iou(clipped, gt)[:, 0] >= IOU_MATCH)[0]
        out = {"anchors": len(covering)}
        fate = ll.fate[covering]
        for i, step in enumerate(Longlist.STEPS):
            gone = torch.isin(fate, torch.tensor([CODE[st] for st in Longlist.STEPS[: i + 1]], dtype=fate.dtype))
            out[f"longlist: {step}"] = int((~gone).sum())
        out["proposals"] = int((box_ops.iou(ll.boxes.detach(), gt)[:, 0] >= IOU_MATCH).sum()) if len(ll) else 0
        if len(c.boxes):
            proposals = torch.where(box_ops.iou(c.boxes[:, label].detach(), gt)[:, 0] >= IOU_MATCH)[0]
        else:
            proposals = torch.zeros(0, dtype=torch.int64)
        rows = proposals * s.num_foreground + label - 1
        det_match = self._matching[0]
        detection = {int(r): i for i, r in enumerate(s.candidate_index.tolist())}
        others = [int(r) not in detection or det_match[detection[int(r)]] in (-1, g) for r in rows.tolist()]
        rows = rows[torch.tensor(others, dtype=torch.bool)]  # leave out detections matched to another object
        fate = s.fate[rows]
        out["candidates"] = len(rows)
        for i, step in enumerate(Shortlist.STEPS):
            gone = torch.isin(fate, torch.tensor([CODE[st] for st in Shortlist.STEPS[: i + 1]], dtype=fate.dtype))
            out[f"shortlist: {step}"] = int((~gone).sum())
        out["matched"] = int(self._matching[1][g] >= 0)
        return out

    # -- false positives -------------------------------------------------------------------------
    @cached_property
    def false_positives(self) -> list[FalsePositive]:
        """Every unmatched detection (not ignored by a crowd region) with TIDE's error kind.

        Tested in TIDE's order (``tidecv/quantify.py``, ``TIDERun._eval_image``), box IoU with
        the non-crowd objects: "localisation": 0.1 <= IoU < 0.5 with an object of its class;
        "classification": IoU >= 0.5 with an object of another class; "duplicate": IoU >= 0.5
        with an object of its class that a higher-scoring detection matched; "background":
        IoU < 0.1 with every object; "both": anything else (IoU in [0.1, 0.5) with an object of
        another class only).
        """
        t = self._need_target()
        det_match, gt_match = self._matching
        labels = t["labels"].tolist()
        real = [g for g in range(len(labels)) if not self._crowd[g]]
        out = []
        for d, m in enumerate(det_match):
            if m != -1:
                continue
            lab, score = int(self.shortlist.labels[d]), float(self.shortlist.scores[d])
            ious = {g: float(self.box_ious[d, g]) for g in real}
            same = {g: v for g, v in ious.items() if labels[g] == lab}
            other = {g: v for g, v in ious.items() if labels[g] != lab}
            used = {g: v for g, v in same.items() if gt_match[g] >= 0}
            best_same = max(same, key=same.get) if same else -1
            best_other = max(other, key=other.get) if other else -1
            best_used = max(used, key=used.get) if used else -1
            best_any = max(ious, key=ious.get) if ious else -1
            if best_same >= 0 and IOU_BACKGROUND <= same[best_same] < IOU_MATCH:
                fp = FalsePositive(d, lab, score, "localisation", best_same, same[best_same])
            elif best_other >= 0 and other[best_other] >= IOU_MATCH:
                fp = FalsePositive(d, lab, score, "classification", best_other, other[best_other])
            elif best_used >= 0 and used[best_used] >= IOU_MATCH:
                fp = FalsePositive(d, lab, score, "duplicate", best_used, used[best_used])
            elif best_any < 0 or ious[best_any] < IOU_BACKGROUND:
                fp = FalsePositive(d, lab, score, "background", -1, ious[best_any] if best_any >= 0 else 0.0)
            else:
                fp = FalsePositive(d, lab, score, "both", best_any, ious[best_any])
            out.append(fp)
        return out

    def report(self, class_names: list[str] | None = None) -> str:
        """A short text report: detections with their lineage, then misses and false positives."""

        def name(label: int) -> str:
            return class_names[label] if class_names and label < len(class_names) else f"class {label}"

        lines = [f"{len(self.shortlist)} detections"]
        for lin in self.detections:
            lines.append(f"  {lin.describe()} [{name(lin.label)}]")
        if self.target is not None:
            lines.append(f"{len(self.matches)} of {len(self._crowd) - sum(self._crowd)} objects matched at IoU 0.5")
            lines.append(f"{len(self.misses)} missed")
            for m in self.misses:
                lines.append(f"  {m} [{name(m.label)}]")
            lines.append(f"{len(self.false_positives)} false positives")
            for fp in self.false_positives:
                lines.append(f"  {fp} [{name(fp.label)}]")
        return "\n".join(lines)


def explain(
    model,
    image: Tensor,
    target: dict[str, Tensor] | None = None,
) -> Trace:
    """Chapter 10. One image through ``model.run`` once, its records joined.

    ``model``: a ``minimask.MaskRCNN`` (ours, the shipped one, or a
    torchvision model converted with ``compat.from_torchvision``);
    ``image``: ``Tensor[3, H, W]`` in [0, 1]; ``target``: torchvision's
    dict (``boxes`` xyxy in original pixels, ``labels``, optional
    ``masks`` (G, H, W) and ``iscrowd``), needed for ``matches``,
    ``misses`` and ``false_positives``.
    """
    return Trace(model.run([image]), 0, model.config, target)


# --- over a data set ------------------------------------------------------------------------------
@dataclass
class Report:
    """Chapter 10. Misses and false positives of a data set, counted, located and priced in AP.

    ``misses`` and ``false_positives``: one dict per error (``image_id``, ``index`` (the
    object or detection row), ``class``, ``size`` (COCO's, of the object; of the detection's
    box for a background false positive), and ``stage``/``reason`` or ``kind``).
    ``ap``: box AP and AP50 (pycocotools) of the results; ``fixed``: for each cause
    ("stage/reason" of a miss, or "fp/kind"), the box AP and AP50 gained by fixing every error
    of that cause alone (TIDE's "fixed" AP, computed with COCOeval): a missed object is taken
    out of the ground truth; a localisation error gets its object's box, a classification
    error its object's class (both only when that object is unmatched, else it is removed);
    duplicates, background and "both" detections are removed.
    """

    misses: list[dict]
    false_positives: list[dict]
    ap: dict[str, float]
    fixed: dict[str, dict[str, float]]
    class_names: list[str]
    images: int
    objects: int
    detections: int
    seconds: float = 0.0
    iou_type: str = "segm"  # "bbox": objects matched by box are never missed (no mask IoU)

    def counts(self, what: str = "misses", by: str = "cause") -> dict[tuple, int]:
        """Counts of ``misses`` (by "cause" = (stage, reason)) or ``false_positives`` (by "kind"),
        optionally crossed with "class" or "size": ``by="cause,class"``."""
        keys = by.split(",")
        rows = getattr(self, what)
        if len(keys) == 1:
            return dict(Counter(_key(r, keys[0]) for r in rows))
        return dict(Counter(tuple(_key(r, k) for k in keys) for r in rows))

    def images_for(self, what: str = "misses", **where: Any) -> list[int]:
        """The image ids behind a cell: ``images_for("misses", stage="longlist", size="small")``."""
        rows = getattr(self, what)
        return sorted({r["image_id"] for r in rows if all(r.get(k) == v for k, v in where.items())})

    def table(self, what: str = "misses") -> list[dict]:
        """One row per cause (misses: (stage, reason); false positives: kind), in pipeline order:
        the count, per class and per size, the AP gained by fixing it, and the images."""
        if what == "misses":
            causes = [c for c in MISS_CAUSES if any((r["stage"], r["reason"]) == c for r in self.misses)]
            rows_of = {c: [r for r in self.misses if (r["stage"], r["reason"]) == c] for c in causes}
            names = {c: f"{c[0]}/{c[1]}" for c in causes}
        else:
            causes = [k for k in FP_KINDS if any(r["kind"] == k for r in self.false_positives)]
            rows_of = {k: [r for r in self.false_positives if r["kind"] == k] for k in causes}
            names = {k: f"fp/{k}" for k in causes}
        out = []
        for c in causes:
            rows = rows_of[c]
            fixed = self.fixed.get(names[c], {})
            entry = {"cause": names[c], "count": len(rows)}
            for cls in self.class_names[1:]:
                entry[cls] = sum(r["class"] == cls for r in rows)
            for size in SIZES:
                entry[size] = sum(r["size"] == size for r in rows)
            entry["dAP"] = fixed.get("AP")
            entry["dAP50"] = fixed.get("AP50")
            entry["images"] = sorted({r["image_id"] for r in rows})
            out.append(entry)
        return out

    def format(self, max_images: int = 6) -> str:
        """The two tables as plain text (the command line prints this)."""
        lines = [f"{self.images} images, {self.objects} objects, {self.detections} detections; box AP "
                 f"{self.ap['AP']:.3f}, AP50 {self.ap['AP50']:.3f}"]  # fmt: skip
        for what, title in (("misses", "missed objects"), ("false_positives", "false positives")):
            rows = self.table(what)
            lines.append(f"\n{title}: {sum(r['count'] for r in rows)}")
            if not rows:
                continue
            cols = ["count", *self.class_names[1:], *SIZES]
            head = f"{'cause':32}" + "".join(f"{c[:8]:>9}" for c in cols) + f"{'dAP':>8}{'dAP50':>8}  images"
            lines.append(head)
            for r in rows:
                ap = "" if r["dAP"] is None else f"{r['dAP']:8.3f}{r['dAP50']:8.3f}"
                ims = ",".join(str(i) for i in r["images"][:max_images]) + (
                    ",..." if len(r["images"]) > max_images else ""
                )
                lines.append(f"{r['cause']:32}" + "".join(f"{r[c]:9d}" for c in cols) + f"{ap:>16}  {ims}")
        return "\n".join(lines)

    def markdown(
        self, what: str = "misses", max_images: int = 4, by: tuple[str, ...] = ("class", "size"), ap50: bool = True
    ) -> str:
        """One table as Markdown (for the book); ``by`` picks the count columns ("class", "size")."""
        rows = self.table(what)
        cols = ["count", *(self.class_names[1:] if "class" in by else []), *(SIZES if "size" in by else [])]
        gains = ["dAP", "dAP50"] if ap50 else ["dAP"]
        head = ["cause", *cols, *(g.replace("d", "Δ", 1) for g in gains), "images"]
        out = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for r in rows:
            ap = ["" if r[g] is None else f"{r[g]:+.3f}" for g in gains]
            ims = ", ".join(str(i) for i in r["images"][:max_images]) + (", …" if len(r["images"]) > max_images else "")
            out.append("| " + " | ".join([r["cause"], *(str(r[c]) for c in cols), *ap, ims]) + " |")
        return "\n".join(out)

    def to_json(self) -> dict:
        return {
            "images": self.images,
            "objects": self.objects,
            "detections": self.detections,
            "seconds": round(self.seconds, 2),
            "ap": self.ap,
            "fixed": self.fixed,
            "misses": self.table("misses"),
            "false_positives": self.table("false_positives"),
            "miss_list": self.misses,
            "false_positive_list": self.false_positives,
        }

    def write(self, path) -> None:
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")


def _key(row: dict, k: str):
    if k == "cause":
        return (row["stage"], row["reason"]) if "stage" in row else row["kind"]
    return row[k]


def _coco_box_ap(coco_gt, results: list[dict], image_ids: list[int]) -> dict[str, float]:
    """Box AP and AP50 by pycocotools COCOeval, area range "all" only (what AP and AP50 read)."""
    from pycocotools.cocoeval import COCOeval

    from minimask.coco import PYCOCOTOOLS_NUMPY2_WARNING

    if not results:
        return {"AP": 0.0, "AP50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PYCOCOTOOLS_NUMPY2_WARNING, category=DeprecationWarning)
        # loadRes writes into the entries (area, id): copies, without the masks a box AP never reads
        dt = coco_gt.loadRes([{k: v for k, v in r.items() if k != "segmentation"} for r in results])
        ev = COCOeval(coco_gt, dt, "bbox")
        ev.params.imgIds = list(image_ids)
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, -1]  # (T, R, K) at maxDets 100, as summarize()

    def mean(p: np.ndarray) -> float:
        p = p[p > -1]
        return float(p.mean()) if p.size else -1.0

    return {"AP": mean(precision), "AP50": mean(precision[0])}


def _matched_masks(model, run, traces: list[Trace]) -> None:
    """The masks of every trace's box-matched detections, by one mask-head pass over the batch
    (``segmentation.segment`` on those boxes only; all images given, so that RoIAlign infers its
    scales from the same padded batch as the full run), handed to each trace (``use_masks``)."""
    from minimask.segmentation import segment

    cfg = model.config
    matched = [sorted(d for d in tr._matching[1] if d >= 0) for tr in traces]
    if not any(matched):
        for tr in traces:
            tr.use_masks({})
        return
    index = [torch.as_tensor(m, dtype=torch.int64) for m in matched]
    heads = model.roi_heads
    records = segment(
        heads.mask_head,
        heads.mask_predictor,
        run.features.maps,
        [s.boxes[k] for s, k in zip(run.shortlist, index, strict=True)],
        [s.labels[k] for s, k in zip(run.shortlist, index, strict=True)],
        run.batch.image_sizes,
        cfg,
        original_sizes=run.batch.original_sizes,
    )
    for tr, m, seg in zip(traces, matched, records, strict=True):
        binary = (seg.masks[:, 0].detach().cpu() >= cfg.mask_threshold).numpy()
        tr.use_masks(dict(zip(m, _rles(binary), strict=True)))


def _coco_without(coco_gt, annotation_ids: set[int]):
    """A copy of a pycocotools ``COCO`` without some annotations."""
    from pycocotools.coco import COCO

    data = dict(coco_gt.dataset)
    data["annotations"] = [a for a in coco_gt.dataset["annotations"] if a["id"] not in annotation_ids]
    out = COCO()
    out.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        out.createIndex()
    return out


def explain_dataset(
    model,
    dataset,
    batch_size: int = 8,
    progress: bool = False,
    fix_ap: bool = True,
    max_images: int | None = None,
    iou_type: str = "segm",
    passes: Sequence | None = None,
) -> Report:
    """Chapter 10. Explain every image of a ``CocoDataset``: misses and false positives, counted.

    One ``model.run`` per batch (as ``evaluate.predict_dataset``), one ``Trace`` per image;
    only matching, the misses' attribution and the false positives' kinds are computed (no
    lineage). Box AP and AP50 of the results always (one COCOeval); with ``fix_ap``, also the
    box AP gained by fixing each cause (``Report.fixed``: one COCOeval per cause present).
    ``iou_type="bbox"``: the model runs until the shortlist (no masks, about half the time) and
    an object matched by its box is never missed (no "segmentation"/"mask_iou" misses).
    ``"segm"``: the same run, then the mask head on the box-matched detections only (their masks
    are the only ones a miss depends on; ``Trace.use_masks``).
    ``passes``: an earlier ``data.runs`` pass over ``dataset`` (``until="longlist"`` is
    enough) whose features are reused (``model.resume``): a sweep of the longlist's and later
    thresholds without running the backbone again.
    """
    if iou_type not in ("segm", "bbox"):
        raise ValueError(f"explain_dataset(iou_type=...): expected 'segm' or 'bbox', got {iou_type!r}")

    from minimask.data import runs
    from minimask.evaluate import coco_ground_truth, to_coco_results

    start = time.perf_counter()
    cfg = model.config
    names = list(dataset.class_names)
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    misses: list[dict] = []
    fps: list[dict] = []
    results: list[dict] = []
    fp_fix: list[tuple[str, int, int | None]] = []  # (kind, result row, gt annotation to copy or None)
    n_objects = n_dets = 0
    for batch, targets, run in runs(model, dataset, batch_size, progress, "explain", "shortlist", max_images, passes):
        traces = [Trace(run, j, cfg, target) for j, target in enumerate(targets)]
        if iou_type == "segm":
            _matched_masks(model, run, traces)
        for j, (i, target, tr) in enumerate(zip(batch, targets, traces, strict=True)):
            image_id = int(target["image_id"])
            anns = dataset.annotations(i)
            out = {k: v.cpu() for k, v in run.detections[j].items()}
            first = len(results)
            results += to_coco_results(out, image_id, dataset.label_to_category_id, cfg.mask_threshold)
            areas = target["area"].tolist()
            n_objects += len(areas) - sum(tr._crowd)
            n_dets += len(out["scores"])
            for m in tr.misses:
                misses.append({
                    "image_id": image_id, "index": m.gt_index, "annotation_id": anns[m.gt_index].get("id"),
                    "class": names[m.label], "size": coco_size(areas[m.gt_index]), "stage": m.stage,
                    "reason": m.reason, "text": m.sentence(),
                })  # fmt: skip
            for fp in tr.false_positives:
                gt_area = areas[fp.gt_index] if fp.gt_index >= 0 else float(
                    (out["boxes"][fp.detection, 2:] - out["boxes"][fp.detection, :2]).prod())  # fmt: skip
                fps.append({
                    "image_id": image_id, "index": fp.detection, "class": names[fp.label],
                    "size": coco_size(gt_area), "kind": fp.kind, "score": fp.score, "iou": fp.iou,
                })  # fmt: skip
                unmatched = fp.gt_index >= 0 and tr._matching[1][fp.gt_index] < 0
                ann = anns[fp.gt_index].get("id") if unmatched else None
                fp_fix.append((fp.kind, first + fp.detection, ann))
    report = Report(misses, fps, {}, {}, names, n, n_objects, n_dets, iou_type=iou_type)
    coco_gt, ids = coco_ground_truth(dataset)
    ids = ids[:n]
    report.ap = _coco_box_ap(coco_gt, results, ids)
    if fix_ap:
        for stage, reason in MISS_CAUSES:
            if reason == "mask_iou":
                continue
            gone = {r["annotation_id"] for r in misses if (r["stage"], r["reason"]) == (stage, reason)}
            if gone:
                ap = _coco_box_ap(_coco_without(coco_gt, gone), results, ids)
                report.fixed[f"{stage}/{reason}"] = {k: ap[k] - report.ap[k] for k in ap}
        for kind in FP_KINDS:
            todo = [(row, ann) for k, row, ann in fp_fix if k == kind]
            if not todo:
                continue
            fixed = [dict(r) for r in results]
            drop = set()
            for row, ann in todo:
                if kind in ("classification", "localisation") and ann is not None:
                    gt_ann = coco_gt.anns[ann]
                    if kind == "classification":
                        fixed[row]["category_id"] = gt_ann["category_id"]
                    else:
                        fixed[row]["bbox"] = list(gt_ann["bbox"])
                else:
                    drop.add(row)
            fixed = [r for i, r in enumerate(fixed) if i not in drop]
            ap = _coco_box_ap(coco_gt, fixed, ids)
            report.fixed[f"fp/{kind}"] = {k: ap[k] - report.ap[k] for k in ap}
    report.seconds = time.perf_counter() - start
    return report


# --- the command lines' helpers -------------------------------------------------------------------
def targets_for_files(paths: list[str], annotation_file: str) -> tuple[list[dict[str, Tensor]], list[str]]:
    """The target of each image file from a COCO annotation file, found by file name, and the class names.

    Raises ``FileNotFoundError``/``ValueError`` naming the file: a missing or malformed
    annotation file (``coco.read_annotations``), an image whose name is not in it, or whose
    size differs from the file's.
    """
    from pathlib import Path

    from minimask.coco import CocoDataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # said below, for the images asked about only
        ds = CocoDataset(annotation_file, ".")
    by_name = {Path(ds.image_info(i)["file_name"]).name: i for i in range(len(ds))}
    out = []
    for path in paths:
        name = Path(path).name
        if name not in by_name:
            raise ValueError(f"{path}: no image named {name!r} in {annotation_file}")
        i = by_name[name]
        # read the image from where it is: images_dir / file_name == path
        depth = len(Path(ds.image_info(i)["file_name"]).parts)
        item = copy.copy(ds)
        item.images_dir = Path(path).parents[depth - 1]
        out.append(item[i][1])
    # The one policy for invalid boxes and polygons (coco.AnnotationTable.skipped_summary): they
    # are no object, never matched nor missed; said once, for these images only.
    skipped = ds.table.skipped_summary({ds.ids[by_name[Path(p).name]] for p in paths})
    if skipped:
        warnings.warn(skipped, UserWarning, stacklevel=2)
    return out, list(ds.class_names)


def explain_files(
    paths: list[str],
    out,
    weights: str = "shapes",
    annotations: str | None = None,
    score: float | None = None,
    device: str = "cpu",
    progress: bool = True,
    model=None,
    class_names: list[str] | None = None,
) -> list:
    """``python -m minimask.predict IMAGE... --explain --out DIR [--annotations FILE]``.

    The model is ``load_pretrained(weights)``, or ``model`` with its ``class_names`` when
    given (e.g. a Detectron2 model, ``compat.from_detectron2``).

    Per image ``NAME``: ``DIR/NAME_explain.png`` (the detections; with annotations, the misses
    labelled with their cause and the false positives dotted) and ``DIR/NAME_explain.txt``
    (each detection's lineage, then the misses with their sentence and the false positives with
    their kind). Errors name the file (``FileNotFoundError``/``ValueError``).
    """
    from pathlib import Path

    from tqdm import tqdm

    from minimask.coco import read_image
    from minimask.shapes import CLASS_NAMES
    from minimask.viz import plt
    from minimask.viz import trace as vtrace
    from minimask.weights import load_pretrained

    images = [read_image(p) for p in paths]  # every file checked before the model is loaded
    targets: list[dict[str, Tensor] | None] = [None] * len(paths)
    names = list(class_names) if class_names is not None else list(CLASS_NAMES)
    if annotations is not None:
        targets, names = targets_for_files(paths, annotations)
    if model is None:
        model = load_pretrained(weights, device=device)
    if score is not None:
        model.config = model.config.replace(box_score_thresh=score)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, image, target in tqdm(
        list(zip(paths, images, targets, strict=True)), desc="explain", disable=not progress
    ):
        tr = explain(model, image.to(device), target)
        stem = Path(path).stem
        (out / f"{stem}_explain.txt").write_text(f"{path}\n{tr.report(names)}\n")
        fig = vtrace.errors(image, tr, names)
        fig.savefig(out / f"{stem}_explain.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        written += [out / f"{stem}_explain.png", out / f"{stem}_explain.txt"]
    return written


__all__ = [
    "FATES",
    "FP_KINDS",
    "MISS_CAUSES",
    "STAGES",
    "Anchor",
    "FalsePositive",
    "Fate",
    "Lineage",
    "Match",
    "Miss",
    "Report",
    "Trace",
    "coco_match",
    "explain",
    "explain_dataset",
]
