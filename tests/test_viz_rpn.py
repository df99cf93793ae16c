"""Figures of chapters 2-4 (``minimask.viz.rpn``): each returns a Figure with the expected artists.

The records come from a small untrained model on one 48x48 image with two objects; what the
figures count is computed in the stage modules (``longlist.funnel_per_level``,
``coverage_ledger``, ``nms_groups``, ``objectness.anchor_verdicts``) and checked here against
the records' own accounts (``Longlist.funnel``, ``fate``, ``NmsStep.suppressor``,
``Matches.label``) and against IoU computed directly.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from torchvision.ops import box_iou, clip_boxes_to_image

from minimask import Config
from minimask.boxes import iou
from minimask.fates import CODE
from minimask.longlist import coverage_ledger, covered_at_caps, funnel_per_level, nms_groups, select_longlist
from minimask.model import MaskRCNN
from minimask.objectness import anchor_verdicts, best_covering_anchors
from minimask.shapes import DISTRACTOR, distractor_boxes, shapes_image
from minimask.targets import rpn_targets
from minimask.transform import resize_boxes, resize_image
from minimask.viz import rpn


@pytest.fixture(scope="module")
def records():
    torch.manual_seed(0)
    cfg = Config.shapes().replace(min_size=64, max_size=64, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20)
    model = MaskRCNN(cfg).eval()
    image = torch.rand(3, 48, 48)
    masks = torch.zeros(2, 48, 48, dtype=torch.uint8)
    masks[0, 4:20, 6:30] = 1
    masks[1, 25:45, 20:40] = 1
    target = {
        "boxes": torch.tensor([[6.0, 4.0, 30.0, 20.0], [20.0, 25.0, 40.0, 45.0]]),
        "labels": torch.tensor([1, 2]),
        "masks": masks,
    }
    run = model.run([image])
    torch.manual_seed(0)
    train = model.run([image], [target])
    picture = resize_image(image, cfg)[0]
    gt = resize_boxes(target["boxes"], run.batch.original_sizes[0], run.batch.image_sizes[0])
    yield {"cfg": cfg, "image": image, "run": run, "train": train, "picture": picture, "gt": gt}
    plt.close("all")


def _rectangles(fig: Figure) -> list[Rectangle]:
    return [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle)]


def test_resize_and_pad_one_row_per_image(records):
    run, cfg = records["run"], records["cfg"]
    fig = rpn.resize_and_pad([records["image"]], run.batch, cfg.image_mean, cfg.image_std)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert all(len(ax.images) == 1 for ax in fig.axes)
    # the padded panel spans the padded size
    hp, wp = run.batch.padded_size
    assert fig.axes[1].get_xlim() == (-0.5, wp - 0.5)
    assert torch.allclose(rpn.unnormalize(run.batch.tensors[0], cfg.image_mean, cfg.image_std)[:, :4, :4],
                          records["picture"][:, :4, :4], atol=1e-5)  # fmt: skip


def test_level_energy_one_map_per_level(records):
    run = records["run"]
    fig = rpn.level_energy(run.features, records["picture"], run.batch.image_sizes[0])
    with_images = [ax for ax in fig.axes if ax.images]
    assert len(with_images) == len(run.features.names) + 1


def test_level_sizes_counts_every_object():
    fig = rpn.level_sizes([5.0, 10.0, 20.0, 40.0, 200.0], ((8,), (16,), (32,), (64,), (128,)))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert sum(int(label.rsplit(": ", 1)[1]) for label in labels) == 5
    assert labels[0].endswith(": 2")  # 5 and 10 px are nearest the 8-px anchor in log scale


def test_anchor_grid_draws_one_cell_per_level(records):
    obj = records["run"].objectness[0]
    fig = rpn.anchor_grid(obj, records["picture"])
    levels = len(obj.grid_sizes)
    for ax in fig.axes[:levels]:
        assert sum(isinstance(p, Rectangle) for p in ax.patches) == obj.anchors_per_location
    assert len(fig.axes[levels].patches) == levels  # the bar chart: one bar per level


def test_objectness_maps_level_by_ratio(records):
    obj = records["run"].objectness[0]
    fig = rpn.objectness_maps(obj, records["picture"], records["gt"])
    maps = [ax for ax in fig.axes if len(ax.images) == 2]  # picture + heat map
    assert len(maps) == len(obj.grid_sizes) * obj.anchors_per_location
    heat = maps[0].images[1]
    assert isinstance(heat, AxesImage)
    expected = torch.sigmoid(obj.level_logits(0)[0]).numpy()
    assert heat.get_array().shape == expected.shape
    assert abs(float(heat.get_array().max()) - float(expected.max())) < 1e-6
    assert all(sum(isinstance(p, Rectangle) for p in ax.patches) == len(records["gt"]) for ax in maps)


def test_anchors_to_boxes_pairs(records):
    obj = records["run"].objectness[0]
    rows = obj.logits.topk(3).indices
    fig = rpn.anchors_to_boxes(obj, rows, records["picture"], records["gt"])
    rects = _rectangles(fig)
    assert len(rects) == 2 * 3 + len(records["gt"])
    dotted = [r for r in rects if r.get_linestyle() == ":"]
    assert len(dotted) == 3
    x1, y1, x2, y2 = obj.anchors[rows[0]].tolist()
    assert dotted[0].get_xy() == (x1, y1) and dotted[0].get_width() == x2 - x1


def test_anchor_verdicts_agree_with_the_match(records):
    rpn_t = records["train"].rpn_targets[0]
    for gt in range(len(rpn_t.gt_boxes)):
        overlap, names = anchor_verdicts(rpn_t, gt)
        assert len(names) == len(rpn_t.anchors)
        label = rpn_t.match.label
        assert {names[i] for i in torch.where(label == 0)[0].tolist()} <= {"negative"}
        assert {names[i] for i in torch.where(label == -1)[0].tolist()} <= {"ignored"}
        mine = [i for i, n in enumerate(names) if n in ("positive", "best anchor")]
        assert all(int(rpn_t.match.gt_index[i]) == gt for i in mine)
        assert all(bool(rpn_t.match.low_quality[i]) == (names[i] == "best anchor") for i in mine)
        torch.testing.assert_close(overlap, iou(rpn_t.gt_boxes[gt : gt + 1], rpn_t.anchors)[0])
    fig = rpn.anchor_targets(rpn_t, 0, records["picture"], records["run"].objectness[0].anchor_level)
    assert len(fig.axes) == 2 and fig.axes[1].collections  # the IoU scatter


def test_anchor_targets_draws_the_thresholds_of_its_match(records):
    """Matched at other thresholds, the figure's dashed lines and legend follow the record."""
    rpn_t = records["train"].rpn_targets[0]
    cfg = records["cfg"].replace(rpn_fg_iou_thresh=0.65, rpn_bg_iou_thresh=0.25)
    other = rpn_targets(rpn_t.anchors, rpn_t.gt_boxes, cfg, generator=torch.Generator().manual_seed(0))
    fig = rpn.anchor_targets(other, 0, records["picture"], records["run"].objectness[0].anchor_level)
    dashed = sorted(line.get_xdata()[0] for line in fig.axes[1].lines if line.get_linestyle() == "--")
    assert dashed == [0.25, 0.65]
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert any(t.startswith("IoU < 0.25: ") for t in legend)
    assert len(set(rpn.VERDICT_COLORS.values())) == len(rpn.VERDICT_COLORS)  # no two verdicts share a colour


def test_funnel_per_level_sums_to_the_funnel(records):
    obj, ll = records["run"].objectness[0], records["run"].longlist[0]
    counts = funnel_per_level(ll, obj.anchor_level, len(obj.grid_sizes))
    assert list(counts) == list(ll.funnel)
    assert {step: sum(v) for step, v in counts.items()} == ll.funnel
    assert counts["input"] == obj.num_per_level
    # the last step leaves the proposals: counted by their own anchor_level
    assert counts[ll.steps[-1]] == torch.bincount(ll.anchor_level, minlength=len(obj.grid_sizes)).tolist()
    fig = rpn.funnel(counts)
    assert len(fig.axes[0].lines) == 1 + len(obj.grid_sizes)


def test_coverage_ledger_never_grows(records):
    obj, ll, gt = records["run"].objectness[0], records["run"].longlist[0], records["gt"]
    covered = coverage_ledger(ll, obj, gt)
    assert covered.shape == (len(ll.steps) + 1, len(obj.grid_sizes) + 1, len(gt))
    assert bool((covered[1:] <= covered[:-1]).all())  # a step can only lose objects
    assert torch.equal(covered[:, -1], covered[:, :-1].any(1))  # any level = some level
    # the last row is the longlist itself
    final = (iou(gt, ll.boxes) >= 0.5).any(1)
    assert torch.equal(covered[-1, -1], final)
    # the first row: every anchor's decoded, clipped box
    decoded = clip_boxes_to_image(obj.proposals.detach(), obj.image_size)
    assert torch.equal(covered[0, -1], (box_iou(gt, decoded) >= 0.5).any(1))
    fig = rpn.recall_ledger(covered.sum(-1), len(gt), ll.steps)
    assert len(fig.axes[0].lines) == len(obj.grid_sizes) + 1


def test_nms_groups_and_pairs(records):
    ll = records["run"].longlist[0]
    groups = nms_groups(ll, max_groups=3)
    step = ll.nms
    for kept, victims in groups:
        assert int(step.suppressor[kept]) == -1
        assert all(int(step.suppressor[v]) == kept for v in victims)
        assert all(int(ll.fate[step.rows[v]]) == CODE["nms"] for v in victims)
    fig = rpn.nms_pairs(ll, records["picture"], records["gt"], max_groups=3, max_shown=2)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == len(groups)
    for ax, (_, victims) in zip(shown, groups, strict=True):
        dotted = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_linestyle() == ":"]
        assert len(dotted) == min(2, len(victims))


def test_proposals_and_sweep(records):
    ll = records["run"].longlist[0]
    fig = rpn.proposals(ll, records["picture"], records["gt"], top=5)
    assert len(_rectangles(fig)) == min(5, len(ll)) + len(records["gt"])
    fig = rpn.proposals(ll, records["picture"], top=2, title="two")
    assert fig.axes[0].get_title() == "two" and len(_rectangles(fig)) == min(2, len(ll))
    fig = rpn.sweep([1, 2, 3], [0.5, 0.6, 0.7], [10, 20, 30], "x", marked=2)
    assert len(fig.axes) == 2 and all(ax.lines for ax in fig.axes)


def test_cap_and_nms_sweeps_draws_both_sweeps_of_a_real_longlist(records):
    cfg, obj, gt = records["cfg"], records["run"].objectness[0], records["gt"]
    caps, thresholds = [2, 5, 20], [0.5, 0.7]
    uncapped = select_longlist(obj, cfg.replace(rpn_post_nms_top_n_test=10**6))
    cap_recall = [float((box_iou(gt, uncapped.boxes[:k]) >= 0.5).any(1).float().mean()) for k in caps]
    cap_size = [min(k, len(uncapped)) for k in caps]
    nms_size = [len(select_longlist(obj, cfg.replace(rpn_nms_thresh=t))) for t in thresholds]
    nms_recall = [0.5, 1.0]
    fig = rpn.cap_and_nms_sweeps((caps, cap_recall, cap_size, 5), (thresholds, nms_recall, nms_size, 0.7))
    assert len(fig.axes) == 4
    expected = [(caps, cap_recall, 5), (caps, cap_size, 5), (thresholds, nms_recall, 0.7), (thresholds, nms_size, 0.7)]
    for ax, (xs, ys, marked) in zip(fig.axes, expected, strict=True):
        curve, shipped = ax.lines
        assert list(curve.get_xdata()) == xs and list(curve.get_ydata()) == ys
        assert list(shipped.get_xdata()) == [marked, marked] and shipped.get_linestyle() == "--"
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "log", "linear", "linear"]
    assert fig.axes[3].get_ylabel() == "proposals after NMS (mean)"


def test_best_covering_anchors_is_the_top_logit_among_covering_boxes(records):
    obj, gt = records["run"].objectness[0], records["gt"]
    far = torch.tensor([[0.0, 0.0, 0.5, 0.5]])  # far smaller than any anchor: nothing covers it
    rows = best_covering_anchors(obj, torch.cat([gt, far]))
    assert rows.shape == (len(gt) + 1,) and int(rows[-1]) == -1
    overlap = box_iou(torch.cat([gt, far]), obj.proposals.detach())
    for g, row in enumerate(rows.tolist()):
        covering = torch.where(overlap[g] >= 0.5)[0]
        if len(covering) == 0:
            assert row == -1
            continue
        assert row in covering.tolist()
        assert float(obj.logits[row]) == float(obj.logits[covering].max())
    assert len(best_covering_anchors(obj, torch.zeros(0, 4))) == 0


def test_covered_at_caps_counts_the_first_k_proposals(records):
    cfg, obj, gt = records["cfg"], records["run"].objectness[0], records["gt"]
    uncapped = select_longlist(obj, cfg.replace(rpn_post_nms_top_n_test=10**6))
    caps = [1, 3, 10, 10**6]
    direct = [int((box_iou(gt, uncapped.boxes[:k]) >= 0.5).any(1).sum()) for k in caps]
    assert covered_at_caps(uncapped, gt, caps) == direct
    assert covered_at_caps(uncapped, gt[:0], caps) == [0] * len(caps)


def test_distractor_boxes_enclose_each_distractor_outline():
    drawing = shapes_image(0, "val", 32)  # featured(1): four distractors
    b = distractor_boxes(drawing)
    outlines = [s.vertices for s in drawing.shapes if s.label == DISTRACTOR]
    assert b.shape == (len(outlines), 4) and len(outlines) == 4
    h, w = drawing.image.shape[:2]
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= h).all()
    for box, vertices in zip(b, outlines, strict=True):
        xs, ys = [x for x, _ in vertices], [y for _, y in vertices]
        assert box[0] == pytest.approx(max(0, min(xs)), abs=1e-3) and box[3] == pytest.approx(min(h, max(ys)), abs=1e-3)


def test_best_anchor_levels_one_row_per_level_with_its_count():
    sides = torch.tensor([5.0, 8.0, 9.0, 16.0, 30.0, 4.0])
    levels = torch.tensor([0, 0, 0, 1, 2, -1])
    fig = rpn.best_anchor_levels(sides, levels, ((8,), (16,), (32,)))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["none: 1", "P2 (8 px): 3", "P3 (16 px): 1", "P4 (32 px): 1"]
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(sides)
    assert [line.get_xdata()[0] for line in ax.lines] == [8, 16, 32]  # the anchor-size bars
    assert ax.get_xscale() == "log"


def test_distractor_objectness_draws_each_thing_and_counts_the_split(records):
    gt = records["gt"]
    distractors = torch.tensor([[2.0, 2.0, 10.0, 10.0], [30.0, 30.0, 40.0, 44.0]])
    covering = distractors + 1
    scores = torch.tensor([0.9, float("nan")])  # the second: no covering anchor
    val = {"objects": torch.tensor([0.9, 0.95, 0.1]), "distractors": torch.tensor([0.7, 0.2])}
    fig = rpn.distractor_objectness(records["picture"], gt, distractors, covering, scores, val)
    left, right = fig.axes
    assert len([p for p in left.patches if isinstance(p, Rectangle)]) == len(gt) + 2 + 1
    assert left.get_title() == "P(object) of distractor 1: 0.90, 2: none"
    legend = [t.get_text() for t in right.get_legend().get_texts()]
    assert legend == ["objects: 2 of 3 ≥ 0.5", "distractors: 1 of 2 ≥ 0.5"]


def test_crowd_targets_bars_are_the_match_counts(records):
    rpn_t = records["train"].rpn_targets[0]
    fig = rpn.crowd_targets(rpn_t, records["picture"])
    left, right = fig.axes
    c = rpn_t.counts()
    widths = [p.get_width() for p in right.patches]
    order = ["positive_iou", "low_quality", "ignored", "negative", "sampled_positive", "sampled_negative"]
    assert widths == [c[k] for k in order]
    positives = int((rpn_t.match.label == 1).sum())
    assert len([p for p in left.patches if isinstance(p, Rectangle)]) == len(rpn_t.gt_boxes) + positives
    covered = len(rpn_t.match.gt_index[rpn_t.match.label == 1].unique())
    assert left.get_title().endswith(f"{len(rpn_t.gt_boxes) - covered} with no positive")


def test_lost_objects_colours_each_step_and_counts_it(records):
    gt = torch.tensor([[1.0, 1.0, 9.0, 9.0], [10.0, 10.0, 20.0, 20.0], [5.0, 20.0, 15.0, 30.0], [0, 0, 4, 4]])
    steps = ("pre_nms_top_k", "small_box", "score_threshold", "nms", "cap")
    fig = rpn.lost_objects(records["picture"], gt, torch.tensor([-1, 0, 4, -2]), steps)
    assert len(_rectangles(fig)) == len(gt)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["still covered: 1", "never covered: 1", "lost at pre-NMS top-k: 1", "lost at post-NMS top-k: 1"]
    assert fig.axes[0].get_title() == "2 of 4 objects lost, by step"


def test_cap_sweep_with_one_image_beside_the_split():
    caps = [10, 100]
    fig = rpn.cap_and_nms_sweeps(
        (caps, [0.4, 0.8], [10, 90], 100),
        ([0.5, 0.7], [0.9, 0.8], [50, 80], 0.7),
        cap_extra=("crowd", [0.1, 0.5], [10, 100]),
    )
    top_left = fig.axes[0]
    assert top_left.get_ylim() == (0, 1.02) and fig.axes[2].get_ylim() == (0, 1.02)
    crowd = [line for line in top_left.lines if line.get_label() == "crowd"]
    assert len(crowd) == 1 and list(crowd[0].get_ydata()) == [0.1, 0.5]
    assert [t.get_text() for t in top_left.get_legend().get_texts()] == ["crowd", "val split"]
