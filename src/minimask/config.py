"""Every threshold and size of the model, in one frozen dataclass.

Each field is named as torchvision names it (a ``MaskRCNN``/``FasterRCNN`` keyword, or the
attribute torchvision hard-codes), and carries in its metadata:

- ``chapter``: the chapter of the book that explains it;
- ``torchvision``: torchvision's value for ``maskrcnn_resnet50_fpn`` (and where it lives);
- ``detectron2``: the Detectron2 config key that plays the same part (``""`` if none);
- ``note``: where the two differ, or why a value is what it is.

``config_table()`` renders this as rows for the book. Sources: torchvision 0.29.1
``models/detection/{faster_rcnn,mask_rcnn,rpn,roi_heads,transform}.py``; Detectron2
``config/defaults.py`` overridden by ``configs/Base-RCNN-FPN.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

BACKBONES = ("resnet50", "resnet18", "small")
MASK_PASTES = ("torchvision", "subpixel")
NORMS = ("batch", "frozen")


def _f(default: Any, chapter: int, torchvision: Any, detectron2: str = "", note: str = "") -> Any:
    """A dataclass field with the provenance the book prints beside it."""
    meta = {"chapter": chapter, "torchvision": torchvision, "detectron2": detectron2, "note": note}
    if isinstance(default, (list, dict, set)):
        raise TypeError("Config fields must be immutable (use tuples)")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Config:
    """All sizes and thresholds of minimask's Mask R-CNN.

    The defaults are torchvision's ``maskrcnn_resnet50_fpn`` (v1) values, so
    ``Config()`` == ``Config.torchvision_r50()``. ``Config.shapes()`` is the small model
    trained on the CPU for the book. Invalid values raise ``ValueError`` naming the field.
    """

    # --- chapter 1-2, input: torchvision GeneralizedRCNNTransform ----------------------------
    min_size: int = _f(800, 2, 800, "INPUT.MIN_SIZE_TEST", "short side after resizing")
    max_size: int = _f(1333, 2, 1333, "INPUT.MAX_SIZE_TEST", "cap on the long side")
    image_mean: tuple[float, float, float] = _f(
        (0.485, 0.456, 0.406),
        2,
        (0.485, 0.456, 0.406),
        "MODEL.PIXEL_MEAN",
        "RGB in [0, 1]; Detectron2 uses BGR 0-255 [103.53, 116.28, 123.675]",
    )
    image_std: tuple[float, float, float] = _f(
        (0.229, 0.224, 0.225), 2, (0.229, 0.224, 0.225), "MODEL.PIXEL_STD", "Detectron2's MSRA weights use [1, 1, 1]"
    )
    size_divisible: int = _f(
        32, 2, 32, "backbone size_divisibility", "padding multiple (GeneralizedRCNNTransform kwarg)"
    )

    # --- chapter 2, features: torchvision resnet_fpn_backbone / BackboneWithFPN --------------
    backbone: str = _f(
        "resnet50", 2, "resnet50", "MODEL.RESNETS.DEPTH", "'small' is our CPU-trainable ResNet of BasicBlocks"
    )
    backbone_stem: tuple[int, ...] = _f(
        (64,),
        2,
        (64,),
        "MODEL.RESNETS.STEM_OUT_CHANNELS",
        "channels of the stem conv(s); only read by the 'small' backbone",
    )
    backbone_widths: tuple[int, int, int, int] = _f(
        (256, 512, 1024, 2048),
        2,
        (256, 512, 1024, 2048),
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        "output channels of layer1-4; only read by the 'small' backbone",
    )
    backbone_norm: str = _f(
        "batch",
        2,
        "batch",
        "MODEL.RESNETS.NORM",
        "torchvision uses trainable BatchNorm when built with no weights, "
        "FrozenBatchNorm2d with pretrained weights; Detectron2 FrozenBN",
    )
    frozen_bn_eps: float = _f(1e-5, 2, 1e-5, "", "overwritten to 0.0 when COCO_V1 weights load")
    trainable_backbone_layers: int = _f(
        5, 2, 5, "MODEL.BACKBONE.FREEZE_AT", "5 with no weights; 3 with pretrained weights"
    )
    fpn_out_channels: int = _f(256, 2, 256, "MODEL.FPN.OUT_CHANNELS")
    fpn_norm: bool = _f(False, 2, False, "MODEL.FPN.NORM", "BatchNorm in the FPN convs (v2 uses it)")

    # --- chapter 3, objectness: torchvision AnchorGenerator, RPNHead --------------------------
    anchor_sizes: tuple[tuple[int, ...], ...] = _f(
        ((32,), (64,), (128,), (256,), (512,)),
        3,
        ((32,), (64,), (128,), (256,), (512,)),
        "MODEL.ANCHOR_GENERATOR.SIZES",
        "one tuple per FPN level",
    )
    aspect_ratios: tuple[float, ...] = _f(
        (0.5, 1.0, 2.0),
        3,
        (0.5, 1.0, 2.0),
        "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
        "height / width; the same ratios at every level",
    )
    rpn_head_conv_depth: int = _f(1, 3, 1, "MODEL.RPN.CONV_DIMS", "v2 uses 2")
    rpn_bbox_reg_weights: tuple[float, float, float, float] = _f(
        (1.0, 1.0, 1.0, 1.0), 3, "hard-coded in RegionProposalNetwork", "MODEL.RPN.BBOX_REG_WEIGHTS"
    )
    rpn_fg_iou_thresh: float = _f(0.7, 3, 0.7, "MODEL.RPN.IOU_THRESHOLDS", "anchors at IoU >= are positive")
    rpn_bg_iou_thresh: float = _f(0.3, 3, 0.3, "MODEL.RPN.IOU_THRESHOLDS", "anchors at IoU < are negative")
    rpn_batch_size_per_image: int = _f(256, 3, 256, "MODEL.RPN.BATCH_SIZE_PER_IMAGE")
    rpn_positive_fraction: float = _f(0.5, 3, 0.5, "MODEL.RPN.POSITIVE_FRACTION")
    rpn_smooth_l1_beta: float = _f(
        1 / 9, 3, "1/9, hard-coded in rpn.py", "MODEL.RPN.SMOOTH_L1_BETA", "Detectron2 uses 0.0 (pure L1)"
    )

    # --- chapter 4, longlist: torchvision RegionProposalNetwork.filter_proposals -------------
    rpn_pre_nms_top_n_train: int = _f(2000, 4, 2000, "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "per FPN level")
    rpn_pre_nms_top_n_test: int = _f(
        1000, 4, 1000, "MODEL.RPN.PRE_NMS_TOPK_TEST", "per FPN level; 6000 in defaults.py, 1000 in Base-RCNN-FPN.yaml"
    )
    rpn_post_nms_top_n_train: int = _f(
        2000, 4, 2000, "MODEL.RPN.POST_NMS_TOPK_TRAIN", "per image; Detectron2 keeps 1000"
    )
    rpn_post_nms_top_n_test: int = _f(1000, 4, 1000, "MODEL.RPN.POST_NMS_TOPK_TEST", "per image")
    rpn_nms_thresh: float = _f(0.7, 4, 0.7, "MODEL.RPN.NMS_THRESH", "suppresses IoU > thresh, per level")
    rpn_score_thresh: float = _f(0.0, 4, 0.0, "", "P(object) >= thresh; a no-op at 0")
    rpn_min_size: float = _f(
        1e-3,
        4,
        "1e-3, hard-coded RegionProposalNetwork.min_size",
        "MODEL.PROPOSAL_GENERATOR.MIN_SIZE",
        "keep side >= (Detectron2: 0, keep >)",
    )

    # --- chapter 5, classification: torchvision MultiScaleRoIAlign, TwoMLPHead ----------------
    num_classes: int = _f(
        91, 5, 91, "MODEL.ROI_HEADS.NUM_CLASSES", "includes background at index 0; Detectron2 counts foreground only"
    )
    box_roi_output_size: int = _f(7, 5, 7, "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION")
    box_roi_sampling_ratio: int = _f(
        2, 5, 2, "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", "Detectron2 uses 0 (adaptive)"
    )
    roi_aligned: bool = _f(False, 5, False, "MODEL.ROI_BOX_HEAD.POOLER_TYPE", "Detectron2's ROIAlignV2 is aligned=True")
    canonical_scale: int = _f(224, 5, 224, "ROIPooler canonical_box_size")
    canonical_level: int = _f(4, 5, 4, "ROIPooler canonical_level")
    box_head_dim: int = _f(1024, 5, 1024, "MODEL.ROI_BOX_HEAD.FC_DIM", "TwoMLPHead representation_size")
    box_fg_iou_thresh: float = _f(0.5, 5, 0.5, "MODEL.ROI_HEADS.IOU_THRESHOLDS")
    box_bg_iou_thresh: float = _f(0.5, 5, 0.5, "MODEL.ROI_HEADS.IOU_THRESHOLDS")
    box_batch_size_per_image: int = _f(512, 5, 512, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE")
    box_positive_fraction: float = _f(0.25, 5, 0.25, "MODEL.ROI_HEADS.POSITIVE_FRACTION")
    bbox_reg_weights: tuple[float, float, float, float] = _f(
        (10.0, 10.0, 5.0, 5.0), 5, "None -> (10, 10, 5, 5) in RoIHeads", "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS"
    )
    bbox_xform_clip: float = _f(
        math.log(1000.0 / 16),
        5,
        "log(1000/16), BoxCoder default",
        "_DEFAULT_SCALE_CLAMP (code constant)",
        "upper clamp on dw, dh before exp",
    )
    box_smooth_l1_beta: float = _f(
        1 / 9,
        5,
        "1/9, hard-coded in fastrcnn_loss",
        "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA",
        "Detectron2 uses 0.0 (pure L1)",
    )

    # --- chapter 6, shortlist: torchvision RoIHeads.postprocess_detections -------------------
    box_score_thresh: float = _f(0.05, 6, 0.05, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "keeps score > thresh")
    box_nms_thresh: float = _f(0.5, 6, 0.5, "MODEL.ROI_HEADS.NMS_THRESH_TEST", "per class; suppresses IoU >")
    box_detections_per_img: int = _f(100, 6, 100, "TEST.DETECTIONS_PER_IMAGE")
    box_min_size: float = _f(1e-2, 6, "1e-2, hard-coded in postprocess_detections", "", "keep side >=, before NMS")

    # --- chapter 7, segmentation: torchvision MaskRCNNHeads, MaskRCNNPredictor, paste_masks ---
    mask_roi_output_size: int = _f(14, 7, 14, "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION")
    mask_roi_sampling_ratio: int = _f(
        2, 7, 2, "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO", "Detectron2 uses 0 (adaptive)"
    )
    mask_head_layers: tuple[int, ...] = _f(
        (256, 256, 256, 256), 7, (256, 256, 256, 256), "MODEL.ROI_MASK_HEAD.NUM_CONV / CONV_DIM"
    )
    mask_head_dilation: int = _f(1, 7, 1, "")
    mask_predictor_dim: int = _f(256, 7, 256, "MODEL.ROI_MASK_HEAD.CONV_DIM", "deconv channels")
    mask_threshold: float = _f(
        0.5,
        7,
        "none in the model (docs: >= 0.5)",
        "detector_postprocess(mask_threshold=0.5)",
        "pixel is in the mask if >=",
    )
    mask_paste: str = _f(
        "torchvision", 7, "torchvision", "", "'subpixel' samples the 28x28 mask over the continuous box, as Detectron2"
    )
    mask_paste_padding: int = _f(
        1, 7, "1, hard-coded in paste_masks_in_image", "", "zero border in cells (torchvision paste only)"
    )

    # ------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def torchvision_r50(cls) -> Config:
        """torchvision ``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)``."""
        return cls()

    @classmethod
    def shapes(cls) -> Config:
        """Small and CPU-trainable, for the shapes data set (images of 160-224 px).

        Reasons: images are enlarged to 256 px because small objects (8-32 px) are found
        better larger (box AP on the val split 0.863 at 256 px against 0.838 at 192 px, 4,000
        iterations each; 22 vs 18 minutes of training); objects are then about 11-107 px, so
        anchors are 4x smaller than COCO's; no ImageNet
        weights offline, so a narrow ResNet of BasicBlocks with trainable BatchNorm (also in
        the FPN) that learns from scratch; fewer proposals and sampled RoIs for speed.
        """
        return cls(
            min_size=256,
            max_size=256,
            backbone="small",
            backbone_stem=(24, 32),
            backbone_widths=(32, 64, 128, 256),
            fpn_out_channels=64,
            fpn_norm=True,
            anchor_sizes=((8,), (16,), (32,), (64,), (128,)),
            rpn_pre_nms_top_n_train=500,
            rpn_pre_nms_top_n_test=500,
            rpn_post_nms_top_n_train=300,
            rpn_post_nms_top_n_test=300,
            num_classes=4,
            box_roi_sampling_ratio=1,
            mask_roi_sampling_ratio=1,
            box_head_dim=256,
            box_batch_size_per_image=64,
            mask_head_layers=(64, 64, 64, 64),
            mask_predictor_dim=64,
        )

    def replace(self, **changes: Any) -> Config:
        """``dataclasses.replace`` with validation (a shorthand for the book)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """Inverse of ``to_dict``: lists (from JSON) become tuples; unknown keys are refused."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown Config field(s): {', '.join(unknown)}")
        return cls(**{k: _tuplify(v) for k, v in values.items()})


def _tuplify(v: Any) -> Any:
    return tuple(_tuplify(x) for x in v) if isinstance(v, list) else v


def config_table(cfg: Config | None = None, chapter: int | None = None) -> list[dict[str, Any]]:
    """Rows (name, value, torchvision, detectron2, note, chapter) for the book's tables."""
    cfg = cfg or Config()
    rows = []
    for f in dataclasses.fields(cfg):
        if chapter is not None and f.metadata["chapter"] != chapter:
            continue
        rows.append({"name": f.name, "value": getattr(cfg, f.name), **f.metadata})
    return rows


# --- validation ---------------------------------------------------------------------------------
def _fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"Config.{name} = {value!r} is invalid: must be {allowed}")


def _validate(c: Config) -> None:
    for f in dataclasses.fields(c):
        v = getattr(c, f.name)
        if isinstance(f.default, bool):
            if not isinstance(v, bool):
                _fail(f.name, v, "True or False")
        elif isinstance(f.default, int):
            if isinstance(v, bool) or not isinstance(v, int):
                _fail(f.name, v, "an integer")
        elif isinstance(f.default, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                _fail(f.name, v, "a finite number")
        elif isinstance(f.default, tuple) and not isinstance(v, tuple):
            _fail(f.name, v, "a tuple")
    # probabilities and IoU thresholds live in [0, 1]
    for name in (
        "rpn_fg_iou_thresh",
        "rpn_bg_iou_thresh",
        "rpn_nms_thresh",
        "rpn_score_thresh",
        "rpn_positive_fraction",
        "box_fg_iou_thresh",
        "box_bg_iou_thresh",
        "box_positive_fraction",
        "box_score_thresh",
        "box_nms_thresh",
        "mask_threshold",
    ):
        if not 0.0 <= getattr(c, name) <= 1.0:
            _fail(name, getattr(c, name), "in [0, 1]")
    if c.rpn_bg_iou_thresh > c.rpn_fg_iou_thresh:
        _fail("rpn_bg_iou_thresh", c.rpn_bg_iou_thresh, f"<= rpn_fg_iou_thresh ({c.rpn_fg_iou_thresh})")
    if c.box_bg_iou_thresh > c.box_fg_iou_thresh:
        _fail("box_bg_iou_thresh", c.box_bg_iou_thresh, f"<= box_fg_iou_thresh ({c.box_fg_iou_thresh})")
    # counts and sizes that must be positive
    for name in (
        "min_size",
        "max_size",
        "size_divisible",
        "fpn_out_channels",
        "rpn_head_conv_depth",
        "rpn_batch_size_per_image",
        "rpn_pre_nms_top_n_train",
        "rpn_pre_nms_top_n_test",
        "rpn_post_nms_top_n_train",
        "rpn_post_nms_top_n_test",
        "box_roi_output_size",
        "canonical_scale",
        "box_head_dim",
        "box_batch_size_per_image",
        "box_detections_per_img",
        "mask_roi_output_size",
        "mask_head_dilation",
        "mask_predictor_dim",
    ):
        if getattr(c, name) < 1:
            _fail(name, getattr(c, name), "a positive integer (>= 1)")
    for name in ("box_roi_sampling_ratio", "mask_roi_sampling_ratio"):
        if getattr(c, name) < 0:
            _fail(name, getattr(c, name), ">= 0 (0 = adaptive)")
    for name in (
        "rpn_min_size",
        "box_min_size",
        "rpn_smooth_l1_beta",
        "box_smooth_l1_beta",
        "frozen_bn_eps",
        "mask_paste_padding",
    ):
        if getattr(c, name) < 0:
            _fail(name, getattr(c, name), ">= 0")
    if c.bbox_xform_clip <= 0:
        _fail("bbox_xform_clip", c.bbox_xform_clip, "> 0")
    if c.min_size > c.max_size:
        _fail("min_size", c.min_size, f"<= max_size ({c.max_size})")
    if c.num_classes < 2:
        _fail("num_classes", c.num_classes, ">= 2 (background at index 0 plus at least one class)")
    if not 0 <= c.trainable_backbone_layers <= 5:
        _fail("trainable_backbone_layers", c.trainable_backbone_layers, "in 0..5")
    if not 1 <= c.canonical_level <= 8:
        _fail("canonical_level", c.canonical_level, "in 1..8")
    # choices
    for name, allowed in (("backbone", BACKBONES), ("mask_paste", MASK_PASTES), ("backbone_norm", NORMS)):
        if getattr(c, name) not in allowed:
            _fail(name, getattr(c, name), f"one of {allowed}")
    # tuples
    for name in ("image_mean", "image_std"):
        v = getattr(c, name)
        if len(v) != 3 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v):
            _fail(name, v, "three finite numbers (R, G, B)")
    if any(s <= 0 for s in c.image_std):
        _fail("image_std", c.image_std, "three positive numbers")
    if len(c.anchor_sizes) == 0:
        _fail("anchor_sizes", c.anchor_sizes, "a non-empty tuple of tuples, one per FPN level")
    if len(c.anchor_sizes) != 5:
        _fail("anchor_sizes", c.anchor_sizes, "5 tuples, one per FPN level (P2-P6)")
    for level in c.anchor_sizes:
        if (
            not isinstance(level, tuple)
            or len(level) == 0
            or not all(isinstance(s, (int, float)) and s > 0 for s in level)
        ):
            _fail("anchor_sizes", c.anchor_sizes, "a tuple of non-empty tuples of positive sizes")
    if len({len(level) for level in c.anchor_sizes}) != 1:
        _fail("anchor_sizes", c.anchor_sizes, "the same number of sizes at every level (shared RPN head)")
    if len(c.aspect_ratios) == 0 or not all(isinstance(r, (int, float)) and r > 0 for r in c.aspect_ratios):
        _fail("aspect_ratios", c.aspect_ratios, "a non-empty tuple of positive ratios")
    for name in ("rpn_bbox_reg_weights", "bbox_reg_weights"):
        v = getattr(c, name)
        if len(v) != 4 or not all(isinstance(x, (int, float)) and x > 0 for x in v):
            _fail(name, v, "four positive weights (wx, wy, ww, wh)")
    if len(c.backbone_widths) != 4 or any(not isinstance(w, int) or w < 1 for w in c.backbone_widths):
        _fail("backbone_widths", c.backbone_widths, "four positive integers (layer1-4)")
    if len(c.backbone_stem) == 0 or any(not isinstance(w, int) or w < 1 for w in c.backbone_stem):
        _fail("backbone_stem", c.backbone_stem, "a non-empty tuple of positive integers")
    if len(c.mask_head_layers) == 0 or any(not isinstance(w, int) or w < 1 for w in c.mask_head_layers):
        _fail("mask_head_layers", c.mask_head_layers, "a non-empty tuple of positive integers")
