"""Every threshold and size of the model, in one frozen dataclass.

Each field is named as torchvision names it (a ``MaskRCNN``/``FasterRCNN`` keyword, or the
attribute torchvision hard-codes), and carries in its metadata:

- ``chapter``: the chapter of the book that explains it;
- ``torchvision``: torchvision's value for ``maskrcnn_resnet50_fpn`` (and where it lives);
- ``detectron2``: the Detectron2 config key that plays the same part (``""`` if none);
- ``note``: where the two differ, or why a value is what it is;
- ``check``: the values it may take, in a small vocabulary (``describe_check`` spells it out):

  - ``("bool",)``: True or False;
  - ``("int", lo, hi)``: an integer with lo <= value <= hi (``None``: no bound);
  - ``("float", lo, hi, brackets)``: a finite number (an int will do) in the interval, its
    ``brackets`` one of ``"[]"``, ``"[)"``, ``"(]"``, ``"()"`` (``None``: no bound);
  - ``("choice", values)``: one of ``values``;
  - ``("tuple", n, item)``: a tuple of ``n`` items (``None``: one or more; ``"*"``: any number,
    none too), each passing ``item``.

  ``Config`` checks every field against its ``check`` in one loop, then the relations
  between fields (``_relations``); ``_f`` refuses a field without a well-formed check.

``config_table()`` renders this as rows for the book. Sources: torchvision 0.29.1
``models/detection/{faster_rcnn,mask_rcnn,rpn,roi_heads,transform}.py``; Detectron2
``config/defaults.py`` overridden by ``configs/Base-RCNN-FPN.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

BACKBONES = ("resnet50", "resnet101", "resnet152", "resnet18", "small")
MASK_PASTES = ("torchvision", "subpixel")
PIXEL_CENTRES = ("roi_align", "half")
NORMS = ("batch", "frozen", "group")
CONV_NORMS = ("batch", "group")
CLASS_SCORES = ("softmax", "sigmoid")
CHANNEL_ORDERS = ("RGB", "BGR")
FROZEN_BN_ARITHMETICS = ("scale_shift", "batch_norm")
RESIZE_ROUNDINGS = ("floor", "round")
RESIZE_INTERPOLATIONS = ("bilinear", "pil_bilinear")
ANCHOR_STRIDES = ("from_sizes", "fixed")
NMS_SCORES = ("probability", "logit")
LEVEL_EPS_PLACEMENTS = ("after_log", "inside_log")
SMALL_BOX_REMOVALS = ("before_nms", "after_rescale")
BACKGROUND_CLASSES = ("first", "last")


# Checks used by many fields (the vocabulary is in the module docstring).
BOOL = ("bool",)
POSITIVE_INT = ("int", 1, None)
NON_NEGATIVE_INT = ("int", 0, None)
NUMBER = ("float", None, None, "()")
POSITIVE = ("float", 0.0, None, "()")
NON_NEGATIVE = ("float", 0.0, None, "[)")
UNIT = ("float", 0.0, 1.0, "[]")  # probabilities and IoU thresholds


def _f(default: Any, chapter: int, torchvision: Any, detectron2: str = "", note: str = "", *, check: tuple) -> Any:
    """A dataclass field with the provenance the book prints beside it and the values it may take."""
    describe_check(check)  # a malformed check fails at import, not at the first bad value
    if not check_accepts(check, default):
        raise ValueError(f"default {default!r} fails its own check: {describe_check(check)}")
    meta = {"chapter": chapter, "torchvision": torchvision, "detectron2": detectron2, "note": note, "check": check}
    if isinstance(default, (list, dict, set)):
        raise TypeError("Config fields must be immutable (use tuples)")
    return field(default=default, metadata=meta)


def describe_check(check: tuple, plural: bool = False) -> str:
    """A check in words: ``("float", 0.0, 1.0, "[]")`` -> "a finite number in [0, 1]"."""
    kind = check[0] if isinstance(check, tuple) and check else None
    if kind == "bool" and len(check) == 1:
        return "booleans (True or False)" if plural else "True or False"
    if kind == "int" and len(check) == 3:
        lo, hi = check[1], check[2]
        if (lo, hi) == (1, None):
            return "positive integers (>= 1)" if plural else "a positive integer (>= 1)"
        bound = _interval(lo, hi, "[]") if lo is None or hi is None else f" in {lo}..{hi}"
        return ("integers" if plural else "an integer") + bound
    if kind == "float" and len(check) == 4 and check[3] in ("[]", "[)", "(]", "()"):
        return ("finite numbers" if plural else "a finite number") + _interval(*check[1:])
    if kind == "choice" and len(check) == 2 and isinstance(check[1], tuple) and check[1]:
        return f"{'each ' if plural else ''}one of {check[1]}"
    if kind == "tuple" and len(check) == 3 and (check[1] in (None, "*") or isinstance(check[1], int)):
        items = describe_check(check[2], plural=True)
        if check[1] == "*":
            return f"tuples of {items}, or ()" if plural else f"a tuple of {items}, or ()"
        if check[1] is None:
            return f"non-empty tuples of {items}" if plural else f"a non-empty tuple of {items}"
        return f"tuples of {check[1]} {items}" if plural else f"a tuple of {check[1]} {items}"
    raise TypeError(f"not a Config check: {check!r} (see the vocabulary in minimask.config's docstring)")


def _interval(lo: Any, hi: Any, brackets: str) -> str:
    if lo is not None and hi is not None:
        return f" in {brackets[0]}{lo:g}, {hi:g}{brackets[1]}"
    if lo is not None:
        return f" {'>=' if brackets[0] == '[' else '>'} {lo:g}"
    if hi is not None:
        return f" {'<=' if brackets[1] == ']' else '<'} {hi:g}"
    return ""


def check_accepts(check: tuple, value: Any) -> bool:
    """Whether ``value`` passes ``check`` (see the vocabulary in the module docstring)."""
    kind = check[0]
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        lo, hi = check[1], check[2]
        is_int = isinstance(value, int) and not isinstance(value, bool)
        return is_int and (lo is None or value >= lo) and (hi is None or value <= hi)
    if kind == "float":
        lo, hi, brackets = check[1], check[2], check[3]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        above = lo is None or (value >= lo if brackets[0] == "[" else value > lo)
        below = hi is None or (value <= hi if brackets[1] == "]" else value < hi)
        return above and below
    if kind == "choice":
        return isinstance(value, str) and value in check[1]
    if kind == "tuple":
        n, item = check[1], check[2]
        if not isinstance(value, tuple) or (n is None and len(value) == 0) or (isinstance(n, int) and len(value) != n):
            return False
        return all(check_accepts(item, v) for v in value)
    raise TypeError(f"not a Config check: {check!r}")


@dataclass(frozen=True)
class Config:
    """All sizes and thresholds of minimask's Mask R-CNN.

    The defaults are torchvision's ``maskrcnn_resnet50_fpn`` (v1) values, so
    ``Config()`` == ``Config.torchvision_r50()``. ``Config.shapes()`` is the small model
    trained on the CPU for the book; ``Config.detectron2_r50()`` decides by Detectron2's values
    and rules (chapter 11: each rule is a field, with the Detectron2 key or function that
    makes it; torchvision's value leaves each stage as it was). Invalid values raise
    ``ValueError`` naming the field.
    """

    # --- chapter 1-2, input: torchvision GeneralizedRCNNTransform ----------------------------
    min_size: int = _f(800, 2, 800, "INPUT.MIN_SIZE_TEST", "short side after resizing", check=POSITIVE_INT)
    max_size: int = _f(1333, 2, 1333, "INPUT.MAX_SIZE_TEST", "cap on the long side", check=POSITIVE_INT)
    image_mean: tuple[float, float, float] = _f(
        (0.485, 0.456, 0.406),
        2,
        (0.485, 0.456, 0.406),
        "MODEL.PIXEL_MEAN",
        "RGB in [0, 1]; Detectron2 uses BGR 0-255 [103.53, 116.28, 123.675]",
        check=("tuple", 3, NUMBER),
    )
    image_std: tuple[float, float, float] = _f(
        (0.229, 0.224, 0.225),
        2,
        (0.229, 0.224, 0.225),
        "MODEL.PIXEL_STD",
        "Detectron2's MSRA weights use [1, 1, 1]",
        check=("tuple", 3, POSITIVE),
    )
    size_divisible: int = _f(
        32, 2, 32, "backbone size_divisibility", "padding multiple (GeneralizedRCNNTransform kwarg)", check=POSITIVE_INT
    )
    # The rules of the input: Detectron2's DefaultPredictor feeds the model BGR 0-255
    # pixels resized on uint8 by PIL, and the model normalises after the resize.
    input_channels: str = _f(
        "RGB",
        2,
        "RGB",
        "INPUT.FORMAT",
        "channel order the weights expect; images come in RGB either way and are reordered",
        check=("choice", CHANNEL_ORDERS),
    )
    input_scale: float = _f(
        1.0,
        2,
        1.0,
        "MODEL.PIXEL_MEAN (0-255 units)",
        "pixels are multiplied by this before normalising: 1 (torchvision, [0, 1]) or 255 (Detectron2)",
        check=POSITIVE,
    )
    normalize_before_resize: bool = _f(
        True,
        2,
        "True, GeneralizedRCNNTransform.forward",
        "GeneralizedRCNN.preprocess_image (after the loader's resize)",
        "Detectron2 resizes in the data loader / DefaultPredictor and normalises in the model",
        check=BOOL,
    )
    resize_rounding: str = _f(
        "floor",
        2,
        "floor, F.interpolate(recompute_scale_factor=True)",
        "ResizeShortestEdge.get_output_shape",
        "Detectron2 rounds, int(x + 0.5): 300x451 -> 800x1203 there, 800x1202 here",
        check=("choice", RESIZE_ROUNDINGS),
    )
    resize_interpolation: str = _f(
        "bilinear",
        2,
        "bilinear F.interpolate on float",
        "ResizeTransform.apply_image",
        "'pil_bilinear': PIL bilinear on uint8 (antialiased when shrinking), as DefaultPredictor",
        check=("choice", RESIZE_INTERPOLATIONS),
    )

    # --- chapter 2, features: torchvision resnet_fpn_backbone / BackboneWithFPN --------------
    backbone: str = _f(
        "resnet50",
        2,
        "resnet50",
        "MODEL.RESNETS.DEPTH",
        "'small' is our CPU-trainable ResNet of BasicBlocks",
        check=("choice", BACKBONES),
    )
    backbone_stem: tuple[int, ...] = _f(
        (64,),
        2,
        (64,),
        "MODEL.RESNETS.STEM_OUT_CHANNELS",
        "channels of the stem conv(s); read by 'small' and the Bottleneck ResNets (50, 101, 152)",
        check=("tuple", None, POSITIVE_INT),
    )
    backbone_widths: tuple[int, int, int, int] = _f(
        (256, 512, 1024, 2048),
        2,
        (256, 512, 1024, 2048),
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        "output channels of layer1-4; read by 'small' and the Bottleneck ResNets (50, 101, 152)",
        check=("tuple", 4, POSITIVE_INT),
    )
    backbone_norm: str = _f(
        "batch",
        2,
        "batch",
        "MODEL.RESNETS.NORM",
        "torchvision uses trainable BatchNorm when built with no weights, "
        "FrozenBatchNorm2d with pretrained weights; Detectron2 FrozenBN; 'group': GroupNorm(32) (GN)",
        check=("choice", NORMS),
    )
    resnet_groups: int = _f(
        1, 2, 1, "MODEL.RESNETS.NUM_GROUPS", "32 for ResNeXt (X101-32x8d): grouped 3x3 convs", check=POSITIVE_INT
    )
    resnet_width_per_group: int = _f(
        64,
        2,
        64,
        "MODEL.RESNETS.WIDTH_PER_GROUP",
        "layer1's 3x3 conv has resnet_groups * this channels, doubled at each stage",
        check=POSITIVE_INT,
    )
    frozen_bn_eps: float = _f(1e-5, 2, 1e-5, "", "overwritten to 0.0 when COCO_V1 weights load", check=NON_NEGATIVE)
    frozen_bn_arithmetic: str = _f(
        "scale_shift",
        2,
        "x * scale + bias, FrozenBatchNorm2d.forward",
        "FrozenBatchNorm2d.forward (F.batch_norm without gradients)",
        "the same function rounded differently (~1e-7): enough to reorder near-tied proposals",
        check=("choice", FROZEN_BN_ARITHMETICS),
    )
    trainable_backbone_layers: int = _f(
        5, 2, 5, "MODEL.BACKBONE.FREEZE_AT", "5 with no weights; 3 with pretrained weights", check=("int", 0, 5)
    )
    fpn_out_channels: int = _f(256, 2, 256, "MODEL.FPN.OUT_CHANNELS", check=POSITIVE_INT)
    fpn_norm: bool = _f(False, 2, False, "MODEL.FPN.NORM", "a norm in the FPN convs (v2 uses BatchNorm)", check=BOOL)
    conv_norm: str = _f(
        "batch",
        2,
        "BatchNorm2d (v2)",
        "MODEL.FPN.NORM / ROI_BOX_HEAD.NORM / ROI_MASK_HEAD.NORM",
        "the norm of fpn_norm, box_head_norm and mask_head_norm: BatchNorm (SyncBN at inference) or GroupNorm(32) (GN)",
        check=("choice", CONV_NORMS),
    )
    resnet_stride_in_1x1: bool = _f(
        False,
        2,
        "False, stride in the 3x3 conv (Bottleneck)",
        "MODEL.RESNETS.STRIDE_IN_1X1",
        "the MSRA ResNets of Detectron2's model zoo stride in the first 1x1 conv",
        check=BOOL,
    )

    # --- chapter 3, objectness: torchvision AnchorGenerator, RPNHead --------------------------
    anchor_sizes: tuple[tuple[int, ...], ...] = _f(
        ((32,), (64,), (128,), (256,), (512,)),
        3,
        ((32,), (64,), (128,), (256,), (512,)),
        "MODEL.ANCHOR_GENERATOR.SIZES",
        "one tuple per FPN level",
        check=("tuple", 5, ("tuple", None, POSITIVE)),
    )
    aspect_ratios: tuple[float, ...] = _f(
        (0.5, 1.0, 2.0),
        3,
        (0.5, 1.0, 2.0),
        "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
        "height / width; the same ratios at every level",
        check=("tuple", None, POSITIVE),
    )
    round_cell_anchors: bool = _f(
        True,
        3,
        "True, AnchorGenerator.generate_anchors",
        "DefaultAnchorGenerator.generate_cell_anchors",
        "Detectron2 keeps exact sides (45.25 x 22.63, not 46 x 22) and orders cell anchors size-major",
        check=BOOL,
    )
    anchor_strides: str = _f(
        "from_sizes",
        3,
        "padded size // map size, AnchorGenerator.forward",
        "DefaultAnchorGenerator strides (backbone output_shape)",
        "'fixed': 4, 8, 16, 32, 64; torchvision's P6 stride is 61 on a 13-row map of an 800-px batch",
        check=("choice", ANCHOR_STRIDES),
    )
    anchor_offset: float = _f(
        0.0,
        3,
        0.0,
        "MODEL.ANCHOR_GENERATOR.OFFSET",
        "anchor centre at (i + offset) * stride; Detectron2's config sets 0.0 (its Python default is 0.5)",
        check=("float", 0.0, 1.0, "[)"),
    )
    rpn_head_conv_depth: int = _f(1, 3, 1, "MODEL.RPN.CONV_DIMS", "v2 uses 2", check=POSITIVE_INT)
    rpn_bbox_reg_weights: tuple[float, float, float, float] = _f(
        (1.0, 1.0, 1.0, 1.0),
        3,
        "hard-coded in RegionProposalNetwork",
        "MODEL.RPN.BBOX_REG_WEIGHTS",
        check=("tuple", 4, POSITIVE),
    )
    rpn_fg_iou_thresh: float = _f(0.7, 3, 0.7, "MODEL.RPN.IOU_THRESHOLDS", "anchors at IoU >= are positive", check=UNIT)
    rpn_bg_iou_thresh: float = _f(0.3, 3, 0.3, "MODEL.RPN.IOU_THRESHOLDS", "anchors at IoU < are negative", check=UNIT)
    rpn_batch_size_per_image: int = _f(256, 3, 256, "MODEL.RPN.BATCH_SIZE_PER_IMAGE", check=POSITIVE_INT)
    rpn_positive_fraction: float = _f(0.5, 3, 0.5, "MODEL.RPN.POSITIVE_FRACTION", check=UNIT)
    rpn_smooth_l1_beta: float = _f(
        1 / 9,
        3,
        "1/9, hard-coded in rpn.py",
        "MODEL.RPN.SMOOTH_L1_BETA",
        "Detectron2 uses 0.0 (pure L1)",
        check=NON_NEGATIVE,
    )

    # --- chapter 4, longlist: torchvision RegionProposalNetwork.filter_proposals -------------
    rpn_pre_nms_top_n_train: int = _f(
        2000, 4, 2000, "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "per FPN level", check=POSITIVE_INT
    )
    rpn_pre_nms_top_n_test: int = _f(
        1000,
        4,
        1000,
        "MODEL.RPN.PRE_NMS_TOPK_TEST",
        "per FPN level; 6000 in defaults.py, 1000 in Base-RCNN-FPN.yaml",
        check=POSITIVE_INT,
    )
    rpn_post_nms_top_n_train: int = _f(
        2000, 4, 2000, "MODEL.RPN.POST_NMS_TOPK_TRAIN", "per image; Detectron2 keeps 1000", check=POSITIVE_INT
    )
    rpn_post_nms_top_n_test: int = _f(1000, 4, 1000, "MODEL.RPN.POST_NMS_TOPK_TEST", "per image", check=POSITIVE_INT)
    rpn_nms_thresh: float = _f(0.7, 4, 0.7, "MODEL.RPN.NMS_THRESH", "suppresses IoU > thresh, per level", check=UNIT)
    rpn_score_thresh: float = _f(0.0, 4, 0.0, "", "P(object) >= thresh; a no-op at 0", check=UNIT)
    rpn_min_size: float = _f(
        1e-3,
        4,
        "1e-3, hard-coded RegionProposalNetwork.min_size",
        "MODEL.PROPOSAL_GENERATOR.MIN_SIZE",
        "keep side >= (Detectron2: 0, keep >)",
        check=NON_NEGATIVE,
    )
    rpn_min_size_inclusive: bool = _f(
        True,
        4,
        "True, remove_small_boxes keeps side >= min",
        "Boxes.nonempty in find_top_rpn_proposals",
        "False: keep side > rpn_min_size, as Detectron2",
        check=BOOL,
    )
    rpn_nms_score: str = _f(
        "probability",
        4,
        "probability, sigmoid before batched_nms",
        "find_top_rpn_proposals (batched_nms on logits)",
        "the same order except where sigmoid rounds distinct logits to the same probability",
        check=("choice", NMS_SCORES),
    )

    # --- chapter 5, classification: torchvision MultiScaleRoIAlign, TwoMLPHead ----------------
    num_classes: int = _f(
        91,
        5,
        91,
        "MODEL.ROI_HEADS.NUM_CLASSES",
        "includes background at index 0; Detectron2 counts foreground only",
        check=("int", 2, None),
    )
    box_roi_output_size: int = _f(7, 5, 7, "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", check=POSITIVE_INT)
    box_roi_sampling_ratio: int = _f(
        2, 5, 2, "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", "Detectron2 uses 0 (adaptive)", check=NON_NEGATIVE_INT
    )
    roi_aligned: bool = _f(
        False, 5, False, "MODEL.ROI_BOX_HEAD.POOLER_TYPE", "Detectron2's ROIAlignV2 is aligned=True", check=BOOL
    )
    canonical_scale: int = _f(224, 5, 224, "ROIPooler canonical_box_size", check=POSITIVE_INT)
    canonical_level: int = _f(4, 5, 4, "ROIPooler canonical_level", check=("int", 1, 8))
    level_eps_placement: str = _f(
        "after_log",
        5,
        "after the log, LevelMapper(eps=1e-6)",
        "assign_boxes_to_levels (+1e-8 inside log2)",
        "floor(4 + log2(sqrt(area) / 224) + 1e-6) vs floor(4 + log2(sqrt(area) / 224 + 1e-8))",
        check=("choice", LEVEL_EPS_PLACEMENTS),
    )
    box_head_dim: int = _f(
        1024, 5, 1024, "MODEL.ROI_BOX_HEAD.FC_DIM", "TwoMLPHead representation_size", check=POSITIVE_INT
    )
    box_head_convs: tuple[int, ...] = _f(
        (),
        5,
        "() (v2: four of 256)",
        "MODEL.ROI_BOX_HEAD.NUM_CONV / CONV_DIM",
        "3x3 convs on the pooled features before the fully connected layers",
        check=("tuple", "*", POSITIVE_INT),
    )
    box_head_fcs: int = _f(
        2, 5, 2, "MODEL.ROI_BOX_HEAD.NUM_FC", "fully connected layers (fc6, fc7)", check=("int", 1, 2)
    )
    box_head_norm: bool = _f(
        False, 5, False, "MODEL.ROI_BOX_HEAD.NORM", "a conv_norm after each box-head conv", check=BOOL
    )
    cls_agnostic_bbox_reg: bool = _f(
        False,
        5,
        False,
        "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG",
        "one box per proposal for every class (4 deltas, not 4 per class)",
        check=BOOL,
    )
    class_score: str = _f(
        "softmax",
        5,
        "softmax, postprocess_detections",
        "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE",
        "'sigmoid': each class's probability on its own (FastRCNNOutputLayers.predict_probs); "
        "a row no longer sums to 1",
        check=("choice", CLASS_SCORES),
    )
    box_fg_iou_thresh: float = _f(0.5, 5, 0.5, "MODEL.ROI_HEADS.IOU_THRESHOLDS", check=UNIT)
    box_bg_iou_thresh: float = _f(0.5, 5, 0.5, "MODEL.ROI_HEADS.IOU_THRESHOLDS", check=UNIT)
    box_batch_size_per_image: int = _f(512, 5, 512, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", check=POSITIVE_INT)
    box_positive_fraction: float = _f(0.25, 5, 0.25, "MODEL.ROI_HEADS.POSITIVE_FRACTION", check=UNIT)
    bbox_reg_weights: tuple[float, float, float, float] = _f(
        (10.0, 10.0, 5.0, 5.0),
        5,
        "None -> (10, 10, 5, 5) in RoIHeads",
        "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS",
        check=("tuple", 4, POSITIVE),
    )
    bbox_xform_clip: float = _f(
        math.log(1000.0 / 16),
        5,
        "log(1000/16), BoxCoder default",
        "_DEFAULT_SCALE_CLAMP (code constant)",
        "upper clamp on dw, dh before exp",
        check=POSITIVE,
    )
    box_smooth_l1_beta: float = _f(
        1 / 9,
        5,
        "1/9, hard-coded in fastrcnn_loss",
        "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA",
        "Detectron2 uses 0.0 (pure L1)",
        check=NON_NEGATIVE,
    )

    # --- chapter 6, shortlist: torchvision RoIHeads.postprocess_detections -------------------
    box_score_thresh: float = _f(0.05, 6, 0.05, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "keeps score > thresh", check=UNIT)
    box_nms_thresh: float = _f(
        0.5, 6, 0.5, "MODEL.ROI_HEADS.NMS_THRESH_TEST", "per class; suppresses IoU > thresh", check=UNIT
    )
    box_detections_per_img: int = _f(
        100, 6, 100, "TEST.DETECTIONS_PER_IMAGE", "the cap per image, after NMS", check=POSITIVE_INT
    )
    box_min_size: float = _f(
        1e-2,
        6,
        "1e-2, hard-coded in postprocess_detections",
        "",
        "keeps boxes whose sides are >= it, before NMS",
        check=NON_NEGATIVE,
    )
    small_box_removal: str = _f(
        "before_nms",
        6,
        "before NMS, postprocess_detections",
        "detector_postprocess (Boxes.nonempty after rescaling)",
        "'after_rescale': no rule before NMS; after the cap, boxes mapped to the original image "
        "keep side > box_min_size (Detectron2: 0)",
        check=("choice", SMALL_BOX_REMOVALS),
    )
    background_class: str = _f(
        "first",
        6,
        "first (label 0)",
        "FastRCNNOutputLayers (background = NUM_CLASSES)",
        "where the weights put background; our records keep it at 0, but with 'last' per-class NMS "
        "groups by Detectron2's class index (label - 1)",
        check=("choice", BACKGROUND_CLASSES),
    )

    # --- chapter 7, segmentation: torchvision MaskRCNNHeads, MaskRCNNPredictor, paste_masks ---
    mask_roi_output_size: int = _f(14, 7, 14, "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", check=POSITIVE_INT)
    mask_roi_sampling_ratio: int = _f(
        2, 7, 2, "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO", "Detectron2 uses 0 (adaptive)", check=NON_NEGATIVE_INT
    )
    mask_head_layers: tuple[int, ...] = _f(
        (256, 256, 256, 256),
        7,
        (256, 256, 256, 256),
        "MODEL.ROI_MASK_HEAD.NUM_CONV / CONV_DIM",
        check=("tuple", None, POSITIVE_INT),
    )
    mask_head_dilation: int = _f(1, 7, 1, "", check=POSITIVE_INT)
    mask_head_norm: bool = _f(
        False, 7, False, "MODEL.ROI_MASK_HEAD.NORM", "a conv_norm after each mask-head conv (v2)", check=BOOL
    )
    cls_agnostic_mask: bool = _f(
        False,
        7,
        False,
        "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK",
        "one 28x28 mask per detection whatever its class",
        check=BOOL,
    )
    mask_predictor_dim: int = _f(256, 7, 256, "MODEL.ROI_MASK_HEAD.CONV_DIM", "deconv channels", check=POSITIVE_INT)
    mask_threshold: float = _f(
        0.5,
        7,
        "none in the model (docs: >= 0.5)",
        "detector_postprocess(mask_threshold=0.5)",
        "pixel is in the mask if probability >= thresh",
        check=UNIT,
    )
    mask_paste: str = _f(
        "torchvision",
        7,
        "torchvision",
        "",
        "'subpixel' samples the 28x28 mask over the continuous box, as Detectron2",
        check=("choice", MASK_PASTES),
    )
    mask_paste_padding: int = _f(
        1,
        7,
        "1, hard-coded in paste_masks_in_image",
        "",
        "zero border in cells (torchvision paste only)",
        check=NON_NEGATIVE_INT,
    )
    paste_pixel_centre: str = _f(
        "roi_align",
        7,
        "(no sub-pixel paste)",
        "_do_paste_mask (pixel centres at +0.5)",
        "where the sub-pixel paste puts pixel p: 'roi_align' as the RoIAlign that made the mask "
        "targets (p + 0.5 if roi_aligned, else p); 'half': p + 0.5 always, as Detectron2",
        check=("choice", PIXEL_CENTRES),
    )
    clip_to_original: bool = _f(
        False,
        7,
        "False, transform.postprocess only rescales",
        "detector_postprocess (Boxes.clip to the output size)",
        "detections mapped back to the original image are clipped to it (and pasted there)",
        check=BOOL,
    )
    binary_masks: bool = _f(
        False,
        7,
        "False: soft probabilities",
        "detector_postprocess(mask_threshold=0.5)",
        "True: pasted masks are thresholded at mask_threshold (>=), as Detectron2's bool pred_masks",
        check=BOOL,
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
        """Small and CPU-trainable, for the shapes data set v2 (image sides 192-384 px).

        Reasons: images are resized so the long side is 320 px (``min_size = max_size = 320``),
        which keeps a training batch at most 320x320 while the smallest objects (6 px) stay
        about 5 px or more; objects are then about 5-200 px, so the anchors are 4x smaller
        than COCO's (8-128 px on P2-P6). ``canonical_scale = 23`` (about 16 * sqrt(2)) keeps the
        FPN level rule (chapter 5) consistent with those anchors: P4 pools sides of 23-46 px,
        P3 11.5-23, P2 below, P5 above, so each level's anchor side (16 px on P3, 32 on P4, 64
        on P5) sits at the middle, on a log scale, of the sides that level pools, and the
        RoIs spread over all four levels (each at least 10 % on a fresh val split). COCO's 224
        is the ImageNet pre-training crop, which the FPN paper pools from P4; with our objects
        it would send nearly every RoI to P2. No ImageNet weights offline, so a narrow ResNet of
        BasicBlocks with trainable BatchNorm (also in the FPN) that learns from scratch; 6
        classes + background. Caps: 500 proposals per level before NMS and 300 after, 100
        detections (COCO's): an ordinary image never reaches them, a crowd image (60-150
        objects) does, so chapters 4 and 6 show them binding.
        """
        return cls(
            min_size=320,
            max_size=320,
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
            canonical_scale=23,
            num_classes=7,
            box_roi_sampling_ratio=1,
            mask_roi_sampling_ratio=1,
            box_head_dim=256,
            box_batch_size_per_image=64,
            mask_head_layers=(64, 64, 64, 64),
            mask_predictor_dim=64,
        )

    @classmethod
    def detectron2_r50(cls) -> Config:
        """Detectron2's ``mask_rcnn_R_50_FPN_3x`` at inference: its values **and its rules**.

        ``detectron2/config/defaults.py`` overridden by ``configs/Base-RCNN-FPN.yaml``, run by
        ``DefaultPredictor`` (``engine/defaults.py``). Values: BGR 0-255 with the caffe mean and
        std 1 (``MODEL.PIXEL_MEAN``/``PIXEL_STD``), FrozenBN (eps 1e-5) with the stem and res2
        frozen (``FREEZE_AT = 2``), ``STRIDE_IN_1X1``, 80 classes + background, RoIAlign
        ``ROIAlignV2`` (aligned) with adaptive sampling (``POOLER_SAMPLING_RATIO = 0``), 1000
        training proposals, pure L1 box losses (``SMOOTH_L1_BETA = 0``). Rules: PIL resize on
        uint8 rounded to the nearest pixel, normalised after it; exact cell anchors at fixed
        strides; proposals ranked and NMS'd on logits, kept if sides > 0; level epsilon inside
        the log; background last; no tiny-box rule before NMS, boxes clipped to the original
        image and empty ones dropped there; masks pasted sub-pixel (``_do_paste_mask``) and
        thresholded at 0.5. Use with weights from ``compat.from_detectron2``.
        """
        return cls(
            image_mean=(103.53, 116.28, 123.675),
            image_std=(1.0, 1.0, 1.0),
            input_channels="BGR",
            input_scale=255.0,
            normalize_before_resize=False,
            resize_rounding="round",
            resize_interpolation="pil_bilinear",
            backbone_norm="frozen",
            frozen_bn_eps=1e-5,
            frozen_bn_arithmetic="batch_norm",
            trainable_backbone_layers=3,
            resnet_stride_in_1x1=True,
            round_cell_anchors=False,
            anchor_strides="fixed",
            rpn_smooth_l1_beta=0.0,
            rpn_post_nms_top_n_train=1000,
            rpn_min_size=0.0,
            rpn_min_size_inclusive=False,
            rpn_nms_score="logit",
            num_classes=81,
            box_roi_sampling_ratio=0,
            mask_roi_sampling_ratio=0,
            roi_aligned=True,
            level_eps_placement="inside_log",
            box_smooth_l1_beta=0.0,
            box_min_size=0.0,
            small_box_removal="after_rescale",
            background_class="last",
            mask_paste="subpixel",
            paste_pixel_centre="half",
            clip_to_original=True,
            binary_masks=True,
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
    """Rows (name, value, chapter, torchvision, detectron2, note, check, allowed) for the book's tables.

    ``allowed`` is the field's ``check`` in words (``describe_check``).
    """
    cfg = cfg or Config()
    rows = []
    for f in dataclasses.fields(cfg):
        if chapter is not None and f.metadata["chapter"] != chapter:
            continue
        allowed = describe_check(f.metadata["check"])
        rows.append({"name": f.name, "value": getattr(cfg, f.name), **f.metadata, "allowed": allowed})
    return rows


# --- validation ---------------------------------------------------------------------------------
def _relations(c: Config) -> list[tuple[str, bool, str]]:
    """Relations between fields, checked once every field passed its own check:
    (the field the error names, whether the relation holds, what the field must be)."""
    levels = {len(level) for level in c.anchor_sizes}
    return [
        ("min_size", c.min_size <= c.max_size, f"<= max_size ({c.max_size})"),
        (
            "rpn_bg_iou_thresh",
            c.rpn_bg_iou_thresh <= c.rpn_fg_iou_thresh,
            f"<= rpn_fg_iou_thresh ({c.rpn_fg_iou_thresh})",
        ),
        (
            "box_bg_iou_thresh",
            c.box_bg_iou_thresh <= c.box_fg_iou_thresh,
            f"<= box_fg_iou_thresh ({c.box_fg_iou_thresh})",
        ),
        ("anchor_sizes", len(levels) == 1, "the same number of sizes at every level (shared RPN head)"),
        (
            "resize_interpolation",
            c.resize_interpolation != "pil_bilinear" or not c.normalize_before_resize,
            "'bilinear' when normalize_before_resize (PIL resizes uint8 pixels, not normalised ones)",
        ),
    ]


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"Config.{name} = {value!r} is invalid: must be {allowed}")


def _validate(c: Config) -> None:
    """Every field against its own ``check``, then the relations between fields."""
    for f in dataclasses.fields(c):
        value = getattr(c, f.name)
        if not check_accepts(f.metadata["check"], value):
            _fail(f.name, value, describe_check(f.metadata["check"]))
    for name, holds, allowed in _relations(c):
        if not holds:
            _fail(name, getattr(c, name), allowed)
