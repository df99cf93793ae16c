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
from minimask.viz import NOT_A_CLASS, class_color
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


def test_threshold_frame_counts_added_and_removed_pixels():
    """One zoomed panel at least 400 px wide: the legend counts the pixels in at both
    thresholds, added by a lower one and removed by a higher one (oracle: the counts by hand
    on a ramp mask); only the window is drawn."""
    soft = torch.zeros(40, 50)
    soft[10:30, 10:40] = torch.linspace(0.05, 0.95, 30)  # a ramp: one value per column
    gt = (soft > 0.5).float()
    window = (5, 5, 45, 35)
    for th in (0.2, 0.8):
        fig = vm.threshold_frame(torch.rand(3, 40, 50), soft, 2, gt, th, window)
        assert fig.get_size_inches()[0] * fig.dpi >= 400
        ax = fig.axes[0]
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        both = int(((soft >= th) & (soft >= 0.5)).sum())
        added = int(((soft >= th) & (soft < 0.5)).sum())
        removed = int(((soft >= 0.5) & (soft < th)).sum())
        assert (added > 0) == (th < 0.5) and (removed > 0) == (th > 0.5)
        assert texts[0] == f"in at 0.5 and {th:g}: {both:,} px"
        assert texts[1] == f"added at {th:g}: {added:,} px"
        assert texts[2] == f"removed at {th:g}: {removed:,} px"
        assert ax.images[0].get_array().shape[:2] == (30, 40)  # the window, not the image
        plt.close(fig)


def test_grid_failures_blocks_grid_and_iou():
    """Two rows per object: the 28x28 cells drawn on the box (an image whose extent is the
    box), the pasted pixels with 29 + 29 cell edges; titles give px per cell and the IoU."""
    probs = torch.zeros(28, 28)
    probs[4:24, 4:24] = 1
    mask = torch.zeros(100, 120)
    mask[20:80, 30:90] = 1
    case = {"name": "ring", "label": 4, "box": torch.tensor([20.0, 10.0, 104.0, 94.0]), "probs": probs,
            "mask": mask, "gt": mask, "iou": 0.83}  # fmt: skip
    fig = vm.grid_failures([case, {**case, "name": "cross", "label": 5, "iou": 0.64}])
    top, bottom = fig.axes[0], fig.axes[2]
    assert "ring" in top.get_title() and "3.0 px per cell" in top.get_title()
    assert tuple(top.images[1].get_extent()) == (20.0, 104.0, 94.0, 10.0)
    assert top.images[1].get_array().shape[:2] == (28, 28)
    assert len(bottom.lines) == 2 * 29
    assert "mask IoU 0.83" in bottom.get_title() and "mask IoU 0.64" in fig.axes[3].get_title()
    assert bottom.get_xlim() == pytest.approx((20.0 - 0.06 * 84, 104.0 + 0.06 * 84))  # the box holds the object
    fig = vm.grid_failures([{**case, "ceiling": 0.97, "box": torch.tensor([40.0, 30.0, 60.0, 50.0])}])
    assert fig.axes[1].get_title().endswith("(a perfect head: 0.97)")
    assert fig.axes[1].get_xlim()[0] < 29.5 and fig.axes[1].get_xlim()[1] > 89.5  # zoomed out to the object


def test_occluded_masks_fills_the_hidden_part():
    """The hidden part (whole minus visible) is filled in NOT_A_CLASS, nothing else is; the
    title gives the hidden share, the IoU and the share of the hidden part in the mask."""
    full = torch.zeros(20, 20)
    full[4:16, 4:16] = 1
    visible = full.clone()
    visible[4:16, 10:16] = 0
    case = {"crop": torch.rand(3, 20, 20), "mask": full, "visible": visible, "full": full, "label": 1,
            "share": 0.5, "iou": 0.5, "hidden": 1.0}  # fmt: skip
    fig = vm.occluded_masks([case], class_names=NAMES)
    ax = fig.axes[0]
    layer = ax.images[1].get_array()
    filled = layer[..., 3] > 0
    assert filled.sum() == 12 * 6 and filled[4:16, 10:16].all()
    expected = [int(NOT_A_CLASS[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    np.testing.assert_allclose(layer[10, 12, :3], expected, atol=1e-3)
    assert ax.get_title() == "square, 50% hidden\nIoU (visible) 0.50\nhidden part in mask 100%"


def test_overlaps_counts_pixels_in_two_masks():
    masks = torch.zeros(2, 10, 10)
    masks[0, :5, :5] = 1
    masks[1, 3:8, 3:8] = 1  # 2 x 2 pixels shared
    fig = vm.overlaps(torch.rand(3, 10, 10), masks, [1, 2], class_names=NAMES)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == "in ≥ 2 masks: 4 px"
    assert labels[1:] == ["square", "circle"]
    # the image is drawn grey (no colour of its own), the overlap opaque in NOT_A_CLASS
    picture = fig.axes[0].images[0].get_array()
    assert np.allclose(picture[..., 0], picture[..., 1]) and np.allclose(picture[..., 1], picture[..., 2])
    layer = fig.axes[0].images[1].get_array()
    assert (layer[..., 3] > 0).sum() == 4 and layer[4, 4, 3] == 1.0


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
    assert fig.axes[0].get_title() == "score 0.970\nmask IoU 0.41"


def test_rescoring_ap_bars_and_labels():
    table = {"score": {"box AP": 0.86, "mask AP": 0.84}, "score × objectness": {"box AP": 0.82, "mask AP": 0.80}}
    fig = vm.rescoring_ap(table)
    ax = fig.axes[0]
    assert len(ax.patches) == 4
    assert {t.get_text() for t in ax.texts} == {"0.860", "0.840", "0.820", "0.800"}
