"""Figures of chapter 11 (minimask.viz.rules): each returns a Figure with the expected artists.

Oracle: the artists on the returned Figure, for runs of the shipped model on one featured
image under torchvision's rules and under Detectron2's (``compat.detectron2_rules``).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from minimask import load_pretrained
from minimask.compat import detectron2_rules, match_boxes
from minimask.data import featured
from minimask.viz import rules as vr


@pytest.fixture(scope="module")
def runs():
    model = load_pretrained("shapes")
    image, _ = featured(1)
    tv = model.run([image])
    model.config = detectron2_rules(model.config)
    d2 = model.run([image])
    return image, tv, d2


def _boxes(ax: plt.Axes, colour: str) -> int:
    import matplotlib.colors as mc

    return sum(isinstance(p, Rectangle) and mc.to_hex(p.get_edgecolor()) == mc.to_hex(colour) for p in ax.patches)


def test_rule_changes_draws_what_only_one_run_has(runs):
    image, tv, d2 = runs
    fig = vr.rule_changes(image, tv, d2, score=0.5, top=20)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert all(len(ax.images) == 1 for ax in fig.axes)
    # detections: orange boxes are tv-only, blue d2-only, by the same matching
    a, b = tv.detections[0], d2.detections[0]
    ka, kb = a["scores"] >= 0.5, b["scores"] >= 0.5
    m = match_boxes(a["boxes"][ka], a["labels"][ka], b["boxes"][kb], b["labels"][kb], 0.9)
    assert _boxes(fig.axes[1], vr.ONLY_A) == int((m < 0).sum())
    assert _boxes(fig.axes[1], vr.ONLY_B) == int(kb.sum()) - int((m >= 0).sum())
    assert "differ" in fig.axes[2].get_title()
    plt.close(fig)


def test_rule_changes_of_a_run_with_itself_shows_no_difference(runs):
    image, tv, _ = runs
    fig = vr.rule_changes(image, tv, tv, top=20)
    for ax in fig.axes[:2]:
        assert _boxes(ax, vr.ONLY_A) == 0 and _boxes(ax, vr.ONLY_B) == 0
    assert fig.axes[2].get_title().endswith("0 + 0 differ")
    plt.close(fig)


def _output(boxes, labels, scores, masks):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.tensor(labels),
        "scores": torch.tensor(scores),
        "masks": torch.stack(masks)[:, None],
    }


def test_mask_pixels_changed_counts_by_hand():
    """A hand-worked case: one detection's mask moves by a column (same box), one is lost."""
    m1 = torch.zeros(8, 8)
    m1[2:5, 2:5] = 0.9  # 9 pixels
    m1_moved = torch.zeros(8, 8)
    m1_moved[2:5, 3:6] = 0.9  # 3 columns, 2 shared: 3 + 3 pixels differ
    m2 = torch.zeros(8, 8)
    m2[6:8, 0:2] = 0.7  # 4 pixels, only in a
    low = torch.full((8, 8), 0.4)  # below the mask threshold: no pixel
    a = _output([[1, 1, 6, 6], [0, 5, 3, 8], [0, 0, 8, 8]], [1, 2, 1], [0.9, 0.8, 0.2], [m1, m2, m1])
    b = _output([[1, 1, 6, 6]], [1], [0.95], [m1_moved])
    # the pair: 6 of the 12 pixels of their union differ; the lost one: its 4 pixels
    assert vr.mask_pixels_changed(a, b) == (6 + 4, 12 + 4)  # the 0.2 detection is below score
    assert vr.mask_pixels_changed(a, a) == (0, 13)
    c = _output([[1, 1, 6, 6]], [1], [0.95], [low])
    assert vr.mask_pixels_changed(b, c) == (9, 9)
    # a mask as bool (Detectron2's binary masks) counts as its pixels
    d = _output([[1, 1, 6, 6]], [1], [0.95], [m1_moved >= 0.5])
    assert vr.mask_pixels_changed(b, d) == (0, 9)


def test_rule_effects_two_bars_per_rule_with_masks():
    fig = vr.rule_effects(["a", "b"], [0.0, 0.25], [0.1, 0.0])
    ax = fig.axes[0]
    assert sorted(round(p.get_width(), 6) for p in ax.patches) == [0.0, 0.0, 10.0, 25.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["detections changed (%)", "mask pixels changed (%)"]
    plt.close(fig)
    with pytest.raises(ValueError, match="2 rule names for 1"):
        vr.rule_effects(["a", "b"], [0.0, 0.1], [0.2])


def test_rule_effects_one_bar_per_rule():
    fig = vr.rule_effects(["a", "b", "c"], [0.0, 0.25, 0.5])
    ax = fig.axes[0]
    assert len(ax.patches) == 3
    assert [round(p.get_width(), 6) for p in ax.patches] == [0.0, 25.0, 50.0]
    assert [t.get_text() for t in ax.texts] == ["0.0", "25.0", "50.0"]
    plt.close(fig)
    with pytest.raises(ValueError, match="2 rule names for 3"):
        vr.rule_effects(["a", "b"], [0.0, 0.1, 0.2])


def test_runs_differ_under_detectron2s_rules(runs):
    _, tv, d2 = runs
    assert tv.batch.image_sizes != d2.batch.image_sizes  # 248 vs 249 columns: floor vs round
    assert not torch.equal(tv.features.maps["0"][..., :8, :8], d2.features.maps["0"][..., :8, :8])
