"""Training targets: which anchors and proposals are positive, negative or ignored, and why.

Three decisions, one per head, each a function returning a frozen record:

- ``rpn_targets`` (chapter 3): anchors matched to ground truth at IoU >= 0.7 / < 0.3, with the
  low-quality rule, then 256 sampled per image. torchvision ``RegionProposalNetwork
  .assign_targets_to_anchors`` + ``BalancedPositiveNegativeSampler``.
- ``roi_targets`` (chapter 5): proposals (ground truth appended) matched at IoU 0.5, 512 sampled
  per image, 25 % positives. torchvision ``RoIHeads.select_training_samples``.
- ``mask_targets`` (chapter 7): each positive RoI's ground-truth mask cropped and resampled to
  28x28. torchvision ``project_masks_on_boxes``.

Both matchers are ``match`` (torchvision ``_utils.Matcher``) and both samplers are ``sample``
(torchvision ``_utils.BalancedPositiveNegativeSampler``): the same torch calls in the same order,
so that with the same random state the same anchors and proposals are drawn.

Shape shorthand: ``A`` anchors, ``G`` ground-truth objects, ``P`` proposals, ``R`` proposals with
the ground truth appended (P + G), ``S`` sampled RoIs, ``Q`` positive RoIs, ``M`` mask side (28).

Crowd regions: a target may carry ``iscrowd`` (COCO). torchvision's model ignores that key (its
reference scripts, ``references/detection/coco_utils.py``, drop crowd annotations before the
model sees them) and Detectron2 drops them in its dataset mapper (``annotations_to_instances``
is called on non-crowd annotations only). ``coco.drop_crowd`` does the same here, so a crowd region
is never a positive; anchors on it are judged against the other objects only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from torchvision.ops import roi_align

from minimask.boxes import encode, iou
from minimask.config import Config
from minimask.fates import CODE, KEPT, Filtered

# torchvision Matcher's codes for unmatched predictions (_utils.py Matcher.BELOW_LOW_THRESHOLD...)
BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


def _sampled_counts(m: Matches, fate: Tensor, sample: Sampled) -> dict[str, int]:
    """The matching verdicts (``Matches.counts``), then the sampling: rows left out, rows drawn."""
    out = m.counts()
    out["not_sampled"] = int((fate == CODE["not_sampled"]).sum())
    out["sampled_positive"] = int(sample.positive.numel())
    out["sampled_negative"] = int(sample.negative.numel())
    return out


# --- matching -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Matches:
    """Chapters 3 and 5: each prediction's best ground-truth object and the verdict on it.

    The verdict is ``label``: positive (IoU >= ``fg``, or made positive by the low-quality
    rule: ``low_quality``), negative (IoU < ``bg``, or an image without objects) or ignored
    (in between; fate ``ignored`` in the target records).
    """

    gt_index: Tensor  # (N,) int64 the matched GT of a positive; -1 negative, -2 ignored (torchvision Matcher's output)
    best_gt: Tensor  # (N,) int64 GT of highest IoU (argmax), whatever the verdict (a negative's too); -1 if no GT
    iou: Tensor  # (N,) IoU with best_gt (0 if no GT)
    label: Tensor  # (N,) int64 1 positive, 0 negative, -1 ignored
    low_quality: Tensor  # (N,) bool positive only by the low-quality rule (IoU below fg)
    fg: float  # the foreground threshold: positive at IoU >= fg
    bg: float  # the background threshold: negative at IoU < bg

    def counts(self) -> dict[str, int]:
        """Predictions per verdict (a partition): positive by IoU, positive by the low-quality
        rule, negative, ignored."""
        return {
            "positive_iou": int(((self.label == 1) & ~self.low_quality).sum()),
            "low_quality": int(self.low_quality.sum()),
            "negative": int((self.label == 0).sum()),
            "ignored": int((self.label == -1).sum()),
        }


def match(iou_matrix: Tensor, fg: float, bg: float, allow_low_quality: bool) -> Matches:
    """Chapter 3. Give each prediction (column) its best ground truth (row) and a verdict.

    ``iou_matrix`` is ``Tensor[G, N]`` (objects x predictions). A prediction whose best IoU is
    >= ``fg`` is positive, < ``bg`` negative, in between ignored. With ``allow_low_quality``
    (the RPN's rule) every prediction tied at an object's highest IoU also becomes positive,
    however low that IoU, but it keeps its own argmax object as target (which may be another
    object); if an object overlaps nothing, every prediction at IoU 0 with it is tied.

    Mirrors torchvision ``_utils.Matcher.__call__`` and ``set_low_quality_matches_`` call by call
    (same ``max`` for the same tie-breaking), so ``gt_index`` equals the Matcher's output. One
    difference: with no ground truth (G = 0) the Matcher raises and its callers branch to "all
    background"; here ``match`` returns that directly (every prediction negative). Detectron2
    ``Matcher`` (modeling/matcher.py) does the same with its labels [0, -1, 1].
    """
    if iou_matrix.dim() != 2:
        raise ValueError(f"iou_matrix must be 2-D (objects x predictions), got shape {tuple(iou_matrix.shape)}")
    if bg > fg:
        raise ValueError(f"bg ({bg}) must be <= fg ({fg})")
    num_gt, n = iou_matrix.shape
    device = iou_matrix.device
    if num_gt == 0 or n == 0:
        minus = torch.full((n,), -1, dtype=torch.int64, device=device)
        return Matches(
            gt_index=minus,
            best_gt=minus.clone(),
            iou=torch.zeros(n, dtype=iou_matrix.dtype, device=device),
            label=torch.zeros(n, dtype=torch.int64, device=device),
            low_quality=torch.zeros(n, dtype=torch.bool, device=device),
            fg=fg,
            bg=bg,
        )

    # 1. best object for each prediction (max over rows)
    best_iou, best_gt = iou_matrix.max(dim=0)
    # 2. verdict by threshold: below bg, between, or kept as a match
    gt_index = best_gt.clone()
    gt_index[best_iou < bg] = BELOW_LOW_THRESHOLD
    gt_index[(best_iou >= bg) & (best_iou < fg)] = BETWEEN_THRESHOLDS
    # 3. low-quality rule: every prediction tied at an object's highest IoU is a match, to its
    #    own argmax object (torchvision Matcher.set_low_quality_matches_)
    low_quality = torch.zeros(n, dtype=torch.bool, device=device)
    if allow_low_quality:
        best_for_each_gt = iou_matrix.max(dim=1).values  # (G,)
        rescued = torch.where(iou_matrix == best_for_each_gt[:, None])[1]
        low_quality[rescued] = gt_index[rescued] < 0
        gt_index[rescued] = best_gt[rescued]
    label = torch.where(gt_index >= 0, 1, torch.where(gt_index == BELOW_LOW_THRESHOLD, 0, -1)).to(torch.int64)
    return Matches(gt_index=gt_index, best_gt=best_gt, iou=best_iou, label=label, low_quality=low_quality, fg=fg, bg=bg)


# --- sampling -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sampled:
    """Chapters 3 and 5: which positives and negatives one image contributes to the loss."""

    positive: Tensor  # (Kp,) int64 indices of drawn positives, in draw order
    negative: Tensor  # (Kn,) int64 indices of drawn negatives, in draw order
    positive_mask: Tensor  # (N,) bool
    negative_mask: Tensor  # (N,) bool
    num_candidates: tuple[int, int]  # (positives, negatives) available before drawing
    batch_size: int  # cfg.*_batch_size_per_image
    positive_fraction: float  # cfg.*_positive_fraction

    @property
    def index(self) -> Tensor:
        """(Kp + Kn,) sampled indices in increasing order (the order torchvision's RoI head uses)."""
        return torch.where(self.positive_mask | self.negative_mask)[0]


def sample(
    labels: Tensor, batch_size: int, positive_fraction: float, generator: torch.Generator | None = None
) -> Sampled:
    """Chapter 3. Draw at most ``batch_size`` predictions, at most ``positive_fraction`` positive.

    ``labels`` is ``Tensor[N]``: >= 1 positive (a class or 1.0), 0 negative, -1 ignored. Up to
    int(batch_size * positive_fraction) positives are drawn uniformly without replacement and
    the rest of the batch is filled with negatives; with too few of either, all are taken.

    Mirrors torchvision ``_utils.BalancedPositiveNegativeSampler.__call__`` for one image: one
    ``torch.randperm`` over the positives, then one over the negatives, on the labels' device,
    so the same random state draws the same indices. ``generator=None`` uses torch's global
    generator, as torchvision does. Detectron2 ``subsample_labels`` (modeling/sampling.py)
    draws the same way.
    """
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    positive = torch.where(labels >= 1)[0]
    negative = torch.where(labels == 0)[0]
    num_pos = min(positive.numel(), int(batch_size * positive_fraction))
    num_neg = min(negative.numel(), batch_size - num_pos)
    pos_perm = torch.randperm(positive.numel(), device=positive.device, generator=generator)[:num_pos]
    neg_perm = torch.randperm(negative.numel(), device=negative.device, generator=generator)[:num_neg]
    chosen_pos, chosen_neg = positive[pos_perm], negative[neg_perm]
    pos_mask = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    neg_mask = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    pos_mask[chosen_pos] = True
    neg_mask[chosen_neg] = True
    return Sampled(
        positive=chosen_pos,
        negative=chosen_neg,
        positive_mask=pos_mask,
        negative_mask=neg_mask,
        num_candidates=(positive.numel(), negative.numel()),
        batch_size=batch_size,
        positive_fraction=positive_fraction,
    )


def _sample_fates(m: Matches, s: Sampled) -> Tensor:
    """Fate of each prediction in the loss: ``kept`` (drawn), ``ignored`` or ``not_sampled``."""
    fate = torch.full(m.label.shape, KEPT, dtype=torch.int8, device=m.label.device)
    fate[m.label < 0] = CODE["ignored"]
    fate[(m.label >= 0) & ~(s.positive_mask | s.negative_mask)] = CODE["not_sampled"]
    return fate


# --- RPN ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RpnTargets(Filtered):
    """Chapter 3: one image's anchors as the RPN loss sees them.

    ``fate`` (one code of ``fates.FATES`` per anchor): ``kept`` = in the loss, ``ignored``
    (IoU between the thresholds) or ``not_sampled``.
    """

    STEPS: ClassVar[tuple[str, ...]] = ("ignored", "not_sampled")

    anchors: Tensor  # (A, 4) xyxy, resized-image pixels
    gt_boxes: Tensor  # (G, 4) the (non-crowd) ground truth
    match: Matches  # per anchor: best GT, its IoU, the matching verdict
    sample: Sampled  # which positives and negatives were drawn
    label: Tensor  # (A,) float 1 / 0 as the loss sees it; -1 = not in the loss (ignored or not drawn)
    gt_index: Tensor  # (A,) int64 GT each positive regresses to; -1 for every other anchor
    box_targets: Tensor  # (A, 4) encoded deltas anchor -> its GT (rows with label 1 only; 0 elsewhere)
    fate: Tensor  # (A,) int8 kept (in the loss), ignored or not_sampled

    def counts(self) -> dict[str, int]:
        """Anchors per matching verdict (``Matches.counts``), then ``not_sampled`` and the drawn
        positives and negatives."""
        return _sampled_counts(self.match, self.fate, self.sample)


def rpn_targets(anchors: Tensor, gt_boxes: Tensor, cfg: Config, generator: torch.Generator | None = None) -> RpnTargets:
    """Chapter 3. Which anchors the RPN is taught to call objects, and where to move them.

    1. IoU of every GT with every anchor; ``match`` at ``cfg.rpn_fg_iou_thresh`` /
       ``cfg.rpn_bg_iou_thresh`` with the low-quality rule. No GT: every anchor negative.
    2. ``sample`` ``cfg.rpn_batch_size_per_image`` anchors, ``cfg.rpn_positive_fraction`` positive.
    3. Box targets: ``encode`` (weights ``cfg.rpn_bbox_reg_weights``) of each positive's GT.

    torchvision ``RegionProposalNetwork.assign_targets_to_anchors`` (labels 1 / 0 / -1 equal
    ``match.label``) then the sampler inside ``compute_loss``; Detectron2
    ``RPN.label_and_sample_anchors`` (same rule; it also samples inside).
    """
    gt_boxes = gt_boxes.to(anchors.dtype)
    m = match(iou(gt_boxes, anchors), cfg.rpn_fg_iou_thresh, cfg.rpn_bg_iou_thresh, allow_low_quality=True)
    s = sample(m.label, cfg.rpn_batch_size_per_image, cfg.rpn_positive_fraction, generator)
    positive = m.label == 1
    gt_index = torch.where(positive, m.gt_index, -1)
    box_targets = torch.zeros_like(anchors)
    if positive.any():
        box_targets[positive] = encode(gt_boxes[gt_index[positive]], anchors[positive], cfg.rpn_bbox_reg_weights)
    drawn = s.positive_mask | s.negative_mask
    label = torch.where(drawn, m.label, -1).to(anchors.dtype)
    return RpnTargets(
        anchors=anchors,
        gt_boxes=gt_boxes,
        match=m,
        sample=s,
        label=label,
        gt_index=gt_index,
        box_targets=box_targets,
        fate=_sample_fates(m, s),
    )


# --- box head -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoiTargets(Filtered):
    """Chapter 5: one image's proposals (GT appended) as the box head's loss sees them.

    ``fate`` (one code of ``fates.FATES`` per row): ``kept`` = sampled into the box head,
    ``ignored`` (IoU between the thresholds) or ``not_sampled``.
    """

    STEPS: ClassVar[tuple[str, ...]] = ("ignored", "not_sampled")

    boxes: Tensor  # (R, 4) proposals then the G ground-truth boxes (torchvision add_gt_proposals)
    proposal_index: Tensor  # (R,) int64 row in the longlist; -1 for an appended GT box
    gt_boxes: Tensor  # (G, 4)
    gt_labels: Tensor  # (G,) int64 classes 1..K
    match: Matches  # per row: best GT, IoU, verdict (no low-quality rule here)
    sample: Sampled  # drawn positives and negatives
    class_label: Tensor  # (R,) int64 matching verdict as a class: GT class, 0 background, -1 ignored
    gt_index: Tensor  # (R,) int64 GT each positive row regresses to; -1 for every other row (torchvision: 0)
    sampled_index: Tensor  # (S,) int64 rows of ``boxes`` fed to the head, increasing (torchvision's order)
    sampled_boxes: Tensor  # (S, 4)
    sampled_labels: Tensor  # (S,) int64 class target, 0 = background
    box_targets: Tensor  # (S, 4) encoded deltas proposal -> its GT (positives; 0 for background)
    fate: Tensor  # (R,) int8 kept (sampled), ignored or not_sampled

    def counts(self) -> dict[str, int]:
        """Rows per matching verdict (``Matches.counts``), then ``not_sampled`` and the drawn
        positives and negatives."""
        return _sampled_counts(self.match, self.fate, self.sample)


def roi_targets(
    proposals: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    cfg: Config,
    generator: torch.Generator | None = None,
) -> RoiTargets:
    """Chapter 5. Which proposals the box head is taught as which class, and their box targets.

    1. Append the GT boxes to the proposals, so each object has at least one perfect RoI.
    2. ``match`` at ``cfg.box_fg_iou_thresh`` / ``cfg.box_bg_iou_thresh`` (no low-quality
       rule): positive rows take their GT's class, the others background 0.
    3. ``sample`` ``cfg.box_batch_size_per_image`` rows, ``cfg.box_positive_fraction`` positive;
       the head sees them in increasing row order.
    4. Box targets: ``encode`` (weights ``cfg.bbox_reg_weights``) of each positive's GT.

    torchvision ``RoIHeads.select_training_samples`` (with ``add_gt_proposals``,
    ``assign_targets_to_proposals``, ``subsample``); Detectron2
    ``ROIHeads.label_and_sample_proposals`` (same rule; background is class K there).
    """
    gt_boxes = gt_boxes.to(proposals.dtype)
    boxes = torch.cat((proposals, gt_boxes))
    num_p, num_g = proposals.shape[0], gt_boxes.shape[0]
    proposal_index = torch.cat(
        (torch.arange(num_p, device=boxes.device), torch.full((num_g,), -1, dtype=torch.int64, device=boxes.device))
    )
    m = match(iou(gt_boxes, boxes), cfg.box_fg_iou_thresh, cfg.box_bg_iou_thresh, allow_low_quality=False)
    gt_index = torch.where(m.label == 1, m.gt_index, -1)
    if num_g > 0:
        class_label = gt_labels.to(torch.int64)[gt_index.clamp(min=0)]  # torchvision clamps: rows of GT 0
        class_label = torch.where(m.label == 1, class_label, m.label)  # 0 background, -1 ignored
    else:
        class_label = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
    s = sample(class_label, cfg.box_batch_size_per_image, cfg.box_positive_fraction, generator)
    idx = s.index
    sampled_labels = class_label[idx]
    box_targets = torch.zeros((idx.numel(), 4), dtype=boxes.dtype, device=boxes.device)
    pos = sampled_labels > 0
    if pos.any():
        box_targets[pos] = encode(gt_boxes[gt_index[idx][pos]], boxes[idx][pos], cfg.bbox_reg_weights)
    return RoiTargets(
        boxes=boxes,
        proposal_index=proposal_index,
        gt_boxes=gt_boxes,
        gt_labels=gt_labels,
        match=m,
        sample=s,
        class_label=class_label,
        gt_index=gt_index,
        sampled_index=idx,
        sampled_boxes=boxes[idx],
        sampled_labels=sampled_labels,
        box_targets=box_targets,
        fate=_sample_fates(m, s),
    )


# --- mask head ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MaskTargets:
    """Chapter 7: what each positive RoI's 28x28 mask should be."""

    classification_index: Tensor  # (Q,) int64 row in the training Classification (a sampled RoI)
    boxes: Tensor  # (Q, 4) the positive proposals (not refined boxes)
    labels: Tensor  # (Q,) int64 class of the matched GT: the mask channel that is trained
    gt_index: Tensor  # (Q,) int64 matched GT
    masks: Tensor  # (Q, M, M) soft targets in [0, 1] (RoIAlign of the GT mask; no threshold)


def project_masks(gt_masks: Tensor, boxes: Tensor, gt_index: Tensor, size: int) -> Tensor:
    """Chapter 7. Crop each box's GT mask and resample it to ``size`` x ``size``: ``Tensor[Q, M, M]``.

    RoIAlign on the full-resolution GT mask (``Tensor[G, H, W]``) with spatial scale 1,
    adaptive sampling and aligned=False, so border cells get fractional values: soft targets.
    torchvision ``roi_heads.project_masks_on_boxes``. Detectron2 instead rasterises or
    RoIAligns with aligned=True and thresholds at 0.5 (binary targets).
    """
    rois = torch.cat((gt_index.to(boxes)[:, None], boxes), dim=1)
    return roi_align(gt_masks[:, None].to(rois), rois, (size, size), 1.0)[:, 0]


def mask_targets(roi: RoiTargets, gt_masks: Tensor, size: int = 28) -> MaskTargets:
    """Chapter 7. Targets for the mask head: the positive sampled RoIs and their GT masks.

    Only positives train the mask head, each on its GT class's channel; the box is the
    proposal, not the refined box. torchvision ``RoIHeads.forward`` (``labels > 0``) and
    ``maskrcnn_loss``; Detectron2 ``select_foreground_proposals`` + ``mask_rcnn_loss``.
    """
    pos = torch.where(roi.sampled_labels > 0)[0]
    boxes = roi.sampled_boxes[pos]
    gt_index = roi.gt_index[roi.sampled_index[pos]]
    if pos.numel() == 0:
        masks = torch.zeros((0, size, size), dtype=boxes.dtype, device=boxes.device)
    else:
        masks = project_masks(gt_masks, boxes, gt_index, size)
    return MaskTargets(
        classification_index=pos, boxes=boxes, labels=roi.sampled_labels[pos], gt_index=gt_index, masks=masks
    )
