"""Chapter 10. The trace: why is this box here, and why was that object missed?

Every stage keeps a record of one forward (``model.run``): which anchors became proposals
(``Longlist.fate``), what each proposal's K+1 probabilities and refined boxes were
(``Classification``), which (proposal, class) candidates became detections
(``Shortlist.fate``, with the suppressor of every candidate NMS removed), and each
detection's mask. This module joins those records; it never runs a stage a second time.

- ``explain(model, image, target=None, iou_type="segm") -> Trace``: one image, one
  ``model.run``. ``Trace.detections`` is each final detection's lineage (anchor -> proposal
  -> refined box -> mask); ``Trace.fate(stage, row)`` follows any anchor, proposal or
  candidate to the step that dropped it. With a target: ``Trace.matches`` and
  ``Trace.misses``, a partition of the non-crowd objects as COCOeval matches them for that
  IoU type, each miss with the stage and step that lost it and the numbers behind it.

Matching is COCOeval's (``coco_eval.greedy_match``, at IoU 0.5, at most 100 detections per
class): by mask IoU for ``"segm"``, by box IoU for ``"bbox"``. A miss names the step as the
stage record names it (``fates.FATES``: ``pre_nms_top_k``, ``small_box``,
``score_threshold``, ``nms``, ``cap``) with its stage, or one of the causes that are no
step (``CAUSES``); ``WORDS`` gives each (stage, reason) its words for figures and text.
The errors of a data set (false positives, the tables, the AP a fix recovers) are
``minimask.explain``'s.

Neither torchvision nor Detectron2 keeps this lineage: torchvision's
``RegionProposalNetwork.filter_proposals`` and ``RoIHeads.postprocess_detections`` drop the
indices; Detectron2's ``fast_rcnn_inference`` returns the kept proposal indices only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor

from minimask import boxes as box_ops
from minimask import coco_eval
from minimask.coco_eval import IOU_MATCH
from minimask.fates import CODE, FATES, KEPT
from minimask.longlist import Longlist
from minimask.shortlist import Shortlist
from minimask.transform import boxes_to_original, resize_boxes

IOU_TYPES: tuple[str, ...] = ("segm", "bbox")  # COCOeval's iouType: match by mask or by box
# the causes of a miss that are no filtering step
CAUSES: tuple[str, ...] = ("localisation", "background", "wrong_class", "mask_quality")
# every (stage, reason) a miss can have, in pipeline order (the tables' row order); the reason
# is a step of that stage's record (fates.FATES) or one of CAUSES
MISS_CAUSES: tuple[tuple[str, str], ...] = (
    ("longlist", "localisation"),
    *(("longlist", step) for step in Longlist.STEPS),
    ("classification", "localisation"),
    ("classification", "background"),
    ("classification", "wrong_class"),
    *(("shortlist", step) for step in Shortlist.STEPS),
    ("segmentation", "mask_quality"),
)
# (stage, reason) -> its words in figures and text (the one table of display wording)
WORDS: dict[tuple[str, str], str] = {
    ("longlist", "localisation"): "no proposal reaches it",
    ("longlist", "pre_nms_top_k"): "the level's top-k before NMS",
    ("longlist", "small_box"): "the proposals' small-box rule",
    ("longlist", "score_threshold"): "the objectness threshold",
    ("longlist", "nms"): "NMS per level",
    ("longlist", "cap"): "the proposal cap",
    ("classification", "localisation"): "refined off the object",
    ("classification", "background"): "called background",
    ("classification", "wrong_class"): "called another class",
    ("shortlist", "score_threshold"): "the score threshold",
    ("shortlist", "small_box"): "the detections' small-box rule",
    ("shortlist", "nms"): "NMS per class",
    ("shortlist", "cap"): "the detection cap",
    ("segmentation", "mask_quality"): "mask quality",
}
# (stage, reason) -> the sentence of a miss, filled from Miss.numbers (thresholds from the config)
SHORT_OF = ("best_proposal_iou", "best_anchor_iou", "refined_iou")  # IoUs a sentence says fell short
SENTENCES: dict[tuple[str, str], str] = {
    ("longlist", "localisation"): "no proposal covers it at IoU {iou_threshold}: best proposal IoU "
    "{best_proposal_iou:.3f}, best anchor IoU {best_anchor_iou:.3f}",
    ("longlist", "pre_nms_top_k"): "its best covering anchor (IoU {anchor_iou:.2f}, its proposal {proposal_iou:.2f}): "
    "objectness ranked {level_rank_th} of its level (P{pyramid}); the level keeps {top_k:,} before NMS",
    ("longlist", "small_box"): "its proposal (IoU {proposal_iou:.2f}) has a side of {side:.3g} px {below} "
    "rpn_min_size {min_size:g}",
    ("longlist", "score_threshold"): "its proposal (IoU {proposal_iou:.2f}) has objectness {objectness:.3f} < "
    "rpn_score_thresh {threshold:g}",
    ("longlist", "nms"): "its proposal (IoU {proposal_iou:.2f}, objectness {objectness:.3f}) was suppressed in NMS "
    "per level by anchor {suppressor} (IoU {suppressor_iou:.2f} > rpn_nms_thresh {threshold:g}), which covers the "
    "object at IoU {suppressor_object_iou:.2f}",
    ("longlist", "cap"): "its proposal (IoU {proposal_iou:.2f}) ranked {rank_th} after NMS; the image keeps {cap:,} "
    "proposals",
    ("classification", "localisation"): "a proposal covered it (IoU {proposal_iou:.2f}) but its class-{label} refined "
    "box reached only IoU {refined_iou:.3f} (p={probability:.3f})",
    ("classification", "background"): "its best candidate (IoU {refined_iou:.2f}) was called background "
    "(p={background:.3f}); p(class {label}) = {probability:.3f} <= box_score_thresh {threshold:g}",
    ("classification", "wrong_class"): "its best candidate (IoU {refined_iou:.2f}) was called class {argmax} "
    "(p={argmax_probability:.3f}); p(class {label}) = {probability:.3f} <= box_score_thresh {threshold:g}",
    ("shortlist", "score_threshold"): "its best candidate (IoU {refined_iou:.2f}) scored {probability:.3f} <= "
    "box_score_thresh {threshold:g}",
    ("shortlist", "small_box"): "its refined box has a side of {side:.3g} px {below} box_min_size {min_size:g}",
    ("shortlist", "nms"): "its best candidate (IoU {refined_iou:.2f}, p={probability:.3f}) was suppressed in NMS per "
    "class by detection {suppressor_detection} (IoU {suppressor_iou:.2f} > box_nms_thresh {threshold:g}), matched "
    "to {suppressor_object}",
    ("shortlist", "cap"): "its best candidate (IoU {refined_iou:.2f}, p={probability:.3f}) ranked {rank_th}; the "
    "image keeps {cap:,} detections",
    ("segmentation", "mask_quality"): "detection {detection} matched its box (IoU {box_iou:.2f}) but its mask "
    "reaches IoU {mask_iou:.2f} < {iou_threshold}",
}


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n:,}{suffix}"


def class_label(label: int, class_names: Sequence[str] | None = None) -> str:
    """A class in words: its name where ``class_names`` has one, else "class <label>"."""
    return class_names[label] if class_names and label < len(class_names) else f"class {label}"


def _last_step(record, codes: Tensor) -> str:
    """Of the steps that dropped rows with fate ``codes``, the one that ran last (``record.steps``)."""
    order = {CODE[step]: i for i, step in enumerate(record.steps)}
    return record.steps[max(order[int(c)] for c in codes.tolist())]


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
    """A ground-truth object and the detection COCOeval matched to it (IoU >= 0.5 for the trace's
    IoU type); both IoUs given where known (``mask_iou`` NaN without masks)."""

    gt_index: int
    detection: int
    box_iou: float
    mask_iou: float


@dataclass(frozen=True)
class Miss:
    """A non-crowd object no detection matched, and the decision that lost it (``Trace.attribute``).

    ``reason``: the step of the stage's record that dropped the last box that covered it
    (``fates.FATES``), or a cause that is no step (``CAUSES``); ``(stage, reason)`` is one of
    ``MISS_CAUSES``.
    """

    gt_index: int
    label: int
    stage: str  # "longlist", "classification", "shortlist" or "segmentation"
    reason: str  # a step (fates.FATES) or one of CAUSES
    numbers: dict[str, Any] = field(default_factory=dict)
    row: int = -1  # the representative row: an anchor (longlist), a candidate, or a detection

    @property
    def step(self) -> str | None:
        """The stage record's step that lost it (None for a cause that is no step)."""
        return self.reason if self.reason in FATES else None

    @property
    def words(self) -> str:
        """The cause in a few words (``WORDS``), e.g. "NMS per class"."""
        return WORDS[(self.stage, self.reason)]

    def sentence(self) -> str:
        """The cause in words, with its numbers."""
        n = self.numbers
        sup = n.get("suppressor_match", -1)
        extra = {
            "label": self.label,
            "rank_th": _ordinal(n.get("rank", 0)),
            "level_rank_th": _ordinal(n.get("level_rank", 0)),
            "pyramid": n.get("level", 0) + 2,
            "suppressor_object": f"object {sup}" if sup >= 0 else "no object",
        }
        # IoUs that fell short of a threshold, rounded down: 0.4996 reads 0.499, never 0.50
        below = {k: math.floor(n[k] * 1000) / 1000 for k in SHORT_OF if k in n}
        return SENTENCES[(self.stage, self.reason)].format(**{**n, **below}, **extra)

    def __str__(self) -> str:
        return (
            f"object {self.gt_index} (class {self.label}) lost in the {self.stage}, {self.words} "
            f"[{self.stage}/{self.reason}]: {self.sentence()}"
        )


# --- the trace of one image -----------------------------------------------------------------------
class Trace:
    """Chapter 10. The join of one image's stage records: lineage, fates, and (with a target) matches and misses.

    Everything is computed on first use (``cached_property``): an explained image costs what is
    asked of it. Boxes of the stages are in resized-image pixels; ``target`` is in original-image
    pixels (torchvision's contract) and is resized here for the stage comparisons, while the
    matching uses original pixels, as evaluation does. ``iou_type``: match by mask ("segm",
    the target needs ``masks``) or by box ("bbox"), as COCOeval's ``iouType``.
    """

    def __init__(
        self, run, index: int, config, target: dict[str, Tensor] | None = None, iou_type: str = "segm"
    ) -> None:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_type: expected 'segm' or 'bbox', got {iou_type!r}")
        self.run = run
        self.index = index
        self.config = config
        self.iou_type = iou_type
        self.objectness = run.objectness[index]
        self.longlist: Longlist = run.longlist[index]
        self.classification = run.classification[index]
        self.shortlist: Shortlist = run.shortlist[index]
        # None for a run made with until="shortlist": no masks unless given (use_masks)
        self.segmentation = None if run.segmentation is None else run.segmentation[index]
        self.image_size = tuple(run.batch.image_sizes[index])
        self.original_size = tuple(run.batch.original_sizes[index])
        self.target = None if target is None else {k: v.detach().cpu() for k, v in target.items()}
        self._given_rles: dict[int, dict] | None = None  # use_masks

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

    # -- matching (COCOeval's) -------------------------------------------------------------------
    def _need_target(self) -> dict[str, Tensor]:
        if self.target is None:
            raise ValueError("this Trace has no target: explain(model, image, target) to match and miss")
        return self.target

    @cached_property
    def crowd(self) -> list[int]:
        """Per object, its ``iscrowd`` flag (a crowd region is never matched nor missed)."""
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
        """(D, G) box IoU of every detection with every object, original pixels, as COCOeval."""
        return coco_eval.iou(self.boxes_orig, self._need_target()["boxes"], self.crowd)

    @cached_property
    def gt_rles(self) -> list[dict]:
        """The objects' masks as COCO RLEs (empty without ``masks`` in the target)."""
        t = self._need_target()
        return coco_eval.encode(t["masks"].bool()) if "masks" in t else []

    def use_masks(self, rles: dict[int, dict]) -> None:
        """Give the binary masks (COCO RLEs, original pixels) of some detections, for a trace of a run
        made without masks (``until="shortlist"``). A detection left out has mask IoU 0 with every
        object here: leave out only those whose mask cannot match (``explain.may_match``)."""
        self._given_rles = dict(rles)

    @cached_property
    def det_rles(self) -> list[dict]:
        """Each detection's mask (>= ``mask_threshold``) as a COCO RLE, original pixels."""
        if self._given_rles is not None:
            empty = coco_eval.encode(torch.zeros((1, *self.original_size), dtype=torch.bool))[0]
            return [self._given_rles.get(d, empty) for d in range(len(self))]
        if self.segmentation is None:
            raise ValueError("this Trace's run has no masks: run it with masks, give them (use_masks) or "
                             "use iou_type='bbox'")  # fmt: skip
        return coco_eval.encode_masks(self.segmentation.masks.detach().cpu(), self.config.mask_threshold)

    @cached_property
    def mask_ious(self) -> np.ndarray:
        """(D, G) mask IoU of every detection with every object (pycocotools, as COCOeval)."""
        if not self.gt_rles and len(self._need_target()["boxes"]):
            raise ValueError("the target has no masks: give them, or use iou_type='bbox'")
        return coco_eval.iou(self.det_rles, self.gt_rles, self.crowd)

    def _greedy(self, ious: np.ndarray) -> tuple[list[int], list[int]]:
        s, t = self.shortlist, self._need_target()
        return coco_eval.greedy_match(ious, s.scores.tolist(), s.labels.tolist(), t["labels"].tolist(), self.crowd)

    @cached_property
    def box_matching(self) -> tuple[list[int], list[int]]:
        """COCOeval's matching by box: ``(det_match, gt_match)`` (``coco_eval.greedy_match``)."""
        return self._greedy(self.box_ious)

    @cached_property
    def matching(self) -> tuple[list[int], list[int]]:
        """COCOeval's matching for this trace's ``iou_type``: ``(det_match, gt_match)``."""
        return self._greedy(self.mask_ious) if self.iou_type == "segm" else self.box_matching

    def mask_iou(self, detection: int, gt_index: int) -> float:
        """Mask IoU of a detection with an object (NaN where masks are missing)."""
        if self.segmentation is None and self._given_rles is None:
            return float("nan")  # a run without masks (iou_type "bbox"): no mask to compare
        try:
            return float(self.mask_ious[detection, gt_index])
        except ValueError:
            return float("nan")

    @cached_property
    def matches(self) -> list[Match]:
        """Every matched object, in object order: its detection, box IoU and mask IoU."""
        _, gt_match = self.matching
        return [Match(g, d, float(self.box_ious[d, g]), self.mask_iou(d, g)) for g, d in enumerate(gt_match) if d >= 0]

    # -- misses ----------------------------------------------------------------------------------
    @cached_property
    def gt_boxes_resized(self) -> Tensor:
        """(G, 4) the objects' boxes in the resized image, where the stages work."""
        return resize_boxes(self._need_target()["boxes"].float(), self.original_size, self.image_size)

    @cached_property
    def misses(self) -> list[Miss]:
        """Every non-crowd object that ``matching`` leaves unmatched, with the decision that lost it.

        With ``matches``, a partition of the non-crowd objects. Attribution rule (``attribute``);
        boxes in resized-image pixels; a box "covers" the object at IoU >= 0.5; K = its class;
        "last" is in the order the steps ran (``record.steps``).

        0. ``"segm"``: matched by box (``box_matching``) but not by mask: lost in the
           segmentation, "mask_quality" (the box-matched detection and its mask IoU).
        1. Candidates: the class-K candidate of every proposal whose class-K refined box covers
           the object. If any was dropped, lost in the shortlist at the step that dropped the
           last of them; the representative is the most probable candidate dropped there. At
           ``score_threshold`` the classification is blamed instead when that proposal's most
           probable class is background ("background") or another class ("wrong_class").
           If none was dropped and no detection among them matched an object by box, lost at
           the shortlist's ``cap`` (COCOeval's 100 per class, or IoU rounding).
        2. Else, if a longlist proposal covers it: lost in classification, "localisation"
           (refinement moved every covering proposal off it).
        3. Else, if the decoded, clipped box of some anchor covers it: lost in the longlist at
           the step that dropped the last of those anchors; the representative is the highest
           objectness dropped there.
        4. Else: lost in the longlist, "localisation": no anchor's proposal ever covered it.
        """
        _, gt_match = self.matching
        box_gt = self.box_matching[1]
        out = []
        for g, d in enumerate(gt_match):
            if self.crowd[g] or d >= 0:
                continue  # matched, or a crowd region (never missed)
            out.append(self._mask_miss(g, box_gt[g]) if box_gt[g] >= 0 else self.attribute(g))
        return out

    def _mask_miss(self, g: int, d: int) -> Miss:
        numbers = {"detection": d, "box_iou": float(self.box_ious[d, g]), "mask_iou": self.mask_iou(d, g),
                   "iou_threshold": IOU_MATCH}  # fmt: skip
        return Miss(g, int(self.target["labels"][g]), "segmentation", "mask_quality", numbers, d)

    def attribute(self, g: int) -> Miss:
        """The decision that lost object ``g``, by the box (steps 1-4 of ``misses``)."""
        label = int(self._need_target()["labels"][g])
        gt = self.gt_boxes_resized[g : g + 1]
        for cause in (self._lost_in_shortlist, self._lost_in_classification, self._lost_in_longlist):
            miss = cause(g, label, gt)
            if miss is not None:
                return miss
        raise AssertionError("unreachable: the longlist names a cause for every object")

    def _lost_in_shortlist(self, g: int, label: int, gt: Tensor) -> Miss | None:
        """Step 1: the covering class-K candidates."""
        s, c = self.shortlist, self.classification
        if not len(c.boxes):
            return None
        refined_iou = box_ops.iou(c.boxes[:, label].detach(), gt)[:, 0]
        proposals = torch.where(refined_iou >= IOU_MATCH)[0]
        if not len(proposals):
            return None
        rows = proposals * s.num_foreground + label - 1
        fate = s.fate[rows]
        det_match = self.box_matching[0]
        if (fate != KEPT).any():
            step = _last_step(s, fate[fate != KEPT])
            at = torch.where(fate == CODE[step])[0]
            i = int(at[int(c.probs[proposals[at], label].detach().argmax())])
        elif not any(det_match[d] >= 0 for d in torch.where(torch.isin(s.candidate_index, rows))[0].tolist()):
            step, i = "cap", 0  # kept, yet unmatched: past COCOeval's 100 per class, or IoU rounding
        else:
            return None
        p, row = int(proposals[i]), int(rows[i])
        n = {"iou_threshold": IOU_MATCH, "refined_iou": float(refined_iou[p]), "probability": float(c.probs[p, label]),
             "proposal": p}  # fmt: skip
        n.update(getattr(self, f"_shortlist_{step}")(p, label, row))
        stage, reason = "shortlist", step
        if step == "score_threshold" and n["argmax"] != label:
            stage, reason = "classification", "background" if n["argmax"] == 0 else "wrong_class"
        return Miss(g, label, stage, reason, n, row)

    # the numbers of each shortlist step: (proposal, label, candidate row) -> dict
    def _shortlist_score_threshold(self, p: int, label: int, row: int) -> dict[str, Any]:
        probs = self.classification.probs[p].detach()
        top = int(probs.argmax())
        return {"threshold": self.config.box_score_thresh, "background": float(probs[0]), "argmax": top,
                "argmax_probability": float(probs[top])}  # fmt: skip

    def _shortlist_small_box(self, p: int, label: int, row: int) -> dict[str, Any]:
        cfg = self.config
        box = self.classification.boxes[p, label].detach()[None]
        after = cfg.small_box_removal == "after_rescale"  # Detectron2: the box in the original image, side >
        if after:
            box = boxes_to_original(box, self.image_size, self.original_size, cfg)
        side = float(torch.minimum(box[0, 2] - box[0, 0], box[0, 3] - box[0, 1]))
        return {"side": side, "min_size": cfg.box_min_size, "below": "<=" if after else "<"}

    def _shortlist_nms(self, p: int, label: int, row: int) -> dict[str, Any]:
        s = self.shortlist
        sup = int(s.suppressed_by[row])
        detection = {int(r): i for i, r in enumerate(s.candidate_index.tolist())}.get(sup, -1)
        return {
            "threshold": self.config.box_nms_thresh,
            "suppressor": sup,
            "suppressor_detection": detection,
            "suppressor_iou": float(s.nms.iou_with_suppressor(len(s.fate))[row]),
            "suppressor_match": self.box_matching[0][detection] if detection >= 0 else -1,
        }

    def _shortlist_cap(self, p: int, label: int, row: int) -> dict[str, Any]:
        s = self.shortlist
        survivors = s.nms.rows[s.nms.keep]  # the cap ranks the candidates that survived NMS
        at = torch.where(survivors == row)[0]
        rank = int(at[0]) + 1 if len(at) else len(s)
        return {"rank": rank, "cap": self.config.box_detections_per_img}

    def _lost_in_classification(self, g: int, label: int, gt: Tensor) -> Miss | None:
        """Step 2: a longlist proposal covers it, its refined box does not."""
        ll, c = self.longlist, self.classification
        if not len(ll):
            return None
        prop_iou = box_ops.iou(ll.boxes.detach(), gt)[:, 0]
        best = int(prop_iou.argmax())
        if prop_iou[best] < IOU_MATCH:
            return None
        refined_iou = box_ops.iou(c.boxes[best : best + 1, label].detach(), gt)[0, 0]
        n = {"iou_threshold": IOU_MATCH, "proposal_iou": float(prop_iou[best]), "refined_iou": float(refined_iou),
             "probability": float(c.probs[best, label]), "proposal": best}  # fmt: skip
        return Miss(g, label, "classification", "localisation", n, best)

    @cached_property
    def _anchor_boxes(self) -> Tensor:
        """Every anchor's decoded box clipped to the resized image (what the longlist tests)."""
        return box_ops.clip(self.objectness.proposals.detach(), self.image_size)

    def _lost_in_longlist(self, g: int, label: int, gt: Tensor) -> Miss:
        """Steps 3 and 4: the anchors whose proposal covers it."""
        o, ll = self.objectness, self.longlist
        proposal_iou = box_ops.iou(self._anchor_boxes, gt)[:, 0]
        anchor_iou = box_ops.iou(o.anchors, gt)[:, 0]
        covering = torch.where(proposal_iou >= IOU_MATCH)[0]
        if len(covering) == 0:
            any_anchor = len(proposal_iou) > 0
            n = {"iou_threshold": IOU_MATCH, "best_proposal_iou": float(proposal_iou.max()) if any_anchor else 0.0,
                 "best_anchor_iou": float(anchor_iou.max()) if any_anchor else 0.0}  # fmt: skip
            return Miss(g, label, "longlist", "localisation", n, int(proposal_iou.argmax()) if any_anchor else -1)
        fate = ll.fate[covering]
        step = _last_step(ll, fate)
        at = covering[fate == CODE[step]]
        a = int(at[int(o.logits.detach()[at].argmax())])
        n = {"iou_threshold": IOU_MATCH, "anchor": a, "level": int(o.anchor_level[a]), "anchor_iou": float(anchor_iou[a]),
             "proposal_iou": float(proposal_iou[a]), "objectness": float(torch.sigmoid(o.logits.detach()[a]))}  # fmt: skip
        n.update(getattr(self, f"_longlist_{step}")(a, proposal_iou))
        return Miss(g, label, "longlist", step, n, a)

    # the numbers of each longlist step: (anchor row, covering IoU of every anchor's proposal) -> dict
    def _longlist_pre_nms_top_k(self, a: int, proposal_iou: Tensor) -> dict[str, Any]:
        return {"level_rank": self.level_rank(a), "top_k": self.config.rpn_pre_nms_top_n_test}

    def _longlist_small_box(self, a: int, proposal_iou: Tensor) -> dict[str, Any]:
        b = self._anchor_boxes[a]
        below = "<" if self.config.rpn_min_size_inclusive else "<="
        return {"side": float(torch.minimum(b[2] - b[0], b[3] - b[1])), "min_size": self.config.rpn_min_size,
                "below": below}  # fmt: skip

    def _longlist_score_threshold(self, a: int, proposal_iou: Tensor) -> dict[str, Any]:
        return {"threshold": self.config.rpn_score_thresh}

    def _longlist_nms(self, a: int, proposal_iou: Tensor) -> dict[str, Any]:
        ll = self.longlist
        sup = int(ll.suppressed_by[a])
        return {"threshold": self.config.rpn_nms_thresh, "suppressor": sup,
                "suppressor_iou": float(ll.nms.iou_with_suppressor(len(ll.fate))[a]),
                "suppressor_object_iou": float(proposal_iou[sup])}  # fmt: skip

    def _longlist_cap(self, a: int, proposal_iou: Tensor) -> dict[str, Any]:
        survivors = self.longlist.nms.rows[self.longlist.nms.keep]
        return {"rank": int(torch.where(survivors == a)[0][0]) + 1, "cap": self.config.rpn_post_nms_top_n_test}

    # -- the ledger ------------------------------------------------------------------------------
    def ledger(self, g: int) -> dict[str, int]:
        """Object ``g`` followed through every step: how many rows still cover it (IoU >= 0.5).

        Keys in the order the steps ran (``record.steps``): "anchors" (anchors whose decoded,
        clipped box covers it), then "longlist: <step>" for each longlist step (those still in
        after it, ``alive_after``), "proposals" (longlist proposals covering it, whatever their
        anchor), "candidates" (class-K_g candidates whose refined box covers it, less detections
        matched by box to another object), "shortlist: <step>" for each shortlist step, and
        "matched" (1 if a detection matched it for the trace's IoU type). A miss's step is where
        a count first drops to 0 (the counts are Matterport's recall after each step, for one
        object).
        """
        label = int(self._need_target()["labels"][g])
        gt = self.gt_boxes_resized[g : g + 1]
        ll, c, s = self.longlist, self.classification, self.shortlist
        covering = torch.where(box_ops.iou(self._anchor_boxes, gt)[:, 0] >= IOU_MATCH)[0]
        out = {"anchors": len(covering)}
        for step in ll.steps:
            out[f"longlist: {step}"] = int(ll.alive_after(step)[covering].sum())
        out["proposals"] = int((box_ops.iou(ll.boxes.detach(), gt)[:, 0] >= IOU_MATCH).sum()) if len(ll) else 0
        proposals = torch.zeros(0, dtype=torch.int64)
        if len(c.boxes):
            proposals = torch.where(box_ops.iou(c.boxes[:, label].detach(), gt)[:, 0] >= IOU_MATCH)[0]
        rows = proposals * s.num_foreground + label - 1
        det_match = self.box_matching[0]
        detection = {int(r): i for i, r in enumerate(s.candidate_index.tolist())}
        own = [int(r) not in detection or det_match[detection[int(r)]] in (-1, g) for r in rows.tolist()]
        rows = rows[torch.tensor(own, dtype=torch.bool)]  # leave out detections matched to another object
        out["candidates"] = len(rows)
        for step in s.steps:
            out[f"shortlist: {step}"] = int(s.alive_after(step)[rows].sum())
        out["matched"] = int(self.matching[1][g] >= 0)
        return out

    def report(self, class_names: list[str] | None = None) -> str:
        """A short text report: detections with their lineage, then the matched count and the misses."""
        lines = [f"{len(self.shortlist)} detections"]
        for lin in self.detections:
            lines.append(f"  {lin.describe()} [{class_label(lin.label, class_names)}]")
        if self.target is not None:
            by = "mask" if self.iou_type == "segm" else "box"
            lines.append(f"{len(self.matches)} of {len(self.crowd) - sum(self.crowd)} objects matched at IoU "
                         f"{IOU_MATCH} (by {by})")  # fmt: skip
            lines.append(f"{len(self.misses)} missed")
            for m in self.misses:
                lines.append(f"  {m} [{class_label(m.label, class_names)}]")
        return "\n".join(lines)


def explain(model, image: Tensor, target: dict[str, Tensor] | None = None, iou_type: str = "segm") -> Trace:
    """Chapter 10. One image through ``model.run`` once, its records joined.

    ``model``: a ``minimask.MaskRCNN`` (ours, the shipped one, or a torchvision model converted
    with ``compat.from_torchvision``); ``image``: ``Tensor[3, H, W]`` in [0, 1]; ``target``:
    torchvision's dict (``boxes`` xyxy in original pixels, ``labels``, ``masks`` (G, H, W) for
    ``iou_type="segm"``, optional ``iscrowd``), needed for ``matches`` and ``misses``.
    """
    return Trace(model.run([image]), 0, model.config, target, iou_type)


__all__ = [
    "CAUSES",
    "IOU_TYPES",
    "MISS_CAUSES",
    "WORDS",
    "Anchor",
    "Fate",
    "Lineage",
    "Match",
    "Miss",
    "Trace",
    "explain",
]
