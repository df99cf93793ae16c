"""Chapter 9. The whole model: every stage of the book, chained.

``MaskRCNN`` owns the learned parts (backbone, RPN head, box head and predictor, mask head
and predictor) under exactly torchvision's parameter names, so that
``ours.load_state_dict(torchvision_model.state_dict())`` works both ways. Its forward is
the chain of the chapters' stage functions, nothing else; every threshold and size is read
from ``model.config`` at each call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from minimask.anchors import anchors_per_location
from minimask.backbone import Features, build_backbone, extract_features
from minimask.classification import BoxHead, BoxPredictor, Classification, classify
from minimask.config import Config
from minimask.longlist import Longlist, select_longlist
from minimask.objectness import Objectness, RPNHead, score_anchors
from minimask.scoring import Scores, score_parts
from minimask.segmentation import MaskHead, MaskPredictor, Segmentation, segment
from minimask.shortlist import Shortlist, select_shortlist
from minimask.transform import Batch, preprocess


@dataclass(frozen=True)
class Run:
    """Chapter 9. Every stage's record of one forward; the per-image fields are lists (one per image)."""

    batch: Batch  # chapter 2: normalised, resized, padded images and their sizes
    features: Features  # chapter 2: the FPN maps
    objectness: list[Objectness]  # chapter 3: every anchor's logit, deltas and box
    longlist: list[Longlist]  # chapter 4: proposals, dropped anchors and why
    classification: list[Classification]  # chapter 5: every proposal's K+1 probabilities and boxes
    shortlist: list[Shortlist]  # chapter 6: detections, dropped candidates and why
    segmentation: list[Segmentation]  # chapter 7: 28x28 and pasted masks
    scores: list[Scores]  # chapter 8: each detection's score and its parts

    @property
    def detections(self) -> list[dict[str, Tensor]]:
        """torchvision's eval output: per image ``boxes`` [D, 4] and ``masks`` [D, 1, H, W]
        in original-image pixels, ``labels`` [D] int64, ``scores`` [D]."""
        return [
            {"boxes": m.boxes_orig, "labels": s.labels, "scores": s.scores, "masks": m.masks}
            for s, m in zip(self.shortlist, self.segmentation, strict=True)
        ]


class MaskRCNN(nn.Module):
    """Chapter 9. Mask R-CNN with torchvision's contract and parameter names.

    Eval mode: ``model(images) -> list[dict(boxes, labels, scores, masks)]`` for a list of
    ``Tensor[3, H, W]`` images (float in [0, 1], or uint8); ``masks`` are soft
    probabilities ``[D, 1, H, W]`` (threshold them at ``config.mask_threshold``).
    ``model.run(images)`` returns the ``Run`` of all stage records. Train mode:
    ``model(images, targets) -> dict`` of torchvision's five losses
    (``minimask.losses.training_losses``).

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
        self.roi_heads = nn.ModuleDict(
            {
                "box_head": BoxHead(pooled, cfg.box_head_dim),
                "box_predictor": BoxPredictor(cfg.box_head_dim, cfg.num_classes),
                "mask_head": MaskHead(channels, cfg.mask_head_layers, cfg.mask_head_dilation),
                "mask_predictor": MaskPredictor(cfg.mask_head_layers[-1], cfg.mask_predictor_dim, cfg.num_classes),
            }
        )

    def forward(
        self, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None
    ) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        if self.training:
            if targets is None:
                raise ValueError("MaskRCNN in train mode needs targets: model(images, targets)")
            from minimask.losses import training_losses  # chapter 9's training code, loaded on use

            return training_losses(self, images, targets)
        return self.run(images).detections

    @torch.no_grad()
    def run(self, images: Sequence[Tensor]) -> Run:
        """Chapter 9. One inference forward, keeping every stage's record.

        The chain of torchvision ``GeneralizedRCNN.forward`` (eval), one chapter per line.
        """
        cfg = self.config
        batch = preprocess(list(images), cfg)
        features = extract_features(self.backbone, batch)
        objectness = score_anchors(self.rpn.head, features, batch, cfg)
        longlist = [select_longlist(o, size, cfg) for o, size in zip(objectness, batch.image_sizes, strict=True)]
        heads = self.roi_heads
        proposals = [ll.boxes for ll in longlist]
        classification = classify(heads.box_head, heads.box_predictor, features.maps, proposals, batch.image_sizes, cfg)
        shortlist = [select_shortlist(c, size, cfg) for c, size in zip(classification, batch.image_sizes, strict=True)]
        segmentation = segment(
            heads.mask_head,
            heads.mask_predictor,
            features.maps,
            shortlist,
            batch.image_sizes,
            batch.original_sizes,
            cfg,
        )
        scores = [
            score_parts(*parts, cfg) for parts in zip(longlist, classification, shortlist, segmentation, strict=True)
        ]
        return Run(batch, features, objectness, longlist, classification, shortlist, segmentation, scores)
