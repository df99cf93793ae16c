"""Training losses: what each head is penalised for, given the targets of ``minimask.targets``.

- ``rpn_losses`` (chapter 3): objectness BCE over the sampled anchors, smooth-L1 on the
  positives' deltas. torchvision ``RegionProposalNetwork.compute_loss``.
- ``roi_losses`` (chapter 5): cross-entropy over K+1 classes, smooth-L1 on each positive's
  GT-class deltas. torchvision ``roi_heads.fastrcnn_loss``.
- ``mask_loss`` (chapter 7): per-pixel BCE on the GT class's 28x28 channel. torchvision
  ``roi_heads.maskrcnn_loss``.
- ``LOSS_NAMES``: torchvision's loss dict keys, filled by ``MaskRCNN.run(images, targets)``
  (chapter 9), the one chain that runs inference and training.

Every loss is a plain function of predictions and target records; arithmetic and reduction
order mirror torchvision so the numbers agree to float rounding. Detectron2 differs in the
RPN's normaliser (sum / (256 x images)) and uses beta = 0 (pure L1): Detectron2 ``proposal_generator/rpn.py`` ``RPN.losses``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from minimask.config import Config
from minimask.targets import MaskTargets, RoiTargets, RpnTargets


def _cat(x: Tensor | Sequence[Tensor]) -> Tensor:
    return x if isinstance(x, Tensor) else torch.cat(list(x), dim=0)


# --- RPN ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RpnLoss:
    """Chapter 3: the two RPN losses of a batch and what they were averaged over."""

    objectness: Tensor  # () BCE with logits, mean over sampled anchors (torchvision loss_objectness)
    box_reg: Tensor  # () smooth-L1 summed over sampled positives / number sampled (loss_rpn_box_reg)
    num_sampled: int  # anchors in the loss, all images
    num_positive: int  # of which positive


def rpn_losses(
    logits: Tensor | Sequence[Tensor],
    deltas: Tensor | Sequence[Tensor],
    targets: Sequence[RpnTargets],
    cfg: Config,
) -> RpnLoss:
    """Chapter 3. How wrong the RPN is on the sampled anchors of every image.

    ``logits``: ``Tensor[A]`` per image (or all images concatenated); ``deltas``: ``Tensor[A, 4]``
    per image; ``targets``: one ``RpnTargets`` per image, in the same anchor order.
    Objectness: binary cross-entropy, mean over the sampled anchors of all images. Boxes:
    smooth-L1 with beta ``cfg.rpn_smooth_l1_beta`` summed over the sampled positives, divided
    by the number of sampled anchors (positives and negatives).

    torchvision ``RegionProposalNetwork.compute_loss`` (same indexing: positives of all images,
    then negatives). Detectron2 ``RPN.losses`` divides both sums by 256 x images and uses L1.
    """
    pos = torch.where(torch.cat([t.sample.positive_mask for t in targets]))[0]
    neg = torch.where(torch.cat([t.sample.negative_mask for t in targets]))[0]
    sampled = torch.cat((pos, neg))
    logits, deltas = _cat(logits).flatten(), _cat(deltas).reshape(-1, 4)
    labels = torch.cat([t.match.label for t in targets]).to(logits.dtype)
    box_targets = torch.cat([t.box_targets for t in targets])
    box_reg = F.smooth_l1_loss(deltas[pos], box_targets[pos], beta=cfg.rpn_smooth_l1_beta, reduction="sum")
    box_reg = box_reg / sampled.numel()
    objectness = F.binary_cross_entropy_with_logits(logits[sampled], labels[sampled])
    return RpnLoss(objectness=objectness, box_reg=box_reg, num_sampled=sampled.numel(), num_positive=pos.numel())


# --- box head -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoiLoss:
    """Chapter 5: the box head's two losses and what they were averaged over."""

    classifier: Tensor  # () cross-entropy over K+1 classes, mean over sampled RoIs (loss_classifier)
    box_reg: Tensor  # () smooth-L1 on positives' GT-class deltas, sum / number sampled (loss_box_reg)
    num_sampled: int
    num_positive: int


def roi_losses(
    class_logits: Tensor | Sequence[Tensor],
    box_deltas: Tensor | Sequence[Tensor],
    targets: Sequence[RoiTargets],
    cfg: Config,
) -> RoiLoss:
    """Chapter 5. How wrong the box head is on the sampled RoIs.

    ``class_logits``: ``Tensor[S, K+1]`` (all images' sampled RoIs concatenated, in
    ``RoiTargets.sampled_index`` order, or a list per image); ``box_deltas``:
    ``Tensor[S, (K+1)*4]`` class-specific deltas. Classification: cross-entropy, mean over
    the sampled RoIs. Boxes: smooth-L1 (beta ``cfg.box_smooth_l1_beta``) on each positive's
    deltas for its GT class only, summed, divided by the number of sampled RoIs (not of
    positives): background RoIs dilute the box loss.

    torchvision ``roi_heads.fastrcnn_loss``; Detectron2 ``FastRCNNOutputLayers.losses``
    (same normaliser, L1).
    """
    class_logits, box_deltas = _cat(class_logits), _cat(box_deltas)
    labels = torch.cat([t.sampled_labels for t in targets])
    box_targets = torch.cat([t.box_targets for t in targets])
    classifier = F.cross_entropy(class_logits, labels)
    pos = torch.where(labels > 0)[0]
    per_class = box_deltas.reshape(class_logits.shape[0], -1, 4)  # (S, K+1, 4)
    box_reg = F.smooth_l1_loss(
        per_class[pos, labels[pos]], box_targets[pos], beta=cfg.box_smooth_l1_beta, reduction="sum"
    )
    box_reg = box_reg / labels.numel()
    return RoiLoss(classifier=classifier, box_reg=box_reg, num_sampled=labels.numel(), num_positive=pos.numel())


# --- mask head ------------------------------------------------------------------------------------
def mask_loss(mask_logits: Tensor | Sequence[Tensor], targets: Sequence[MaskTargets]) -> Tensor:
    """Chapter 7. Per-pixel BCE between each positive RoI's GT-class logits and its soft target.

    ``mask_logits``: ``Tensor[Q, K+1, M, M]`` for the positive RoIs of all images, in
    ``MaskTargets`` order, or ``Tensor[Q, M, M]`` already reduced to each GT class's channel
    (``Segmentation.logits`` of a training run). Only the channel of the matched GT's class is trained (no
    competition between classes); mean over Q x M x M. No positives: 0, still connected to
    the graph. torchvision ``roi_heads.maskrcnn_loss``; Detectron2 ``mask_rcnn_loss``.
    """
    mask_logits = _cat(mask_logits)
    labels = torch.cat([t.labels for t in targets])
    masks = torch.cat([t.masks for t in targets])
    if masks.numel() == 0:
        return mask_logits.sum() * 0
    if mask_logits.dim() == 4:
        mask_logits = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(mask_logits, masks)


# --- whole model ----------------------------------------------------------------------------------
LOSS_NAMES = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")
