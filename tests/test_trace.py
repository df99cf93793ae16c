"""minimask.trace and minimask.explain: lineage, fates, matching, the attribution of every miss
to its decision, and the errors of a data set.

Oracles: the stage records themselves (lineage and fates must agree with them), pycocotools
``COCOeval`` (its matches, per image, for boxes and for masks), and constructed causes: a config
value or a weight set so that one known decision loses an object, then the attribution must
name that decision.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers_cases import class_nms_image, clean_image, threshold_image  # found with the shipped model

from minimask import Config, MaskRCNN, coco_eval, load_pretrained
from minimask.anchors import cell_anchors
from minimask.data import featured, runs, shapes_val
from minimask.explain import FP_KINDS, explain_dataset, false_positives
from minimask.fates import FATES, KEPT
from minimask.trace import CAUSES, IOU_TYPES, MISS_CAUSES, WORDS, Trace, explain


def class_nms_file():
    """The file of the val image that loses an object in class NMS, as its annotations name it."""
    val = shapes_val()
    return val.images_dir / val.image_info(class_nms_image())["file_name"]


@pytest.fixture(scope="module")
def model():
    return load_pretrained("shapes")


def causes(model, image, target, iou_type="segm", **changes):
    m = copy.deepcopy(model)
    m.config = m.config.replace(**changes)
    return explain(m, image, target, iou_type)


def test_lineage_agrees_with_the_records(model):
    """Every detection's anchor, proposal, candidate, box, mask and score are the records' rows."""
    image, target = featured(0)
    tr = explain(model, image, target)
    run = tr.run
    ll, c, s = run.longlist[0], run.classification[0], run.shortlist[0]
    assert len(tr.detections) == len(s) > 0
    for d, lin in enumerate(tr.detections):
        p = int(s.proposal_index[d])
        a = int(ll.anchor_index[p])
        assert (lin.proposal, lin.anchor.row, lin.candidate) == (p, a, int(s.candidate_index[d]))
        assert ll.fate_of(a) == "kept" and s.fate_of(lin.candidate) == "kept"
        assert lin.longlist_rank == p + 1 and lin.anchor.level == int(ll.anchor_level[p])
        assert torch.equal(lin.proposal_box, ll.boxes[p]) and torch.equal(lin.class_probs, c.probs[p])
        assert torch.equal(lin.refined_box, c.boxes[p, lin.label])
        assert torch.equal(lin.box_orig, run.detections[0]["boxes"][d])
        assert torch.equal(lin.mask, run.detections[0]["masks"][d, 0]) and lin.score == float(s.scores[d])
        assert lin.level_rank <= model.config.rpn_pre_nms_top_n_test  # it passed the level's top-k
        # the anchor box is the cell anchor of its size and ratio, centred on its cell
        sy, sx = tr.objectness.strides[lin.anchor.level]
        y, x = lin.anchor.cell
        cell = cell_anchors((lin.anchor.size,), (lin.anchor.aspect_ratio,))[0]
        assert torch.equal(torch.tensor(lin.anchor.box), cell + torch.tensor([x * sx, y * sy] * 2, dtype=torch.float32))
        for row, iou in lin.suppressed:
            assert int(s.suppressed_by[row]) == lin.candidate and iou > model.config.box_nms_thresh
        assert tr.fate("shortlist", lin.candidate).detection == d
        assert tr.fate("longlist", a).stage == "kept"


def test_fate_of_every_row_kind(model):
    """``fate`` returns the records' codes and suppressors for anchors and candidates."""
    image, _ = featured(1)
    tr = explain(model, image)
    ll, s = tr.longlist, tr.shortlist
    for step, rows in ll.dropped.items():
        for row in rows[:5].tolist():
            f = tr.fate("anchor", row)
            assert (f.stage, f.step) == ("longlist", step)
            assert f.suppressor == int(ll.suppressed_by[row])
    for step, rows in s.dropped.items():
        for row in rows[:5].tolist():
            f = tr.fate("candidate", row)
            assert (f.stage, f.step, f.suppressor) == ("shortlist", step, int(s.suppressed_by[row]))
            if step == "nms":
                assert s.fate_of(f.suppressor) == "kept" and f.iou > tr.config.box_nms_thresh
    # a proposal without detection: the fate of its most probable foreground class's candidate
    no_det = [
        p for p in range(len(ll)) if not (s.fate[p * s.num_foreground : (p + 1) * s.num_foreground] == KEPT).any()
    ]
    p = no_det[0]
    best = p * s.num_foreground + int(tr.classification.probs[p, 1:].argmax())
    assert tr.fate("proposal", p) == tr.fate("candidate", best)
    with pytest.raises(ValueError, match="stage"):
        tr.fate("mask", 0)


def test_matches_and_misses_partition_the_objects_as_cocoeval(model):
    """Every val image, by mask and by box: ``matches`` + ``misses`` are the non-crowd objects, each
    once, and the matches are COCOeval's (``gtMatches`` at IoU 0.5, area "all", 100 detections)."""
    ds = shapes_val()
    cfg = model.config
    traces, results, first = [], [], []
    for _, targets, run in runs(model, ds, progress=False):
        for j, t in enumerate(targets):
            traces.append({kind: Trace(run, j, cfg, t, kind) for kind in IOU_TYPES})
            first.append(len(results))
            results += coco_eval.to_results(run.detections[j], int(t["image_id"]), ds.label_to_category_id, 0.5)
    coco_gt, ids = coco_eval.ground_truth(ds)
    differ = 0
    for kind in IOU_TYPES:
        ev = coco_eval.evaluate(coco_gt, results, kind, ids, all_areas=False)
        theirs = {}  # (image id, annotation id) -> the result id COCOeval matched at IoU 0.5 (0: none)
        for e in ev.evalImgs:
            if e is not None:
                theirs.update({(e["image_id"], a): int(d) for a, d in zip(e["gtIds"], e["gtMatches"][0], strict=True)})
        for i, per_kind in enumerate(traces):
            tr = per_kind[kind]
            anns = ds.annotations(i)
            real = [g for g in range(len(anns)) if not tr.crowd[g]]
            matched, missed = [m.gt_index for m in tr.matches], [m.gt_index for m in tr.misses]
            assert sorted(matched + missed) == real, (kind, i)
            ours = {m.gt_index: first[i] + m.detection + 1 for m in tr.matches}  # loadRes numbers results from 1
            assert {g: theirs[(ds.ids[i], anns[g]["id"])] for g in real} == {g: ours.get(g, 0) for g in real}
            assert all((m.stage, m.reason) in MISS_CAUSES for m in tr.misses)
            assert all(m.reason == "mask_quality" for m in tr.misses if tr.box_matching[1][m.gt_index] >= 0)
            differ += kind == "segm" and tr.matching != tr.box_matching
    assert differ > 0  # by mask is not by box on this split: the two modes are both exercised


def test_greedy_match_crowd_and_ties():
    """A detection on a crowd region is ignored; equal IoUs go to the later object (pycocotools)."""
    ious = np.array([[0.6, 0.6, 0.9], [0.55, 0.0, 0.0]])
    det, gt = coco_eval.greedy_match(ious, [0.9, 0.8], [1, 1], [1, 1, 1], [0, 0, 1])
    assert det == [1, 0] and gt == [1, 0, -1]
    det, gt = coco_eval.greedy_match(np.array([[0.3, 0.9]]), [0.9], [1], [1, 1], [0, 1])
    assert det == [-2] and gt == [-1, -1]


def test_one_vocabulary_of_steps():
    """A miss's reason is a stage record's step (fates.FATES) or a cause that is no step; every
    (stage, reason) has its words."""
    assert {r for _, r in MISS_CAUSES} <= set(FATES) | set(CAUSES)
    assert set(WORDS) == set(MISS_CAUSES)


# --- constructed causes: one per stage and reason -----------------------------------------------
CONSTRUCTED: dict[tuple[str, str], str] = {}  # (stage, reason) -> the test that constructs it


def constructs(*cause_list):
    """Register a test as the constructed case of these causes (it must assert them)."""

    def register(test):
        for cause in cause_list:
            CONSTRUCTED[cause] = test.__name__
        return test

    return register


@constructs(("shortlist", "cap"))
def test_detection_cap(model):
    """A cap of 1: every other object is lost at the shortlist's cap."""
    image, target = shapes_val()[clean_image()]
    tr = causes(model, image, target, box_detections_per_img=1)
    assert len(tr.matches) == 1 and len(tr.misses) == len(target["labels"]) - 1
    assert {(m.stage, m.reason) for m in tr.misses} == {("shortlist", "cap")}
    assert "the detection cap" in str(tr.misses[0])
    assert all(m.numbers["rank"] > 1 and m.numbers["cap"] == 1 for m in tr.misses)


@constructs(("shortlist", "score_threshold"))
def test_score_threshold_drops_exactly_one_object(model):
    """box_score_thresh set to the lowest matched score: that object alone is lost at the threshold."""
    image, target = shapes_val()[threshold_image()]
    base = explain(model, image, target)
    weakest = min(base.matches, key=lambda m: base.shortlist.scores[m.detection])
    score = float(base.shortlist.scores[weakest.detection])
    tr = causes(model, image, target, box_score_thresh=score)  # strict ">": drops this score
    assert [m.gt_index for m in tr.misses] == [weakest.gt_index]
    miss = tr.misses[0]
    assert (miss.stage, miss.reason) == ("shortlist", "score_threshold")
    assert miss.numbers["probability"] == pytest.approx(score)
    below = causes(model, image, target, box_score_thresh=float(np.nextafter(np.float32(score), 0)))
    assert not below.misses


@constructs(("shortlist", "nms"))
def test_class_nms_collision(model):
    """The class-NMS val image (``class_nms_image``): one object's best candidate is suppressed in class NMS by a
    detection it overlaps (IoU > 0.5). The miss names that detection, the record agrees on
    who suppressed whom, and raising box_nms_thresh above their IoU brings the object back."""
    image, target = shapes_val()[class_nms_image()]
    tr = explain(model, image, target)
    miss = next(m for m in tr.misses if (m.stage, m.reason) == ("shortlist", "nms"))
    assert miss.numbers["suppressor_iou"] > model.config.box_nms_thresh
    d = miss.numbers["suppressor_detection"]
    assert int(tr.shortlist.candidate_index[d]) == int(tr.shortlist.suppressed_by[miss.row])
    looser = causes(model, image, target, box_nms_thresh=miss.numbers["suppressor_iou"] + 0.01)
    assert looser.box_matching[1][miss.gt_index] >= 0  # matched by box (its mask is another matter)
    assert miss.gt_index not in {m.gt_index for m in looser.misses if m.stage != "segmentation"}


@constructs(("longlist", "pre_nms_top_k"))
def test_pre_nms_top_k(model):
    """One anchor per level before NMS: the objects without it are lost at the level's top-k."""
    image, target = shapes_val()[clean_image()]
    tr = causes(model, image, target, rpn_pre_nms_top_n_test=1)
    assert tr.misses and {(m.stage, m.reason) for m in tr.misses} == {("longlist", "pre_nms_top_k")}
    for m in tr.misses:
        assert m.numbers["level_rank"] > 1 and tr.longlist.fate_of(m.row) == "pre_nms_top_k"
        assert m.numbers["proposal_iou"] >= 0.5
    assert "the level keeps 1 before NMS" in tr.misses[0].sentence()


@constructs(("longlist", "cap"))
def test_post_nms_top_k(model):
    """One proposal per image: every other object is lost at the post-NMS cap."""
    image, target = shapes_val()[clean_image()]
    tr = causes(model, image, target, rpn_post_nms_top_n_test=1)
    assert len(tr.misses) >= len(target["labels"]) - 1
    assert {(m.stage, m.reason) for m in tr.misses} == {("longlist", "cap")}
    assert all(m.numbers["rank"] > 1 for m in tr.misses)


@constructs(("longlist", "nms"))
def test_rpn_nms(model):
    """RPN NMS at IoU 0: a proposal of a neighbouring object removes the object's proposals
    (featured(0), whose objects touch; no object is lost there at the shipped threshold)."""
    image, target = featured(0)
    rpn_nms = ("longlist", "nms")
    assert not any((m.stage, m.reason) == rpn_nms for m in explain(model, image, target).misses)
    tr = causes(model, image, target, "bbox", rpn_nms_thresh=0.0)  # by box: a mask can still match
    lost = [m for m in tr.misses if (m.stage, m.reason) == rpn_nms]
    assert lost and "NMS per level" in str(lost[0]) and "rpn_nms_thresh 0" in lost[0].sentence()
    for m in lost:
        sup = m.numbers["suppressor"]
        assert tr.longlist.fate_of(sup) == "kept" and int(tr.longlist.suppressed_by[m.row]) == sup
        assert m.numbers["suppressor_object_iou"] < 0.5  # the suppressor does not cover the object


@constructs(("longlist", "small_box"), ("longlist", "score_threshold"))
def test_small_box_and_score_threshold_in_the_longlist(model):
    image, target = featured(0)
    tr = causes(model, image, target, rpn_min_size=1000.0)
    assert len(tr.misses) == len(target["labels"])
    assert {(m.stage, m.reason) for m in tr.misses} == {("longlist", "small_box")}
    tr = causes(model, image, target, rpn_score_thresh=0.9999)
    assert tr.misses and {(m.stage, m.reason) for m in tr.misses} == {("longlist", "score_threshold")}
    assert all(m.numbers["objectness"] < 0.9999 for m in tr.misses)


@constructs(("shortlist", "small_box"))
def test_small_box_in_the_shortlist(model):
    image, target = featured(0)
    tr = causes(model, image, target, box_min_size=1000.0)
    assert len(tr.misses) == len(target["labels"])
    assert {(m.stage, m.reason) for m in tr.misses} == {("shortlist", "small_box")}


# Detectron2's rules for the shortlist and the longlist (Config.detectron2_r50's switches that keep
# the shapes weights meaningful): small boxes dropped after the cap, in original pixels
DETECTRON2_RULES = {"small_box_removal": "after_rescale", "clip_to_original": True, "rpn_min_size_inclusive": False,
                    "rpn_nms_score": "logit"}  # fmt: skip


def test_detectron2_order_cap_then_small_box(model):
    """Under Detectron2's rules the cap runs before the small-box rule. A cap that drops the weakest
    matched detection and a box_min_size that drops the smallest one kept: the funnel and the
    ledger follow the order run, the first object is lost at ``cap``, the second at ``small_box``
    (by the class constant STEPS order, its candidates' last step would be ``nms``)."""
    image, target = shapes_val()[clean_image()]
    base = causes(model, image, target, **DETECTRON2_RULES)
    assert base.shortlist.steps == ("score_threshold", "nms", "cap", "small_box") != base.shortlist.STEPS
    matched = sorted(base.matches, key=lambda m: m.detection)  # best score first
    capped = matched[-1]
    boxes = base.boxes_orig
    sides = {m.gt_index: float((boxes[m.detection, 2:] - boxes[m.detection, :2]).min()) for m in matched[:-1]}
    small = min(sides, key=sides.get)
    tr = causes(model, image, target, **DETECTRON2_RULES, box_detections_per_img=capped.detection,
                box_min_size=sides[small])  # fmt: skip
    s = tr.shortlist
    assert list(s.funnel) == ["input", "score_threshold", "nms", "cap", "small_box"]
    assert len(s.dropped["cap"]) > 0 and len(s.dropped["small_box"]) > 0
    lost = {m.gt_index: m for m in tr.misses}
    assert (lost[capped.gt_index].stage, lost[capped.gt_index].reason) == ("shortlist", "cap")
    assert (lost[small].stage, lost[small].reason) == ("shortlist", "small_box")
    assert lost[small].numbers["side"] <= sides[small] and "<= box_min_size" in lost[small].sentence()
    ledger = tr.ledger(small)
    assert [k for k in ledger if k.startswith("shortlist: ")] == [f"shortlist: {step}" for step in s.steps]
    assert next(k for k, v in ledger.items() if v == 0) == "shortlist: small_box"
    assert next(k for k, v in tr.ledger(capped.gt_index).items() if v == 0) == "shortlist: cap"


def _with_weights(model, edit):
    m = copy.deepcopy(model)
    with torch.no_grad():
        edit(m)
    return m


@constructs(("classification", "background"))
def test_background(model):
    """The background logit raised by 30: every proposal says background; every object is lost there."""
    image, target = featured(0)
    m = _with_weights(model, lambda m: m.roi_heads.box_predictor.cls_score.bias[0].add_(30))
    tr = explain(m, image, target)
    assert len(tr.misses) == len(target["labels"]) and len(tr) == 0
    assert {(x.stage, x.reason) for x in tr.misses} == {("classification", "background")}


@constructs(("classification", "wrong_class"))
def test_wrong_class(model):
    """Class 1's logit raised by 30: objects of other classes are lost to the wrong class; class 1's are found."""
    image, target = featured(0)
    m = _with_weights(model, lambda m: m.roi_heads.box_predictor.cls_score.bias[1].add_(30))
    tr = explain(m, image, target)
    others = [g for g, lab in enumerate(target["labels"].tolist()) if lab != 1]
    assert sorted(x.gt_index for x in tr.misses) == others
    assert {(x.stage, x.reason) for x in tr.misses} == {("classification", "wrong_class")}
    assert all(x.numbers["argmax"] == 1 for x in tr.misses)
    assert {fp.kind for fp in false_positives(tr)} >= {"classification"}


@constructs(("classification", "localisation"))
def test_localisation_in_classification(model):
    """Every class's box shrunk 50-fold (dw, dh biases -20, weight 5): proposals cover, refined boxes do not."""
    image, target = featured(0)
    k1 = model.config.num_classes
    m = _with_weights(model, lambda m: m.roi_heads.box_predictor.bbox_pred.bias.view(k1, 4)[:, 2:].sub_(20.0))
    tr = explain(m, image, target)
    assert len(tr.misses) == len(target["labels"])
    assert {(x.stage, x.reason) for x in tr.misses} == {("classification", "localisation")}
    assert all(x.numbers["proposal_iou"] >= 0.5 > x.numbers["refined_iou"] for x in tr.misses)


@constructs(("longlist", "localisation"))
def test_anchors_that_cannot_reach_the_object(model):
    """Anchors of 2 px and an RPN that does not move them: no proposal ever covers an object."""
    image, target = featured(0)

    def edit(m):
        m.rpn.head.bbox_pred.weight.zero_()
        m.rpn.head.bbox_pred.bias.zero_()
        m.config = m.config.replace(anchor_sizes=((2,), (2,), (2,), (2,), (2,)))

    tr = explain(_with_weights(model, edit), image, target)
    assert len(tr.misses) == len(target["labels"])
    assert {(x.stage, x.reason) for x in tr.misses} == {("longlist", "localisation")}
    assert all(x.numbers["best_proposal_iou"] < 0.5 for x in tr.misses)
    assert "no proposal covers it" in tr.misses[0].sentence()


@constructs(("segmentation", "mask_quality"))
def test_mask_quality(model):
    """Mask logits pushed to -50: boxes still match, every mask is empty: by mask every object is
    lost in the segmentation; by box none is."""
    image, target = shapes_val()[clean_image()]
    m = _with_weights(model, lambda m: m.roi_heads.mask_predictor.mask_fcn_logits.bias.sub_(50))
    tr = explain(m, image, target)
    assert not tr.matches and all(d >= 0 for d in tr.box_matching[1])
    assert len(tr.misses) == len(target["labels"])
    assert {(x.stage, x.reason) for x in tr.misses} == {("segmentation", "mask_quality")}
    assert all(x.numbers["mask_iou"] == 0 and x.step is None for x in tr.misses)
    by_box = Trace(tr.run, 0, m.config, target, "bbox")
    assert len(by_box.matches) == len(target["labels"]) and not by_box.misses


@pytest.mark.parametrize("cause", MISS_CAUSES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_every_cause_is_constructed(cause):
    """Each cause the trace can name has a test above that makes it happen and asserts it."""
    assert cause in CONSTRUCTED, f"no test constructs the miss cause {cause}"
    assert CONSTRUCTED[cause] in globals()


def test_false_positive_kinds_follow_tide(model):
    """Each kind's defining overlap holds (TIDE's thresholds 0.1 and 0.5)."""
    image, target = featured(0)
    tr = causes(model, image, target, box_score_thresh=0.01)
    assert false_positives(tr)
    labels = target["labels"].tolist()
    for fp in false_positives(tr):
        assert fp.kind in FP_KINDS
        ious = tr.box_ious[fp.detection]
        same = [ious[g] for g in range(len(labels)) if labels[g] == fp.label]
        if fp.kind == "localisation":
            assert 0.1 <= fp.iou < 0.5 and labels[fp.gt_index] == fp.label
        elif fp.kind == "classification":
            assert fp.iou >= 0.5 and labels[fp.gt_index] != fp.label
        elif fp.kind == "duplicate":
            assert fp.iou >= 0.5 and tr.box_matching[1][fp.gt_index] >= 0
        elif fp.kind == "background":
            assert ious.max() < 0.1
        else:
            assert not same or max(same) < 0.1


def test_explain_dataset_counts_and_fixes():
    """The report counts every miss and false positive of the traces, its counts add up, and
    fixing helps AP (box AP by COCOeval, the oracle for both)."""
    model = load_pretrained("shapes")
    model.config = model.config.replace(box_detections_per_img=2)
    ds = shapes_val()
    for kind in IOU_TYPES:
        report = explain_dataset(model, ds, max_images=12, iou_type=kind)
        assert report.images == 12 and report.iou_type == kind
        traces = [explain(model, *ds[i], iou_type=kind) for i in range(12)]
        n = sum(len(tr.misses) for tr in traces)
        assert len(report.misses) == n > 0
        assert report.matched == sum(len(tr.matches) for tr in traces)
        assert report.objects == report.matched + len(report.misses)
        assert len(report.false_positives) == sum(len(false_positives(tr)) for tr in traces)
        assert report.counts("misses")[("shortlist", "cap")] > 0
        rows = report.table("misses")
        assert sum(r["count"] for r in rows) == n
        assert all(r["images"] for r in rows)
    assert report.fixed["shortlist/cap"]["AP"] > 0
    assert "missed objects" in report.format() and "| cause |" in report.markdown()


def test_seeded_torchvision_r50_lineage():
    """Random R50 weights (seeded, no download), one 320-px image: lineage matches the records."""
    torch.manual_seed(0)
    cfg = Config.torchvision_r50().replace(min_size=320, max_size=320, box_score_thresh=0.0)
    model = MaskRCNN(cfg).eval()
    image, target = featured(2)
    tr = explain(model, image, target)
    assert isinstance(tr, Trace)
    assert tr.longlist.funnel["input"] == len(tr.objectness.anchors)
    for lin in tr.detections[:20]:
        assert tr.longlist.fate_of(lin.anchor.row) == "kept"
        assert int(tr.longlist.anchor_index[lin.proposal]) == lin.anchor.row
        assert lin.anchor.size in cfg.anchor_sizes[lin.anchor.level]
    assert all((m.stage, m.reason) in MISS_CAUSES for m in tr.misses)


# --- figures -----------------------------------------------------------------------------------------
def test_figures(model):
    """Each chapter-10 figure returns a Figure with the expected panels and boxes."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from minimask.viz import plt
    from minimask.viz import trace as vt

    image, target = shapes_val()[class_nms_image()]
    tr = explain(model, image, target)
    gt = next(m.gt_index for m in tr.matches if m.detection == 0)
    lost = next(m.gt_index for m in tr.misses if (m.stage, m.reason) == ("shortlist", "nms"))
    fig = vt.lineage(image, tr, 0, gt_index=gt)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    rects = [sum(isinstance(p, Rectangle) for p in ax.patches) for ax in fig.axes]
    assert rects[0] == 2 and rects[3] == 2  # anchor + object; box + object
    plt.close(fig)
    fig = vt.miss(image, tr, lost)
    bars = fig.axes[1].patches
    assert len(bars) == len(tr.ledger(lost)) and "NMS per class" in fig.axes[0].get_title()
    plt.close(fig)
    fig = vt.errors(image, tr)
    texts = [t.get_text() for t in fig.axes[0].texts]
    # every miss drawn black dashed; on this crowd a label that would cover another is left out
    dashed = [p for p in fig.axes[0].patches if isinstance(p, Rectangle) and p.get_linestyle() == "--"]
    assert len(dashed) == len(tr.misses)
    assert 0 < sum(t.startswith("missed: ") for t in texts) <= len(tr.misses)
    plt.close(fig)


def test_ledger_ends_where_the_miss_is(model):
    """The step at which the ledger's count falls to zero for good is the miss's step (the class-NMS val
    image: class NMS and background). Not always the first zero: a proposal that does not cover the
    object (IoU < 0.5) can be refined into a candidate that does, so the count can come back."""
    image, target = shapes_val()[class_nms_image()]
    tr = explain(model, image, target)
    steps = {("shortlist", "nms"): "shortlist: nms", ("classification", "background"): "shortlist: score_threshold"}
    followed = [m for m in tr.misses if (m.stage, m.reason) in steps]
    assert {(m.stage, m.reason) for m in followed} == set(steps)
    for m in followed:
        ledger = tr.ledger(m.gt_index)
        counts = list(ledger.items())
        last_covered = max(i for i, (_, v) in enumerate(counts) if v > 0)
        assert counts[last_covered + 1][0] == steps[(m.stage, m.reason)]


# --- the command line's helpers ---------------------------------------------------------------------
def test_explain_images_writes_a_figure_and_a_report(tmp_path, model):
    from minimask.data import SHAPES_VAL
    from minimask.predict import explain_images
    from minimask.shapes import CLASS_NAMES

    path = class_nms_file()
    written = explain_images([str(path)], tmp_path, [path.stem], model, list(CLASS_NAMES),
                             annotations=str(SHAPES_VAL / "annotations.json"), progress=False)  # fmt: skip
    assert sorted(p.name for p in written) == [f"{path.stem}_explain.png", f"{path.stem}_explain.txt"]
    text = (tmp_path / f"{path.stem}_explain.txt").read_text()
    assert "lost in the shortlist, NMS per class [shortlist/nms]" in text and "false positives" in text


def test_targets_for_files_errors_name_the_file(tmp_path):
    from PIL import Image

    from minimask.data import SHAPES_VAL
    from minimask.predict import targets_for_files

    ann = str(SHAPES_VAL / "annotations.json")
    stray = tmp_path / "stray.png"
    Image.new("RGB", (32, 32)).save(stray)
    with pytest.raises(ValueError, match="stray.png.*no image named"):
        targets_for_files([str(stray)], ann)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        targets_for_files([str(class_nms_file())], str(bad))


def test_explain_a_torchvision_model_through_compat():
    """A torchvision Mask R-CNN (seeded, shapes preset) converted by compat.from_torchvision explains
    the same way: every detection's lineage points at kept rows of its records."""
    from minimask import compat

    torch.manual_seed(0)
    tv = compat.torchvision_model(Config.shapes()).eval()
    ours = compat.from_torchvision(tv, Config.shapes())
    image, target = featured(1)
    tr = explain(ours, image, target)
    with torch.no_grad():
        theirs = tv([image])[0]
    assert len(tr.detections) == len(theirs["boxes"]) > 0
    torch.testing.assert_close(torch.stack([d.box_orig for d in tr.detections]), theirs["boxes"], rtol=0, atol=1e-4)
    for lin in tr.detections:
        assert tr.longlist.fate_of(lin.anchor.row) == "kept" and tr.shortlist.fate_of(lin.candidate) == "kept"
    assert sorted([m.gt_index for m in tr.matches] + [m.gt_index for m in tr.misses]) == list(
        range(len(target["labels"]))
    )


# --- the command lines ------------------------------------------------------------------------------
def _small_split(tmp_path, n=3):
    """The first ``n`` val images and their annotations as a COCO directory."""
    import json
    import shutil

    from minimask.data import SHAPES_VAL

    coco = json.loads((SHAPES_VAL / "annotations.json").read_text())
    images = coco["images"][:n]
    ids = {im["id"] for im in images}
    (tmp_path / "images").mkdir(parents=True)
    for im in images:
        shutil.copy(SHAPES_VAL / "images" / im["file_name"], tmp_path / "images" / im["file_name"])
    coco["images"] = images
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in ids]
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    return tmp_path


def test_evaluate_explain_prints_the_tables_and_writes_them(tmp_path, capsys):
    import json

    from minimask import evaluate

    data = _small_split(tmp_path / "data")
    out = tmp_path / "report.json"
    assert evaluate.main(["--data", str(data), "--explain", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.index("bbox") < printed.index("missed objects") < printed.index("false positives")
    report = json.loads(out.read_text())
    assert report["explain"]["images"] == 3 and "fixed" in report["explain"]


def test_predict_explain_cli(tmp_path):
    """Per image a figure and a report; bad input: one line naming the file, status 2, no traceback."""
    import subprocess
    import sys

    from minimask.data import SHAPES_VAL

    path = class_nms_file()
    image, ann = str(path), str(SHAPES_VAL / "annotations.json")
    cmd = [sys.executable, "-m", "minimask.predict"]
    done = subprocess.run([*cmd, image, "--explain", "--annotations", ann, "--out", str(tmp_path / "out")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / f"{path.stem}_explain.png").stat().st_size > 1000
    assert "[shortlist/nms]" in (tmp_path / "out" / f"{path.stem}_explain.txt").read_text()
    stray = tmp_path / "stray.png"
    from PIL import Image

    Image.new("RGB", (40, 30)).save(stray)
    for args, needle in (
        ([str(stray), "--annotations", ann], "stray.png"),
        ([str(tmp_path / "nope.png")], "nope.png"),
        ([image, "--annotations", str(tmp_path / "none.json")], "none.json"),
    ):
        done = subprocess.run([*cmd, *args, "--explain", "--out", str(tmp_path / "o2")], capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        assert needle in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_trace_warns_about_skipped_annotations(tmp_path):
    """The one policy for invalid annotations (coco.AnnotationTable.skipped_summary): the trace's
    targets leave out an annotation with a negative width and say so, naming its id."""
    import json

    from minimask.data import make_shapes
    from minimask.predict import targets_for_files

    folder = make_shapes(tmp_path / "v", "val", 2, seed=3)
    coco = json.loads((folder / "annotations.json").read_text())
    bad = dict(coco["annotations"][0], id=9999, bbox=[5, 5, -3, 4], segmentation=[[1, 1, 4, 4]])
    coco["annotations"].append(bad)
    (folder / "bad.json").write_text(json.dumps(coco))
    with pytest.warns(UserWarning, match="skipped 1 annotation.*9999"):
        targets, _ = targets_for_files([str(folder / "images" / "000001.png")], str(folder / "bad.json"))
    assert len(targets[0]["labels"]) == sum(a["image_id"] == 1 for a in coco["annotations"]) - 1
