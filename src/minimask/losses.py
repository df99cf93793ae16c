"""Training losses: what each head is penalised for, given the targets of ``minimask.targets``.

- ``rpn_losses`` (chapter 3): objectness BCE over the sampled anchors, smooth-L1 on the
  positives' deltas. torchvision ``RegionProposalNetwork.compute_loss``.
- ``roi_losses`` (chapter 5): cross-entropy over K+1 classes, smooth-L1 on each positive's
  GT-class deltas. torchvision ``roi_heads.fastrcnn_loss``.
- ``mask_loss`` (chapter 7): per-pixel BCE on the GT class's 28x28 channel. torchvision
  ``roi_heads.maskrcnn_loss``.
- ``training_losses`` (chapter 9): the whole model's train-mode forward, returning torchvision's
  loss dict (``loss_objectness``, ``loss_rpn_box_reg``, ``loss_classifier``, ``loss_box_reg``,
  ``loss_mask``).

Every loss is a plain function of predictions and target records; arithmetic and reduction
order mirror torchvision so the numbers agree to float rounding. Detectron2 differs in the
RPN's normaliser (sum / (256 x images)) and uses beta = 0 (pure L1): Detectron2 ``proposal_generator/rpn.py`` ``RPN.losses``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minimask.config import Config
from minimask.targets import MaskTargets, RoiTargets, RpnTargets, drop_crowd, mask_targets, roi_targets, rpn_targets

if TYPE_CHECKING:  # records of earlier chapters, named in TrainingStep's fields
    from minimask.longlist import Longlist
    from minimask.objectness import Objectness
    from minimask.transform import Batch


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
    ``MaskTargets`` order. Only the channel of the matched GT's class is trained (no
    competition between classes); mean over Q x M x M. No positives: 0, still connected to
    the graph. torchvision ``roi_heads.maskrcnn_loss``; Detectron2 ``mask_rcnn_loss``.
    """
    mask_logits = _cat(mask_logits)
    labels = torch.cat([t.labels for t in targets])
    masks = torch.cat([t.masks for t in targets])
    if masks.numel() == 0:
        return mask_logits.sum() * 0
    rows = torch.arange(labels.shape[0], device=labels.device)
    return F.binary_cross_entropy_with_logits(mask_logits[rows, labels], masks)


# --- whole model ----------------------------------------------------------------------------------
LOSS_NAMES = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")


def check_targets(images: Sequence[Tensor], targets: Any, cfg: Config) -> list[dict[str, Tensor]]:
    """Chapter 9. Validate training targets; return copies with int64 labels on the images' device.

    Each target is a dict with ``boxes`` float ``Tensor[B, 4]`` (x1, y1, x2, y2 pixels of the
    original image, x2 > x1 and y2 > y1), ``labels`` integer ``Tensor[B]`` in 1..num_classes-1
    (0 is background), ``masks`` ``Tensor[B, H, W]`` (the image's H, W; 0/1 or bool) and
    optionally ``iscrowd`` ``Tensor[B]``. Errors name the image, key and object index.
    torchvision checks less, and partly by ``assert`` (``GeneralizedRCNN.forward``: boxes shape
    and degenerate boxes; ``RoIHeads.forward``: dtypes); out-of-range labels there fail later
    with an index error or a CUDA assert.
    """
    if not isinstance(targets, (list, tuple)):
        raise TypeError(f"targets must be a list of dicts (one per image), got {type(targets).__name__}")
    if len(targets) != len(images):
        raise ValueError(f"got {len(targets)} targets for {len(images)} images")
    out = []
    for i, (image, t) in enumerate(zip(images, targets, strict=True)):
        where = f"targets[{i}]"
        if not isinstance(t, dict):
            raise TypeError(f"{where} must be a dict, got {type(t).__name__}")
        for key in ("boxes", "labels", "masks"):
            if key not in t:
                raise ValueError(f"{where} has no '{key}' (Mask R-CNN needs boxes, labels and masks)")
            if not isinstance(t[key], Tensor):
                raise TypeError(f"{where}['{key}'] must be a Tensor, got {type(t[key]).__name__}")
        boxes, labels, masks = t["boxes"], t["labels"], t["masks"]
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(f"{where}['boxes'] must have shape [B, 4], got {list(boxes.shape)}")
        if not boxes.is_floating_point():
            raise TypeError(f"{where}['boxes'] must be a float tensor, got {boxes.dtype}")
        b = boxes.shape[0]
        bad = ~torch.isfinite(boxes).all(dim=1)
        if bad.any():
            j = int(torch.where(bad)[0][0])
            raise ValueError(f"{where}['boxes'][{j}] = {boxes[j].tolist()} is not finite")
        bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if bad.any():
            j = int(torch.where(bad)[0][0])
            raise ValueError(
                f"{where}['boxes'][{j}] = {boxes[j].tolist()} is degenerate: boxes are (x1, y1, x2, y2) "
                "with x2 > x1 and y2 > y1"
            )
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise TypeError(f"{where}['labels'] must be an integer tensor, got {labels.dtype}")
        if labels.shape != (b,):
            raise ValueError(f"{where}['labels'] must have shape [{b}] (one per box), got {list(labels.shape)}")
        bad = (labels < 1) | (labels >= cfg.num_classes)
        if bad.any():
            j = int(torch.where(bad)[0][0])
            raise ValueError(
                f"{where}['labels'][{j}] = {int(labels[j])} is out of range: must be in 1..{cfg.num_classes - 1} "
                f"(0 is background; cfg.num_classes = {cfg.num_classes} includes it)"
            )
        h, w = image.shape[-2:]
        if masks.shape != (b, h, w):
            raise ValueError(
                f"{where}['masks'] must have shape [{b}, {h}, {w}] (one mask per box, image size), "
                f"got {list(masks.shape)}"
            )
        if "iscrowd" in t and (not isinstance(t["iscrowd"], Tensor) or t["iscrowd"].shape != (b,)):
            raise ValueError(f"{where}['iscrowd'] must be a Tensor of shape [{b}]")
        device = image.device
        checked = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in t.items()}
        checked["labels"] = labels.to(device=device, dtype=torch.int64)
        out.append(checked)
    return out


@dataclass(frozen=True)
class TrainingStep:
    """Chapter 9: one training forward, every target record kept for inspection."""

    losses: dict[str, Tensor]  # torchvision's five loss names -> () tensors
    batch: Batch  # the preprocessed images
    targets: list[dict[str, Tensor]]  # resized, crowd-free targets the heads were trained on
    crowd_dropped: list[Tensor]  # per image: rows of the input target removed as iscrowd
    objectness: list[Objectness]  # per image: RPN outputs on every anchor
    rpn: list[RpnTargets]  # per image: anchor verdicts, sampled anchors, box targets
    longlists: list[Longlist]  # per image: training proposals (post-NMS top-n train)
    roi: list[RoiTargets]  # per image: proposal verdicts, sampled RoIs, box targets
    masks: list[MaskTargets]  # per image: positive RoIs and their 28x28 targets
    rpn_loss: RpnLoss
    roi_loss: RoiLoss


def training_step(model: nn.Module, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]]) -> TrainingStep:
    """Chapter 9. One train-mode forward of ``minimask.MaskRCNN``: the five losses and their targets.

    1. Check images and targets; draw the training scale (see below); preprocess the images
       and resize each target with its image (boxes by ratio, masks nearest).
    2. Drop crowd objects (``targets.drop_crowd``).
    3. Backbone; RPN head on every anchor (``score_anchors``); RPN targets and losses.
    4. Training longlist (``rpn_post_nms_top_n_train`` proposals, not trained through).
    5. RoI targets (GT appended, sampled); box head on the sampled RoIs; box losses.
    6. Mask targets on the positive RoIs; mask head; mask loss.

    Same order of random draws as torchvision ``GeneralizedRCNN.forward`` in train mode:
    its transform draws a training min size per image (``torch_choice``, one uniform draw on
    the CPU generator, even with one size), then the RPN sampler, then the RoI sampler, all
    images in order. So with the same weights, targets and ``torch.manual_seed``, the
    losses equal torchvision's. Differences: ``iscrowd`` objects are dropped (torchvision's
    model ignores the key) and targets are validated with named errors.
    """
    from minimask import backbone, classification, longlist, objectness, transform
    from minimask.pooling import roi_pool

    cfg: Config = model.config
    # 1. inputs; torchvision draws torch.empty(1).uniform_(0, len(min_sizes)) per image: mirror the
    #    draw (we have one min size) so that the samplers below see the same random stream
    images = transform.check_images(images)
    if not images:
        raise ValueError("training needs at least one image (got an empty list)")
    targets = check_targets(images, targets, cfg)
    for _ in images:
        torch.empty(1).uniform_(0.0, 1.0)
    batch = transform.preprocess(images, cfg)
    resized = [
        transform.resize_target(t, from_size, to_size)
        for t, from_size, to_size in zip(targets, batch.original_sizes, batch.image_sizes, strict=True)
    ]
    # 2. crowd regions never become positives
    kept = [drop_crowd(t) for t in resized]
    targets_used = [t for t, _ in kept]
    # 3. features, RPN on every anchor, RPN targets and losses
    features = backbone.extract_features(model.backbone, batch)
    objs = objectness.score_anchors(model.rpn.head, features, batch, cfg)
    lls = longlist.select_longlists(objs, cfg, training=True)
    rpn_t = [rpn_targets(o.anchors, t["boxes"], cfg) for o, t in zip(objs, targets_used, strict=True)]
    rpn = rpn_losses([o.logits for o in objs], [o.deltas for o in objs], rpn_t, cfg)
    # 4-5. box head on the sampled RoIs (proposals detached, as torchvision)
    roi_t = [
        roi_targets(ll.boxes.detach(), t["boxes"], t["labels"], cfg) for ll, t in zip(lls, targets_used, strict=True)
    ]
    heads = model.roi_heads
    cls = classification.classify(
        heads.box_head, heads.box_predictor, features.maps, [r.sampled_boxes for r in roi_t], batch.image_sizes, cfg
    )
    roi = roi_losses([c.logits for c in cls], [c.deltas for c in cls], roi_t, cfg)
    # 6. mask head on the positive RoIs (proposal boxes, not refined), trained on each GT class's
    #    channel; the target side is the logits' side (28 = 2 x 14 after the deconvolution)
    positive_boxes = [r.sampled_boxes[r.sampled_labels > 0] for r in roi_t]
    pooled = roi_pool(
        features.maps, positive_boxes, batch.image_sizes, cfg.mask_roi_output_size, cfg.mask_roi_sampling_ratio, cfg
    )
    mask_logits = heads.mask_predictor(heads.mask_head(pooled.features))
    mask_t = [mask_targets(r, t["masks"], mask_logits.shape[-1]) for r, t in zip(roi_t, targets_used, strict=True)]
    loss_mask = mask_loss(mask_logits, mask_t)
    losses = {
        "loss_objectness": rpn.objectness,
        "loss_rpn_box_reg": rpn.box_reg,
        "loss_classifier": roi.classifier,
        "loss_box_reg": roi.box_reg,
        "loss_mask": loss_mask,
    }
    return TrainingStep(
        losses=losses,
        batch=batch,
        targets=targets_used,
        crowd_dropped=[d for _, d in kept],
        objectness=objs,
        rpn=rpn_t,
        longlists=lls,
        roi=roi_t,
        masks=mask_t,
        rpn_loss=rpn,
        roi_loss=roi,
    )


def training_losses(
    model: nn.Module, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]]
) -> dict[str, Tensor]:
    """Chapter 9. torchvision's train-mode contract: ``model(images, targets) -> dict of losses``.

    Keys ``loss_objectness``, ``loss_rpn_box_reg``, ``loss_classifier``, ``loss_box_reg``,
    ``loss_mask`` (all weights 1; sum them to train). See ``training_step`` for the records.
    """
    return training_step(model, images, targets).losses
