"""Chapter 8's numbers: IoU tables and matching (the COCO bridge, ``minimask.coco_eval``) and
the reliability bins and ECE of ``minimask.scoring``.

Oracles: pycocotools (``COCOeval`` for matching), torchvision ``box_iou`` for box IoU, and
small cases worked by hand for the reliability bins and the expected calibration error.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_iou

from minimask.coco_eval import greedy_match, iou
from minimask.scoring import expected_calibration_error, reliability


def _rle(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def test_box_iou_equals_torchvision():
    """Oracle: torchvision box_iou (continuous widths, as COCO's)."""
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(5, 2, generator=g) * 50
    a = torch.cat([xy, xy + 5 + torch.rand(5, 2, generator=g) * 30], dim=1)
    xy = torch.rand(3, 2, generator=g) * 50
    b = torch.cat([xy, xy + 5 + torch.rand(3, 2, generator=g) * 30], dim=1)
    torch.testing.assert_close(torch.as_tensor(iou(a.double(), b.double())), box_iou(a.double(), b.double()))


def test_mask_iou_by_hand():
    """Two 4x4 squares overlapping in a 2x4 strip: IoU 8 / 24; empty tables stay empty."""
    a = np.zeros((10, 10))
    a[0:4, 0:4] = 1
    b = np.zeros((10, 10))
    b[2:6, 0:4] = 1
    table = iou([_rle(a), _rle(b)], [_rle(b)])
    assert table.shape == (2, 1)
    assert table[0, 0].item() == pytest.approx(8 / 24)
    assert table[1, 0].item() == pytest.approx(1.0)
    assert iou([], [_rle(b)]).shape == (0, 1)


def _cocoeval_matches(gt_boxes, gt_labels, gt_crowd, dt_boxes, dt_labels, dt_scores):
    """COCOeval's own matching at IoU 0.5 (area 'all', 100 detections): dt -> gt index, -1
    none, -2 ignored (it matched a crowd region)."""
    images = [{"id": 1, "width": 100, "height": 100}]
    anns = [
        {"id": i + 1, "image_id": 1, "category_id": int(c), "bbox": b, "area": b[2] * b[3], "iscrowd": int(z)}
        for i, (b, c, z) in enumerate(zip(gt_boxes, gt_labels, gt_crowd, strict=True))
    ]
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": k} for k in (1, 2)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(
            [
                {"image_id": 1, "category_id": int(c), "bbox": b, "score": float(s)}
                for b, c, s in zip(dt_boxes, dt_labels, dt_scores, strict=True)
            ]
        )
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
    match = {}
    for record in ev.evalImgs:
        if record is None or record["aRng"] != [0, 1e10]:
            continue
        for k, dt_id in enumerate(record["dtIds"]):
            gt_id, ignored = int(record["dtMatches"][0, k]), bool(record["dtIgnore"][0, k])
            match[dt_id] = -2 if ignored else gt_id - 1  # annotation ids are 1-based rows; 0 = none -> -1
    return [match[i + 1] for i in range(len(dt_boxes))]


@pytest.mark.parametrize("crowd_share", [0.0, 0.3])
def test_greedy_match_equals_cocoeval(crowd_share):
    """Oracle: COCOeval.evaluateImg's dtMatches and dtIgnore at IoU 0.5 on random boxes of two
    classes, duplicates included (a second detection of a taken object is a false positive);
    with crowd regions, which absorb any number of detections (ignored, -2)."""
    g = torch.Generator().manual_seed(3)
    ignored = 0
    for _ in range(20):
        gt_xy = torch.rand(6, 2, generator=g) * 60
        gt_wh = 8 + torch.rand(6, 2, generator=g) * 30
        gt_labels = torch.randint(1, 3, (6,), generator=g)
        gt_crowd = (torch.rand(6, generator=g) < crowd_share).long()
        pick = torch.randint(0, 6, (12,), generator=g)
        dt_xy = gt_xy[pick] + torch.randn(12, 2, generator=g) * 4
        dt_wh = gt_wh[pick] * (1 + torch.randn(12, 2, generator=g) * 0.15).clamp(min=0.5)
        dt_labels = torch.where(torch.rand(12, generator=g) < 0.8, gt_labels[pick], 3 - gt_labels[pick])
        scores = torch.rand(12, generator=g)
        gt_xywh = torch.cat([gt_xy, gt_wh], 1).double().tolist()
        dt_xywh = torch.cat([dt_xy, dt_wh], 1).double().tolist()
        expected = _cocoeval_matches(
            gt_xywh, gt_labels.tolist(), gt_crowd.tolist(), dt_xywh, dt_labels.tolist(), scores.tolist()
        )
        gt_xyxy = torch.cat([gt_xy, gt_xy + gt_wh], 1).double()
        dt_xyxy = torch.cat([dt_xy, dt_xy + dt_wh], 1).double()
        ious = iou(dt_xyxy, gt_xyxy, gt_crowd.tolist())
        ours, _ = greedy_match(ious, scores, dt_labels, gt_labels, gt_crowd, 0.5)
        assert ours == expected
        ignored += expected.count(-2)
    assert (ignored > 0) == (crowd_share > 0), "the crowd case is exercised"


def test_match_takes_each_object_once_and_needs_the_class():
    """By hand: two detections on one object, the higher score wins; a wrong class never matches."""
    ious = np.array([[0.9], [0.95], [0.99]])
    scores = [0.8, 0.6, 0.99]
    labels = [1, 1, 2]
    assert greedy_match(ious, scores, labels, [1])[0] == [0, -1, -1]
    assert greedy_match(ious, scores, labels, [1], iou_threshold=0.92)[0] == [-1, 0, -1]


def test_reliability_and_ece_by_hand():
    """Scores 0.05, 0.15, 0.95, 0.95 (4 bins of width 0.25), correct F, T, T, F:
    bin 0: confidence 0.1, accuracy 0.5 (2 detections); bin 3: confidence 0.95, accuracy 0.5 (2).
    ECE = 2/4 * 0.4 + 2/4 * 0.45 = 0.425."""
    scores = torch.tensor([0.05, 0.15, 0.95, 0.95])
    correct = torch.tensor([False, True, True, False])
    r = reliability(scores, correct, bins=4)
    assert r.count.tolist() == [2, 0, 0, 2]
    torch.testing.assert_close(r.confidence[[0, 3]], torch.tensor([0.1, 0.95], dtype=torch.float64))
    torch.testing.assert_close(r.accuracy[[0, 3]], torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert torch.isnan(r.accuracy[1]) and torch.isnan(r.confidence[2])
    assert expected_calibration_error(scores, correct, bins=4) == pytest.approx(0.425)


def test_bins_are_right_closed_and_perfect_calibration_is_zero():
    """A score on an edge (0.5) falls in the bin below it; 0 and 1 land in the end bins.
    Scores equal to their bin's accuracy give ECE 0."""
    r = reliability(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([True, True, True]), bins=2)
    assert r.count.tolist() == [2, 1]
    scores = torch.tensor([0.5, 0.5, 1.0, 1.0])
    assert expected_calibration_error(scores, torch.tensor([True, False, True, True]), bins=2) == pytest.approx(0.0)
    assert expected_calibration_error(torch.zeros(0), torch.zeros(0, dtype=torch.bool)) == 0.0
