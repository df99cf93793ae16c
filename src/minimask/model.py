"""Chapter 9. The whole model: every stage of the book, chained.

``MaskRCNN`` owns the learned parts (backbone, RPN head, box head and predictor, mask head
and predictor) under exactly torchvision's parameter names, so that
``ours.load_state_dict(torchvision_model.state_dict())`` works both ways. Its forward is
the chain of the chapters' stage functions, nothing else; every threshold and size is read
from ``model.config`` at each call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from minimask.anchors import anchors_per_location
from minimask.backbone import Features, build_backbone, conv_norm_layer, extract_features
from minimask.classification import BoxHead, BoxPredictor, Classification, classify
from minimask.coco import drop_crowd
from minimask.config import Config
from minimask.longlist import Longlist, select_longlist
from minimask.losses import LOSS_NAMES, RoiLoss, RpnLoss, mask_loss, roi_losses, rpn_losses
from minimask.objectness import Objectness, RPNHead, score_anchors
from minimask.scoring import Scores, score_parts
from minimask.segmentation import MaskHead, MaskPredictor, Segmentation, segment
from minimask.shortlist import Shortlist, select_shortlist
from minimask.targets import MaskTargets, RoiTargets, RpnTargets, mask_targets, roi_targets, rpn_targets
from minimask.transform import Batch, check_images, check_targets, preprocess, resize_target


@dataclass(frozen=True)
class Run:
    """Chapter 9. Every stage's record of one forward; the per-image fields are lists (one per image).

    A field the run did not make is None (never an empty list: ``[]`` is a batch of no images).
    Inference (``model.run(images)``): every field up to ``scores``; with ``until=stage``, the
    fields after that stage are None (``until="shortlist"``: no mask is computed); the training
    fields are None. Training (``model.run(images, targets)``): the longlist is the training
    one, ``classification`` holds the sampled RoIs, ``segmentation`` the positive RoIs,
    ``shortlist``, ``scores`` and ``config`` are None, and the target records and losses are
    filled in.
    """

    batch: Batch  # chapter 2: normalised, resized, padded images and their sizes
    features: Features  # chapter 2: the FPN maps
    objectness: list[Objectness]  # chapter 3: every anchor's logit, deltas and box
    longlist: list[Longlist]  # chapter 4: proposals, and every anchor's fate
    classification: list[Classification] | None  # chapter 5: K+1 probabilities and boxes per proposal (or RoI)
    shortlist: list[Shortlist] | None  # chapter 6: detections, and every candidate's fate (None: training)
    segmentation: list[Segmentation] | None  # chapter 7: 28x28 and pasted masks (None: run until the shortlist)
    scores: list[Scores] | None  # chapter 8: each detection's score and its parts (None: as shortlist, segmentation)
    # training only (None at inference)
    targets: list[dict[str, Tensor]] | None = None  # resized, crowd-free targets the heads learn from
    crowd_dropped: list[Tensor] | None = None  # per image: rows of the input target removed as iscrowd
    rpn_targets: list[RpnTargets] | None = None  # chapter 3: anchor matches, samples, box targets
    roi_targets: list[RoiTargets] | None = None  # chapter 5: RoI matches, samples, box targets
    mask_targets: list[MaskTargets] | None = None  # chapter 7: the positive RoIs' 28x28 targets
    rpn_loss: RpnLoss | None = None  # chapter 3
    roi_loss: RoiLoss | None = None  # chapter 5
    losses: dict[str, Tensor] | None = None  # torchvision's five loss names -> () tensors
    config: Config | None = None  # the config the run was made under (inference)

    @property
    def detections(self) -> list[dict[str, Tensor]]:
        """torchvision's eval output: per image ``boxes`` [D, 4] and ``masks`` [D, 1, H, W]
        in original-image pixels, ``labels`` [D] int64, ``scores`` [D] (no ``masks`` in a run
        made with ``until="shortlist"``)."""
        if self.losses is not None:
            raise ValueError("a training run (model.run(images, targets)) has losses, not detections")
        if self.shortlist is None:
            raise ValueError("this run stopped before the shortlist (model.run(images, until=...)): no detections")
        if self.segmentation is None:
            return [{"boxes": s.boxes_orig, "labels": s.labels, "scores": s.scores} for s in self.shortlist]
        return [
            {"boxes": m.boxes_orig, "labels": s.labels, "scores": s.scores, "masks": m.masks}
            for s, m in zip(self.shortlist, self.segmentation, strict=True)
        ]


UNTIL = (None, "longlist", "shortlist")  # where an inference run may stop (model.run, model.resume)


def _check_until(until: str | None, method: str) -> None:
    if until not in UNTIL:
        raise ValueError(f"model.{method}(until=...): expected None, 'longlist' or 'shortlist', got {until!r}")


class MaskRCNN(nn.Module):
    """Chapter 9. Mask R-CNN with torchvision's contract and parameter names.

    Eval mode: ``model(images) -> list[dict(boxes, labels, scores, masks)]`` for a list of
    ``Tensor[3, H, W]`` images (float in [0, 1], or uint8); ``masks`` are soft
    probabilities ``[D, 1, H, W]`` (threshold them at ``config.mask_threshold``).
    ``model.run(images)`` returns the ``Run`` of all stage records. Train mode:
    ``model(images, targets) -> dict`` of torchvision's five losses, which is
    ``model.run(images, targets).losses``.

    Submodules (and so state-dict keys) as torchvision ``MaskRCNN``: ``backbone`` (a
    ``BackboneWithFPN``), ``rpn.head``, ``roi_heads.box_head`` / ``box_predictor`` /
    ``mask_head`` / ``mask_predictor``. Differences: thresholds live in ``config`` (a frozen
    ``Config``; replace it to change them) instead of attributes spread over submodules; the
    eval forward runs without autograd (``torch.no_grad``); boxes and masks come with their
    lineage in ``run``.
    """

    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else Config()
        if not isinstance(cfg, Config):
            raise TypeError(f"MaskRCNN(config): expected a minimask.Config, got {type(cfg).__name__}")
        self.config = cfg
        self.backbone = build_backbone(cfg)
        channels = self.backbone.out_channels
        self.rpn = nn.ModuleDict({"head": RPNHead(channels, anchors_per_location(cfg), cfg.rpn_head_conv_depth)})
        pooled = channels * cfg.box_roi_output_size**2
        norm = conv_norm_layer(cfg)
        box_norm, mask_norm = (norm if cfg.box_head_norm else None), (norm if cfg.mask_head_norm else None)
        mask_channels = 1 if cfg.cls_agnostic_mask else cfg.num_classes
        self.roi_heads = nn.ModuleDict(
            {
                "box_head": BoxHead(pooled, cfg.box_head_dim, cfg.box_head_convs, channels, box_norm, cfg.box_head_fcs),
                "box_predictor": BoxPredictor(cfg.box_head_dim, cfg.num_classes, cfg.cls_agnostic_bbox_reg),
                "mask_head": MaskHead(channels, cfg.mask_head_layers, cfg.mask_head_dilation, mask_norm),
                "mask_predictor": MaskPredictor(cfg.mask_head_layers[-1], cfg.mask_predictor_dim, mask_channels),
            }
        )

    def forward(
        self, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None
    ) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        if self.training:
            if targets is None:
                raise ValueError("MaskRCNN in train mode needs targets: model(images, targets)")
            return self.run(images, targets).losses
        with torch.no_grad():
            return self.run(images).detections

    def run(
        self, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None, until: str | None = None
    ) -> Run:
        """Chapter 9. One forward, keeping every stage's record: the only chain of the model.

        Without targets: inference, as torchvision ``GeneralizedRCNN.forward`` in eval mode
        (gradients are not tracked). With targets: the training forward of train mode, with
        the target records and torchvision's five losses (gradients as the caller's mode).
        Either way whatever ``self.training`` says: the stages have no train/eval behaviour
        of their own (frozen batch norm, no dropout); targets decide which decisions run.
        ``until`` (inference only): stop after that stage, "longlist" (the RPN's proposals) or
        "shortlist" (the detections without masks, what a box evaluation needs); the records made
        are those of the full run.
        """
        _check_until(until, "run")
        if targets is None:
            with torch.no_grad():
                return self._chain(images, None, until)
        if until is not None:
            raise ValueError("model.run(images, targets, until=...): a training run has no shortlist to stop at")
        return self._chain(images, targets)

    def resume(self, run: Run, until: str | None = None) -> Run:
        """Chapter 10. The decisions from the longlist on, again, under ``self.config``, on ``run``'s
        features and anchor scores: no backbone or RPN head pass, so a sweep of thresholds costs the
        heads only. ``run``: an inference run (any ``until``); the config fields of chapters 1-3
        (input, backbone, anchors) must be those it was made under (ValueError naming them)."""
        if run.losses is not None or run.config is None:
            raise ValueError("model.resume(run): needs an inference run made by model.run(images)")
        changed = [
            f.name
            for f in fields(Config)
            if f.metadata["chapter"] <= 3 and getattr(run.config, f.name) != getattr(self.config, f.name)
        ]
        if changed:
            raise ValueError(
                f"model.resume(run): config fields {', '.join(changed)} differ from the run's; "
                "they change the features or anchors, so run the model again (model.run)"
            )
        _check_until(until, "resume")
        with torch.no_grad():
            return self._chain([], None, until, start=run)

    def segment_boxes(self, features, batch, boxes: list[Tensor], labels: list[Tensor], **kw) -> list[Segmentation]:
        """Chapter 7: the mask head on given boxes (resized-image pixels) and classes, one list per
        image of ``batch``; ``kw`` goes to ``segmentation.segment`` (``original_sizes``,
        ``detection_index``)."""
        heads = self.roi_heads
        return segment(
            heads.mask_head, heads.mask_predictor, features.maps, boxes, labels, batch.image_sizes, self.config, **kw
        )

    def _chain(
        self,
        images: Sequence[Tensor],
        targets: Sequence[dict[str, Tensor]] | None,
        until: str | None = None,
        start: Run | None = None,
    ) -> Run:
        """The chain of torchvision ``GeneralizedRCNN.forward``, one chapter per step (from
        ``start``'s features and anchor scores when given: ``resume``)."""
        cfg = self.config
        training = targets is not None
        images = check_images(images)
        if training:
            targets = _training_targets(images, targets, cfg)
        if start is not None:
            batch, features, objectness = start.batch, start.features, start.objectness
        else:
            batch = preprocess(images, cfg)  # chapter 2
            features = extract_features(self.backbone, batch)
            objectness = score_anchors(self.rpn.head, features, batch, cfg)  # chapter 3
        longlist = [select_longlist(o, cfg, training) for o in objectness]  # chapter 4
        if until == "longlist":
            return Run(batch, features, objectness, longlist, None, None, None, None, config=cfg)
        if training:
            return self._train_heads(batch, features, objectness, longlist, targets)
        return self._infer_heads(batch, features, objectness, longlist, until)

    def _infer_heads(
        self,
        batch: Batch,
        features: Features,
        objectness: list[Objectness],
        longlist: list[Longlist],
        until: str | None,
    ) -> Run:
        """Chapters 5-8 at inference: classify every proposal, shortlist, segment, score."""
        cfg, heads = self.config, self.roi_heads
        proposals = [ll.boxes for ll in longlist]
        classification = classify(  # chapter 5
            heads.box_head, heads.box_predictor, features.maps, proposals, batch.image_sizes, cfg
        )
        shortlist = [  # chapter 6 (original size: Detectron2 drops empty boxes there, chapter 11)
            select_shortlist(c, cfg, original_size=orig)
            for c, orig in zip(classification, batch.original_sizes, strict=True)
        ]
        if until == "shortlist":
            return Run(batch, features, objectness, longlist, classification, shortlist, None, None, config=cfg)
        segmentation = self.segment_boxes(  # chapter 7
            features,
            batch,
            [s.boxes for s in shortlist],
            [s.labels for s in shortlist],
            original_sizes=batch.original_sizes,
        )
        scores = [  # chapter 8
            score_parts(*parts, cfg) for parts in zip(longlist, classification, shortlist, segmentation, strict=True)
        ]
        return Run(batch, features, objectness, longlist, classification, shortlist, segmentation, scores, config=cfg)

    def _train_heads(
        self,
        batch: Batch,
        features: Features,
        objectness: list[Objectness],
        longlist: list[Longlist],
        targets: list[dict[str, Tensor]],
    ) -> Run:
        """Chapters 3, 5, 7 and 9 in training: the targets of each head, the heads on the sampled
        RoIs, and torchvision's five losses. The samplers draw in torchvision's order: every
        image's anchors, then every image's RoIs."""
        cfg, heads = self.config, self.roi_heads
        # training: targets resized with their images, crowd regions out (chapter 9)
        kept = [
            drop_crowd(resize_target(t, from_size, to_size))
            for t, from_size, to_size in zip(targets, batch.original_sizes, batch.image_sizes, strict=True)
        ]
        used = [t for t, _ in kept]
        # chapter 3: RPN targets (one draw of the sampler per image, in order) and losses
        rpn_t = [rpn_targets(o.anchors, t["boxes"], cfg) for o, t in zip(objectness, used, strict=True)]
        rpn_loss = rpn_losses([o.logits for o in objectness], [o.deltas for o in objectness], rpn_t, cfg)
        # chapter 5: RoI targets (GT appended, sampled); the box head on the sampled RoIs only
        roi_t = [
            roi_targets(ll.boxes.detach(), t["boxes"], t["labels"], cfg) for ll, t in zip(longlist, used, strict=True)
        ]
        classification = classify(
            heads.box_head,
            heads.box_predictor,
            features.maps,
            [r.sampled_boxes for r in roi_t],
            batch.image_sizes,
            cfg,
            proposal_index=[r.proposal_index[r.sampled_index] for r in roi_t],
        )
        roi_loss = roi_losses([c.logits for c in classification], [c.deltas for c in classification], roi_t, cfg)
        mask_t, segmentation = self._train_masks(features, batch, roi_t, used)
        losses = (rpn_loss.objectness, rpn_loss.box_reg, roi_loss.classifier, roi_loss.box_reg)
        losses += (mask_loss([s.logits for s in segmentation], mask_t),)
        return Run(
            batch,
            features,
            objectness,
            longlist,
            classification,
            shortlist=None,
            segmentation=segmentation,
            scores=None,
            targets=used,
            crowd_dropped=[d for _, d in kept],
            rpn_targets=rpn_t,
            roi_targets=roi_t,
            mask_targets=mask_t,
            rpn_loss=rpn_loss,
            roi_loss=roi_loss,
            losses=dict(zip(LOSS_NAMES, losses, strict=True)),
        )

    def _train_masks(
        self, features: Features, batch: Batch, roi_t: list[RoiTargets], used: list[dict[str, Tensor]]
    ) -> tuple[list[MaskTargets], list[Segmentation]]:
        """Chapter 7 in training: the mask head on the positive RoIs (proposal boxes, not refined),
        each read on its GT class's channel; the target side is the predictor's output side
        (2 x the RoIAlign)."""
        side = 2 * self.config.mask_roi_output_size
        mask_t = [mask_targets(r, t["masks"], side) for r, t in zip(roi_t, used, strict=True)]
        segmentation = self.segment_boxes(
            features,
            batch,
            [m.boxes for m in mask_t],
            [m.labels for m in mask_t],
            detection_index=[m.classification_index for m in mask_t],
        )
        return mask_t, segmentation


def _training_targets(
    images: list[Tensor], targets: Sequence[dict[str, Tensor]], cfg: Config
) -> list[dict[str, Tensor]]:
    """Chapter 9. The targets checked (``check_targets``), and torchvision's train-mode draw mirrored.

    torchvision's train-mode transform draws ``torch.empty(1).uniform_(0, len(min_sizes))`` per
    image (``torch_choice``); we have one min size but make the same draw, so that the samplers
    see the same random stream.
    """
    if not images:
        raise ValueError("training needs at least one image (got an empty list)")
    checked = check_targets(images, targets, cfg)
    for _ in images:
        torch.empty(1).uniform_(0.0, 1.0)
    return checked
