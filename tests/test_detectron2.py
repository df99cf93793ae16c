"""Detectron2's rules (Config fields, each checked on a hand-worked case) and its checkpoints.

Each switch is a ``Config`` field whose torchvision value leaves the code path as it was
(tests/test_model.py, test_rpn.py and test_heads.py check that against torchvision); here,
each Detectron2 value is checked against a case worked out by hand from Detectron2's source
(facebookresearch/detectron2, the files named in each test).
"""

from __future__ import annotations

import hashlib
import math
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image

from minimask import Config, MaskRCNN
from minimask.anchors import anchor_strides, cell_anchors_exact, make_anchors
from minimask.backbone import build_backbone
from minimask.classification import Classification
from minimask.compat import (
    config_from_detectron2,
    detectron2_class_names,
    detectron2_safetensors,
    from_detectron2,
    read_detectron2_checkpoint,
    read_detectron2_yaml,
    to_detectron2,
    torchvision_model,
)
from minimask.longlist import select_longlist
from minimask.objectness import Objectness
from minimask.pooling import assign_levels
from minimask.segmentation import segment
from minimask.shortlist import select_shortlist
from minimask.transform import boxes_to_original, preprocess, resized_size

TV, D2 = Config.torchvision_r50(), Config.detectron2_r50()


# --- the preset -------------------------------------------------------------------------------------
def test_detectron2_preset_has_the_model_zoo_values_and_rules():
    """defaults.py overridden by Base-RCNN-FPN.yaml (mask_rcnn_R_50_FPN_3x), run by DefaultPredictor."""
    assert D2.image_mean == (103.53, 116.28, 123.675) and D2.image_std == (1.0, 1.0, 1.0)
    assert (D2.input_channels, D2.input_scale, D2.normalize_before_resize) == ("BGR", 255.0, False)
    assert (D2.resize_rounding, D2.resize_interpolation) == ("round", "pil_bilinear")
    assert D2.resnet_stride_in_1x1 and D2.backbone_norm == "frozen" and D2.trainable_backbone_layers == 3
    assert not D2.round_cell_anchors and D2.anchor_strides == "fixed" and D2.anchor_offset == 0.0
    assert (D2.rpn_min_size, D2.rpn_min_size_inclusive, D2.rpn_nms_score) == (0.0, False, "logit")
    assert D2.rpn_post_nms_top_n_train == 1000 and D2.rpn_post_nms_top_n_test == 1000
    assert D2.num_classes == 81 and D2.background_class == "last"
    assert (D2.roi_aligned, D2.box_roi_sampling_ratio, D2.mask_roi_sampling_ratio) == (True, 0, 0)
    assert D2.level_eps_placement == "inside_log"
    assert (D2.small_box_removal, D2.box_min_size, D2.clip_to_original) == ("after_rescale", 0.0, True)
    assert (D2.mask_paste, D2.binary_masks, D2.mask_threshold) == ("subpixel", True, 0.5)
    assert (D2.rpn_smooth_l1_beta, D2.box_smooth_l1_beta) == (0.0, 0.0)
    assert D2.frozen_bn_arithmetic == "batch_norm" and TV.frozen_bn_arithmetic == "scale_shift"
    # a Detectron2 config is not a torchvision model: torchvision_model names the rules
    with pytest.raises(ValueError, match="resize_rounding.*round_cell_anchors"):
        torchvision_model(D2)
    # the torchvision preset keeps torchvision's rules
    assert TV == Config()
    assert TV.resize_rounding == "floor" and TV.round_cell_anchors and TV.rpn_nms_score == "probability"


def test_pil_resize_needs_the_detectron2_order():
    with pytest.raises(ValueError, match="Config.resize_interpolation = 'pil_bilinear' is invalid"):
        TV.replace(resize_interpolation="pil_bilinear")


# --- chapter 2: the input ---------------------------------------------------------------------------
def test_resize_rounding_round_is_detectron2s_get_output_shape():
    """ResizeShortestEdge.get_output_shape: int(x + 0.5). 300x451: 451 * 800/300 = 1202.67."""
    assert resized_size((300, 451), TV)[0] == (800, 1202)
    assert resized_size((300, 451), D2)[0] == (800, 1203)
    # the long side caps first: 100x1000 -> 800x8000 -> x 1333/8000 -> 133.3 x 1333
    assert resized_size((100, 1000), D2)[0] == (133, 1333)
    assert resized_size((480, 640), TV)[0] == (800, 1066) and resized_size((480, 640), D2)[0] == (800, 1067)


def test_detectron2_input_is_bgr_0_255_normalised_after_the_resize():
    """A uniform RGB image (0.2, 0.4, 0.6): BGR 0-255 is (153, 102, 51); minus PIXEL_MEAN."""
    image = torch.tensor([0.2, 0.4, 0.6])[:, None, None].expand(3, 30, 40).clone()
    cfg = D2.replace(min_size=60, max_size=100)
    batch = preprocess([image], cfg)
    assert batch.image_sizes == [(60, 80)]
    expected = torch.tensor([153 - 103.53, 102 - 116.28, 51 - 123.675])
    inside = batch.tensors[0, :, :60, :80]
    assert torch.allclose(inside, expected[:, None, None].expand_as(inside), atol=1e-4)
    assert float(batch.tensors[0, :, 60:, :].abs().max()) == 0.0  # padded with zeros after normalising


def test_pil_bilinear_is_detectron2s_resize_transform_on_uint8():
    """ResizeTransform.apply_image on uint8: PIL bilinear (antialiased when shrinking)."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (37, 53, 3), generator=g, dtype=torch.uint8)
    cfg = D2.replace(min_size=20, max_size=1000)  # shrinks 37 -> 20: PIL's antialiasing filter
    size = resized_size((37, 53), cfg)[0]
    assert size == (20, 29)  # 53 * 20 / 37 = 28.65 -> 29
    bgr = pixels.numpy()[:, :, ::-1].copy()
    by_hand = np.asarray(Image.fromarray(bgr).resize((size[1], size[0]), Image.BILINEAR)).astype("float32")
    by_hand = torch.from_numpy(by_hand).permute(2, 0, 1) - torch.tensor(cfg.image_mean)[:, None, None]
    batch = preprocess([pixels.permute(2, 0, 1)], cfg)  # uint8 RGB in, as check_images accepts
    assert torch.equal(batch.tensors[0, :, : size[0], : size[1]], by_hand)
    # and it is not torchvision's resize: the values differ
    float_cfg = cfg.replace(resize_interpolation="bilinear")
    other = preprocess([pixels.permute(2, 0, 1)], float_cfg).tensors[0, :, : size[0], : size[1]]
    assert float((other - by_hand).abs().max()) > 1.0


def test_stride_in_1x1_reads_every_other_pixel_in_the_first_1x1_conv():
    """Detectron2 BottleneckBlock (STRIDE_IN_1X1): conv1 is 1x1 stride 2, so odd pixels of the
    block's input never reach conv1; torchvision strides in the 3x3 conv2."""
    torch.manual_seed(0)
    body_d2 = build_backbone(D2).body
    block = body_d2.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert build_backbone(TV).body.layer2[0].conv2.stride == (2, 2)
    x = torch.randn(1, 256, 8, 8)
    y = x.clone()
    y[..., 1::2, :] += 5.0
    y[..., :, 1::2] += 5.0
    assert torch.equal(block.conv1(x), block.conv1(y))
    assert block.conv1(x).shape[-2:] == (4, 4)


def test_frozen_batch_norm_as_detectron2_computes_it():
    """Detectron2 FrozenBatchNorm2d.forward: F.batch_norm when no gradient is needed."""
    torch.manual_seed(0)
    bn = build_backbone(D2).body.bn1
    bn.running_var.uniform_(0.5, 2.0)
    bn.running_mean.normal_()
    bn.weight.data.uniform_(0.1, 0.4)
    x = torch.randn(2, 64, 9, 9)
    expected = torch.nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=1e-5)
    assert torch.equal(bn(x), expected)
    tv = build_backbone(D2.replace(frozen_bn_arithmetic="scale_shift")).body.bn1
    tv.load_state_dict(bn.state_dict())
    assert torch.allclose(tv(x), expected, atol=1e-5)  # the same function, rounded differently


# --- chapter 3: anchors -----------------------------------------------------------------------------
def test_exact_cell_anchors_are_detectron2s_generate_cell_anchors():
    """w = sqrt(32^2 / 0.5) = 45.2548, h = 0.5 w = 22.6274; torchvision rounds to 46 x 22."""
    exact = cell_anchors_exact((32,), (0.5, 1.0, 2.0))
    w, h = math.sqrt(2048), 0.5 * math.sqrt(2048)
    assert torch.allclose(exact[0], torch.tensor([-w / 2, -h / 2, w / 2, h / 2]))
    assert exact[1].tolist() == [-16.0, -16.0, 16.0, 16.0]
    anchors = make_anchors((64, 64), [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)], D2)
    assert torch.equal(anchors[0][:3], exact)  # cell (0, 0) of P2 is centred at (0, 0)
    rounded = make_anchors((64, 64), [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)], TV)[0][0]
    assert rounded.tolist() == [-23.0, -11.0, 23.0, 11.0]
    # two sizes per level: Detectron2 orders cell anchors size-major
    two = cell_anchors_exact((32, 64), (0.5, 1.0))
    assert two[1].tolist() == [-16.0, -16.0, 16.0, 16.0] and two[3].tolist() == [-32.0, -32.0, 32.0, 32.0]


def test_fixed_strides_and_offset():
    """An 800x1088 batch: P6 is 13x17; torchvision's stride is 800 // 13 = 61, Detectron2's 64."""
    shapes = [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]
    tv = make_anchors((800, 1088), shapes, TV)[4]
    d2 = make_anchors((800, 1088), shapes, D2.replace(round_cell_anchors=True))[4]
    assert anchor_strides((800, 1088), shapes, TV)[4] == (61, 64)  # what the Objectness record says
    assert anchor_strides((800, 1088), shapes, D2)[4] == (64, 64)
    last_row = (12 * 17) * 3 + 1  # cell (12, 0), the square anchor
    assert tv[last_row].tolist() == [-256.0, 12 * 61 - 256.0, 256.0, 12 * 61 + 256.0]
    assert d2[last_row].tolist() == [-256.0, 12 * 64 - 256.0, 256.0, 12 * 64 + 256.0]
    half = make_anchors((800, 1088), shapes, D2.replace(round_cell_anchors=True, anchor_offset=0.5))[0]
    assert half[1].tolist() == [2.0 - 16, 2.0 - 16, 2.0 + 16, 2.0 + 16]  # centre (0.5 * 4, 0.5 * 4)


# --- chapter 4: the longlist ------------------------------------------------------------------------
def _objectness(boxes: list[list[float]], logits: list[float]) -> Objectness:
    n = len(boxes)
    b = torch.tensor(boxes, dtype=torch.float32)
    zeros = torch.zeros(n, dtype=torch.int64)
    return Objectness(
        anchors=b,
        logits=torch.tensor(logits),
        deltas=torch.zeros(n, 4),
        proposals=b,
        anchor_level=zeros,
        y=zeros,
        x=torch.arange(n),
        anchor_in_cell=zeros,
        num_per_level=[n],
        grid_sizes=[(1, n)],
        strides=[(4, 4)],
        anchors_per_location=1,
        image_size=(100, 100),
    )


def test_rpn_min_size_strict_is_detectron2s_nonempty():
    """find_top_rpn_proposals: Boxes.nonempty(threshold=MIN_SIZE = 0) keeps sides > 0, so a box
    clipped to zero width at the border is dropped; torchvision's rule (side >= min) keeps it at 0."""
    obj = _objectness([[10, 10, 50, 50], [100, 20, 130, 60]], [1.0, 2.0])  # the 2nd clips to x 100..100
    tv_like = TV.replace(rpn_min_size=0.0)
    assert len(select_longlist(obj, tv_like)) == 2  # width 0 >= 0: kept
    d2 = select_longlist(obj, D2)
    assert len(d2) == 1 and d2.fate_of(1) == "small_box"  # width 0 > 0 fails


def test_rpn_nms_on_logits_breaks_sigmoid_ties():
    """Logits 20 and 30 both have sigmoid 1.0 in float32; Detectron2 ranks by the logit."""
    assert torch.sigmoid(torch.tensor(20.0)) == torch.sigmoid(torch.tensor(30.0)) == 1.0
    obj = _objectness([[10, 10, 50, 50], [11, 11, 51, 51]], [20.0, 30.0])  # IoU 0.905 > 0.7
    d2 = select_longlist(obj, D2)
    assert d2.anchor_index.tolist() == [1] and d2.fate_of(0) == "nms"
    assert d2.nms.scores.tolist() == [30.0, 20.0]  # NMS saw logits (best first after the top-k)
    assert len(select_longlist(obj, TV)) == 1  # one of the tied pair


# --- chapter 5: level assignment --------------------------------------------------------------------
def test_level_epsilon_inside_the_log():
    """A 111.99998-px square: log2(side / 224) = -1 - 2e-7. torchvision adds 1e-6 after the log
    (P3); Detectron2's 1e-8 inside the log is lost in float32 rounding (P2)."""
    box = torch.tensor([[0.0, 0.0, 111.99998, 111.99998]])
    assert assign_levels(box, TV).item() == 1 and assign_levels(box, D2).item() == 0
    exact = torch.tensor([[0.0, 0.0, 112.0, 112.0]])
    assert assign_levels(exact, TV).item() == 1 == assign_levels(exact, D2).item()


# --- chapter 6: the shortlist -----------------------------------------------------------------------
def _classification(boxes: list[list[float]], probs: list[list[float]]) -> Classification:
    p = torch.tensor(probs)
    b = torch.tensor(boxes, dtype=torch.float32)[:, None, :].expand(len(boxes), p.shape[1], 4).clone()
    n = len(boxes)
    return Classification(
        proposal_boxes=b[:, 0],
        proposal_index=torch.arange(n),
        roi_level=torch.zeros(n, dtype=torch.int64),
        logits=p.log(),
        probs=p,
        deltas=torch.zeros(n, p.shape[1], 4),
        boxes=b,
        image_size=(100, 100),
    )


def test_softmax_in_detectron2s_column_order():
    """FastRCNNOutputLayers.predict_probs: softmax over (fg_1..fg_K, bg); the record keeps bg at 0."""
    torch.manual_seed(0)
    model = MaskRCNN(
        D2.replace(num_classes=5, fpn_out_channels=8, box_head_dim=16, mask_head_layers=(8,), mask_predictor_dim=8)
    )
    from minimask.classification import classify

    maps = {k: torch.randn(1, 8, 64 // s, 64 // s) for k, s in zip("0123", (4, 8, 16, 32), strict=True)}
    proposals = [torch.tensor([[4.0, 4.0, 40.0, 30.0], [10.0, 12.0, 60.0, 50.0]])]
    heads = model.roi_heads
    c = classify(heads.box_head, heads.box_predictor, maps, proposals, [(64, 64)], model.config)[0]
    d2_order = torch.cat([c.logits[:, 1:], c.logits[:, :1]], dim=1)  # Detectron2's logits
    expected = torch.softmax(d2_order, dim=-1)
    assert torch.equal(c.probs[:, 1:], expected[:, :-1]) and torch.equal(c.probs[:, 0], expected[:, -1])


def test_empty_boxes_are_removed_after_rescaling_and_cost_a_cap_slot():
    """torchvision drops a zero-width box (clipped onto the right border) before NMS; Detectron2
    keeps it through NMS and the cap (DETECTIONS_PER_IMAGE) and drops it in detector_postprocess."""
    c = _classification([[100, 10, 100, 40], [10, 10, 40, 40]], [[0.05, 0.9, 0.05], [0.2, 0.7, 0.1]])
    one = dict(box_detections_per_img=1)
    tv = select_shortlist(c, TV.replace(num_classes=3, **one), original_size=(50, 50))
    d2 = select_shortlist(c, D2.replace(num_classes=3, **one), original_size=(50, 50))
    assert tv.proposal_index.tolist() == [1] and tv.fate_of(0) == "small_box"
    assert len(d2) == 0 and d2.fate_of(0) == "small_box" and d2.fate_of(2) == "cap"
    assert d2.nms.groups.tolist() == [0, 0, 1]  # Detectron2's class index: label - 1 (labels 1, 1, 2)


def test_boxes_are_clipped_to_the_original_image():
    """detector_postprocess: Boxes.scale(0.3) then Boxes.clip; 100 * float32(0.3) = 30.000002."""
    box = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    assert boxes_to_original(box, (100, 100), (30, 30), TV)[0, 2].item() > 30.0
    assert boxes_to_original(box, (100, 100), (30, 30), D2).tolist() == [[0.0, 0.0, 30.0, 30.0]]


# --- chapter 7: masks -------------------------------------------------------------------------------
def test_binary_masks_are_detectron2s_pred_masks():
    """detector_postprocess(mask_threshold=0.5): bool masks, pasted >= 0.5."""
    torch.manual_seed(0)
    cfg = D2.replace(num_classes=3, mask_head_layers=(8,), mask_predictor_dim=8, fpn_out_channels=8)
    model = MaskRCNN(cfg)
    maps = {k: torch.randn(1, 8, 64 // s, 64 // s) for k, s in zip("0123", (4, 8, 16, 32), strict=True)}
    boxes = [torch.tensor([[5.0, 5.0, 40.0, 30.0]])]
    rec = segment(
        model.roi_heads.mask_head,
        model.roi_heads.mask_predictor,
        maps,
        boxes,
        [torch.tensor([1])],
        [(64, 64)],
        cfg,
        original_sizes=[(32, 32)],
    )[0]
    soft = segment(
        model.roi_heads.mask_head,
        model.roi_heads.mask_predictor,
        maps,
        boxes,
        [torch.tensor([1])],
        [(64, 64)],
        cfg.replace(binary_masks=False),
        original_sizes=[(32, 32)],
    )[0]
    assert set(rec.masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(rec.masks, (soft.masks >= 0.5).float())
    assert rec.boxes_orig.tolist() == [[2.5, 2.5, 20.0, 15.0]]


# --- checkpoints ------------------------------------------------------------------------------------
def _detectron2_keys() -> list[str]:
    """The state-dict names of Detectron2's mask_rcnn_R_50_FPN, written out from its modules:
    backbone/resnet.py (BasicStem, BottleneckBlock, blocks per stage [3, 4, 6, 3]),
    backbone/fpn.py, proposal_generator/rpn.py (StandardRPNHead), roi_heads/box_head.py,
    roi_heads/fast_rcnn.py and roi_heads/mask_head.py (MaskRCNNConvUpsampleHead)."""
    bn = ("weight", "bias", "running_mean", "running_var")
    keys = [
        f"backbone.fpn_{kind}{s}.{p}"
        for s in (2, 3, 4, 5)
        for kind in ("lateral", "output")
        for p in ("weight", "bias")
    ]
    keys += ["backbone.bottom_up.stem.conv1.weight"] + [f"backbone.bottom_up.stem.conv1.norm.{p}" for p in bn]
    for stage, blocks in zip((2, 3, 4, 5), (3, 4, 6, 3), strict=True):
        for b in range(blocks):
            convs = (["shortcut"] if b == 0 else []) + ["conv1", "conv2", "conv3"]
            for conv in convs:
                prefix = f"backbone.bottom_up.res{stage}.{b}.{conv}"
                keys += [f"{prefix}.weight"] + [f"{prefix}.norm.{p}" for p in bn]
    for m in ("conv", "objectness_logits", "anchor_deltas"):
        keys += [f"proposal_generator.rpn_head.{m}.{p}" for p in ("weight", "bias")]
    for m in ("box_head.fc1", "box_head.fc2", "box_predictor.cls_score", "box_predictor.bbox_pred"):
        keys += [f"roi_heads.{m}.{p}" for p in ("weight", "bias")]
    for m in ("mask_fcn1", "mask_fcn2", "mask_fcn3", "mask_fcn4", "deconv", "predictor"):
        keys += [f"roi_heads.mask_head.{m}.{p}" for p in ("weight", "bias")]
    return keys


@pytest.fixture(scope="module")
def seeded():
    torch.manual_seed(0)
    return MaskRCNN(D2).eval()


def test_to_detectron2_has_detectron2s_keys_and_layouts(seeded):
    d2 = to_detectron2(seeded)
    assert sorted(d2) == sorted(_detectron2_keys()) and len(d2) == 307
    assert d2["roi_heads.box_predictor.cls_score.weight"].shape == (81, 1024)
    assert d2["roi_heads.box_predictor.bbox_pred.weight"].shape == (320, 1024)
    assert d2["roi_heads.mask_head.predictor.weight"].shape == (80, 256, 1, 1)
    ours = seeded.state_dict()
    # background: our row 0 is Detectron2's last row; class k (ours) is Detectron2's k - 1
    assert torch.equal(
        d2["roi_heads.box_predictor.cls_score.weight"][-1], ours["roi_heads.box_predictor.cls_score.weight"][0]
    )
    assert torch.equal(
        d2["roi_heads.box_predictor.cls_score.bias"][:-1], ours["roi_heads.box_predictor.cls_score.bias"][1:]
    )
    assert torch.equal(
        d2["roi_heads.box_predictor.bbox_pred.weight"], ours["roi_heads.box_predictor.bbox_pred.weight"][4:]
    )
    assert torch.equal(
        d2["roi_heads.mask_head.predictor.bias"], ours["roi_heads.mask_predictor.mask_fcn_logits.bias"][1:]
    )
    assert torch.equal(
        d2["backbone.bottom_up.res3.0.shortcut.norm.running_var"],
        ours["backbone.body.layer2.0.downsample.1.running_var"],
    )
    assert torch.equal(d2["proposal_generator.rpn_head.conv.weight"], ours["rpn.head.conv.0.0.weight"])


def test_round_trip_and_the_same_decisions(seeded, tmp_path):
    """to_detectron2 -> .pth (as Detectron2's checkpointer writes it), .pkl (model zoo) and the
    .pth's tensors as .safetensors -> from_detectron2: the same weights (background slots zero) and the same detections."""
    d2 = to_detectron2(seeded)
    torch.save({"model": d2, "iteration": 90000, "scheduler": {"last_epoch": 3}}, tmp_path / "model_final.pth")
    with open(tmp_path / "model_final.pkl", "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in d2.items()}, "__author__": "Detectron2 Model Zoo"}, f)
    sha = detectron2_safetensors(tmp_path / "model_final.pth", tmp_path / "model_final.safetensors")
    assert sha == hashlib.sha256((tmp_path / "model_final.pth").read_bytes()).hexdigest()
    for name in ("model_final.pth", "model_final.pkl", "model_final.safetensors"):
        back = from_detectron2(tmp_path / name)
        assert back.config == D2 and not back.training
        again = to_detectron2(back)
        assert all(torch.equal(again[k], d2[k]) for k in d2)
        sd = back.state_dict()
        assert float(sd["roi_heads.box_predictor.bbox_pred.weight"][:4].abs().max()) == 0.0
    (tmp_path / "config.yaml").write_text("MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 80\n    SCORE_THRESH_TEST: 0.3\n")
    with_config = from_detectron2(tmp_path / "model_final.pth", tmp_path / "config.yaml")
    assert with_config.config == D2.replace(box_score_thresh=0.3)
    image = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(1))
    small = dict(min_size=64, max_size=96)
    seeded.config = D2.replace(**small)
    back.config = D2.replace(**small)
    a, b = seeded([image])[0], back([image])[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
    assert torch.equal(a["scores"], b["scores"]) and torch.equal(a["masks"], b["masks"])
    seeded.config = D2


def test_every_mismatched_key_and_shape_is_named(seeded):
    d2 = to_detectron2(seeded)
    del d2["roi_heads.mask_head.deconv.bias"]
    d2["roi_heads.extra.weight"] = torch.zeros(1)
    d2["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(4, 1024)
    d2["roi_heads.box_predictor.cls_score.bias"] = torch.zeros(4)
    with pytest.raises(ValueError) as caught:
        from_detectron2(d2)
    message = str(caught.value)
    for part in (
        "1 missing keys: roi_heads.mask_head.deconv.bias",
        "1 unexpected keys: roi_heads.extra.weight",
        "2 shape mismatches",
        "roi_heads.box_predictor.cls_score.weight: (4, 1024) given, (81, 1024) expected",
        "roi_heads.box_predictor.cls_score.bias: (4,) given, (81,) expected",
        "config.yaml",
    ):
        assert part in message, part


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_checkpoint_that_needs_code_is_refused(tmp_path, capsys):
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"model": {"x": _Evil()}}, f)
    with pytest.raises(ValueError, match=r"evil.pkl: refusing to unpickle builtins.print"):
        read_detectron2_checkpoint(tmp_path / "evil.pkl")
    torch.save({"model": {"x": _Evil()}}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"evil.pth: not read with weights_only=True"):
        read_detectron2_checkpoint(tmp_path / "evil.pth")
    assert "must never run" not in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_detectron2_checkpoint(tmp_path / "missing.pth")


def test_config_yaml_with_base_files(tmp_path):
    """CfgNode.load_yaml_with_base: _BASE_ relative to the file, merged mapping by mapping."""
    (tmp_path / "Base-RCNN-FPN.yaml").write_text(
        "MODEL:\n  MASK_ON: True\n  RPN:\n    POST_NMS_TOPK_TEST: 1000\n    NMS_THRESH: 0.7\n"
        "  ANCHOR_GENERATOR:\n    SIZES: [[32], [64], [128], [256], [512]]\n"
        "INPUT:\n  MIN_SIZE_TEST: 800\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.yaml").write_text(
        '_BASE_: "../Base-RCNN-FPN.yaml"\nMODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 3\n    SCORE_THRESH_TEST: 0.5\n'
        "  RPN:\n    POST_NMS_TOPK_TEST: 500\n"
    )
    values = read_detectron2_yaml(tmp_path / "sub" / "mine.yaml")
    assert values["MODEL"]["RPN"] == {"POST_NMS_TOPK_TEST": 500, "NMS_THRESH": 0.7}
    cfg = config_from_detectron2(values)
    assert (cfg.num_classes, cfg.box_score_thresh, cfg.rpn_post_nms_top_n_test) == (4, 0.5, 500)
    assert cfg.replace(num_classes=81, box_score_thresh=0.05, rpn_post_nms_top_n_test=1000) == D2
    (tmp_path / "kp.yaml").write_text("MODEL:\n  KEYPOINT_ON: True\n  RESNETS:\n    RES5_DILATION: 2\n")
    with pytest.raises(ValueError, match="MODEL.RESNETS.RES5_DILATION = 2.*MODEL.KEYPOINT_ON = True"):
        config_from_detectron2(read_detectron2_yaml(tmp_path / "kp.yaml"))


def test_class_names():
    names = detectron2_class_names(81)
    assert len(names) == 81 and names[1] == "person" and names[80] == "toothbrush" and "N/A" not in names
    assert detectron2_class_names(3) == ["__background__", "1", "2"]


def test_state_dict_in_memory_loads_too(seeded):
    d2 = OrderedDict(to_detectron2(seeded))
    d2["pixel_mean"] = torch.zeros(3, 1, 1)  # older checkpoints carry these buffers: ignored
    d2["backbone.bottom_up.stem.conv1.norm.num_batches_tracked"] = torch.tensor(7)  # NORM: "BN"
    assert isinstance(from_detectron2(d2), MaskRCNN)


def test_pth_of_numpy_arrays_and_a_ddp_prefix(tmp_path):
    """Checkpoints converted from other tools hold numpy arrays; DDP adds "module." (stripped)."""
    arrays = {"module.roi_heads.box_head.fc1.bias": np.arange(3, dtype=np.float32), "module.x": np.zeros((2, 2))}
    torch.save({"model": arrays, "iteration": np.int64(5)}, tmp_path / "np.pth")
    state = read_detectron2_checkpoint(tmp_path / "np.pth")
    assert list(state) == ["roi_heads.box_head.fc1.bias", "x"]
    assert torch.equal(state["roi_heads.box_head.fc1.bias"], torch.arange(3, dtype=torch.float32))


# --- the command line -------------------------------------------------------------------------------
def test_predict_and_explain_a_detectron2_checkpoint(seeded, tmp_path):
    """python -m minimask.predict IMAGE --detectron2 model_final.pth --config config.yaml [--explain]."""
    import json

    from minimask import predict

    torch.save({"model": to_detectron2(seeded)}, tmp_path / "model_final.pth")
    (tmp_path / "config.yaml").write_text(
        "INPUT:\n  MIN_SIZE_TEST: 64\n  MAX_SIZE_TEST: 96\nMODEL:\n  ROI_HEADS:\n    SCORE_THRESH_TEST: 0.0\n"
    )
    pixels = (torch.rand(40, 56, 3, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8)
    Image.fromarray(pixels.numpy()).save(tmp_path / "photo.png")
    args = [
        str(tmp_path / "photo.png"),
        "--out",
        str(tmp_path / "out"),
        "--detectron2",
        str(tmp_path / "model_final.pth"),
    ]
    assert predict.main([*args, "--config", str(tmp_path / "config.yaml")]) == 0
    written = json.loads((tmp_path / "out" / "photo.json").read_text())
    model = from_detectron2(tmp_path / "model_final.pth", tmp_path / "config.yaml")
    expected = model([pixels.permute(2, 0, 1)])[0]
    assert len(written["scores"]) == len(expected["scores"]) > 0
    np.testing.assert_allclose(written["boxes"], expected["boxes"].numpy(), atol=0.01)
    assert written["class_names"][0] == detectron2_class_names(81)[written["labels"][0]]
    assert predict.main([*args, "--config", str(tmp_path / "config.yaml"), "--explain"]) == 0
    report = (tmp_path / "out" / "photo_explain.txt").read_text()
    assert "photo.png" in report and (tmp_path / "out" / "photo_explain.png").stat().st_size > 1000
    with pytest.raises(SystemExit):  # --config without --detectron2: a one-line error, exit 2
        predict.main([str(tmp_path / "photo.png"), "--out", str(tmp_path / "o2"), "--config", "x.yaml"])


# --- the Detectron2 column of chapter 11's table -------------------------------------------------
def _nested(key: str, value) -> dict:
    out: dict = {}
    d = out
    *parents, last = key.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value
    return out


def _perturbed(value):
    """Another value of the same type, to show that a key is read (a typo would change the field)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    return [_perturbed(value[0])] + list(value[1:])


def test_the_table_shows_detectron2s_own_value_for_each_key():
    """Oracle: ``config_from_detectron2`` (which reads a Detectron2 config into our fields) fed
    the one key with the table's value gives ``Config.detectron2_r50()``'s field; a changed value
    changes the field or is refused, so the key is read and a typo in the table fails here."""
    from minimask.compat import D2_KEY_TYPES, _d2_type_ok
    from minimask.config import config_table
    from minimask.viz.rules import DETECTRON2_VALUES, detectron2_keys

    fields = {}
    for row in config_table(D2):
        for key in detectron2_keys(row):
            fields.setdefault(key, []).append(row["name"])
    assert set(fields) == set(DETECTRON2_VALUES)  # every value is shown, every shown key has one
    for key, value in DETECTRON2_VALUES.items():
        assert key in D2_KEY_TYPES and _d2_type_ok(value, D2_KEY_TYPES[key]), key
        if key == "MODEL.RPN.CONV_DIMS":  # not read: one conv per entry, -1 = the input's width
            assert len(value) == D2.rpn_head_conv_depth and value == [-1] * len(value)
            continue
        cfg = config_from_detectron2(_nested(key, value), base=TV)
        for name in fields[key]:
            assert getattr(cfg, name) == getattr(D2, name), (key, name)
        try:
            other = config_from_detectron2(_nested(key, _perturbed(value)), base=TV)
        except ValueError:
            continue
        assert any(getattr(other, n) != getattr(D2, n) for n in fields[key]), key


def test_the_table_names_what_detectron2_lacks_and_not_our_numbers():
    from minimask.config import config_table
    from minimask.viz.rules import detectron2_cell

    cells = {row["name"]: detectron2_cell(row, D2) for row in config_table(TV)}
    assert (cells["num_classes"], cells["trainable_backbone_layers"]) == ("80", "2")
    assert cells["roi_aligned"] == "ROIAlignV2" and cells["mask_paste_padding"].startswith("none")
    assert cells["resize_rounding"] == D2.resize_rounding  # a rule in code: our switch's value
