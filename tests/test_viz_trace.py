"""Figures of chapter 10 (and chapter 8's operating points) in minimask.viz.trace, and the
operating points they draw (minimask.scoring.operating_points).

Oracles: the artists of the returned Figure (lines, markers, texts, their window extents);
for the operating points, a data set of six detections built by hand whose precision-recall
curve and thresholds are worked out in the comments.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest
import torch
from helpers_cases import portrait_two_causes_image
from matplotlib.colors import to_hex
from pycocotools.coco import COCO

from minimask import coco_eval, load_pretrained
from minimask.data import shapes_val
from minimask.scoring import operating_points
from minimask.trace import explain
from minimask.viz import GT_STYLE, class_color
from minimask.viz import trace as vt

NAMES = ["__background__", "square", "circle", "triangle"]


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _hand_made() -> tuple[COCO, list[dict]]:
    """One image, four squares of class 1; six detections, best first: hit, hit, miss, hit,
    miss, hit (scores 0.9 ... 0.4). Cumulative precision 1, 1, 2/3, 3/4, 3/5, 2/3; recall
    1/4, 1/2, 1/2, 3/4, 3/4, 1."""
    boxes = [[10, 10, 20, 20], [50, 10, 20, 20], [10, 50, 20, 20], [50, 50, 20, 20]]
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "categories": [{"id": 1, "name": "square"}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": 400.0, "iscrowd": 0}
            for i, b in enumerate(boxes)
        ],  # fmt: skip
    }
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    far = [80, 80, 10, 10]
    dets = [(boxes[0], 0.9), (boxes[1], 0.8), (far, 0.7), (boxes[2], 0.6), (far, 0.5), (boxes[3], 0.4)]
    results = [{"image_id": 1, "category_id": 1, "bbox": b, "score": s} for b, s in dets]
    return coco, results


def test_operating_points_read_cocoeval_curve():
    coco, results = _hand_made()
    ev = coco_eval.evaluate(coco, results, "bbox", [1])
    (p,) = operating_points(ev, target=0.9)
    assert p.category_id == 1 and p.objects == 4
    # precision >= 0.9 up to recall 0.5 (the 2nd detection, score 0.8); beyond, at most 3/4
    assert p.recall[p.at_target] == pytest.approx(0.5)
    assert p.threshold("target") == pytest.approx(0.8)
    assert p.kept_precision[0] == pytest.approx(1.0) and p.kept_recall[0] == pytest.approx(0.5)
    # F1: 2/3 at recall 1/2, 3/4 at 3/4, 0.8 at recall 1 (precision 2/3): every detection
    assert p.recall[p.at_f1] == pytest.approx(1.0)
    assert p.threshold("f1") == pytest.approx(0.4)
    assert p.f1 == pytest.approx(0.8)
    assert p.kept_precision[1] == pytest.approx(4 / 6) and p.kept_recall[1] == pytest.approx(1.0)


def test_operating_points_without_a_reachable_target():
    coco, results = _hand_made()
    results[0]["bbox"] = [80, 80, 10, 10]  # the best detection now misses: precision < 1 at every recall
    ev = coco_eval.evaluate(coco, results, "bbox", [1])
    (p,) = operating_points(ev, target=0.99)
    assert p.at_target == -1 and math.isnan(p.threshold("target"))
    assert math.isnan(p.kept_precision[0])


def test_pr_curves_draws_one_panel_per_class_in_its_colour_with_both_points():
    coco, results = _hand_made()
    ev = coco_eval.evaluate(coco, results, "bbox", [1])
    (p,) = operating_points(ev, target=0.9)
    other = type(p)(**{**p.__dict__, "category_id": 3})  # a second class, same curve
    fig = vt.pr_curves([p, other], NAMES)
    axes = fig.axes
    visible = [ax for ax in axes if ax.axison]
    assert len(visible) == 2 and len(axes) == 3  # one row of three, the third empty
    for ax, label in zip(visible, (1, 3), strict=True):
        assert ax.get_title() == NAMES[label]
        curve = ax.lines[0]
        assert to_hex(curve.get_color()) == to_hex(class_color(label))
        markers = {ln.get_marker(): (ln.get_xdata()[0], ln.get_ydata()[0]) for ln in ax.lines[1:]}
        assert markers["o"] == pytest.approx((0.5, 1.0))  # precision 0.9 reached up to recall 0.5
        assert markers["s"] == pytest.approx((1.0, p.precision[p.at_f1]))
        texts = sorted(t.get_text() for t in ax.texts)
        assert texts == ["0.40", "0.80"]  # the two score thresholds
        assert ax.get_xlim() == (0, 1)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["precision 0.9", "score threshold: precision 0.9", "score threshold: best F1"]


def test_crop_case_crops_image_and_masks_alike():
    image = torch.rand(3, 100, 120)
    mask, gt = torch.zeros(100, 120), torch.zeros(100, 120, dtype=torch.bool)
    mask[40:60, 50:70] = 1
    gt[42:60, 50:72] = True
    case = vt.crop_case(image, torch.tensor([50.0, 40.0, 70.0, 60.0]), mask, gt)
    assert case["crop"].shape[1:] == case["mask"].shape == case["gt"].shape == (31, 31)  # 20 px + 5 each side
    assert case["mask"].sum() == mask.sum() and case["gt"].sum() == gt.sum()
    assert case["gt"].dtype == torch.float32


@pytest.fixture(scope="module")
def example():
    """An ordinary portrait val image whose misses have two causes (found with the shipped model)."""
    model = load_pretrained("shapes")
    image, target = shapes_val()[portrait_two_causes_image()]
    return image, explain(model, image, target)


def test_miss_examples_one_panel_per_miss_with_its_object(example):
    image, trace = example
    cases = [(image, trace, m) for m in trace.misses]
    assert len(cases) >= 2
    fig = vt.miss_examples(cases, NAMES)
    visible = [ax for ax in fig.axes if ax.axison]
    assert len(visible) == len(cases)
    for ax, (_, _, m) in zip(visible, cases, strict=True):
        assert ax.get_title().startswith(f"{m.stage}/{m.reason}\n")
        gt = [
            r
            for r in ax.patches
            if r.get_linestyle() == "--" and to_hex(r.get_edgecolor()) == to_hex(GT_STYLE["color"])
        ]
        assert len(gt) == 1
    assert fig.get_size_inches()[0] <= 6.4 + 1e-9


def test_errors_labels_stay_inside_the_image_below_the_title(example):
    image, trace = example
    fig = vt.errors(image, trace, NAMES)
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    title = ax.title.get_window_extent(renderer)
    labels = [t for t in ax.texts if t.get_text()]
    assert labels, "no label drawn"
    for t in labels:
        box = t.get_window_extent(renderer)
        assert box.y1 <= frame.y1 + 1 and box.y0 >= frame.y0 - 1, t.get_text()
        assert box.y1 < title.y0 or box.x1 < title.x0 or box.x0 > title.x1, t.get_text()
    width, height = fig.get_size_inches()
    assert width < height and width <= 6.4  # a portrait image (352x192): a narrower figure
