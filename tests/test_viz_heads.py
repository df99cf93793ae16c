"""Figures of chapters 5 and 6 (minimask.viz.heads): each returns a Figure with the expected artists.

Oracles: ``torchvision.ops.roi_align`` for the sampling points (on a linear ramp, bilinear
interpolation is exact, so a bin's output is the mean of its points' x); the records'
own counts for the drawn boxes.
"""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torchvision.ops import roi_align

from minimask.viz import heads


def rectangles(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("ratio", [1, 2, 0])
def test_sample_points_are_where_roi_align_samples(aligned, ratio):
    """The mean x of each bin's points equals roi_align on a map whose value is x."""
    h, w = 30, 40
    ramp = torch.arange(w, dtype=torch.float64).expand(h, w)[None, None]
    box = torch.tensor([13.0, 9.0, 61.0, 47.0], dtype=torch.float64)  # image pixels
    scale = 0.5
    out = roi_align(ramp, torch.cat([torch.zeros(1), box])[None], 7, scale, ratio, aligned)[0, 0]
    _, _, points = heads.sample_points(box, scale, 7, ratio, aligned)
    gx, gy = len(np.unique(points[:, 0])) // 7, len(np.unique(points[:, 1])) // 7
    per_bin_x = points[:, 0].reshape(7, gy, 7, gx).mean(axis=(1, 3))
    np.testing.assert_allclose(per_bin_x, out.numpy(), atol=1e-9)


def test_sample_points_minimum_size_when_not_aligned():
    """A box smaller than a cell still spans one cell without aligned (torchvision's clamp)."""
    x_edges, y_edges, _ = heads.sample_points([4.0, 4.0, 5.0, 5.0], 0.25, 7, 2, aligned=False)
    assert x_edges[-1] - x_edges[0] == pytest.approx(1.0)
    x_edges, _, _ = heads.sample_points([4.0, 4.0, 5.0, 5.0], 0.25, 7, 2, aligned=True)
    assert x_edges[-1] - x_edges[0] == pytest.approx(0.25)


def test_level_assignment():
    sides = np.array([10.0, 50.0, 150.0, 300.0])
    levels = np.array([0, 0, 1, 2])
    fig = heads.level_assignment(sides, levels, featured_sides=sides[:2], featured_levels=levels[:2])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    left, right = fig.axes
    assert len(left.collections) == 1  # one scatter: the featured proposals are all on P2
    assert sum(p.get_height() for p in right.patches) == len(sides)
    legend = [t.get_text() for t in right.get_legend().get_texts()]
    assert legend == ["P2: 2 (50.0%)", "P3: 1 (25.0%)", "P4: 1 (25.0%)"]  # the share per level
    assert "4 + log2(side / 224)" in [t.get_text() for t in left.get_legend().get_texts()]
    plt.close(fig)


def test_roi_align_grid():
    fig = heads.roi_align_grid(np.random.rand(20, 20), [8.0, 8.0, 40.0, 36.0], 0.25)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.collections) == 1  # the sampling points
        assert len(ax.lines) == 16  # 8 + 8 bin edges
    plt.close(fig)


def test_class_distribution():
    logits = torch.randn(5, 4)
    fig = heads.class_distribution(logits, logits.softmax(1), [0, 3], ["bg", "a", "b", "c"])
    assert len(fig.axes) == 4
    assert all(len(ax.patches) == 4 for ax in fig.axes)  # K+1 bars, background included
    plt.close(fig)


def test_refinement_draws_proposal_and_each_class():
    image = torch.rand(3, 50, 60)
    fig = heads.refinement(
        image, [10, 10, 30, 30], {1: [12, 11, 31, 29], 2: [8, 9, 33, 35]}, {1: 0.9, 2: 0.05},
        gt_boxes=torch.tensor([[11.0, 11.0, 30.0, 30.0]]),
    )  # fmt: skip
    ax = fig.axes[0]
    assert len(rectangles(ax)) == 4  # proposal, two refined, one ground truth
    assert len(ax.lines) == 8  # four corner links per class
    plt.close(fig)


def test_roi_sampling_counts():
    image = torch.rand(3, 50, 60)
    boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 9, 9], [30, 30, 40, 45]], dtype=torch.float32)
    labels = torch.tensor([1, 0, 2, 0])
    positive = torch.tensor([True, False, True, False])
    negative = torch.tensor([False, True, False, False])
    fig = heads.roi_sampling(image, boxes, labels, positive, negative, gt_boxes=boxes[:1])
    assert len(rectangles(fig.axes[0])) == 5  # 2 positive, 1 negative, 1 not sampled, 1 GT
    assert "2 positive and 1 negative" in fig.axes[0].get_title()
    plt.close(fig)


def test_detections_panel_and_funnel_and_ledger():
    image = torch.rand(3, 50, 60)
    boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 20, 20]], dtype=torch.float32)
    fig = heads.detections_panel(
        image, boxes, [1, 2], [0.9, 0.4], ["bg", "a", "b"], dropped={"nms": boxes[:1] + 1}, gt_boxes=boxes[1:]
    )
    assert len(rectangles(fig.axes[0])) == 4
    plt.close(fig)
    fig = heads.funnel({"input": 900, "score_threshold": 60, "small_box": 60, "nms": 20, "cap": 20})
    assert len(fig.axes[0].patches) == 5
    plt.close(fig)
    fig = heads.recall_ledger({"proposals": 1.0, "candidates": 0.99, "kept": 0.95}, total=12)
    assert len(fig.axes[0].patches) == 3 and "12 objects" in fig.axes[0].get_title()
    plt.close(fig)


def test_resized_image():
    out = heads.resized_image(torch.rand(3, 20, 30), (40, 60))
    assert out.shape == (3, 40, 60) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_nms_frame_draws_the_best_removed_and_counts_all():
    """The shipped model's shortlist of a featured image: every detection and the ``best``
    candidates NMS removed are drawn, and the legend counts every removed candidate."""
    from minimask import load_pretrained
    from minimask.data import featured
    from minimask.shortlist import flatten_candidates

    image, _ = featured(0)
    run = load_pretrained("shapes").run([image])
    c, s = run.classification[0], run.shortlist[0]
    boxes, scores, _ = flatten_candidates(c)
    gone = len(s.dropped["nms"])
    assert gone > 3 and len(s) > 0
    picture = heads.resized_image(image, run.batch.image_sizes[0])
    fig = heads.nms_frame(picture, s, boxes, scores, best=3, title="frame")
    ax = fig.axes[0]
    assert len(rectangles(ax)) == len(s) + 3
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"{heads.FATE_LABELS['nms']}: {gone} (3 drawn)" in legend
    assert ax.get_title() == "frame"
    plt.close(fig)


def test_confusion_matrix_prints_every_count_and_names_background():
    counts = torch.tensor([[50, 2, 1], [3, 7, 4], [0, 5, 9]])
    fig = heads.confusion_matrix(counts, ["__background__", "square", "circle"])
    ax = fig.axes[0]
    assert sorted(int(t.get_text()) for t in ax.texts) == sorted(counts.flatten().tolist())
    cell = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cell[(1, 2)] == "4"  # row = true class, column = most probable class
    assert [t.get_text() for t in ax.get_xticklabels()] == ["background", "square", "circle"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["background", "square", "circle"]
    assert ax.get_title() == "81 proposals"
    plt.close(fig)


def test_iou_histograms_one_step_histogram_per_series_with_mean_and_count():
    series = {"proposal": torch.tensor([0.5, 0.6, 0.7]), "refined": torch.tensor([0.8, 0.9])}
    fig = heads.iou_histograms(series)
    ax = fig.axes[0]
    assert len(ax.patches) == 2  # one step outline per series
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["proposal: mean 0.600 (3)", "refined: mean 0.850 (2)"]
    assert ax.get_xlim() == (0.0, 1.0)
    assert sum(p.get_path().vertices[:, 1].max() > 0 for p in ax.patches) == 2
    plt.close(fig)
