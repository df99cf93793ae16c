"""minimask.evaluate: detections become COCO results that pycocotools' COCOeval scores correctly."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from minimask import Config
from minimask.data import shapes_val
from minimask.evaluate import coco_ground_truth, coco_stats, encode_masks, paste_ceiling, to_coco_results


@pytest.fixture(scope="module")
def val():
    return shapes_val()


def _perfect_results(dataset, relabel=None) -> list[dict]:
    """The ground truth itself, as detections with score 1 (masks as soft 0/1 probabilities)."""
    results = []
    for i in range(len(dataset)):
        _, t = dataset[i]
        labels = t["labels"] if relabel is None else relabel(t["labels"])
        out = {"boxes": t["boxes"], "labels": labels, "scores": torch.ones(len(labels)),
               "masks": t["masks"][:, None].float()}  # fmt: skip
        results += to_coco_results(out, int(t["image_id"]), dataset.label_to_category_id, 0.5)
    return results


def test_ground_truth_as_detections_scores_ap_one(val):
    """Oracle: COCOeval. Perfect detections give AP 1 for boxes and masks; so the conversion
    (xyxy -> xywh, labels -> category ids, masks -> RLE) is right."""
    gt, ids = coco_ground_truth(val)
    results = _perfect_results(val)
    assert len(results) == sum(len(val[i][1]["labels"]) for i in range(len(val)))
    for kind in ("bbox", "segm"):
        stats = coco_stats(gt, results, kind, ids)
        assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0), kind


def test_wrong_classes_score_zero(val):
    """The same boxes with every label moved to the next class: COCOeval gives AP ~0 (not
    exactly 0: an occluding object's box can overlap another class's box at IoU > 0.5)."""
    gt, ids = coco_ground_truth(val)
    k = len(val.class_names) - 1
    results = _perfect_results(val, relabel=lambda labels: labels % k + 1)
    assert coco_stats(gt, results, "bbox", ids)["AP"] < 0.01
    assert coco_stats(gt, [], "segm", ids)["AP"] == 0.0


def test_encode_masks_round_trip_through_pycocotools():
    """Oracle: pycocotools decode of our RLEs gives back mask >= threshold exactly."""
    g = torch.Generator().manual_seed(0)
    soft = torch.rand(3, 1, 17, 23, generator=g)
    rles = encode_masks(soft, 0.6)
    assert all(isinstance(r["counts"], str) for r in rles)
    for rle, m in zip(rles, soft, strict=True):
        decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(decoded, (m[0] >= 0.6).numpy().astype(np.uint8))
    assert encode_masks(torch.zeros(0, 1, 5, 5), 0.5) == []


def test_paste_ceilings_on_the_val_split(val):
    """Ground truth through the 28x28 mask target and back: torchvision's integer paste loses
    AP on these small objects; the sub-pixel paste recovers most of it. What it cannot recover
    is the 28x28 grid itself: the rings' holes and the thin arms of crosses and ells of the
    shapes v2 data (ceiling about 0.93 on the committed split)."""
    cfg = Config.shapes()
    tv = paste_ceiling(val, cfg, progress=False)
    sub = paste_ceiling(val, cfg.replace(mask_paste="subpixel"), progress=False)
    assert sub["AP"] > 0.9, sub
    assert tv["AP"] < sub["AP"] - 0.05, (tv, sub)
    assert tv["APs"] < tv["APm"], "small objects suffer most from the integer paste"


def test_cli_refuses_a_missing_data_dir(tmp_path):
    """The command line stops with an error naming the directory (the full run on the shipped
    weights is tests/test_shipped.py)."""
    done = subprocess.run([sys.executable, "-m", "minimask.evaluate", "--data", str(tmp_path / "nowhere")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "nowhere" in done.stderr
