"""Training targets (minimask.targets) against torchvision's own matcher, sampler and heads.

Oracles: ``torchvision.models.detection._utils.Matcher`` and ``BalancedPositiveNegativeSampler``,
``RegionProposalNetwork.assign_targets_to_anchors``, ``RoIHeads.select_training_samples`` and
``roi_heads.project_masks_on_boxes``, each run on the same tensors (and the same random state).
"""

from __future__ import annotations

import helpers_rpn
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads, project_masks_on_boxes
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

from minimask.config import Config
from minimask.data import drop_crowd
from minimask.fates import CODE
from minimask.targets import mask_targets, match, project_masks, roi_targets, rpn_targets, sample

CFG = Config.shapes()


# --- strategies and builders ------------------------------------------------------------------------
@st.composite
def iou_matrices(draw):
    """IoU matrices from a coarse grid (many ties), sometimes with all-zero rows or columns."""
    g = draw(st.integers(1, 5))
    n = draw(st.integers(1, 40))
    steps = draw(st.sampled_from([4, 10, 20]))  # coarse grids make ties likely
    values = draw(st.lists(st.integers(0, steps), min_size=g * n, max_size=g * n))
    m = torch.tensor(values, dtype=torch.float32).reshape(g, n) / steps
    if draw(st.booleans()):
        m[draw(st.integers(0, g - 1))] = 0.0  # an object that overlaps nothing
    if draw(st.booleans()):
        m[:, draw(st.integers(0, n - 1))] = 0.0  # a prediction that overlaps nothing
    return m


def grid_anchors(size: int = 128, cfg: Config = CFG) -> torch.Tensor:
    """All anchors of a size x size image, from torchvision's AnchorGenerator."""
    gen = AnchorGenerator(cfg.anchor_sizes, (cfg.aspect_ratios,) * len(cfg.anchor_sizes))
    images = ImageList(torch.zeros(1, 3, size, size), [(size, size)])
    maps = [torch.zeros(1, 1, size // s, size // s) for s in (4, 8, 16, 32, 64)]
    return gen(images, maps)[0]


def random_boxes(n: int, size: int, gen: torch.Generator, min_side: float = 4.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * (size - 2 * min_side)
    wh = min_side + torch.rand(n, 2, generator=gen) * (size - xy - min_side)
    return torch.cat((xy, xy + wh), dim=1)


def tv_rpn(cfg: Config) -> RegionProposalNetwork:
    """torchvision's RPN from ``cfg`` (helpers_rpn), with a small head: only its target
    assignment, box coder and loss are used here."""
    return helpers_rpn.tv_rpn(cfg, head=RPNHead(8, len(cfg.aspect_ratios)))


def tv_roi_heads(cfg: Config) -> RoIHeads:
    # select_training_samples reads only the matcher, sampler and box coder
    return RoIHeads(
        None, None, None,
        cfg.box_fg_iou_thresh, cfg.box_bg_iou_thresh,
        cfg.box_batch_size_per_image, cfg.box_positive_fraction,
        cfg.bbox_reg_weights,
        cfg.box_score_thresh, cfg.box_nms_thresh, cfg.box_detections_per_img,
    )  # fmt: skip


# --- match --------------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(m=iou_matrices(), thresholds=st.sampled_from([(0.7, 0.3), (0.5, 0.5), (0.5, 0.4), (1.0, 0.0)]),
       low_quality=st.booleans())  # fmt: skip
def test_match_equals_torchvision_matcher(m, thresholds, low_quality):
    """Oracle: torchvision ``_utils.Matcher`` on the same IoU matrix (ties, all-zero rows/cols)."""
    fg, bg = thresholds
    expected = det_utils.Matcher(fg, bg, allow_low_quality_matches=low_quality)(m.clone())
    got = match(m, fg, bg, allow_low_quality=low_quality)
    torch.testing.assert_close(got.gt_index, expected, rtol=0, atol=0)
    # the record's verdicts are the Matcher's codes, spelled out
    torch.testing.assert_close(got.label, torch.where(expected >= 0, 1, torch.where(expected == -1, 0, -1)))
    torch.testing.assert_close(got.iou, m.max(dim=0).values)
    assert (got.low_quality == ((expected >= 0) & (got.iou < fg))).all()
    counts = got.counts()
    assert counts["positive_iou"] == int((got.iou >= fg).sum()) and counts["ignored"] == int((expected == -2).sum())
    assert counts["negative"] == int((expected == -1).sum()) and sum(counts.values()) == m.shape[1]
    # a low-quality match keeps its own argmax object
    assert (got.gt_index[got.label == 1] == got.best_gt[got.label == 1]).all()


def test_low_quality_match_keeps_its_own_argmax_target():
    """Oracle: torchvision ``Matcher``. Prediction 0 is object 0's best (0.4) but object 1 overlaps it more
    (0.6): it becomes positive for object 1, not object 0."""
    m = torch.tensor([[0.4, 0.1, 0.2], [0.6, 0.9, 0.0]])
    got = match(m, 0.7, 0.3, allow_low_quality=True)
    expected = det_utils.Matcher(0.7, 0.3, allow_low_quality_matches=True)(m.clone())
    assert got.gt_index.tolist() == expected.tolist() == [1, 1, -1]
    assert got.low_quality.tolist() == [True, False, False]
    assert got.counts() == {"positive_iou": 1, "low_quality": 1, "negative": 1, "ignored": 0}


def test_match_without_ground_truth_is_all_background():
    """Oracle: torchvision ``assign_targets_to_anchors``'s empty-image branch (all labels 0); its Matcher
    raises on an empty matrix, which ``match`` replaces by this branch."""
    with pytest.raises(ValueError):
        det_utils.Matcher(0.7, 0.3, True)(torch.zeros(0, 5))
    got = match(torch.zeros(0, 5), 0.7, 0.3, allow_low_quality=True)
    assert got.label.tolist() == [0] * 5 and got.gt_index.tolist() == [-1] * 5 and not got.low_quality.any()


def test_match_rejects_bad_input():
    """Oracle: the documented contract (2-D matrix, bg <= fg, as torchvision's Matcher asserts)."""
    with pytest.raises(ValueError, match="2-D"):
        match(torch.zeros(3), 0.7, 0.3, True)
    with pytest.raises(ValueError, match="bg"):
        match(torch.zeros(2, 2), 0.3, 0.7, True)


# --- sample -------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(
    labels=st.lists(st.sampled_from([-1, 0, 0, 1, 2, 3]), min_size=0, max_size=300),
    batch=st.integers(1, 300),
    fraction=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_sample_equals_torchvision_sampler(labels, batch, fraction, seed):
    """Oracle: torchvision ``BalancedPositiveNegativeSampler`` after the same ``torch.manual_seed``."""
    labels = torch.tensor(labels, dtype=torch.int64)
    torch.manual_seed(seed)
    pos_tv, neg_tv = det_utils.BalancedPositiveNegativeSampler(batch, fraction)([labels])
    torch.manual_seed(seed)
    got = sample(labels, batch, fraction)
    assert got.positive_mask.tolist() == pos_tv[0].bool().tolist()
    assert got.negative_mask.tolist() == neg_tv[0].bool().tolist()
    # properties: drawn from the right pools, at most the batch, positives capped
    assert (labels[got.positive] >= 1).all() and (labels[got.negative] == 0).all()
    assert got.positive.numel() <= int(batch * fraction)
    assert got.positive.numel() + got.negative.numel() <= batch
    assert got.index.tolist() == sorted(got.positive.tolist() + got.negative.tolist())


def test_sample_with_generator_is_the_global_stream():
    """Oracle: ``BalancedPositiveNegativeSampler`` with ``torch.manual_seed(s)`` equals ``sample`` given a
    ``torch.Generator`` seeded with s (and leaves the global stream untouched)."""
    labels = torch.randint(-1, 2, (500,))
    torch.manual_seed(3)
    pos_tv, neg_tv = det_utils.BalancedPositiveNegativeSampler(64, 0.25)([labels])
    state = torch.get_rng_state()
    got = sample(labels, 64, 0.25, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)
    assert got.positive_mask.tolist() == pos_tv[0].bool().tolist()
    assert got.negative_mask.tolist() == neg_tv[0].bool().tolist()


# --- RPN targets --------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_gt", [0, 1, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_rpn_targets_equal_assign_targets_to_anchors(num_gt, seed):
    """Oracle: torchvision ``RegionProposalNetwork.assign_targets_to_anchors`` + ``BoxCoder.encode`` + its
    sampler, on the same anchors (torchvision ``AnchorGenerator``) and the same seed."""
    gen = torch.Generator().manual_seed(seed)
    anchors = grid_anchors(128)
    gt = random_boxes(num_gt, 128, gen)
    rpn = tv_rpn(CFG)
    labels_tv, matched_tv = rpn.assign_targets_to_anchors([anchors], [{"boxes": gt}])
    reg_tv = rpn.box_coder.encode(matched_tv, [anchors])[0]
    torch.manual_seed(seed)
    pos_tv, neg_tv = rpn.fg_bg_sampler(labels_tv)
    torch.manual_seed(seed)
    got = rpn_targets(anchors, gt, CFG)
    torch.testing.assert_close(got.match.label.float(), labels_tv[0], rtol=0, atol=0)
    positive = labels_tv[0] == 1
    torch.testing.assert_close(got.box_targets[positive], reg_tv[positive], rtol=0, atol=0)
    assert (got.box_targets[~positive] == 0).all() and (got.gt_index[~positive] == -1).all()
    assert got.sample.positive_mask.tolist() == pos_tv[0].bool().tolist()
    assert got.sample.negative_mask.tolist() == neg_tv[0].bool().tolist()
    # the loss-side label and the fates: kept = drawn, ignored = torchvision's -1, not_sampled
    drawn = got.sample.positive_mask | got.sample.negative_mask
    assert (got.label[drawn] == labels_tv[0][drawn]).all() and (got.label[~drawn] == -1).all()
    assert ((got.fate == CODE["not_sampled"]) == (~drawn & (labels_tv[0] >= 0))).all()
    assert ((got.fate == CODE["ignored"]) == (labels_tv[0] == -1)).all()
    counts = got.counts()
    assert sum(counts[k] for k in ("positive_iou", "low_quality", "negative", "ignored")) == anchors.shape[0]
    assert counts["sampled_positive"] + counts["sampled_negative"] == int(drawn.sum()) == got.funnel["not_sampled"]
    if num_gt == 0:
        assert counts["negative"] == anchors.shape[0]
    else:
        assert positive.any()  # low-quality rule: every object has at least one positive anchor


def test_rpn_targets_every_object_gets_an_anchor():
    """Oracle: torchvision ``assign_targets_to_anchors``. A box far smaller than every anchor (IoU < 0.3
    everywhere) still gets its best anchors as positives by the low-quality rule."""
    anchors = grid_anchors(128)
    gt = torch.tensor([[60.0, 60.0, 62.0, 62.5]])
    got = rpn_targets(anchors, gt, CFG)
    labels_tv, _ = tv_rpn(CFG).assign_targets_to_anchors([anchors], [{"boxes": gt}])
    assert got.match.iou.max() < CFG.rpn_bg_iou_thresh
    assert (got.match.label == 1).sum() == (labels_tv[0] == 1).sum() >= 1
    assert (got.match.low_quality == (got.match.label == 1)).all()


# --- RoI targets --------------------------------------------------------------------------------------
def _proposals(gt: torch.Tensor, n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random boxes plus jittered copies of the GT (so there are positives)."""
    jitter = gt.repeat(4, 1) + torch.randn(4 * gt.shape[0], 4, generator=gen) * 3 if gt.numel() else gt
    return torch.cat((random_boxes(n, size, gen), jitter)).clamp(0, size)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roi_targets_equal_select_training_samples(seed):
    """Oracle: torchvision ``RoIHeads.select_training_samples`` on the same proposals, targets and seed
    (two images, one of them without objects)."""
    gen = torch.Generator().manual_seed(seed)
    gts = [random_boxes(3, 160, gen), torch.zeros(0, 4)]
    labels = [torch.tensor([1, 3, 2]), torch.zeros(0, dtype=torch.int64)]
    props = [_proposals(gts[0], 150, 160, gen), _proposals(gts[1], 100, 160, gen)]
    heads = tv_roi_heads(CFG)
    torch.manual_seed(seed)
    boxes_tv, matched_tv, labels_tv, reg_tv = heads.select_training_samples(
        [p.clone() for p in props], [{"boxes": b, "labels": lab} for b, lab in zip(gts, labels, strict=True)]
    )
    torch.manual_seed(seed)
    got = [roi_targets(p, b, lab, CFG) for p, b, lab in zip(props, gts, labels, strict=True)]
    for g, b, m, lab, r, p, gt in zip(got, boxes_tv, matched_tv, labels_tv, reg_tv, props, gts, strict=True):
        torch.testing.assert_close(g.sampled_boxes, b, rtol=0, atol=0)
        assert g.sampled_labels.tolist() == lab.tolist()
        pos = lab > 0
        # the matched GT of each sampled positive; torchvision points the other rows at GT 0
        assert g.gt_index[g.sampled_index][pos].tolist() == m[pos].tolist()
        assert (g.gt_index[g.sampled_index][~pos] == -1).all()
        torch.testing.assert_close(g.box_targets[pos], r[pos], rtol=0, atol=0)
        # lineage: appended GT rows are marked, the others point into the proposals
        assert (g.proposal_index[: p.shape[0]] == torch.arange(p.shape[0])).all()
        assert (g.proposal_index[p.shape[0] :] == -1).all() and g.boxes.shape[0] == p.shape[0] + gt.shape[0]
    assert got[0].counts()["sampled_positive"] >= 3  # each GT box is a positive RoI of itself
    assert (got[1].match.label == 0).all() and (got[1].gt_index == -1).all()  # no objects: all background


def test_crowd_objects_are_dropped_before_matching():
    """Oracle: torchvision ``assign_targets_to_anchors`` run on the non-crowd objects only (what
    torchvision's reference scripts feed it after filtering crowd annotations)."""
    gen = torch.Generator().manual_seed(0)
    boxes = random_boxes(3, 128, gen)
    target = {"boxes": boxes, "labels": torch.tensor([1, 2, 3]), "masks": torch.zeros(3, 128, 128),
              "iscrowd": torch.tensor([0, 1, 0])}  # fmt: skip
    kept, dropped = drop_crowd(target)
    assert dropped.tolist() == [1] and kept["labels"].tolist() == [1, 3] and kept["masks"].shape[0] == 2
    assert target["boxes"].shape[0] == 3  # the input is not modified
    anchors = grid_anchors(128)
    labels_tv, _ = tv_rpn(CFG).assign_targets_to_anchors([anchors], [{"boxes": boxes[[0, 2]]}])
    got = rpn_targets(anchors, kept["boxes"], CFG)
    torch.testing.assert_close(got.match.label.float(), labels_tv[0], rtol=0, atol=0)
    no_crowd_key, none = drop_crowd({k: v for k, v in target.items() if k != "iscrowd"})
    assert none.numel() == 0 and no_crowd_key["boxes"].shape[0] == 3


# --- mask targets -------------------------------------------------------------------------------------
def test_mask_targets_equal_project_masks_on_boxes():
    """Oracle: torchvision ``roi_heads.project_masks_on_boxes`` on the positives that
    ``select_training_samples`` returns (same seed)."""
    gen = torch.Generator().manual_seed(5)
    gt = random_boxes(2, 96, gen, min_side=10)
    masks = torch.zeros(2, 96, 96, dtype=torch.uint8)
    for k, (x1, y1, x2, y2) in enumerate(gt.round().int().tolist()):
        masks[k, y1:y2, x1 : (x1 + x2) // 2 + 1] = 1  # left half of each box: not a rectangle fill
    props = _proposals(gt, 80, 96, gen)
    torch.manual_seed(0)
    boxes_tv, matched_tv, labels_tv, _ = tv_roi_heads(CFG).select_training_samples(
        [props.clone()], [{"boxes": gt, "labels": torch.tensor([2, 1])}]
    )
    pos = torch.where(labels_tv[0] > 0)[0]
    expected = project_masks_on_boxes(masks, boxes_tv[0][pos], matched_tv[0][pos], 28)
    torch.manual_seed(0)
    roi = roi_targets(props, gt, torch.tensor([2, 1]), CFG)
    got = mask_targets(roi, masks, 28)
    torch.testing.assert_close(got.masks, expected, rtol=0, atol=0)
    assert got.labels.tolist() == torch.tensor([2, 1])[matched_tv[0][pos]].tolist()
    assert got.classification_index.tolist() == pos.tolist()
    assert 0 < got.masks.mean() < 1 and ((got.masks > 0) & (got.masks < 1)).any()  # soft borders
    torch.testing.assert_close(project_masks(masks, boxes_tv[0][pos], matched_tv[0][pos], 14),
                               project_masks_on_boxes(masks, boxes_tv[0][pos], matched_tv[0][pos], 14))  # fmt: skip
