"""Chapter 11. The bridge to torchvision: the same weights both ways, and the same decisions.

- ``torchvision_model(cfg)``: torchvision's ``MaskRCNN`` built from a ``Config`` (our
  backbone, torchvision's heads, every threshold passed as torchvision's keyword).
- ``from_torchvision(model_or_state_dict, cfg=None)``: our ``MaskRCNN`` with its weights;
  given a model, also its thresholds and sizes, read into the ``Config``.
- ``to_torchvision(model)``: the other way.
- ``load_coco_weights()``: torchvision's COCO_V1 weights (a download; never called offline).

Loading refuses a state dict whose keys or shapes do not fit and names them
(``check_state_dict``, from ``minimask.weights``, which checks every file it loads the same
way); torchvision's ``load_state_dict`` error lists them too, but after building a model of
the wrong shape.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torchvision
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead as TorchvisionRPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import FrozenBatchNorm2d

from minimask.backbone import build_backbone
from minimask.config import Config
from minimask.model import MaskRCNN
from minimask.pooling import POOLED_MAPS
from minimask.weights import check_state_dict

# Values torchvision hard-codes: a Config that differs cannot be expressed as a torchvision model.
_HARD_CODED = {
    "roi_aligned": False,  # MultiScaleRoIAlign calls roi_align(aligned=False)
    "box_min_size": 1e-2,  # RoIHeads.postprocess_detections: remove_small_boxes(min_size=1e-2)
    "mask_paste": "torchvision",  # paste_masks_in_image
    "mask_paste_padding": 1,  # paste_masks_in_image(padding=1)
    "rpn_smooth_l1_beta": 1 / 9,  # RegionProposalNetwork.compute_loss
    "box_smooth_l1_beta": 1 / 9,  # fastrcnn_loss
}


# --- Config -> torchvision -----------------------------------------------------------------------
def torchvision_model(cfg: Config | None = None) -> TorchvisionMaskRCNN:
    """Chapter 11. torchvision ``MaskRCNN`` that decides exactly as ``MaskRCNN(cfg)`` would.

    Backbone from ``minimask.backbone.build_backbone`` (itself torchvision's
    ``BackboneWithFPN``); RPN head, pools, heads and predictors are torchvision's classes;
    thresholds and sizes are torchvision's keyword arguments; the RPN's minimum box side and
    both box coders are set on the built modules (torchvision has no keyword for them).
    Raises ``ValueError`` for a ``Config`` torchvision cannot express (e.g. ``roi_aligned``).
    """
    cfg = cfg if cfg is not None else Config()
    bad = [
        f"{name} = {getattr(cfg, name)!r} (torchvision: {value!r})"
        for name, value in _HARD_CODED.items()
        if getattr(cfg, name) != value
    ]
    if bad:
        raise ValueError("torchvision's MaskRCNN hard-codes these; cannot express " + "; ".join(bad))
    backbone = build_backbone(cfg)
    channels = backbone.out_channels
    per_level = len(cfg.anchor_sizes)
    names = list(POOLED_MAPS)
    pool_kw = {"canonical_scale": cfg.canonical_scale, "canonical_level": cfg.canonical_level}
    model = TorchvisionMaskRCNN(
        backbone,
        num_classes=None,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        image_mean=list(cfg.image_mean),
        image_std=list(cfg.image_std),
        rpn_anchor_generator=AnchorGenerator(cfg.anchor_sizes, (tuple(cfg.aspect_ratios),) * per_level),
        rpn_head=TorchvisionRPNHead(
            channels, len(cfg.anchor_sizes[0]) * len(cfg.aspect_ratios), conv_depth=cfg.rpn_head_conv_depth
        ),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_nms_thresh=cfg.rpn_nms_thresh,
        rpn_fg_iou_thresh=cfg.rpn_fg_iou_thresh,
        rpn_bg_iou_thresh=cfg.rpn_bg_iou_thresh,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        rpn_positive_fraction=cfg.rpn_positive_fraction,
        rpn_score_thresh=cfg.rpn_score_thresh,
        box_roi_pool=MultiScaleRoIAlign(names, cfg.box_roi_output_size, cfg.box_roi_sampling_ratio, **pool_kw),
        box_head=TwoMLPHead(channels * cfg.box_roi_output_size**2, cfg.box_head_dim),
        box_predictor=FastRCNNPredictor(cfg.box_head_dim, cfg.num_classes),
        box_score_thresh=cfg.box_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh,
        box_detections_per_img=cfg.box_detections_per_img,
        box_fg_iou_thresh=cfg.box_fg_iou_thresh,
        box_bg_iou_thresh=cfg.box_bg_iou_thresh,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_positive_fraction=cfg.box_positive_fraction,
        bbox_reg_weights=tuple(cfg.bbox_reg_weights),
        mask_roi_pool=MultiScaleRoIAlign(names, cfg.mask_roi_output_size, cfg.mask_roi_sampling_ratio, **pool_kw),
        mask_head=MaskRCNNHeads(channels, list(cfg.mask_head_layers), cfg.mask_head_dilation),
        mask_predictor=MaskRCNNPredictor(cfg.mask_head_layers[-1], cfg.mask_predictor_dim, cfg.num_classes),
        size_divisible=cfg.size_divisible,
    )
    # what torchvision hard-codes but stores on the modules
    model.rpn.min_size = cfg.rpn_min_size
    model.rpn.box_coder = BoxCoder(tuple(cfg.rpn_bbox_reg_weights), bbox_xform_clip=cfg.bbox_xform_clip)
    model.roi_heads.box_coder = BoxCoder(tuple(cfg.bbox_reg_weights), bbox_xform_clip=cfg.bbox_xform_clip)
    return model


# --- weights both ways ---------------------------------------------------------------------------
def _load(module: nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    check_state_dict(module, state_dict, source)
    module.load_state_dict(state_dict, strict=True)


def from_torchvision(model_or_state_dict: nn.Module | Mapping[str, Tensor], cfg: Config | None = None) -> MaskRCNN:
    """Chapter 11. Our ``MaskRCNN`` with a torchvision Mask R-CNN's weights (and settings).

    Given a torchvision ``MaskRCNN`` and no ``cfg``, its thresholds and sizes are read into
    the ``Config`` (``config_from_torchvision``), so the result decides exactly as it does.
    Given a bare state dict and no ``cfg``, the architecture is inferred from the tensor
    shapes (``config_from_state_dict``) and the thresholds are torchvision's defaults. A
    given ``cfg`` is used as it is. The result is in the source model's train/eval mode (eval
    for a state dict). Raises ``ValueError`` naming missing/unexpected keys or wrong shapes.
    """
    if isinstance(model_or_state_dict, nn.Module):
        state = model_or_state_dict.state_dict()
        if cfg is None:
            cfg = config_from_torchvision(model_or_state_dict)
        training = model_or_state_dict.training
    elif isinstance(model_or_state_dict, Mapping):
        state = model_or_state_dict
        if cfg is None:
            cfg = config_from_state_dict(state)
        training = False
    else:
        raise TypeError(
            f"from_torchvision: expected a torchvision MaskRCNN or a state dict, got {type(model_or_state_dict).__name__}"
        )
    ours = MaskRCNN(cfg)
    _load(ours, state, "torchvision state dict")
    return ours.train(training)


def to_torchvision(model: MaskRCNN) -> TorchvisionMaskRCNN:
    """Chapter 11. torchvision's ``MaskRCNN`` with our model's weights and ``config``."""
    if not isinstance(model, MaskRCNN):
        raise TypeError(f"to_torchvision: expected a minimask MaskRCNN, got {type(model).__name__}")
    tv = torchvision_model(model.config)
    _load(tv, model.state_dict(), "minimask state dict")
    return tv.train(model.training)


# --- reading a Config ----------------------------------------------------------------------------
def config_from_state_dict(state_dict: Mapping[str, Tensor], base: Config | None = None) -> Config:
    """Chapter 11. The architecture fields a state dict determines, over ``base`` (default Config()).

    Read from shapes: backbone kind ("resnet50" if the body has Bottleneck ``conv3``,
    "resnet18" if it has a ``conv1`` without, "small" if it has a ``stem``), the small
    backbone's widths, trainable or frozen BatchNorm (``num_batches_tracked`` present or not),
    FPN channels and norm, RPN conv depth, classes, box head width and RoI size, mask head
    layers and predictor width. Not in a state dict (left from ``base``): thresholds, sizes,
    anchors, FrozenBatchNorm eps, trainable layers, dilation.
    """
    base = base if base is not None else Config()
    sd = state_dict

    def need(key: str) -> Tensor:
        if key not in sd:
            raise ValueError(f"state dict has no {key!r}: not a torchvision Mask R-CNN with an FPN backbone")
        return sd[key]

    changes: dict[str, Any] = {}
    if "backbone.body.stem.0.weight" in sd:
        changes["backbone"] = "small"
        stem = [int(sd[k].shape[0]) for k in ("backbone.body.stem.0.weight", "backbone.body.stem.3.weight") if k in sd]
        changes["backbone_stem"] = tuple(stem)
        changes["backbone_widths"] = tuple(
            int(need(f"backbone.body.layer{i}.0.conv2.weight").shape[0]) for i in (1, 2, 3, 4)
        )
        bn = "backbone.body.stem.1"
    elif "backbone.body.layer1.0.conv3.weight" in sd:
        changes["backbone"] = "resnet50"
        bn = "backbone.body.bn1"
    elif "backbone.body.conv1.weight" in sd:
        changes["backbone"] = "resnet18"
        bn = "backbone.body.bn1"
    else:
        raise ValueError("state dict has no backbone.body.{stem,conv1}: not a ResNet/FPN Mask R-CNN")
    changes["backbone_norm"] = "batch" if f"{bn}.num_batches_tracked" in sd else "frozen"
    channels = int(need("backbone.fpn.inner_blocks.0.0.weight").shape[0])
    changes["fpn_out_channels"] = channels
    changes["fpn_norm"] = "backbone.fpn.inner_blocks.0.1.weight" in sd
    depth = 0
    while f"rpn.head.conv.{depth}.0.weight" in sd:
        depth += 1
    changes["rpn_head_conv_depth"] = max(depth, 1)
    changes["num_classes"] = int(need("roi_heads.box_predictor.cls_score.weight").shape[0])
    fc6 = need("roi_heads.box_head.fc6.weight")
    changes["box_head_dim"] = int(fc6.shape[0])
    side = math.isqrt(int(fc6.shape[1]) // channels)
    if side * side * channels != int(fc6.shape[1]):
        raise ValueError(f"roi_heads.box_head.fc6.weight takes {fc6.shape[1]} inputs: not {channels} x S x S")
    changes["box_roi_output_size"] = side
    layers = []
    while f"roi_heads.mask_head.{len(layers)}.0.weight" in sd:
        layers.append(int(sd[f"roi_heads.mask_head.{len(layers)}.0.weight"].shape[0]))
    if not layers:
        raise ValueError("state dict has no roi_heads.mask_head.0.0.weight: not a Mask R-CNN (masks missing)")
    changes["mask_head_layers"] = tuple(layers)
    changes["mask_predictor_dim"] = int(need("roi_heads.mask_predictor.conv5_mask.weight").shape[1])
    anchors = int(need("rpn.head.cls_logits.weight").shape[0])
    cfg = base.replace(**changes)
    if anchors != len(cfg.anchor_sizes[0]) * len(cfg.aspect_ratios):
        raise ValueError(
            f"rpn.head.cls_logits has {anchors} anchors per location but the Config gives "
            f"{len(cfg.anchor_sizes[0])} sizes x {len(cfg.aspect_ratios)} ratios: pass cfg= with the anchors"
        )
    return cfg


def config_from_torchvision(model: nn.Module) -> Config:
    """Chapter 11. A ``Config`` that makes ``MaskRCNN`` decide exactly as torchvision ``model``.

    Architecture from the state dict (``config_from_state_dict``), then every setting from
    the modules: transform (min/max size, mean, std, size_divisible), anchor generator, RPN
    (top-n, NMS, score threshold, min size, matcher, sampler, box coder), RoI heads (score,
    NMS, detections, matcher, sampler, box coder), both RoI pools (output size, sampling
    ratio, canonical scale/level), mask head dilation, FrozenBatchNorm eps and the number of
    trainable backbone stages. Raises ``ValueError`` for parts our model cannot express (a
    different head class, a multi-scale ``min_size``, pools over other maps).
    """
    if not isinstance(model, TorchvisionMaskRCNN):
        raise TypeError(f"config_from_torchvision: expected torchvision MaskRCNN, got {type(model).__name__}")
    t, rpn, roi = model.transform, model.rpn, model.roi_heads
    problems = []
    if not isinstance(roi.box_head, TwoMLPHead):
        problems.append(f"box_head is {type(roi.box_head).__name__}, not TwoMLPHead")
    if not isinstance(roi.mask_head, MaskRCNNHeads) or any(len(block) != 2 for block in roi.mask_head):
        problems.append("mask_head is not MaskRCNNHeads without normalisation")
    if getattr(t, "fixed_size", None) is not None:
        problems.append(f"transform.fixed_size = {t.fixed_size}")
    if len(t.min_size) != 1:
        problems.append(f"transform.min_size = {t.min_size} (one size only)")
    for name in ("box_roi_pool", "mask_roi_pool"):
        if list(getattr(roi, name).featmap_names) != list(POOLED_MAPS):
            problems.append(f"roi_heads.{name} pools {getattr(roi, name).featmap_names}, not {list(POOLED_MAPS)}")
    ratios = {tuple(float(r) for r in level) for level in rpn.anchor_generator.aspect_ratios}
    if len(ratios) != 1:
        problems.append(f"anchor aspect ratios differ between levels: {rpn.anchor_generator.aspect_ratios}")
    if problems:
        raise ValueError("cannot express this torchvision model as a minimask Config: " + "; ".join(problems))

    anchors = {
        "anchor_sizes": tuple(
            tuple(int(s) if float(s).is_integer() else float(s) for s in level) for level in rpn.anchor_generator.sizes
        ),
        "aspect_ratios": next(iter(ratios)),
    }
    base = config_from_state_dict(model.state_dict(), Config(**anchors))
    frozen = [m for m in model.backbone.body.modules() if isinstance(m, FrozenBatchNorm2d)]
    box_pool, mask_pool = roi.box_roi_pool, roi.mask_roi_pool
    values: dict[str, Any] = {
        "min_size": int(t.min_size[-1]),
        "max_size": int(t.max_size),
        "image_mean": tuple(float(v) for v in t.image_mean),
        "image_std": tuple(float(v) for v in t.image_std),
        "size_divisible": int(t.size_divisible),
        "frozen_bn_eps": float(frozen[0].eps) if frozen else base.frozen_bn_eps,
        "trainable_backbone_layers": _trainable_layers(model.backbone.body, base.backbone),
        "rpn_pre_nms_top_n_train": int(rpn._pre_nms_top_n["training"]),
        "rpn_pre_nms_top_n_test": int(rpn._pre_nms_top_n["testing"]),
        "rpn_post_nms_top_n_train": int(rpn._post_nms_top_n["training"]),
        "rpn_post_nms_top_n_test": int(rpn._post_nms_top_n["testing"]),
        "rpn_nms_thresh": float(rpn.nms_thresh),
        "rpn_score_thresh": float(rpn.score_thresh),
        "rpn_min_size": float(rpn.min_size),
        "rpn_fg_iou_thresh": float(rpn.proposal_matcher.high_threshold),
        "rpn_bg_iou_thresh": float(rpn.proposal_matcher.low_threshold),
        "rpn_batch_size_per_image": int(rpn.fg_bg_sampler.batch_size_per_image),
        "rpn_positive_fraction": float(rpn.fg_bg_sampler.positive_fraction),
        "rpn_bbox_reg_weights": tuple(float(w) for w in rpn.box_coder.weights),
        "bbox_xform_clip": float(roi.box_coder.bbox_xform_clip),
        "box_roi_output_size": int(box_pool.output_size[0]),
        "box_roi_sampling_ratio": int(box_pool.sampling_ratio),
        "canonical_scale": int(box_pool.canonical_scale),
        "canonical_level": int(box_pool.canonical_level),
        "box_fg_iou_thresh": float(roi.proposal_matcher.high_threshold),
        "box_bg_iou_thresh": float(roi.proposal_matcher.low_threshold),
        "box_batch_size_per_image": int(roi.fg_bg_sampler.batch_size_per_image),
        "box_positive_fraction": float(roi.fg_bg_sampler.positive_fraction),
        "bbox_reg_weights": tuple(float(w) for w in roi.box_coder.weights),
        "box_score_thresh": float(roi.score_thresh),
        "box_nms_thresh": float(roi.nms_thresh),
        "box_detections_per_img": int(roi.detections_per_img),
        "mask_roi_output_size": int(mask_pool.output_size[0]),
        "mask_roi_sampling_ratio": int(mask_pool.sampling_ratio),
        "mask_head_dilation": int(roi.mask_head[0][0].dilation[0]),
    }
    if (mask_pool.canonical_scale, mask_pool.canonical_level) != (box_pool.canonical_scale, box_pool.canonical_level):
        raise ValueError("cannot express this torchvision model: box and mask pools use different canonical levels")
    if float(rpn.box_coder.bbox_xform_clip) != float(roi.box_coder.bbox_xform_clip):
        raise ValueError("cannot express this torchvision model: RPN and RoI box coders clamp differently")
    return base.replace(**values)


def _trainable_layers(body: nn.Module, kind: str) -> int:
    """How many stages of ``body`` train, counted from the top as ``_resnet_fpn_extractor``."""
    stages = ["layer4", "layer3", "layer2", "layer1", "stem" if kind == "small" else "conv1"]
    count = 0
    for prefix in stages:
        params = [p for n, p in body.named_parameters() if n.startswith(prefix)]
        if not params or not any(p.requires_grad for p in params):
            break
        count += 1
    return count


# --- COCO weights (online only) ------------------------------------------------------------------
def coco_categories() -> list[str]:
    """The 91 names of torchvision's COCO_V1 labels (index = label; "__background__", "N/A"s)."""
    return list(torchvision.models.detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


def load_coco_weights(progress: bool = True) -> MaskRCNN:
    """Chapter 11. torchvision's COCO-trained ``maskrcnn_resnet50_fpn`` weights in our model.

    DOWNLOADS about 170 MB (``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``, cached by
    ``torch.hub``): for readers online; no test, chapter or command of this project calls it.
    As torchvision's builder with these weights: FrozenBatchNorm2d with eps 0.0
    (``overwrite_eps``), 3 trainable backbone stages. Returns the model in eval mode.
    """
    weights = torchvision.models.detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1
    cfg = Config(backbone_norm="frozen", frozen_bn_eps=0.0, trainable_backbone_layers=3)
    state = weights.get_state_dict(progress=progress, check_hash=True)
    state = OrderedDict((k, v) for k, v in state.items())
    model = from_torchvision(state, cfg)
    return model.eval()


__all__ = [
    "check_state_dict",
    "coco_categories",
    "config_from_state_dict",
    "config_from_torchvision",
    "from_torchvision",
    "load_coco_weights",
    "to_torchvision",
    "torchvision_model",
]
