"""Chapter 11. The bridge to torchvision: the same weights both ways, and the same decisions.

- ``torchvision_model(cfg)``: torchvision's ``MaskRCNN`` built from a ``Config`` (our
  backbone, torchvision's heads, every threshold passed as torchvision's keyword).
- ``from_torchvision(model_or_state_dict, cfg=None)``: our ``MaskRCNN`` with its weights;
  given a model, also its thresholds and sizes, read into the ``Config``.
- ``to_torchvision(model)``: the other way.
- ``load_coco_weights()``: torchvision's COCO_V1 weights (a download; never called offline).
- ``from_detectron2(checkpoint, config=None)`` / ``to_detectron2(model)``: Detectron2's
  ``model_final.pth`` or model zoo ``.pkl`` (read without running code) and its
  ``config.yaml`` into our model set to Detectron2's rules (``Config.detectron2_r50()``), and
  back; ``detectron2_rules(cfg, *rules)``: any model under Detectron2's rules, all or one by
  one (``DETECTRON2_RULES``), to measure what each changes (``agreement``, ``match_boxes``).

Loading refuses a state dict whose keys or shapes do not fit and names them
(``check_state_dict``, from ``minimask.weights``, which checks every file it loads the same
way); torchvision's ``load_state_dict`` error lists them too, but after building a model of
the wrong shape.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
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
from minimask.weights import check_state_dict, fit_problems

# Values torchvision hard-codes: a Config that differs cannot be expressed as a torchvision model.
_HARD_CODED = {
    "roi_aligned": False,  # MultiScaleRoIAlign calls roi_align(aligned=False)
    "box_min_size": 1e-2,  # RoIHeads.postprocess_detections: remove_small_boxes(min_size=1e-2)
    "mask_paste": "torchvision",  # paste_masks_in_image
    "mask_paste_padding": 1,  # paste_masks_in_image(padding=1)
    "paste_pixel_centre": "roi_align",  # no sub-pixel paste (mask_paste is "torchvision")
    "rpn_smooth_l1_beta": 1 / 9,  # RegionProposalNetwork.compute_loss
    "box_smooth_l1_beta": 1 / 9,  # fastrcnn_loss
    # the rules Detectron2 decides by (chapter 11): torchvision has no switch for any of them
    "input_channels": "RGB",
    "input_scale": 1.0,
    "frozen_bn_arithmetic": "scale_shift",
    "normalize_before_resize": True,
    "resize_rounding": "floor",
    "resize_interpolation": "bilinear",
    "resnet_stride_in_1x1": False,
    "round_cell_anchors": True,
    "anchor_strides": "from_sizes",
    "anchor_offset": 0.0,
    "rpn_min_size_inclusive": True,
    "rpn_nms_score": "probability",
    "level_eps_placement": "after_log",
    "small_box_removal": "before_nms",
    "background_class": "first",
    "clip_to_original": False,
    "binary_masks": False,
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
    _check_hard_coded(cfg)
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


def _check_hard_coded(cfg: Config) -> None:
    """``ValueError`` naming every field of ``cfg`` whose value torchvision's MaskRCNN cannot take."""
    bad = [
        f"{name} = {getattr(cfg, name)!r} (torchvision: {value!r})"
        for name, value in _HARD_CODED.items()
        if getattr(cfg, name) != value
    ]
    if bad:
        raise ValueError("torchvision's MaskRCNN hard-codes these; cannot express " + "; ".join(bad))


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
    changes = _backbone_fields(sd)
    channels = int(_need(sd, "backbone.fpn.inner_blocks.0.0.weight").shape[0])
    changes["fpn_out_channels"] = channels
    changes["fpn_norm"] = "backbone.fpn.inner_blocks.0.1.weight" in sd
    depth = 0
    while f"rpn.head.conv.{depth}.0.weight" in sd:
        depth += 1
    changes["rpn_head_conv_depth"] = max(depth, 1)
    changes["num_classes"] = int(_need(sd, "roi_heads.box_predictor.cls_score.weight").shape[0])
    fc6 = _need(sd, "roi_heads.box_head.fc6.weight")
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
    changes["mask_predictor_dim"] = int(_need(sd, "roi_heads.mask_predictor.conv5_mask.weight").shape[1])
    anchors = int(_need(sd, "rpn.head.cls_logits.weight").shape[0])
    cfg = base.replace(**changes)
    if anchors != len(cfg.anchor_sizes[0]) * len(cfg.aspect_ratios):
        raise ValueError(
            f"rpn.head.cls_logits has {anchors} anchors per location but the Config gives "
            f"{len(cfg.anchor_sizes[0])} sizes x {len(cfg.aspect_ratios)} ratios: pass cfg= with the anchors"
        )
    return cfg


def _need(sd: Mapping[str, Tensor], key: str) -> Tensor:
    """``sd[key]``, or a ``ValueError`` saying the state dict is not a Mask R-CNN's."""
    if key not in sd:
        raise ValueError(f"state dict has no {key!r}: not a torchvision Mask R-CNN with an FPN backbone")
    return sd[key]


def _backbone_fields(sd: Mapping[str, Tensor]) -> dict[str, Any]:
    """The backbone kind (and the small backbone's widths) and its norm, read from a state dict."""
    changes: dict[str, Any] = {}
    if "backbone.body.stem.0.weight" in sd:
        changes["backbone"] = "small"
        stem = [int(sd[k].shape[0]) for k in ("backbone.body.stem.0.weight", "backbone.body.stem.3.weight") if k in sd]
        changes["backbone_stem"] = tuple(stem)
        changes["backbone_widths"] = tuple(
            int(_need(sd, f"backbone.body.layer{i}.0.conv2.weight").shape[0]) for i in (1, 2, 3, 4)
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
    return changes


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
    rpn, roi = model.rpn, model.roi_heads
    anchors = {
        "anchor_sizes": tuple(
            tuple(int(s) if float(s).is_integer() else float(s) for s in level) for level in rpn.anchor_generator.sizes
        ),
        "aspect_ratios": _expressible_ratios(model),
    }
    base = config_from_state_dict(model.state_dict(), Config(**anchors))
    values = {**_transform_values(model, base), **_rpn_values(rpn), **_roi_values(roi)}
    box_pool, mask_pool = roi.box_roi_pool, roi.mask_roi_pool
    if (mask_pool.canonical_scale, mask_pool.canonical_level) != (box_pool.canonical_scale, box_pool.canonical_level):
        raise ValueError("cannot express this torchvision model: box and mask pools use different canonical levels")
    if float(rpn.box_coder.bbox_xform_clip) != float(roi.box_coder.bbox_xform_clip):
        raise ValueError("cannot express this torchvision model: RPN and RoI box coders clamp differently")
    return base.replace(**values)


def _expressible_ratios(model: TorchvisionMaskRCNN) -> tuple[float, ...]:
    """The anchors' aspect ratios (one tuple, the same at every level); ``ValueError`` naming every
    part of ``model`` our ``MaskRCNN`` cannot express."""
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
    return next(iter(ratios))


def _transform_values(model: TorchvisionMaskRCNN, base: Config) -> dict[str, Any]:
    """The ``Config`` fields of ``model``'s transform and backbone (``base``: its architecture)."""
    t = model.transform
    frozen = [m for m in model.backbone.body.modules() if isinstance(m, FrozenBatchNorm2d)]
    return {
        "min_size": int(t.min_size[-1]),
        "max_size": int(t.max_size),
        "image_mean": tuple(float(v) for v in t.image_mean),
        "image_std": tuple(float(v) for v in t.image_std),
        "size_divisible": int(t.size_divisible),
        "frozen_bn_eps": float(frozen[0].eps) if frozen else base.frozen_bn_eps,
        "trainable_backbone_layers": _trainable_layers(model.backbone.body, base.backbone),
    }


def _rpn_values(rpn: nn.Module) -> dict[str, Any]:
    """The ``Config`` fields of a torchvision ``RegionProposalNetwork``."""
    return {
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
    }


def _roi_values(roi: nn.Module) -> dict[str, Any]:
    """The ``Config`` fields of torchvision ``RoIHeads``: pools, matcher, sampler, coder, rules."""
    box_pool, mask_pool = roi.box_roi_pool, roi.mask_roi_pool
    return {
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
    "model_zoo_table",
    "compare_with_detectron2",
    "DETECTRON2_RULES",
    "agreement",
    "config_from_detectron2",
    "detectron2_rules",
    "detectron2_class_names",
    "detectron2_name",
    "from_detectron2",
    "minimask_name",
    "read_detectron2_checkpoint",
    "detectron2_safetensors",
    "read_detectron2_yaml",
    "to_detectron2",
    "coco_categories",
    "config_from_state_dict",
    "config_from_torchvision",
    "from_torchvision",
    "load_coco_weights",
    "match_boxes",
    "to_torchvision",
    "torchvision_model",
]


# --- Detectron2 ----------------------------------------------------------------------------------
# State-dict names, ours (torchvision's) <-> Detectron2's, for the R50-FPN Mask R-CNN. Detectron2's
# names come from its modules: backbone/resnet.py (BasicStem "stem.conv1", BottleneckBlock
# "conv1..3" each with ".norm", "shortcut"), backbone/fpn.py (FPN "fpn_lateral{stage}",
# "fpn_output{stage}"), proposal_generator/rpn.py (StandardRPNHead "conv", "objectness_logits",
# "anchor_deltas"), roi_heads/box_head.py (FastRCNNConvFCHead "fc1", "fc2"), roi_heads/fast_rcnn.py
# (FastRCNNOutputLayers "cls_score", "bbox_pred"), roi_heads/mask_head.py
# (MaskRCNNConvUpsampleHead "mask_fcn{k}", "deconv", "predictor").
_D2_RULES: tuple[tuple[str, str], ...] = (
    (r"backbone\.body\.conv1\.weight", "backbone.bottom_up.stem.conv1.weight"),
    (r"backbone\.body\.bn1\.(\w+)", "backbone.bottom_up.stem.conv1.norm.{0}"),
    (r"backbone\.body\.layer(\d)\.(\d+)\.conv(\d)\.weight", "backbone.bottom_up.res{0+1}.{1}.conv{2}.weight"),
    (r"backbone\.body\.layer(\d)\.(\d+)\.bn(\d)\.(\w+)", "backbone.bottom_up.res{0+1}.{1}.conv{2}.norm.{3}"),
    (r"backbone\.body\.layer(\d)\.(\d+)\.downsample\.0\.weight", "backbone.bottom_up.res{0+1}.{1}.shortcut.weight"),
    (r"backbone\.body\.layer(\d)\.(\d+)\.downsample\.1\.(\w+)", "backbone.bottom_up.res{0+1}.{1}.shortcut.norm.{2}"),
    (r"backbone\.fpn\.inner_blocks\.(\d)\.0\.(\w+)", "backbone.fpn_lateral{0+2}.{1}"),
    (r"backbone\.fpn\.layer_blocks\.(\d)\.0\.(\w+)", "backbone.fpn_output{0+2}.{1}"),
    (r"backbone\.fpn\.inner_blocks\.(\d)\.1\.(\w+)", "backbone.fpn_lateral{0+2}.norm.{1}"),
    (r"backbone\.fpn\.layer_blocks\.(\d)\.1\.(\w+)", "backbone.fpn_output{0+2}.norm.{1}"),
    (r"rpn\.head\.conv\.0\.0\.(\w+)", "proposal_generator.rpn_head.conv.{0}"),
    (r"rpn\.head\.cls_logits\.(\w+)", "proposal_generator.rpn_head.objectness_logits.{0}"),
    (r"rpn\.head\.bbox_pred\.(\w+)", "proposal_generator.rpn_head.anchor_deltas.{0}"),
    (r"roi_heads\.box_head\.convs\.(\d)\.0\.(\w+)", "roi_heads.box_head.conv{0+1}.{1}"),
    (r"roi_heads\.box_head\.convs\.(\d)\.1\.(\w+)", "roi_heads.box_head.conv{0+1}.norm.{1}"),
    (r"roi_heads\.box_head\.fc6\.(\w+)", "roi_heads.box_head.fc1.{0}"),
    (r"roi_heads\.box_head\.fc7\.(\w+)", "roi_heads.box_head.fc2.{0}"),
    (r"roi_heads\.box_predictor\.cls_score\.(\w+)", "roi_heads.box_predictor.cls_score.{0}"),
    (r"roi_heads\.box_predictor\.bbox_pred\.(\w+)", "roi_heads.box_predictor.bbox_pred.{0}"),
    (r"roi_heads\.mask_head\.(\d)\.0\.(\w+)", "roi_heads.mask_head.mask_fcn{0+1}.{1}"),
    (r"roi_heads\.mask_head\.(\d)\.1\.(\w+)", "roi_heads.mask_head.mask_fcn{0+1}.norm.{1}"),
    (r"roi_heads\.mask_predictor\.conv5_mask\.(\w+)", "roi_heads.mask_head.deconv.{0}"),
    (r"roi_heads\.mask_predictor\.mask_fcn_logits\.(\w+)", "roi_heads.mask_head.predictor.{0}"),
)
# Buffers some Detectron2 checkpoints carry that are not weights (now non-persistent there), and
# BatchNorm's step counters (NORM = "BN"), which inference never reads.
_D2_IGNORED = re.compile(
    r"^(pixel_mean|pixel_std|proposal_generator\.anchor_generator\.cell_anchors\.\d+|.*\.num_batches_tracked)$"
)


def _fill(template: str, groups: tuple[str, ...]) -> str:
    """``"res{0+1}.{1}"`` with groups ("1", "0") -> "res2.0": ``{i+n}`` adds n to group i."""

    def one(m: re.Match) -> str:
        value = groups[int(m.group(1))]
        return str(int(value) + int(m.group(2))) if m.group(2) else value

    return re.sub(r"\{(\d)(?:\+(\d))?\}", one, template)


def _pattern(template: str) -> tuple[re.Pattern, list[tuple[int, int]]]:
    """The inverse of a template: a regex for Detectron2's name, and (group, offset) per field."""
    fields: list[tuple[int, int]] = []
    parts = re.split(r"(\{\d(?:\+\d)?\})", template)
    regex = ""
    for part in parts:
        m = re.fullmatch(r"\{(\d)(?:\+(\d))?\}", part)
        if m:
            fields.append((int(m.group(1)), int(m.group(2) or 0)))
            regex += r"(\d+)" if m.group(2) else r"(\w+)"
        else:
            regex += re.escape(part)
    return re.compile(regex), fields


def detectron2_name(key: str) -> str | None:
    """Chapter 11. Detectron2's state-dict name for one of ours (None: Detectron2 has none)."""
    for ours, theirs in _D2_RULES:
        m = re.fullmatch(ours, key)
        if m:
            return _fill(theirs, m.groups())
    return None


def minimask_name(key: str) -> str | None:
    """Chapter 11. Our (torchvision's) state-dict name for a Detectron2 one (None: not a weight we have)."""
    for ours, theirs in _D2_RULES:
        regex, fields = _pattern(theirs)
        m = regex.fullmatch(key)
        if not m:
            continue
        groups = [""] * len(fields)
        for (group, offset), value in zip(fields, m.groups(), strict=True):
            groups[group] = str(int(value) - offset) if offset else value
        out = ours
        for g in groups:  # put the groups back into our regex's capture slots, in order
            out = re.sub(r"\((?:\\d|\\w)\+?\)", lambda _m, g=g: g, out, count=1)
        return out.replace("\\.", ".")
    return None


def to_detectron2(model: MaskRCNN) -> OrderedDict[str, Tensor]:
    """Chapter 11. Our model's weights as a Detectron2 state dict (``checkpoint["model"]``).

    The inverse of ``from_detectron2``'s mapping: Detectron2's names; background moved from
    the first class row to the last (``cls_score``); the background slot of the box deltas
    and the background channel of the mask predictor dropped (Detectron2 has K, not K + 1);
    ``num_batches_tracked`` dropped. The architecture must be Detectron2's R50-FPN: with
    ``config.resnet_stride_in_1x1`` False the weights load but compute torchvision's ResNet.
    """
    if not isinstance(model, MaskRCNN):
        raise TypeError(f"to_detectron2: expected a minimask MaskRCNN, got {type(model).__name__}")
    if model.config.backbone not in ("resnet50", "resnet101", "resnet152"):
        raise ValueError(
            f"to_detectron2: Detectron2 has no {model.config.backbone!r} backbone (Bottleneck ResNets only)"
        )
    out: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        name = detectron2_name(key)
        if name is None:
            raise ValueError(f"to_detectron2: no Detectron2 name for {key!r}")
        value = value.detach().clone()
        cfg = model.config
        if key.startswith("roi_heads.box_predictor.cls_score"):
            value = torch.cat([value[1:], value[:1]])  # background: first -> last
        elif key.startswith("roi_heads.box_predictor.bbox_pred") and not cfg.cls_agnostic_bbox_reg:
            value = value[4:]  # no background slot
        elif key.startswith("roi_heads.mask_predictor.mask_fcn_logits") and not cfg.cls_agnostic_mask:
            value = value[1:]  # no background channel
        out[name] = value
    return out


def _from_detectron2_state(state: Mapping[str, Tensor], cfg: Config) -> OrderedDict[str, Tensor]:
    """Detectron2 names and layouts -> ours (background first, zero background slots; a
    class-agnostic box or mask predictor has no class slots and stays as it is)."""
    out: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in state.items():
        name = minimask_name(key)
        if name is None:
            continue  # reported by the check before this is called
        if key.startswith("roi_heads.box_predictor.cls_score"):
            value = torch.cat([value[-1:], value[:-1]])  # background: last -> first
        elif key.startswith("roi_heads.box_predictor.bbox_pred") and not cfg.cls_agnostic_bbox_reg:
            value = torch.cat([value.new_zeros((4, *value.shape[1:])), value])
        elif key.startswith("roi_heads.mask_head.predictor") and not cfg.cls_agnostic_mask:
            value = torch.cat([value.new_zeros((1, *value.shape[1:])), value])
        out[name] = value
    return out


# --- reading Detectron2 files ---------------------------------------------------------------------
class _SafeUnpickler(pickle.Unpickler):
    """Admits numpy arrays, numpy scalars/dtypes and plain containers; nothing else runs."""

    ALLOWED: frozenset[tuple[str, str]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("collections", "OrderedDict"),
        }
    )

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            if module.endswith("multiarray"):  # numpy 1 and 2 name this module differently
                return getattr(_numpy_multiarray(), name)
            return super().find_class(module, name)
        raise ValueError(
            f"{self.source}: refusing to unpickle {module}.{name} (only tensors, numpy arrays and plain "
            "containers are read; a checkpoint that needs more could run code)"
        )


def read_detectron2_checkpoint(path: str | Path) -> OrderedDict[str, Tensor]:
    """Chapter 11. The weights of a Detectron2 checkpoint, as float tensors, never running its code.

    ``model_final.pth`` (Detectron2's ``DetectionCheckpointer``: ``torch.save`` of a dict with
    ``"model"``, plus optimizer and scheduler) is read with ``torch.load(weights_only=True)``,
    numpy arrays admitted; a model zoo ``.pkl`` (a pickled dict ``{"model": {name: ndarray},
    "__author__": ...}``) with an unpickler that admits only numpy arrays and plain
    containers; a ``.safetensors`` file (tensors only: how this repository ships the ``"model"``
    part of a checkpointer's file, ``detectron2_safetensors``) with safetensors. Anything else
    raises ``ValueError`` naming the file and the refused object.
    A ``module.`` prefix (DistributedDataParallel) is removed, as Detectron2's checkpointer does.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Detectron2 checkpoint {path} does not exist")
    source = str(path)
    if path.suffix == ".pkl":
        with open(path, "rb") as f:
            data = _SafeUnpickler(f, source).load()
    elif path.suffix == ".safetensors":
        data = safetensors.torch.load_file(path)
    else:
        numpy_globals = _numpy_globals()
        try:
            with torch.serialization.safe_globals(numpy_globals):
                data = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(f"{source}: not read with weights_only=True (it would need code to run): {err}") from None
    if isinstance(data, Mapping) and "model" in data and isinstance(data["model"], Mapping):
        data = data["model"]
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a dict of weights (or one under 'model'), got {type(data).__name__}")
    out: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in data.items():
        if not isinstance(key, str):
            raise ValueError(f"{source}: a key is {type(key).__name__}, not a name: not a state dict")
        key = key[len("module.") :] if key.startswith("module.") else key
        if isinstance(value, Tensor):
            out[key] = value
        elif type(value).__module__ == "numpy" and hasattr(value, "shape"):
            out[key] = torch.as_tensor(value)
        else:
            raise ValueError(f"{source}: {key!r} is a {type(value).__name__}, not a tensor or array")
    if any(re.search(r"_(w|b|s|bn_s|bn_b)$", k) for k in out) and not any("." in k for k in out):
        raise ValueError(f"{source}: Caffe2/Detectron1 names (e.g. conv1_w); only Detectron2 names are read")
    return out


def detectron2_safetensors(checkpoint: str | Path, out: str | Path) -> str:
    """Chapter 12. The weights of a Detectron2 checkpoint (``read_detectron2_checkpoint``) saved
    tensor for tensor as ``out`` (``.safetensors``), which ``from_detectron2`` reads as it reads
    the checkpoint; optimizer and scheduler state are left out. Returns the checkpoint file's
    sha256, so that the converted file can name its source."""
    weights = read_detectron2_checkpoint(checkpoint)
    safetensors.torch.save_file({k: v.contiguous() for k, v in weights.items()}, str(out))
    return hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()


def _numpy_globals() -> list[Any]:
    """numpy's array and scalar re-constructors, for ``torch.load(weights_only=True)``."""
    import numpy as np

    mod = _numpy_multiarray()
    found: list[Any] = [np.ndarray, np.dtype, mod._reconstruct, mod.scalar]
    found += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "uint8", "bool")]
    return found


def _numpy_multiarray() -> Any:
    """numpy's ``multiarray`` module (``numpy._core`` in numpy 2, ``numpy.core`` before)."""
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy 1
        return importlib.import_module("numpy.core.multiarray")


# Every key of Detectron2's own defaults (detectron2/config/defaults.py at commit 02b5c4e) and the
# type of its default: b bool, i int, f float (an int is taken too), s str, n anything, l a list,
# F a list of numbers, L a list of lists of numbers, S a list of str, B a list of bool. Its
# CfgNode merge refuses any other key, and a value of another type; so does ``read_detectron2_yaml``.
_D2_KEYS = """
- VERSION:i OUTPUT_DIR:s SEED:i CUDNN_BENCHMARK:b FLOAT32_PRECISION:s VIS_PERIOD:i
MODEL LOAD_PROPOSALS:b MASK_ON:b KEYPOINT_ON:b DEVICE:s META_ARCHITECTURE:s WEIGHTS:s PIXEL_MEAN:F PIXEL_STD:F
MODEL.BACKBONE NAME:s FREEZE_AT:i
MODEL.FPN IN_FEATURES:l OUT_CHANNELS:i NORM:s FUSE_TYPE:s
MODEL.PROPOSAL_GENERATOR NAME:s MIN_SIZE:i
MODEL.ANCHOR_GENERATOR NAME:s SIZES:L ASPECT_RATIOS:L ANGLES:L OFFSET:f
MODEL.RPN HEAD_NAME:s IN_FEATURES:S BOUNDARY_THRESH:i IOU_THRESHOLDS:F IOU_LABELS:F BATCH_SIZE_PER_IMAGE:i
MODEL.RPN POSITIVE_FRACTION:f BBOX_REG_LOSS_TYPE:s BBOX_REG_LOSS_WEIGHT:f BBOX_REG_WEIGHTS:F SMOOTH_L1_BETA:f
MODEL.RPN LOSS_WEIGHT:f PRE_NMS_TOPK_TRAIN:i PRE_NMS_TOPK_TEST:i POST_NMS_TOPK_TRAIN:i POST_NMS_TOPK_TEST:i
MODEL.RPN NMS_THRESH:f CONV_DIMS:F
MODEL.ROI_HEADS NAME:s NUM_CLASSES:i IN_FEATURES:S IOU_THRESHOLDS:F IOU_LABELS:F BATCH_SIZE_PER_IMAGE:i
MODEL.ROI_HEADS POSITIVE_FRACTION:f SCORE_THRESH_TEST:f NMS_THRESH_TEST:f PROPOSAL_APPEND_GT:b
MODEL.ROI_BOX_HEAD NAME:s BBOX_REG_LOSS_TYPE:s BBOX_REG_LOSS_WEIGHT:f BBOX_REG_WEIGHTS:F SMOOTH_L1_BETA:f
MODEL.ROI_BOX_HEAD POOLER_RESOLUTION:i POOLER_SAMPLING_RATIO:i POOLER_TYPE:s NUM_FC:i FC_DIM:i NUM_CONV:i
MODEL.ROI_BOX_HEAD CONV_DIM:i NORM:s CLS_AGNOSTIC_BBOX_REG:b TRAIN_ON_PRED_BOXES:b USE_FED_LOSS:b
MODEL.ROI_BOX_HEAD USE_SIGMOID_CE:b FED_LOSS_FREQ_WEIGHT_POWER:f FED_LOSS_NUM_CLASSES:i
MODEL.ROI_BOX_CASCADE_HEAD BBOX_REG_WEIGHTS:L IOUS:F
MODEL.ROI_MASK_HEAD NAME:s POOLER_RESOLUTION:i POOLER_SAMPLING_RATIO:i NUM_CONV:i CONV_DIM:i NORM:s
MODEL.ROI_MASK_HEAD CLS_AGNOSTIC_MASK:b POOLER_TYPE:s
MODEL.ROI_KEYPOINT_HEAD NAME:s POOLER_RESOLUTION:i POOLER_SAMPLING_RATIO:i CONV_DIMS:F NUM_KEYPOINTS:i
MODEL.ROI_KEYPOINT_HEAD MIN_KEYPOINTS_PER_IMAGE:i NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS:b LOSS_WEIGHT:f
MODEL.ROI_KEYPOINT_HEAD POOLER_TYPE:s
MODEL.SEM_SEG_HEAD NAME:s IN_FEATURES:S IGNORE_VALUE:i NUM_CLASSES:i CONVS_DIM:i COMMON_STRIDE:i NORM:s
MODEL.SEM_SEG_HEAD LOSS_WEIGHT:f
MODEL.PANOPTIC_FPN INSTANCE_LOSS_WEIGHT:f
MODEL.PANOPTIC_FPN.COMBINE ENABLED:b OVERLAP_THRESH:f STUFF_AREA_LIMIT:i INSTANCES_CONFIDENCE_THRESH:f
MODEL.RETINANET NUM_CLASSES:i IN_FEATURES:S NUM_CONVS:i IOU_THRESHOLDS:F IOU_LABELS:F PRIOR_PROB:f
MODEL.RETINANET SCORE_THRESH_TEST:f TOPK_CANDIDATES_TEST:i NMS_THRESH_TEST:f BBOX_REG_WEIGHTS:F
MODEL.RETINANET FOCAL_LOSS_GAMMA:f FOCAL_LOSS_ALPHA:f SMOOTH_L1_LOSS_BETA:f BBOX_REG_LOSS_TYPE:s NORM:s
MODEL.RESNETS DEPTH:i OUT_FEATURES:S NUM_GROUPS:i NORM:s WIDTH_PER_GROUP:i STRIDE_IN_1X1:b RES5_DILATION:i
MODEL.RESNETS RES2_OUT_CHANNELS:i STEM_OUT_CHANNELS:i DEFORM_ON_PER_STAGE:B DEFORM_MODULATED:b
MODEL.RESNETS DEFORM_NUM_GROUPS:i
INPUT MIN_SIZE_TRAIN:F MIN_SIZE_TRAIN_SAMPLING:s MAX_SIZE_TRAIN:i MIN_SIZE_TEST:i MAX_SIZE_TEST:i RANDOM_FLIP:s
INPUT FORMAT:s MASK_FORMAT:s
INPUT.CROP ENABLED:b TYPE:s SIZE:F
DATASETS TRAIN:l PROPOSAL_FILES_TRAIN:l PRECOMPUTED_PROPOSAL_TOPK_TRAIN:i TEST:l PROPOSAL_FILES_TEST:l
DATASETS PRECOMPUTED_PROPOSAL_TOPK_TEST:i
DATALOADER NUM_WORKERS:i ASPECT_RATIO_GROUPING:b SAMPLER_TRAIN:s REPEAT_THRESHOLD:f REPEAT_SQRT:b
DATALOADER FILTER_EMPTY_ANNOTATIONS:b
SOLVER LR_SCHEDULER_NAME:s MAX_ITER:i BASE_LR:f BASE_LR_END:f MOMENTUM:f NESTEROV:b WEIGHT_DECAY:f
SOLVER WEIGHT_DECAY_NORM:f GAMMA:f STEPS:F NUM_DECAYS:i WARMUP_FACTOR:f WARMUP_ITERS:i WARMUP_METHOD:s
SOLVER RESCALE_INTERVAL:b CHECKPOINT_PERIOD:i IMS_PER_BATCH:i REFERENCE_WORLD_SIZE:i BIAS_LR_FACTOR:f
SOLVER WEIGHT_DECAY_BIAS:n
SOLVER.CLIP_GRADIENTS ENABLED:b CLIP_TYPE:s CLIP_VALUE:f NORM_TYPE:f
SOLVER.AMP ENABLED:b
TEST EXPECTED_RESULTS:l EVAL_PERIOD:i KEYPOINT_OKS_SIGMAS:l DETECTIONS_PER_IMAGE:i
TEST.AUG ENABLED:b MIN_SIZES:F MAX_SIZE:i FLIP:b
TEST.PRECISE_BN ENABLED:b NUM_ITER:i
GLOBAL HACK:f
"""


def _d2_key_types() -> dict[str, str]:
    out = {}
    for line in _D2_KEYS.strip().splitlines():
        prefix, *items = line.split()
        for item in items:
            name, kind = item.split(":")
            out[name if prefix == "-" else f"{prefix}.{name}"] = kind
    return out


D2_KEY_TYPES: dict[str, str] = _d2_key_types()
_D2_KIND_NAMES = {"b": "true or false", "i": "an integer", "f": "a number", "s": "a string", "l": "a list",
                  "F": "a list of numbers", "L": "a list of lists of numbers", "S": "a list of strings",
                  "B": "a list of true/false"}  # fmt: skip


def _d2_value(value: Any) -> Any:
    """A value as Detectron2's CfgNode decodes it: a string that reads as a Python literal is that
    literal; tuples become lists here, as YAML writes them."""
    if isinstance(value, str):
        import ast

        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return value

    def listed(v: Any) -> Any:
        return [listed(x) for x in v] if isinstance(v, (list, tuple)) else v

    return listed(value)


def _d2_type_ok(value: Any, kind: str) -> bool:
    def num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if value is None or kind == "n":
        return True
    if kind in "lFLSB" and not isinstance(value, list):
        return False
    return {
        "b": lambda: isinstance(value, bool),
        "i": lambda: isinstance(value, int) and not isinstance(value, bool),
        "f": lambda: num(value),
        "s": lambda: isinstance(value, str),
        "l": lambda: True,
        "F": lambda: all(num(v) for v in value),
        "L": lambda: all(isinstance(v, list) and all(num(x) for x in v) for v in value),
        "S": lambda: all(isinstance(v, str) for v in value),
        "B": lambda: all(isinstance(v, bool) for v in value),
    }[kind]()


def _check_d2_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    """Detectron2's CfgNode merge checks: problems of ``data``'s keys (unknown, or of another type);
    values decoded in place (``_d2_value``)."""
    from minimask.cli import did_you_mean

    problems = []
    groups = {k.rsplit(".", 1)[0] for k in D2_KEY_TYPES if "." in k}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if full == "_BASE_" or full in D2_KEY_TYPES:
            if full in D2_KEY_TYPES:
                data[key] = value = _d2_value(value)
                if not _d2_type_ok(value, D2_KEY_TYPES[full]):
                    problems.append(f"{full} = {value!r} must be {_D2_KIND_NAMES[D2_KEY_TYPES[full]]}")
        elif full in groups:
            if isinstance(value, dict):
                problems += _check_d2_keys(value, f"{full}.")
            else:
                problems.append(f"{full} = {value!r} must be a mapping of keys")
        else:
            near = [k for k in (*D2_KEY_TYPES, *groups) if k.count(".") == full.count(".")]
            problems.append(f"unknown key {full}{did_you_mean(full, near)}")
    return problems


def read_detectron2_yaml(path: str | Path) -> dict[str, Any]:
    """Chapter 11. A Detectron2 ``config.yaml`` with its ``_BASE_`` files merged in, as a dict.

    As Detectron2 ``CfgNode.load_yaml_with_base``: the base (a path relative to the file) is
    read first, recursively, and the file's keys override it mapping by mapping. ``yaml.safe_load``
    only: no Python objects. As Detectron2's ``CfgNode.merge_from_file``, a key that is not one of
    Detectron2's (``D2_KEY_TYPES``) or a value of another type than its default's is refused
    (``ValueError`` naming the file and every such key, with a close match for a mistyped one);
    a string that reads as a Python literal is that literal (``"(640, 672)"``).
    """
    import yaml

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"Detectron2 config {path} is a folder, not a config.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"Detectron2 config {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise ValueError(f"{path}: not valid YAML{line}: {getattr(err, 'problem', None) or err}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a mapping of config keys")
    problems = _check_d2_keys(data)
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems) + " (Detectron2's CfgNode refuses these too)")
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ValueError(f"{path}: _BASE_ = {base!r} must be a file name")
    base_path = Path(base).expanduser()
    if not base_path.is_absolute():
        base_path = path.parent / base_path
    if not base_path.is_file():
        raise FileNotFoundError(f"{path}: its _BASE_ {base_path} does not exist")
    merged = read_detectron2_yaml(base_path)
    _merge(data, merged)
    return merged


def _merge(a: dict, b: dict) -> None:
    """Detectron2 ``merge_a_into_b``: ``a``'s keys into ``b``, mapping by mapping."""
    for k, v in a.items():
        if isinstance(v, dict) and isinstance(b.get(k), dict):
            _merge(v, b[k])
        else:
            b[k] = v


def _get(d: Mapping[str, Any], dotted: str, default: Any) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, Mapping) or part not in d:
            return default
        d = d[part]
    return d


def config_from_detectron2(values: Mapping[str, Any], base: Config | None = None) -> Config:
    """Chapter 11. A ``Config`` from a Detectron2 config (the dict of ``read_detectron2_yaml``).

    Starts from ``Config.detectron2_r50()`` (Detectron2's rules and the model zoo's R50-FPN
    values, ``defaults.py`` + ``Base-RCNN-FPN.yaml``) and reads every key that has a field
    (``config_table``'s Detectron2 column). Raises ``ValueError`` naming each key whose value
    minimask cannot run (another depth, norm, head or pooler, a keypoint head, no masks ...).
    """
    cfg = base if base is not None else Config.detectron2_r50()

    def g(key: str, default: Any) -> Any:
        return _get(values, key, default)

    norm, pooler, ratios = _d2_checked(g)
    return cfg.replace(**_d2_input_rpn_fields(g, norm, ratios), **_d2_roi_fields(g, pooler))


D2Get = Callable[[str, Any], Any]  # a Detectron2 config's value of a dotted key, or the default given

# Detectron2 keys minimask runs only at this value (another architecture, head or pooler is
# refused: C4 and DC5 backbones, Cascade, deformable convolutions, PointRend, keypoints ...)
_D2_ONLY = (
    ("MODEL.META_ARCHITECTURE", "GeneralizedRCNN"),
    ("MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone"),
    ("MODEL.RESNETS.RES5_DILATION", 1),
    ("MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False, False, False, False]),
    ("MODEL.FPN.FUSE_TYPE", "sum"),
    ("MODEL.MASK_ON", True),
    ("MODEL.KEYPOINT_ON", False),
    ("MODEL.PROPOSAL_GENERATOR.NAME", "RPN"),
    ("MODEL.RPN.HEAD_NAME", "StandardRPNHead"),
    ("MODEL.ROI_HEADS.NAME", "StandardROIHeads"),
    ("MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead"),
    ("MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead"),
)
_D2_BATCH_NORMS = ("BN", "SyncBN", "nnSyncBN", "naiveSyncBN")  # BatchNorm with running statistics at inference
_D2_DEPTHS = {50: "resnet50", 101: "resnet101", 152: "resnet152"}


def _d2_checked(g: D2Get) -> tuple[str, set[str], list[tuple[float, ...]]]:
    """The backbone norm, the pooler types and the anchors' aspect ratios of a Detectron2 config;
    ``ValueError`` naming each key whose value minimask cannot run."""
    bad = [f"{k} = {g(k, v)!r} (minimask: {v!r})" for k, v in _D2_ONLY if g(k, v) != v]
    norm = g("MODEL.RESNETS.NORM", "FrozenBN")
    if norm not in ("FrozenBN", "GN", *_D2_BATCH_NORMS):
        bad.append(f"MODEL.RESNETS.NORM = {norm!r} (minimask: FrozenBN, GN or BN/SyncBN)")
    if g("MODEL.RESNETS.DEPTH", 50) not in _D2_DEPTHS:
        bad.append(f"MODEL.RESNETS.DEPTH = {g('MODEL.RESNETS.DEPTH', 50)!r} (minimask: 50, 101 or 152)")
    heads = {k: g(k, "") for k in ("MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM")}
    kinds = {"GN" if v == "GN" else "BN" for v in heads.values() if v}
    for key, value in heads.items():
        if value not in ("", "GN", *_D2_BATCH_NORMS):
            bad.append(f"{key} = {value!r} (minimask: '', GN or BN/SyncBN)")
    if len(kinds) > 1:
        bad.append(f"FPN/ROI_BOX_HEAD/ROI_MASK_HEAD.NORM = {sorted(set(heads.values()))} (minimask: one kind)")
    if g("MODEL.ROI_BOX_HEAD.NUM_FC", 2) not in (1, 2):
        bad.append(f"MODEL.ROI_BOX_HEAD.NUM_FC = {g('MODEL.ROI_BOX_HEAD.NUM_FC', 2)!r} (minimask: 1 or 2)")
    if g("MODEL.ROI_HEADS.IN_FEATURES", ["p2", "p3", "p4", "p5"]) != ["p2", "p3", "p4", "p5"]:
        bad.append(f"MODEL.ROI_HEADS.IN_FEATURES = {g('MODEL.ROI_HEADS.IN_FEATURES', None)!r}")
    pooler = {g("MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlignV2"), g("MODEL.ROI_MASK_HEAD.POOLER_TYPE", "ROIAlignV2")}
    if not pooler <= {"ROIAlignV2", "ROIAlign"} or len(pooler) != 1:
        bad.append(f"ROI_BOX_HEAD/ROI_MASK_HEAD.POOLER_TYPE = {sorted(pooler)} (minimask: one of ROIAlignV2, ROIAlign)")
    ratios = [tuple(float(r) for r in level) for level in g("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[0.5, 1.0, 2.0]])]
    if len(set(ratios)) != 1:
        bad.append(f"MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = {ratios} (minimask: the same at every level)")
    if bad:
        raise ValueError("cannot run this Detectron2 config: " + "; ".join(bad))
    return norm, pooler, ratios


def _d2_input_rpn_fields(g: D2Get, norm: str, ratios: list[tuple[float, ...]]) -> dict[str, Any]:
    """The ``Config`` fields of a Detectron2 config's input, backbone, anchors and RPN."""
    rpn_iou = g("MODEL.RPN.IOU_THRESHOLDS", [0.3, 0.7])
    sizes = g("MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64], [128], [256], [512]])
    if len(sizes) == 1:  # Detectron2 broadcasts one list to every level
        sizes = sizes * 5
    return {
        "min_size": int(_last(g("INPUT.MIN_SIZE_TEST", 800))),
        "max_size": int(g("INPUT.MAX_SIZE_TEST", 1333)),
        "input_channels": str(g("INPUT.FORMAT", "BGR")),
        "image_mean": tuple(float(v) for v in g("MODEL.PIXEL_MEAN", [103.53, 116.28, 123.675])),
        "image_std": tuple(float(v) for v in g("MODEL.PIXEL_STD", [1.0, 1.0, 1.0])),
        "backbone": _D2_DEPTHS[int(g("MODEL.RESNETS.DEPTH", 50))],
        "backbone_stem": (int(g("MODEL.RESNETS.STEM_OUT_CHANNELS", 64)),),
        "backbone_widths": tuple(int(g("MODEL.RESNETS.RES2_OUT_CHANNELS", 256)) * 2**i for i in range(4)),
        "resnet_groups": int(g("MODEL.RESNETS.NUM_GROUPS", 1)),
        "resnet_width_per_group": int(g("MODEL.RESNETS.WIDTH_PER_GROUP", 64)),
        "backbone_norm": {"FrozenBN": "frozen", "GN": "group"}.get(norm, "batch"),
        "fpn_norm": bool(g("MODEL.FPN.NORM", "")),
        "trainable_backbone_layers": max(0, min(5, 5 - int(g("MODEL.BACKBONE.FREEZE_AT", 2)))),
        "resnet_stride_in_1x1": bool(g("MODEL.RESNETS.STRIDE_IN_1X1", True)),
        "fpn_out_channels": int(g("MODEL.FPN.OUT_CHANNELS", 256)),
        "anchor_sizes": tuple(tuple(_number(s) for s in level) for level in sizes),
        "aspect_ratios": ratios[0],
        "anchor_offset": float(g("MODEL.ANCHOR_GENERATOR.OFFSET", 0.0)),
        "rpn_pre_nms_top_n_train": int(g("MODEL.RPN.PRE_NMS_TOPK_TRAIN", 2000)),
        "rpn_pre_nms_top_n_test": int(g("MODEL.RPN.PRE_NMS_TOPK_TEST", 1000)),
        "rpn_post_nms_top_n_train": int(g("MODEL.RPN.POST_NMS_TOPK_TRAIN", 1000)),
        "rpn_post_nms_top_n_test": int(g("MODEL.RPN.POST_NMS_TOPK_TEST", 1000)),
        "rpn_nms_thresh": float(g("MODEL.RPN.NMS_THRESH", 0.7)),
        "rpn_bg_iou_thresh": float(rpn_iou[0]),
        "rpn_fg_iou_thresh": float(rpn_iou[-1]),
        "rpn_batch_size_per_image": int(g("MODEL.RPN.BATCH_SIZE_PER_IMAGE", 256)),
        "rpn_positive_fraction": float(g("MODEL.RPN.POSITIVE_FRACTION", 0.5)),
        "rpn_bbox_reg_weights": tuple(float(w) for w in g("MODEL.RPN.BBOX_REG_WEIGHTS", [1.0, 1.0, 1.0, 1.0])),
        "rpn_smooth_l1_beta": float(g("MODEL.RPN.SMOOTH_L1_BETA", 0.0)),
        "rpn_min_size": float(g("MODEL.PROPOSAL_GENERATOR.MIN_SIZE", 0.0)),
    }


def _d2_roi_fields(g: D2Get, pooler: set[str]) -> dict[str, Any]:
    """The ``Config`` fields of a Detectron2 config's RoI heads: box head, mask head, test rules."""
    roi_iou = g("MODEL.ROI_HEADS.IOU_THRESHOLDS", [0.5])
    norms = {g(k, "") for k in ("MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM")}
    conv = int(g("MODEL.ROI_MASK_HEAD.NUM_CONV", 4))
    conv_dim = int(g("MODEL.ROI_MASK_HEAD.CONV_DIM", 256))
    return {
        "num_classes": int(g("MODEL.ROI_HEADS.NUM_CLASSES", 80)) + 1,
        "box_score_thresh": float(g("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.05)),
        "box_nms_thresh": float(g("MODEL.ROI_HEADS.NMS_THRESH_TEST", 0.5)),
        "box_fg_iou_thresh": float(roi_iou[-1]),
        "box_bg_iou_thresh": float(roi_iou[0]),
        "box_batch_size_per_image": int(g("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 512)),
        "box_positive_fraction": float(g("MODEL.ROI_HEADS.POSITIVE_FRACTION", 0.25)),
        "box_detections_per_img": int(g("TEST.DETECTIONS_PER_IMAGE", 100)),
        "box_roi_output_size": int(g("MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 7)),
        "box_roi_sampling_ratio": int(g("MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", 0)),
        "roi_aligned": pooler == {"ROIAlignV2"},
        "box_head_dim": int(g("MODEL.ROI_BOX_HEAD.FC_DIM", 1024)),
        "bbox_reg_weights": tuple(float(w) for w in g("MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS", [10.0, 10.0, 5.0, 5.0])),
        "box_smooth_l1_beta": float(g("MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA", 0.0)),
        "mask_roi_output_size": int(g("MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 14)),
        "mask_roi_sampling_ratio": int(g("MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO", 0)),
        "mask_head_layers": (conv_dim,) * conv,
        "mask_predictor_dim": conv_dim,
        "conv_norm": "group" if "GN" in norms else "batch",
        "box_head_convs": (int(g("MODEL.ROI_BOX_HEAD.CONV_DIM", 256)),) * int(g("MODEL.ROI_BOX_HEAD.NUM_CONV", 0)),
        "box_head_fcs": int(g("MODEL.ROI_BOX_HEAD.NUM_FC", 2)),
        "box_head_norm": bool(g("MODEL.ROI_BOX_HEAD.NORM", "")),
        "mask_head_norm": bool(g("MODEL.ROI_MASK_HEAD.NORM", "")),
        "cls_agnostic_bbox_reg": bool(g("MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", False)),
        "cls_agnostic_mask": bool(g("MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", False)),
        "class_score": "sigmoid" if g("MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE", False) else "softmax",
    }


def _last(v: Any) -> Any:
    """INPUT.MIN_SIZE_TEST may be a list in some configs; DefaultPredictor uses one value."""
    return v[-1] if isinstance(v, (list, tuple)) else v


def _number(v: Any) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def from_detectron2(checkpoint: str | Path | Mapping[str, Tensor], config: str | Path | None = None) -> MaskRCNN:
    """Chapter 11. Our ``MaskRCNN`` with a Detectron2 checkpoint's weights, deciding by Detectron2's rules.

    ``checkpoint``: a ``model_final.pth``, a model zoo ``.pkl``, their ``.safetensors`` (``read_detectron2_checkpoint``,
    never running code) or a Detectron2 state dict. ``config``: its ``config.yaml``
    (``_BASE_`` files merged); none = the model zoo's R50-FPN Mask R-CNN
    (``Config.detectron2_r50()``). Weights: names mapped (``minimask_name``), background
    moved from the last class row to the first, a zero background slot added to the box
    deltas and to the mask predictor. The input stays torchvision's contract (RGB in
    [0, 1]); the ``Config`` turns it into BGR 0-255 normalised by the caffe mean.
    Raises ``ValueError`` naming **every** missing, unexpected or mis-shaped key (Detectron2's
    names). Returns the model in eval mode.
    """
    cfg = _config_of_yaml(Path(config)) if config is not None else Config.detectron2_r50()
    if isinstance(checkpoint, Mapping):
        state, source = OrderedDict(checkpoint), "Detectron2 state dict"
    else:
        state, source = read_detectron2_checkpoint(checkpoint), str(checkpoint)
    state = OrderedDict((k, v) for k, v in state.items() if not _D2_IGNORED.match(k))
    model = MaskRCNN(cfg)
    parts = fit_problems(to_detectron2(model), state, limit=None)
    if parts:
        hint = "" if config is not None else " (pass the checkpoint's config.yaml: the default is the COCO R50-FPN)"
        raise ValueError(f"{source} does not fit Detectron2's R50-FPN Mask R-CNN{hint}: " + "; ".join(parts))
    ours = _from_detectron2_state({k: v.to(torch.float32) for k, v in state.items()}, cfg)
    frozen_free = {k: v for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")}
    _load(model, {**ours, **frozen_free}, source)
    return model.eval()


def _config_of_yaml(path: Path) -> Config:
    """``config_from_detectron2`` of a config.yaml; a ``ValueError`` names the file and the Detectron2 key."""
    values = read_detectron2_yaml(path)
    try:
        return config_from_detectron2(values)
    except (ValueError, TypeError) as err:
        from minimask.config import config_table

        message = str(err)
        field = re.search(r"Config\.(\w+)", message)
        keys = {row["name"]: row["detectron2"] for row in config_table()}
        if field and isinstance(keys.get(field.group(1)), str) and keys[field.group(1)].isupper():
            message = f"{keys[field.group(1)]}: {message}"
        raise ValueError(f"{path}: {message}") from None


# Detectron2's rules one by one (chapter 11): the fields each rule sets, without the values that
# belong to the weights (mean, std, channels, classes, stride in 1x1), so that any model can
# run under them. Values as in Config.detectron2_r50().
DETECTRON2_RULES: dict[str, dict[str, Any]] = {
    "resize rounding": {"resize_rounding": "round"},
    "PIL resize on uint8": {"resize_interpolation": "pil_bilinear", "normalize_before_resize": False},
    "exact cell anchors": {"round_cell_anchors": False},
    "fixed anchor strides": {"anchor_strides": "fixed"},
    "RPN keeps sides > 0": {"rpn_min_size": 0.0, "rpn_min_size_inclusive": False},
    "RPN NMS on logits": {"rpn_nms_score": "logit"},
    "ROIAlignV2, adaptive sampling": {"roi_aligned": True, "box_roi_sampling_ratio": 0, "mask_roi_sampling_ratio": 0},
    "level epsilon inside the log": {"level_eps_placement": "inside_log"},
    "empty boxes dropped after rescaling": {"small_box_removal": "after_rescale", "box_min_size": 0.0},
    "NMS by Detectron2's class index": {"background_class": "last"},
    "boxes clipped to the original": {"clip_to_original": True},
    "sub-pixel mask paste": {"mask_paste": "subpixel", "paste_pixel_centre": "half"},
    "masks thresholded at 0.5": {"binary_masks": True},
}


def detectron2_rules(cfg: Config, *rules: str) -> Config:
    """Chapter 11. ``cfg`` deciding by Detectron2's rules (all, or the named ``DETECTRON2_RULES``).

    Only rules change: sizes, thresholds and what the weights fix (mean, std, channel order,
    classes, stride placement) stay ``cfg``'s, so a model trained under torchvision's rules
    (the shipped one) runs under Detectron2's.
    """
    unknown = [r for r in rules if r not in DETECTRON2_RULES]
    if unknown:
        raise ValueError(f"unknown Detectron2 rule(s) {unknown}; known: {list(DETECTRON2_RULES)}")
    changes: dict[str, Any] = {}
    for name in rules or tuple(DETECTRON2_RULES):
        changes.update(DETECTRON2_RULES[name])
    return cfg.replace(**changes)


def match_boxes(a_boxes: Tensor, a_labels: Tensor, b_boxes: Tensor, b_labels: Tensor, iou: float = 0.9) -> Tensor:
    """Chapter 11. For each box of ``a``, the row of the same box in ``b`` (same label, IoU > ``iou``), else -1.

    Greedy in ``a``'s order (best first); each box of ``b`` answers at most one of ``a``.
    ``Tensor[len(a)]`` int64.
    """
    out = torch.full((len(a_boxes),), -1, dtype=torch.int64)
    if len(a_boxes) == 0 or len(b_boxes) == 0:
        return out
    overlap = torchvision.ops.box_iou(a_boxes.detach().float(), b_boxes.detach().float())
    overlap[a_labels[:, None] != b_labels[None, :]] = 0.0
    used = torch.zeros(len(b_boxes), dtype=torch.bool)
    for i in range(len(a_boxes)):
        row = overlap[i].masked_fill(used, 0.0)
        j = int(row.argmax())
        if row[j] > iou:
            used[j] = True
            out[i] = j
    return out


def agreement(a: Mapping[str, Tensor], b: Mapping[str, Tensor], iou: float = 0.9) -> float:
    """Chapter 11. Fraction of ``a``'s detections that ``b`` has too: same label, box IoU > ``iou``.

    ``match_boxes`` on two eval outputs; 1.0 when ``a`` has none. Chapter 11 measures each
    of Detectron2's rules with it.
    """
    if len(a["boxes"]) == 0:
        return 1.0
    matched = match_boxes(a["boxes"], a["labels"], b["boxes"], b["labels"], iou)
    return float((matched >= 0).float().mean())


def detectron2_class_names(num_classes: int) -> list[str]:
    """Chapter 11. Names of a Detectron2 model's classes in our labels (0 = background).

    80 foreground classes: COCO's, in Detectron2's contiguous order (torchvision's 91 without
    the "N/A" placeholders); otherwise "1", "2", ...
    """
    if num_classes == 81:
        return ["__background__"] + [c for c in coco_categories()[1:] if c != "N/A"]
    return ["__background__"] + [str(i) for i in range(1, num_classes)]


# --- Detectron2's model zoo (chapter 11) -----------------------------------------------------------
DETECTRON2_DATA = Path(__file__).resolve().parents[2] / "data" / "detectron2"


def model_zoo_table(folder: str | Path = DETECTRON2_DATA) -> list[dict[str, Any]]:
    """Chapter 11. Each Mask R-CNN config of Detectron2's model zoo: does ``from_detectron2`` load it?

    Reads ``model_zoo.json`` (the values each config sets, ``_BASE_`` files merged, written by
    ``tools/detectron2_model_zoo.py`` from a Detectron2 checkout) and ``checked.json`` (the
    fixtures made by Detectron2 from a seeded, narrowed model of a config, with any other
    ``changes`` to it, and how our outputs compared with ``DefaultPredictor``'s:
    ``tests/test_detectron2_fixture.py``). Rows:
    ``config`` (its path in Detectron2's repository), ``loads`` (bool), ``reason`` (why not:
    the Detectron2 keys, in one line), ``config_obj`` (our ``Config``, or None), ``checked``
    (the fixture that checked it; for a config without one, "~" and the fixture whose config
    is nearest, ``differs`` naming the fields, training-only ones left out, that differ from
    it: none means the same model at inference).
    """
    folder = Path(folder)
    zoo = json.loads((folder / "model_zoo.json").read_text())
    checked = json.loads((folder / "checked.json").read_text()) if (folder / "checked.json").is_file() else {}
    by_config = {c["config"]: name for name, c in checked.items() if not c.get("changes")}
    rows: list[dict[str, Any]] = []
    for entry in zoo:
        row = {"config": entry["config"], "loads": False, "reason": "", "config_obj": None, "checked": ""}
        if entry["values"] is None:
            row["reason"] = entry["unread"].split(": ", 1)[-1].split(" (")[0]
        else:
            try:
                row["config_obj"], row["loads"] = config_from_detectron2(entry["values"]), True
            except ValueError as err:
                row["reason"] = str(err).removeprefix("cannot run this Detectron2 config: ")
        rows.append(row)
    checked_rows = [(by_config[r["config"]], r["config_obj"]) for r in rows if r["config"] in by_config and r["loads"]]
    for row in rows:
        row["differs"] = []
        if row["config"] in by_config:
            row["checked"] = by_config[row["config"]]
        elif row["loads"] and checked_rows:
            diffs = [(name, _inference_differences(obj, row["config_obj"])) for name, obj in checked_rows]
            row["checked"], row["differs"] = min(diffs, key=lambda d: len(d[1]))
            row["checked"] = "~" + row["checked"]
    return rows


# Config fields that only training reads: two configs that differ in these alone are the same
# model at inference.
_TRAINING_ONLY = frozenset(
    {
        "trainable_backbone_layers",
        "rpn_pre_nms_top_n_train",
        "rpn_post_nms_top_n_train",
        "rpn_fg_iou_thresh",
        "rpn_bg_iou_thresh",
        "rpn_batch_size_per_image",
        "rpn_positive_fraction",
        "rpn_smooth_l1_beta",
        "box_fg_iou_thresh",
        "box_bg_iou_thresh",
        "box_batch_size_per_image",
        "box_positive_fraction",
        "box_smooth_l1_beta",
    }
)


def _inference_differences(a: Config, b: Config) -> list[str]:
    """The fields, other than training-only ones, in which two configs differ."""
    return [f for f in a.to_dict() if f not in _TRAINING_ONLY and getattr(a, f) != getattr(b, f)]


def compare_with_detectron2(model: MaskRCNN, folder: str | Path) -> list[dict[str, Any]]:
    """Chapter 11. Our run of ``model`` on a fixture's images against what Detectron2 computed.

    ``folder``: a directory of ``data/detectron2`` (``images/``, ``outputs.json`` from
    ``tools/detectron2_fixture.py``). Per image: ``detections`` (Detectron2's count) and
    ``ours``, ``box_px`` (largest box-corner difference, pixels), ``score`` (largest score
    difference), ``classes`` (same classes in the same order), ``kept`` (same kept proposal
    rows), ``proposal_px`` (largest proposal-corner difference), ``mask_pixels`` /
    ``mask_total`` (pixels of the binary masks that differ / Detectron2's mask pixels), and
    the two outputs (``theirs``, ``run``) for figures.
    """
    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_utils

    folder = Path(folder)
    rows = []
    for rec in json.loads((folder / "outputs.json").read_text()):
        rgb = np.asarray(Image.open(folder / "images" / rec["file_name"]).convert("RGB"))
        with torch.no_grad():
            run = model.run([torch.from_numpy(rgb.copy()).permute(2, 0, 1)])
        det, theirs_boxes = run.detections[0], torch.tensor(rec["boxes"]).reshape(-1, 4)
        same_n = len(det["boxes"]) == len(theirs_boxes)
        masks = torch.from_numpy(mask_utils.decode(rec["masks"])).permute(2, 0, 1).bool()
        proposals = torch.tensor(rec["proposal_boxes"])
        rows.append(
            {
                "file_name": rec["file_name"],
                "image": rgb,
                "detections": len(theirs_boxes),
                "ours": len(det["boxes"]),
                "box_px": float((det["boxes"] - theirs_boxes).abs().max()) if same_n else math.inf,
                "score": float((det["scores"] - torch.tensor(rec["scores"])).abs().max()) if same_n else math.inf,
                "classes": (det["labels"] - 1).tolist() == rec["classes"],
                "kept": run.shortlist[0].proposal_index.tolist() == rec["kept"],
                "proposal_px": float((run.longlist[0].boxes - proposals).abs().max())
                if len(proposals) == len(run.longlist[0].boxes)
                else math.inf,
                "mask_pixels": int(((det["masks"][:, 0] >= 0.5) != masks).sum()) if same_n else -1,
                "mask_total": int(masks.sum()),
                "theirs": {"boxes": theirs_boxes, "scores": torch.tensor(rec["scores"]), "classes": rec["classes"]},
                "run": run,
            }
        )
    return rows
