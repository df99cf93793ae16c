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
