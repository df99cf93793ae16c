"""Chapters 5-8 stage by stage, on synthetic tensors, each against its torchvision twin.

Oracles: ``torchvision.ops.poolers`` (``LevelMapper``, ``_setup_scales``,
``MultiScaleRoIAlign``), ``TwoMLPHead``/``FastRCNNPredictor``, ``BoxCoder`` +
``clip_boxes_to_image``, ``RoIHeads.postprocess_detections``, ``MaskRCNNHeads``/
``MaskRCNNPredictor``/``maskrcnn_inference``, ``paste_masks_in_image``, and for the
sub-pixel paste ``F.grid_sample`` over the whole image (Detectron2's ``_do_paste_mask``).
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from helpers_records import check_partition, check_suppressors
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_inference, paste_masks_in_image
from torchvision.ops import MultiScaleRoIAlign, clip_boxes_to_image
from torchvision.ops.poolers import LevelMapper, _setup_scales

from minimask.classification import BoxHead, BoxPredictor, Classification, class_table, classify, refine_boxes
from minimask.config import Config
from minimask.longlist import Longlist
from minimask.paste import paste_masks
from minimask.pooling import assign_levels, infer_scale, level_range, roi_pool
from minimask.scoring import score_parts
from minimask.segmentation import MaskHead, MaskPredictor, segment
from minimask.shortlist import Shortlist, select_shortlist

CFG = Config()


# --- helpers ---------------------------------------------------------------------------------
def random_boxes(n: int, height: int, width: int, g: torch.Generator, outside: float = 0.0) -> torch.Tensor:
    """``n`` boxes of varied size (1-90% of the image side), optionally spilling outside."""
    cx = torch.rand(n, generator=g) * width * (1 + 2 * outside) - width * outside
    cy = torch.rand(n, generator=g) * height * (1 + 2 * outside) - height * outside
    w = (torch.rand(n, generator=g) ** 2 * 0.9 + 0.01) * width
    h = (torch.rand(n, generator=g) ** 2 * 0.9 + 0.01) * height
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=1)


def feature_maps(g: torch.Generator, padded: tuple[int, int], n: int = 2, c: int = 8) -> OrderedDict:
    """FPN-like maps "0".."3" (strides 4..32) and "pool" for a padded batch."""
    hp, wp = padded
    maps = OrderedDict()
    for i, name in enumerate(("0", "1", "2", "3")):
        s = 4 * 2**i
        maps[name] = torch.randn(n, c, hp // s, wp // s, generator=g)
    maps["pool"] = maps["3"][..., ::2, ::2].contiguous()
    return maps


def torchvision_roi_heads(cfg: Config) -> RoIHeads:
    return RoIHeads(
        None, None, None, 0.5, 0.5, 512, 0.25, None,
        cfg.box_score_thresh, cfg.box_nms_thresh, cfg.box_detections_per_img,
    )  # fmt: skip


def classification_of(logits, deltas, proposals, size, cfg=CFG) -> Classification:
    k1 = logits.shape[1]
    d = deltas.reshape(len(deltas), k1, 4)
    return Classification(
        proposal_boxes=proposals,
        proposal_index=torch.arange(len(proposals)),
        roi_level=torch.zeros(len(proposals), dtype=torch.int64),
        logits=logits,
        probs=F.softmax(logits, -1),
        deltas=d,
        boxes=refine_boxes(d, proposals, size, cfg),
        image_size=size,
    )


# --- chapter 5: pooling ----------------------------------------------------------------------------
SIDES = st.floats(min_value=0.05, max_value=2000.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(w=SIDES, h=SIDES, x=st.floats(-50, 500), y=st.floats(-50, 500))
def test_assign_levels_equals_levelmapper(w, h, x, y):
    """Oracle: torchvision LevelMapper(2, 5) on the same box."""
    boxes = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32)
    expected = LevelMapper(2, 5)([boxes])
    assert torch.equal(assign_levels(boxes, CFG, 2, 5), expected)


def test_assign_levels_at_power_of_two_boundaries():
    """Oracle: LevelMapper; squares of side 224 * 2**k land exactly on level 4 + k (the eps)."""
    sides = torch.tensor([1.0, 55.9, 56.0, 111.99, 112.0, 112.01, 224.0, 447.9, 448.0, 896.0, 1e4])
    boxes = torch.stack((torch.zeros_like(sides), torch.zeros_like(sides), sides, sides), dim=1)
    ours = assign_levels(boxes, CFG, 2, 5)
    assert torch.equal(ours, LevelMapper(2, 5)([boxes]))
    assert ours[sides == 112.0].item() == 1 and ours[sides == 224.0].item() == 2 and ours[sides == 448.0].item() == 3


@pytest.mark.parametrize("sizes", [[(800, 1066)], [(320, 426), (250, 480)], [(192, 192)], [(100, 37), (33, 100)]])
def test_scales_equal_setup_scales(sizes):
    """Oracle: torchvision _setup_scales (scales and LevelMapper k_min/k_max)."""
    hp = -(-max(s[0] for s in sizes) // 32) * 32
    wp = -(-max(s[1] for s in sizes) // 32) * 32
    feats = [torch.zeros(1, 1, hp // s, wp // s) for s in (4, 8, 16, 32)]
    scales, mapper = _setup_scales(feats, sizes, 224, 4)
    largest = (max(s[0] for s in sizes), max(s[1] for s in sizes))
    ours = [infer_scale(f.shape[-2:], largest) for f in feats]
    assert ours == scales
    assert level_range(ours) == (mapper.k_min, mapper.k_max)


@pytest.mark.parametrize("output_size,sampling_ratio", [(7, 2), (14, 2), (7, 0), (5, 1)])
def test_roi_pool_equals_multiscale_roi_align(output_size, sampling_ratio):
    """Oracle: torchvision MultiScaleRoIAlign(["0".."3"]) on the same maps and boxes, 2 images."""
    g = torch.Generator().manual_seed(output_size * 10 + sampling_ratio)
    sizes = [(300, 410), (256, 320)]
    maps = feature_maps(g, (320, 416))
    boxes = [random_boxes(40, *sizes[0], g, outside=0.1), random_boxes(25, *sizes[1], g)]
    boxes[0][0] = torch.tensor([10.0, 10.0, 10.4, 10.3])  # smaller than a feature cell
    expected = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size, sampling_ratio)(maps, boxes, sizes)
    pooled = roi_pool(maps, boxes, sizes, output_size, sampling_ratio, CFG)
    torch.testing.assert_close(pooled.features, expected, rtol=0, atol=0)
    assert torch.equal(pooled.roi_level, LevelMapper(2, 5)(boxes))
    assert torch.equal(pooled.image_index, torch.tensor([0] * 40 + [1] * 25))
    assert torch.equal(pooled.box_index, torch.cat([torch.arange(40), torch.arange(25)]))
    assert pooled.scales == (0.25, 0.125, 0.0625, 0.03125) and pooled.levels == (2, 5)


def test_roi_pool_no_boxes_and_bad_input():
    """Oracle: MultiScaleRoIAlign gives (0, C, S, S) for no boxes; missing maps raise ValueError."""
    g = torch.Generator().manual_seed(0)
    maps = feature_maps(g, (128, 128), n=1)
    empty = [torch.zeros(0, 4)]
    expected = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(maps, empty, [(128, 128)])
    assert roi_pool(maps, empty, [(128, 128)], 7, 2, CFG).features.shape == expected.shape == (0, 8, 7, 7)
    with pytest.raises(ValueError, match="feature map"):
        roi_pool({"0": maps["0"]}, empty, [(128, 128)], 7, 2, CFG)
    with pytest.raises(ValueError, match="image sizes"):
        roi_pool(maps, empty, [(128, 128), (64, 64)], 7, 2, CFG)


# --- chapter 5: classification ------------------------------------------------------------------
def test_box_head_and_predictor_equal_torchvision():
    """Oracle: TwoMLPHead + FastRCNNPredictor with the same state dict (keys identical)."""
    torch.manual_seed(0)
    tv_head, tv_pred = TwoMLPHead(8 * 7 * 7, 32), FastRCNNPredictor(32, 5)
    head, pred = BoxHead(8 * 7 * 7, 32), BoxPredictor(32, 5)
    assert head.state_dict().keys() == tv_head.state_dict().keys()
    assert pred.state_dict().keys() == tv_pred.state_dict().keys()
    head.load_state_dict(tv_head.state_dict())
    pred.load_state_dict(tv_pred.state_dict())
    x = torch.randn(11, 8, 7, 7)
    for a, b in zip(pred(head(x)), tv_pred(tv_head(x)), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_classify_equals_torchvision_pieces():
    """Oracle: MultiScaleRoIAlign -> TwoMLPHead -> FastRCNNPredictor, softmax, BoxCoder.decode + clip."""
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    sizes = [(300, 410), (256, 320)]
    maps = feature_maps(g, (320, 416))
    proposals = [clip_boxes_to_image(random_boxes(30, *s, g), s) for s in sizes]
    head, pred = BoxHead(8 * 49, 64), BoxPredictor(64, 6)
    records = classify(head, pred, maps, proposals, sizes, CFG)
    feats = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(maps, proposals, sizes)
    logits, deltas = pred(head(feats))
    decoded = BoxCoder((10.0, 10.0, 5.0, 5.0)).decode(deltas, proposals)
    for rec, lg, dc, s in zip(records, logits.split(30), decoded.split(30), sizes, strict=True):
        torch.testing.assert_close(rec.logits, lg, rtol=0, atol=0)
        torch.testing.assert_close(rec.probs, F.softmax(lg, -1), rtol=0, atol=0)
        torch.testing.assert_close(rec.boxes, clip_boxes_to_image(dc, s), rtol=0, atol=0)
        assert rec.boxes.shape == (30, 6, 4) and rec.image_size == s
    assert class_table(records[0], 0, top=3)[0][1] == pytest.approx(float(records[0].probs[0].detach().max()))


# --- chapter 6: shortlist -------------------------------------------------------------------------
def shortlist_case(seed: int, p: int, k1: int, size=(200, 300), spread: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    proposals = clip_boxes_to_image(random_boxes(p, *size, g, outside=0.05), size)
    logits = torch.randn(p, k1, generator=g) * spread
    deltas = torch.randn(p, k1 * 4, generator=g) * 0.5
    return proposals, logits, deltas


def assert_shortlist_equals_torchvision(proposals, logits, deltas, size, cfg):
    boxes, scores, labels = torchvision_roi_heads(cfg).postprocess_detections(logits, deltas, [proposals], [size])
    c = classification_of(logits, deltas, proposals, size, cfg)
    s = select_shortlist(c, cfg)
    torch.testing.assert_close(s.boxes, boxes[0], rtol=0, atol=0)
    torch.testing.assert_close(s.scores, scores[0], rtol=0, atol=0)
    assert torch.equal(s.labels, labels[0])
    return c, s


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    p=st.integers(0, 120),
    k1=st.integers(2, 12),
    thresh=st.sampled_from([0.0, 0.05, 0.2, 0.6]),
    nms=st.sampled_from([0.3, 0.5, 0.7]),
    cap=st.sampled_from([5, 100]),
)
def test_select_shortlist_equals_postprocess_detections(seed, p, k1, thresh, nms, cap):
    """Oracle: RoIHeads.postprocess_detections on the same logits, deltas and proposals;
    properties: kept and dropped partition the candidates; lineage points at the right box."""
    cfg = CFG.replace(box_score_thresh=thresh, box_nms_thresh=nms, box_detections_per_img=cap)
    size = (200, 300)
    proposals, logits, deltas = shortlist_case(seed, p, k1, size)
    c, s = assert_shortlist_equals_torchvision(proposals, logits, deltas, size, cfg)
    check_partition(s, s.candidate_index)
    assert len(s.fate) == p * (k1 - 1) and s.STEPS == Shortlist.STEPS
    assert torch.equal(c.boxes[s.proposal_index, s.labels], s.boxes)
    assert torch.equal(c.probs[s.proposal_index, s.labels], s.scores)
    if len(s.dropped["score_threshold"]):
        assert float(c.probs[:, 1:].reshape(-1)[s.dropped["score_threshold"]].max()) <= thresh
    # each NMS-dropped candidate names a kept-by-NMS box of its class, better, that torchvision's
    # own nms lets remove it; the class of a candidate row is row % K
    check_suppressors(s)
    nms_rows = s.dropped["nms"]
    assert torch.equal(nms_rows % (k1 - 1), s.suppressed_by[nms_rows] % (k1 - 1))


def test_shortlist_edge_cases():
    """Oracle: postprocess_detections. No proposals; every score below threshold; tiny boxes
    (zero width after clipping) removed by the 1e-2 rule; the cap."""
    size = (100, 100)
    # no proposals
    _, s = assert_shortlist_equals_torchvision(torch.zeros(0, 4), torch.zeros(0, 5), torch.zeros(0, 20), size, CFG)
    assert s.boxes.shape == (0, 4) and s.funnel == {
        "input": 0,
        "score_threshold": 0,
        "small_box": 0,
        "nms": 0,
        "cap": 0,
    }
    # confident background everywhere: nothing passes 0.05
    proposals, logits, deltas = shortlist_case(1, 20, 5)
    logits[:, 0] = 20.0
    _, s = assert_shortlist_equals_torchvision(proposals, logits, deltas, (200, 300), CFG)
    assert len(s.boxes) == 0 and len(s.dropped["score_threshold"]) == 80
    # boxes outside the image clip to zero width and are removed as "small"
    proposals = torch.tensor([[120.0, 10.0, 150.0, 40.0], [10.0, 10.0, 60.0, 60.0], [10.0, 10.0, 10.005, 60.0]])
    logits = torch.tensor([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0], [0.0, 5.0, 0.0]])
    _, s = assert_shortlist_equals_torchvision(proposals, logits, torch.zeros(3, 12), size, CFG)
    assert s.fate_of(0) == "small_box" and s.fate_of(4) == "small_box" and s.fate_of(2) == "kept"
    # the cap keeps the best and records the rest
    proposals, logits, deltas = shortlist_case(2, 200, 3, spread=1.0)
    cfg = CFG.replace(box_detections_per_img=7)
    _, s = assert_shortlist_equals_torchvision(proposals, logits, deltas, (200, 300), cfg)
    assert len(s.boxes) == 7 and len(s.dropped["cap"]) == s.funnel["nms"] - 7


# --- chapter 7: segmentation ----------------------------------------------------------------------
def test_mask_head_and_predictor_equal_torchvision():
    """Oracle: MaskRCNNHeads / MaskRCNNPredictor, state dicts loaded both ways."""
    torch.manual_seed(0)
    tv_head, tv_pred = MaskRCNNHeads(8, [16, 16, 12], 1), MaskRCNNPredictor(12, 10, 4)
    head, pred = MaskHead(8, (16, 16, 12), 1), MaskPredictor(12, 10, 4)
    assert head.state_dict().keys() == tv_head.state_dict().keys()
    assert pred.state_dict().keys() == tv_pred.state_dict().keys()
    head.load_state_dict(tv_head.state_dict())
    pred.load_state_dict(tv_pred.state_dict())
    torch.manual_seed(1)
    tv_head.load_state_dict(MaskHead(8, (16, 16, 12), 1).state_dict())  # and the other way
    head.load_state_dict(tv_head.state_dict())
    x = torch.randn(5, 8, 14, 14)
    torch.testing.assert_close(pred(head(x)), tv_pred(tv_head(x)), rtol=0, atol=0)
    assert pred(head(x)).shape == (5, 4, 28, 28)


def test_segment_equals_torchvision_mask_branch():
    """Oracle: MultiScaleRoIAlign(14) -> MaskRCNNHeads -> MaskRCNNPredictor -> maskrcnn_inference,
    then resize_boxes + paste_masks_in_image (GeneralizedRCNNTransform.postprocess)."""
    from torchvision.models.detection.transform import resize_boxes

    g = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    sizes, originals = [(300, 410), (256, 320)], [(150, 205), (400, 500)]
    maps = feature_maps(g, (320, 416))
    head, pred = MaskHead(8, (8, 8), 1), MaskPredictor(8, 8, 4)
    shortlists = []
    for s, thresh in zip(sizes, (0.05, 1.0), strict=True):  # the second image has no detections
        proposals, logits, deltas = shortlist_case(int(s[0]), 40, 4, s)
        cfg = CFG.replace(box_detections_per_img=6, box_score_thresh=thresh)
        shortlists.append(select_shortlist(classification_of(logits, deltas, proposals, s), cfg))
    records = segment(
        head, pred, maps, [s.boxes for s in shortlists], [s.labels for s in shortlists], sizes, CFG, originals
    )
    boxes = [s.boxes for s in shortlists]
    feats = MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2)(maps, boxes, sizes)
    probs = maskrcnn_inference(pred(head(feats)), [s.labels for s in shortlists])
    for rec, pr, s, size, orig in zip(records, probs, shortlists, sizes, originals, strict=True):
        torch.testing.assert_close(rec.probs, pr[:, 0], rtol=0, atol=0)
        orig_boxes = resize_boxes(s.boxes, size, orig)
        torch.testing.assert_close(rec.boxes_orig, orig_boxes, rtol=0, atol=0)
        torch.testing.assert_close(rec.masks, paste_masks_in_image(pr, orig_boxes, orig), rtol=0, atol=1e-6)
        assert rec.masks.shape == (len(s.boxes), 1, *orig)
        assert torch.equal(rec.detection_index, torch.arange(len(s.boxes))) and torch.equal(rec.boxes, s.boxes)
    assert len(records[0].boxes) == 6 and records[1].masks.shape == (0, 1, 400, 500)


def paste_case(seed: int, n: int, size: tuple[int, int]):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    boxes = random_boxes(n, h, w, g)  # centres inside; large boxes spill over the edges
    boxes[: n // 4] = clip_boxes_to_image(boxes[: n // 4], size)  # some clipped to the border exactly
    tiny = torch.rand(n // 5, 2, generator=g) * torch.tensor([w, h])
    side = torch.rand(n // 5, 2, generator=g) * 0.9 + 0.01  # < 1 px
    boxes[n - n // 5 :] = torch.cat((tiny, tiny + side), dim=1)
    return torch.rand(n, 28, 28, generator=g), boxes


@pytest.mark.parametrize("size", [(480, 640), (37, 53), (200, 120)])
def test_paste_masks_equals_torchvision(size):
    """Oracle: torchvision paste_masks_in_image; boxes partly outside, on the border, < 1 px."""
    masks, boxes = paste_case(size[0], 60, size)
    ours = paste_masks(masks, boxes, size, CFG)
    expected = paste_masks_in_image(masks[:, None], boxes, size)
    assert ours.shape == expected.shape == (60, 1, *size)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(paste_masks(masks[:, None], boxes, size, CFG), ours, rtol=0, atol=0)


@settings(max_examples=60, deadline=None)
@given(
    x=st.floats(-20, 90),
    y=st.floats(-20, 70),
    w=st.floats(0.01, 150),
    h=st.floats(0.01, 120),
    seed=st.integers(0, 1000),
)
def test_paste_one_mask_equals_torchvision(x, y, w, h, seed):
    """Oracle: paste_masks_in_image for one box overlapping a 60x80 image, anywhere."""
    assume(x + w > 0 and y + h > 0 and x < 80 and y < 60)  # torchvision crashes on boxes fully outside
    g = torch.Generator().manual_seed(seed)
    boxes = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32)
    masks = torch.rand(1, 28, 28, generator=g)
    expected = paste_masks_in_image(masks[:, None], boxes, (60, 80))
    torch.testing.assert_close(paste_masks(masks, boxes, (60, 80), CFG), expected, rtol=0, atol=1e-6)


def test_paste_masks_outside_the_image_are_zero():
    """Property: a box out of the image's reach pastes nothing (torchvision raises for some)."""
    boxes = torch.tensor([[10.0, -40.0, 50.0, -20.0], [-90.0, 5.0, -60.0, 25.0], [100.0, 100.0, 140.0, 130.0]])
    for mode in ("torchvision", "subpixel"):
        pasted = paste_masks(torch.ones(3, 28, 28), boxes, (60, 80), CFG.replace(mask_paste=mode))
        assert pasted.shape == (3, 1, 60, 80) and float(pasted.abs().sum()) == 0.0


def test_paste_masks_empty_and_bad_input():
    """Oracle: paste_masks_in_image returns (0, 1, H, W) for no masks; bad shapes raise ValueError."""
    expected = paste_masks_in_image(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (30, 40))
    assert paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), (30, 40), CFG).shape == expected.shape
    with pytest.raises(ValueError, match="paste_masks"):
        paste_masks(torch.zeros(2, 3, 28, 28), torch.zeros(2, 4), (30, 40), CFG)
    with pytest.raises(ValueError, match="paste_masks"):
        paste_masks(torch.zeros(2, 28, 28), torch.zeros(3, 4), (30, 40), CFG)


def grid_sample_paste(
    masks: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], offset: float = 0.5
) -> torch.Tensor:
    """Detectron2 ``_do_paste_mask`` over the whole image (its GPU path), written out here;
    pixel p sampled at p + offset (Detectron2: 0.5)."""
    h, w = size
    x0, y0, x1, y1 = boxes.unbind(1)
    ys = (torch.arange(h, dtype=torch.float32) + offset)[None] - y0[:, None]
    xs = (torch.arange(w, dtype=torch.float32) + offset)[None] - x0[:, None]
    gy = ys / (y1 - y0)[:, None] * 2 - 1
    gx = xs / (x1 - x0)[:, None] * 2 - 1
    grid = torch.stack((gx[:, None, :].expand(-1, h, w), gy[:, :, None].expand(-1, h, w)), dim=3)
    return F.grid_sample(masks[:, None], grid, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("size", [(480, 640), (37, 53)])
@pytest.mark.parametrize("aligned, offset", [(True, 0.5), (False, 0.0)])
def test_subpixel_paste_equals_grid_sample(size, aligned, offset):
    """Oracle: F.grid_sample(bilinear, align_corners=False, zeros) at every pixel, at the pixel
    convention of the model's RoIAlign: centres (p + 0.5, Detectron2) when aligned, p when not."""
    masks, boxes = paste_case(size[1], 40, size)
    ours = paste_masks(masks, boxes, size, CFG.replace(mask_paste="subpixel", roi_aligned=aligned))
    torch.testing.assert_close(ours, grid_sample_paste(masks, boxes, size, offset), rtol=0, atol=2e-6)


# --- chapter 8: scoring ---------------------------------------------------------------------------
def test_score_parts_follow_lineage():
    """Oracle: the same numbers gathered by hand with Python loops over the detections."""
    g = torch.Generator().manual_seed(9)
    torch.manual_seed(9)
    size = (256, 320)
    maps = feature_maps(g, size, n=1)
    proposals, logits, deltas = shortlist_case(9, 50, 5, size)
    objectness = torch.rand(50, generator=g).sort(descending=True).values
    ll = Longlist(
        boxes=proposals, objectness=objectness, logits=torch.logit(objectness),
        anchor_level=torch.zeros(50, dtype=torch.int64), anchor_index=torch.arange(50),
        fate=torch.zeros(50, dtype=torch.int8), nms=None, image_size=size,
    )  # fmt: skip
    c = classification_of(logits, deltas, proposals, size)
    s = select_shortlist(c, CFG)
    seg = segment(MaskHead(8, (8,), 1), MaskPredictor(8, 8, 5), maps, [s.boxes], [s.labels], [size], CFG, [size])[0]
    sc = score_parts(ll, c, s, seg, CFG)
    assert len(s.boxes) > 5
    torch.testing.assert_close(sc.score, s.scores, rtol=0, atol=0)
    for d in range(len(s.boxes)):
        p, label = int(s.proposal_index[d]), int(s.labels[d])
        row = F.softmax(logits[p], -1)
        assert sc.background[d].item() == pytest.approx(row[0].item(), abs=1e-7)
        assert sc.objectness[d].item() == objectness[p].item()
        others = [row[k].item() for k in range(1, 5) if k != label]
        assert sc.runner_up[d].item() == pytest.approx(max(others), abs=1e-7)
        assert sc.other_classes[d].item() == pytest.approx(sum(others), abs=1e-5)
        cells = [v for v in seg.probs[d].flatten().tolist() if v >= CFG.mask_threshold]
        assert sc.mask_quality[d].item() == pytest.approx(sum(cells) / len(cells) if cells else 0.0, abs=1e-5)
        assert sc.mask_fraction[d].item() == pytest.approx(len(cells) / 784, abs=1e-6)
    torch.testing.assert_close(sc.with_objectness, sc.score * sc.objectness)


def test_paste_boxes_follow_the_resize_convention():
    """Oracle: F.interpolate (bilinear, align_corners=False) of a linear ramp. Resizing an
    original image of width W to w, resized pixel p holds the ramp's value at the original
    coordinate it was sampled from; paste_boxes must map p (pixel-index convention,
    roi_aligned=False) there. With roi_aligned=True it is torchvision's plain ratio."""
    from torchvision.models.detection.transform import resize_boxes as tv_resize_boxes

    from minimask.paste import paste_boxes

    orig, resized = (150, 200), (192, 256)
    for axis, n_orig, n_res in ((1, orig[1], resized[1]), (0, orig[0], resized[0])):
        ramp = torch.arange(n_orig, dtype=torch.float64)
        shape = (1, 1, 1, n_orig) if axis == 1 else (1, 1, n_orig, 1)
        size = (1, n_res) if axis == 1 else (n_res, 1)
        sampled = F.interpolate(ramp.reshape(shape), size=size, mode="bilinear", align_corners=False).flatten()
        p = torch.arange(2, n_res - 2, dtype=torch.float64)  # interior: the ramp is not clamped there
        boxes = torch.zeros(len(p), 4, dtype=torch.float64)
        boxes[:, axis], boxes[:, axis + 2] = p, p
        mapped = paste_boxes(boxes, resized, orig, CFG.replace(roi_aligned=False))
        torch.testing.assert_close(mapped[:, axis], sampled[2:-2], rtol=0, atol=1e-9)
        torch.testing.assert_close(mapped[:, axis + 2], sampled[2:-2], rtol=0, atol=1e-9)
    g = torch.Generator().manual_seed(3)
    boxes = torch.rand(20, 4, generator=g) * 150
    aligned = paste_boxes(boxes, resized, orig, CFG.replace(roi_aligned=True))
    torch.testing.assert_close(aligned, tv_resize_boxes(boxes, resized, orig), rtol=1e-6, atol=1e-4)


def test_class_agnostic_shortlist_is_greedy_nms_over_every_class():
    """Checked against the definition of greedy NMS, not against torchvision's nms it calls:
    kept candidates score > thresh, best first, no two kept boxes (of any classes) overlap by
    more than the NMS threshold, and each candidate above the threshold that is not kept
    overlaps a better kept one by more (or falls after the cap)."""
    from torchvision.ops import box_iou

    from minimask.shortlist import flatten_candidates, select_class_agnostic

    g = torch.Generator().manual_seed(3)
    proposals = torch.rand(60, 2, generator=g) * 150
    proposals = torch.cat([proposals, proposals + 20 + torch.rand(60, 2, generator=g) * 40], 1)
    c = classification_of(torch.randn(60, 4, generator=g) * 2, torch.randn(60, 16, generator=g) * 0.2,
                          proposals, (200, 220))  # fmt: skip
    cfg = CFG.replace(box_detections_per_img=12)
    rows, boxes, scores, labels = select_class_agnostic(c, cfg)
    all_boxes, all_scores, _ = flatten_candidates(c)
    assert 0 < len(rows) <= 12 and bool((scores > cfg.box_score_thresh).all())
    assert torch.equal(scores, scores.sort(descending=True).values)
    overlap = box_iou(boxes, boxes).fill_diagonal_(0)
    assert bool((overlap <= cfg.box_nms_thresh).all())
    worst = float(scores[-1])
    for i in torch.where(all_scores > cfg.box_score_thresh)[0].tolist():
        if i in rows.tolist() or float(all_scores[i]) < worst:
            continue
        better = scores >= all_scores[i]
        assert bool((box_iou(all_boxes[i : i + 1], boxes)[0][better] > cfg.box_nms_thresh).any()), i
