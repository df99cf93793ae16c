"""Test helpers for chapters 2-4: torchvision's RPN built from a Config, and small inputs.

torchvision is the oracle: these helpers only assemble torchvision's own pieces
(``GeneralizedRCNNTransform``, ``AnchorGenerator``, ``RPNHead``, ``RegionProposalNetwork``,
``FasterRCNN``) with the numbers of a ``minimask.Config``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from minimask.anchors import anchor_coordinates, anchors_per_location, level_strides, make_anchors
from minimask.boxes import decode
from minimask.config import Config
from minimask.objectness import Objectness


def tv_anchor_generator(cfg: Config) -> AnchorGenerator:
    return AnchorGenerator(cfg.anchor_sizes, (cfg.aspect_ratios,) * len(cfg.anchor_sizes))


def tv_transform(cfg: Config) -> GeneralizedRCNNTransform:
    return GeneralizedRCNNTransform(
        cfg.min_size, cfg.max_size, list(cfg.image_mean), list(cfg.image_std), size_divisible=cfg.size_divisible
    ).eval()


def tv_rpn(cfg: Config, head: nn.Module | None = None) -> RegionProposalNetwork:
    """torchvision ``RegionProposalNetwork`` with every number taken from ``cfg``."""
    if head is None:
        head = RPNHead(cfg.fpn_out_channels, anchors_per_location(cfg), conv_depth=cfg.rpn_head_conv_depth)
    rpn = RegionProposalNetwork(
        tv_anchor_generator(cfg),
        head,
        cfg.rpn_fg_iou_thresh,
        cfg.rpn_bg_iou_thresh,
        cfg.rpn_batch_size_per_image,
        cfg.rpn_positive_fraction,
        {"training": cfg.rpn_pre_nms_top_n_train, "testing": cfg.rpn_pre_nms_top_n_test},
        {"training": cfg.rpn_post_nms_top_n_train, "testing": cfg.rpn_post_nms_top_n_test},
        cfg.rpn_nms_thresh,
        score_thresh=cfg.rpn_score_thresh,
    )
    rpn.min_size = cfg.rpn_min_size  # hard-coded 1e-3 in torchvision
    return rpn.eval()


def tv_faster_rcnn(cfg: Config, backbone: nn.Module) -> FasterRCNN:
    """torchvision ``FasterRCNN`` around ``backbone`` with cfg's transform, anchors and RPN numbers."""
    model = FasterRCNN(
        backbone,
        num_classes=cfg.num_classes,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        image_mean=list(cfg.image_mean),
        image_std=list(cfg.image_std),
        size_divisible=cfg.size_divisible,
        rpn_anchor_generator=tv_anchor_generator(cfg),
        rpn_head=RPNHead(backbone.out_channels, anchors_per_location(cfg), conv_depth=cfg.rpn_head_conv_depth),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_nms_thresh=cfg.rpn_nms_thresh,
        rpn_score_thresh=cfg.rpn_score_thresh,
    )
    model.rpn.min_size = cfg.rpn_min_size
    return model.eval()


@torch.no_grad()
def spread_rpn_head(head: nn.Module, maps: list[Tensor], seed: int, logit_std: float = 3.0, delta_std: float = 0.3):
    """Redraw an RPN head's weights (fixed seed) so that, on ``maps``, logits have std ~``logit_std``
    and deltas std ~``delta_std``: random-init heads give near-tied logits, which would make
    a top-k comparison hinge on tie-breaking rather than on the arithmetic under test."""
    g = torch.Generator().manual_seed(seed)
    for p in head.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * 0.01)
    logits, deltas = head(maps)
    head.cls_logits.weight.mul_(logit_std / torch.cat([t.flatten() for t in logits]).std())
    head.bbox_pred.weight.mul_(delta_std / torch.cat([t.flatten() for t in deltas]).std())
    head.cls_logits.bias.zero_()
    head.bbox_pred.bias.zero_()


def synthetic_objectness(
    g: torch.Generator,
    shapes: list[tuple[int, int]],
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    cfg: Config,
    delta_std: float,
) -> Objectness:
    """An ``Objectness`` record with real anchors and random logits/deltas (for longlist properties)."""
    a_cell = anchors_per_location(cfg)
    anchors = torch.cat(make_anchors(padded_size, shapes, cfg))
    n = len(anchors)
    logits = torch.randn(n, generator=g) * 3
    deltas = torch.randn(n, 4, generator=g) * delta_std
    anchor_level, y, x, cell = anchor_coordinates(shapes, a_cell)
    return Objectness(
        anchors=anchors,
        logits=logits,
        deltas=deltas,
        proposals=decode(deltas, anchors, cfg.rpn_bbox_reg_weights, cfg.bbox_xform_clip),
        anchor_level=anchor_level,
        y=y,
        x=x,
        anchor_in_cell=cell,
        num_per_level=[h * w * a_cell for h, w in shapes],
        grid_sizes=list(shapes),
        strides=level_strides(padded_size, shapes),
        anchors_per_location=a_cell,
        image_size=image_size,
    )


def reference_nms(boxes: Tensor, scores: Tensor, thresh: float) -> tuple[list[int], dict[int, int]]:
    """Plain greedy NMS, one box at a time (torchvision test_ops ``_reference_nms``'s algorithm),
    also returning who suppressed whom: (kept indices best first, {removed: suppressor})."""
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    kept: list[int] = []
    by: dict[int, int] = {}
    x1, y1, x2, y2 = boxes.double().unbind(1)
    area = (x2 - x1) * (y2 - y1)
    for i in order:
        for k in kept:
            w = (torch.min(x2[i], x2[k]) - torch.max(x1[i], x1[k])).clamp(min=0)
            h = (torch.min(y2[i], y2[k]) - torch.max(y1[i], y1[k])).clamp(min=0)
            inter = w * h
            if inter / (area[i] + area[k] - inter) > thresh:
                by[i] = k
                break
        else:
            kept.append(i)
    return kept, by
