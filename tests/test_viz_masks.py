"""Figures of chapters 7 and 8 (minimask.viz.masks): each returns a Figure with the expected
artists for a small record, and draws nothing it was not given.

Oracle: the artists themselves (images, patches, lines, texts) counted on the returned Figure;
the records come from the shipped model on one featured image, or are built by hand.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from minimask import load_pretrained
from minimask.data import featured
from minimask.scoring import reliability
from minimask.viz import class_color
from minimask.viz import masks as vm

NAMES = ["__background__", "square", "circle", "triangle"]


@pytest.fixture(scope="module")
def shipped():
    model = load_pretrained("shapes")
    image, target = featured(1)
    return model, image, target, model.run([image])


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _rects(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_class_channels_frames_only_the_label():
    """One panel per class channel plus crop and features; only the label's frame is thick."""
    logits = torch.randn(4, 28, 28)
    fig = vm.class_channels(torch.rand(3, 20, 30), torch.rand(8, 14, 14), logits, 2, NAMES)
    assert isinstance(fig, Figure)
    axes = fig.axes
    assert len(axes) == 6
    widths = [max(s.get_linewidth() for s in ax.spines.values()) for ax in axes[2:]]
    assert widths.index(max(widths)) == 2 and sorted(widths)[-2] < max(widths)
    assert "circle" in axes[4].get_title() and "label" in axes[4].get_title()
    image = axes[4].images[0].get_array()
    np.testing.assert_allclose(image, logits[2].sigmoid().double().numpy(), rtol=1e-6)


def test_paste_rules_draws_the_torchvision_window(shipped):
    """Panels: the 28x28 mask + one per rule; the torchvision panel has box, enlarged box and
    the integer window; its title gives the window size x2 - x1 + 1."""
    _, _, _, run = shipped
    seg = run.segmentation[0]
    box = torch.tensor([10.3, 20.6, 40.2, 41.9])
    fig = vm.paste_rules(seg.probs[0], box, {"torchvision": seg.masks[0, 0], "sub-pixel": seg.masks[0, 0]}, 2)
    assert len(fig.axes) == 3
    tv = fig.axes[1]
    assert len(_rects(tv)) == 3 and len(_rects(fig.axes[2])) == 1
    enlarged, corners = vm._torchvision_window(box, 28, 1)
    assert f"{int(corners[2] - corners[0] + 1)}×{int(corners[3] - corners[1] + 1)}" in tv.get_title()
    # box 29.9 wide -> enlarged by 30/28 about its centre
    assert enlarged[2] - enlarged[0] == pytest.approx(29.9 * 30 / 28, rel=1e-6)


def test_threshold_sweep_one_line_per_detection_and_median():
    ious = np.array([[0.5, 0.8, 0.7], [0.6, 0.9, 0.8]])
    fig = vm.threshold_sweep([0.1, 0.5, 0.9], ious, [1, 3], class_names=NAMES)
    ax = fig.axes[0]
    assert len(ax.lines) == 2 + 1 + 1  # detections, median, the chosen threshold
    np.testing.assert_allclose(ax.lines[2].get_ydata(), [0.55, 0.85, 0.75])
    assert ax.lines[0].get_color() == class_color(1)
    assert "best at 0.5" in [t.get_text() for t in ax.get_legend().get_texts()][0]


def test_threshold_frame_counts_the_pixels_at_the_threshold(shipped):
    _, image, target, run = shipped
    seg = run.segmentation[0]
    masks = seg.masks[:3, 0]
    titles = []
    for th in (0.2, 0.8):
        fig = vm.threshold_frame(image, masks, seg.labels[:3], target["masks"], th)
        titles.append(fig.axes[0].get_title())
        plt.close(fig)
    for th, title in zip((0.2, 0.8), titles, strict=True):
        assert f"threshold {th:g}: {int((masks >= th).sum()):,} pixels" in title
    assert titles[0] != titles[1]


def test_mask_grid_draws_the_cells(shipped):
    """29 vertical + 29 horizontal grid lines per panel for 28 cells."""
    _, image, target, run = shipped
    seg = run.segmentation[0]
    fig = vm.mask_grid(image, seg.masks[0, 0], seg.boxes_orig[0], int(seg.labels[0]), gt_mask=target["masks"][0])
    assert len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 2 * 29
    width = float(seg.boxes_orig[0, 2] - seg.boxes_orig[0, 0])
    assert f"{width / 28:.1f} px per cell" in fig._suptitle.get_text()


def test_overlaps_counts_pixels_in_two_masks():
    masks = torch.zeros(2, 10, 10)
    masks[0, :5, :5] = 1
    masks[1, 3:8, 3:8] = 1  # 2 x 2 pixels shared
    fig = vm.overlaps(torch.rand(3, 10, 10), masks, [1, 2], class_names=NAMES)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == "in ≥ 2 masks: 4 px"
    assert labels[1:] == ["square", "circle"]


def test_mask_target_panels():
    gt = torch.zeros(30, 30)
    gt[5:20, 5:20] = 1
    fig = vm.mask_target(torch.rand(3, 30, 30), gt, torch.tensor([4.0, 4.0, 22.0, 22.0]), torch.rand(28, 28))
    assert len(fig.axes) == 3
    fig = vm.mask_target(
        torch.rand(3, 30, 30), gt, torch.tensor([4.0, 4.0, 22.0, 22.0]), torch.rand(28, 28), torch.rand(28, 28), 3
    )
    assert len(fig.axes) == 4
    assert _rects(fig.axes[0])[0].get_edgecolor()[:3] == pytest.approx(
        tuple(int(class_color(3)[i : i + 2], 16) / 255 for i in (1, 3, 5))
    )


def test_score_parts_bars_sum_to_one(shipped):
    """Score + runner-up + rest of the other classes + background = 1 for every detection."""
    _, _, _, run = shipped
    parts = run.scores[0]
    fig = vm.score_parts(parts, class_names=NAMES)
    ax = fig.axes[0]
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    n = len(parts.score)
    assert len(bars) == 4 * n
    ends = np.array([bars[3 * n + i].get_x() + bars[3 * n + i].get_width() for i in range(n)])
    np.testing.assert_allclose(ends, 1.0, atol=1e-5)
    assert len(ax.collections) == 2  # objectness and mask quality markers


def test_reliability_diagram_one_panel_per_kind():
    scores = torch.tensor([0.05, 0.15, 0.95, 0.95])
    correct = torch.tensor([False, True, True, False])
    rel = reliability(scores, correct, bins=4)
    fig = vm.reliability_diagram({"box IoU 0.5": rel, "mask IoU 0.5": rel}, title="t")
    assert len(fig.axes) == 4
    assert "ECE 0.425" in fig.axes[0].get_title()
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == pytest.approx([0.5, 0.0, 0.0, 0.5])


def test_mask_cases_titles():
    gt = np.zeros((10, 10))
    gt[2:8, 2:8] = 1
    case = {"crop": torch.rand(3, 10, 10), "mask": gt, "gt": gt, "label": 1, "score": 0.97, "iou": 0.41}
    fig = vm.mask_cases([case, {**case, "score": 0.2, "iou": 0.95}])
    assert len(fig.axes) == 2
    assert fig.axes[0].get_title() == "score 0.97\nmask IoU 0.41"


def test_rescoring_ap_bars_and_labels():
    table = {"score": {"box AP": 0.86, "mask AP": 0.84}, "score × objectness": {"box AP": 0.82, "mask AP": 0.80}}
    fig = vm.rescoring_ap(table)
    ax = fig.axes[0]
    assert len(ax.patches) == 4
    assert {t.get_text() for t in ax.texts} == {"0.860", "0.840", "0.820", "0.800"}
