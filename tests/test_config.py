"""minimask.Config: presets equal torchvision's values, provenance is complete, bad values fail."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest
import torch
from torchvision.models.detection import faster_rcnn, mask_rcnn

from minimask.config import Config, check_accepts, config_table, describe_check


def _tv_default(fn, name):
    return inspect.signature(fn).parameters[name].default


def test_torchvision_preset_matches_torchvision_constructor_defaults():
    """Oracle: the keyword defaults of torchvision's FasterRCNN/MaskRCNN constructors."""
    cfg = Config.torchvision_r50()
    assert cfg == Config()
    same_name = [
        "min_size", "max_size", "rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_train",
        "rpn_post_nms_top_n_test", "rpn_nms_thresh", "rpn_fg_iou_thresh", "rpn_bg_iou_thresh",
        "rpn_batch_size_per_image", "rpn_positive_fraction", "rpn_score_thresh", "box_score_thresh",
        "box_nms_thresh", "box_detections_per_img", "box_fg_iou_thresh", "box_bg_iou_thresh",
        "box_batch_size_per_image", "box_positive_fraction",
    ]  # fmt: skip
    for name in same_name:
        assert getattr(cfg, name) == _tv_default(faster_rcnn.FasterRCNN.__init__, name), name
    # values torchvision computes when left as None or hard-codes
    tv = mask_rcnn.MaskRCNN.__init__
    assert _tv_default(tv, "num_classes") is None  # set by the builder: 91
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    assert cfg.num_classes == model.roi_heads.box_predictor.cls_score.out_features
    assert tuple(cfg.image_mean) == tuple(model.transform.image_mean)
    assert tuple(cfg.image_std) == tuple(model.transform.image_std)
    assert cfg.size_divisible == model.transform.size_divisible
    assert cfg.anchor_sizes == model.rpn.anchor_generator.sizes
    assert all(r == cfg.aspect_ratios for r in model.rpn.anchor_generator.aspect_ratios)
    assert cfg.rpn_min_size == model.rpn.min_size
    assert cfg.rpn_bbox_reg_weights == model.rpn.box_coder.weights
    assert cfg.bbox_reg_weights == model.roi_heads.box_coder.weights
    assert cfg.bbox_xform_clip == model.roi_heads.box_coder.bbox_xform_clip
    assert cfg.box_roi_output_size == model.roi_heads.box_roi_pool.output_size[0]
    assert cfg.box_roi_sampling_ratio == model.roi_heads.box_roi_pool.sampling_ratio
    assert cfg.mask_roi_output_size == model.roi_heads.mask_roi_pool.output_size[0]
    assert cfg.mask_roi_sampling_ratio == model.roi_heads.mask_roi_pool.sampling_ratio
    assert cfg.box_head_dim == model.roi_heads.box_head.fc7.out_features
    assert cfg.fpn_out_channels == model.backbone.out_channels
    assert cfg.mask_head_layers == tuple(m[0].out_channels for m in model.roi_heads.mask_head)
    assert cfg.mask_predictor_dim == model.roi_heads.mask_predictor.conv5_mask.out_channels
    assert cfg.canonical_scale == 224 and cfg.canonical_level == 4  # MultiScaleRoIAlign defaults
    assert _tv_default(type(model.roi_heads.box_roi_pool).__init__, "canonical_scale") == cfg.canonical_scale
    assert _tv_default(type(model.roi_heads.box_roi_pool).__init__, "canonical_level") == cfg.canonical_level


def test_every_field_has_provenance_and_table_renders():
    """Each field records its chapter, torchvision value, Detectron2 key (may be empty) and note."""
    for f in dataclasses.fields(Config):
        assert set(f.metadata) == {"chapter", "torchvision", "detectron2", "note", "check"}, f.name
        assert 1 <= f.metadata["chapter"] <= 11
    rows = config_table(Config.shapes())
    assert len(rows) == len(dataclasses.fields(Config))
    assert {r["name"]: r["value"] for r in rows}["min_size"] == Config.shapes().min_size == 320
    ch6 = config_table(chapter=6)
    assert {r["name"] for r in ch6} >= {"box_score_thresh", "box_nms_thresh", "box_detections_per_img"}
    assert {r["name"]: r for r in ch6}["box_score_thresh"]["detectron2"] == "MODEL.ROI_HEADS.SCORE_THRESH_TEST"
    assert {r["name"]: r for r in ch6}["box_score_thresh"]["allowed"] == "a finite number in [0, 1]"


def test_shapes_preset_is_valid_and_round_trips_through_json():
    cfg = Config.shapes()
    assert cfg.backbone == "small" and cfg.num_classes == 7
    # the level rule pools an anchor-sized box from its own level (P3-P5), the side near the
    # middle of the level's range (its docstring): canonical_scale between 16 and 32 px
    from minimask.pooling import assign_levels

    sides = torch.tensor([float(a[0]) for a in cfg.anchor_sizes[1:4]])
    boxes = torch.stack([torch.zeros(3), torch.zeros(3), sides, sides], 1)
    assert assign_levels(boxes, cfg).tolist() == [1, 2, 3]  # P3, P4, P5
    assert 16 < cfg.canonical_scale < 32
    back = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    with pytest.raises(ValueError, match="unknown Config field.*not_a_field"):
        Config.from_dict({**cfg.to_dict(), "not_a_field": 1})


def test_replace_validates_and_leaves_original():
    cfg = Config.shapes()
    new = dataclasses.replace(cfg, box_score_thresh=0.3)
    assert new.box_score_thresh == 0.3 and cfg.box_score_thresh == 0.05
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.box_score_thresh = 0.2  # type: ignore[misc]


@pytest.mark.parametrize(
    "changes, field_name, allowed",
    [
        ({"box_nms_thresh": 1.5}, "box_nms_thresh", r"in \[0, 1\]"),
        ({"rpn_fg_iou_thresh": -0.1}, "rpn_fg_iou_thresh", r"in \[0, 1\]"),
        ({"rpn_pre_nms_top_n_test": -5}, "rpn_pre_nms_top_n_test", "positive integer"),
        ({"box_detections_per_img": 0}, "box_detections_per_img", "positive integer"),
        ({"aspect_ratios": ()}, "aspect_ratios", "non-empty"),
        ({"aspect_ratios": (1.0, -2.0)}, "aspect_ratios", "numbers > 0"),
        ({"anchor_sizes": ()}, "anchor_sizes", "non-empty"),
        ({"anchor_sizes": ((32,), (64,), (), (256,), (512,))}, "anchor_sizes", "non-empty tuples"),
        ({"anchor_sizes": ((32,), (64,), (128, 150), (256,), (512,))}, "anchor_sizes", "same number"),
        ({"min_size": 900, "max_size": 800}, "min_size", "max_size"),
        ({"num_classes": 1}, "num_classes", ">= 2"),
        ({"backbone": "vgg"}, "backbone", "one of"),
        ({"mask_paste": "nearest"}, "mask_paste", "one of"),
        ({"image_std": (0.2, 0.0, 0.2)}, "image_std", "numbers > 0"),
        ({"image_mean": (0.5, 0.5)}, "image_mean", "tuple of 3"),
        ({"bbox_reg_weights": (10.0, 10.0, 5.0)}, "bbox_reg_weights", "tuple of 4 finite numbers > 0"),
        ({"rpn_bg_iou_thresh": 0.8}, "rpn_bg_iou_thresh", "rpn_fg_iou_thresh"),
        ({"box_score_thresh": float("nan")}, "box_score_thresh", "finite"),
        ({"min_size": 800.5}, "min_size", "integer"),
        ({"fpn_norm": 1}, "fpn_norm", "True or False"),
        ({"mask_head_layers": [256, 256]}, "mask_head_layers", "tuple"),
        ({"trainable_backbone_layers": 7}, "trainable_backbone_layers", "0..5"),
        ({"box_roi_sampling_ratio": -1}, "box_roi_sampling_ratio", ">= 0"),
    ],
)
def test_invalid_values_fail_naming_field_and_range(changes, field_name, allowed):
    """Bad values are refused at construction with the field's name and the allowed range."""
    with pytest.raises(ValueError, match=rf"Config\.{field_name} = .*invalid.*{allowed}"):
        Config.shapes().replace(**changes)


def _bad_values(check: tuple, good):
    """Values that ``check`` must refuse, made from the check itself and a good value."""
    kind = check[0]
    if kind == "bool":
        return [1, "yes", None]
    if kind == "int":
        lo, hi = check[1], check[2]
        return [float(good) + 0.5, True, *([lo - 1] if lo is not None else []), *([hi + 1] if hi is not None else [])]
    if kind == "float":
        lo, hi, brackets = check[1], check[2], check[3]
        bad = [float("nan"), float("inf"), "0.5", True]
        if lo is not None:
            bad.append(lo if brackets[0] == "(" else lo - 1e-6)
        if hi is not None:
            bad.append(hi if brackets[1] == ")" else hi + 1e-6)
        return bad
    if kind == "choice":
        return ["no such choice", None]
    if kind == "tuple":
        n, item = check[1], check[2]
        if not good:  # "*": () is good; a one-item tuple of the item's lower bound too
            good = (item[1],)
        bad = [list(good)]
        if n is None:
            bad.append(())
        elif isinstance(n, int):
            bad.append((*good, good[0]))
        bad += [(v, *good[1:]) for v in _bad_values(item, good[0])]
        return bad
    raise AssertionError(f"unknown check {check!r}")


def test_every_field_has_a_check_that_refuses_bad_values():
    """A new field cannot go unchecked: each has a well-formed ``check`` its default passes,
    and for each field, values outside its check (derived from the check) are refused with an
    error naming that field and what it must be."""
    cfg = Config.shapes()
    for f in dataclasses.fields(Config):
        check = f.metadata["check"]
        allowed = describe_check(check)
        good = getattr(cfg, f.name)
        assert check_accepts(check, good) and check_accepts(check, f.default), f.name
        for bad in _bad_values(check, good):
            assert not check_accepts(check, bad), (f.name, bad)
            with pytest.raises(ValueError) as caught:
                cfg.replace(**{f.name: bad})
            assert str(caught.value) == f"Config.{f.name} = {bad!r} is invalid: must be {allowed}", f.name


def test_malformed_checks_are_refused():
    for check in [(), ("int", 1), ("float", 0, 1, "[["), ("choice", ()), ("tuple", 2), ("integer", 1, 2)]:
        with pytest.raises(TypeError, match="not a Config check"):
            describe_check(check)
