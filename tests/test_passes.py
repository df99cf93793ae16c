"""One pass over a data set: ``model.run(until=...)``, ``model.resume`` and ``data.runs``.

The oracle of each shortcut is the full forward it replaces: a run stopped early, a run resumed
from another run's features, and masks pasted again under another rule must give exactly what
``model.run`` gives under the same config.
"""

from __future__ import annotations

import pytest
import torch

from minimask import load_pretrained
from minimask.coco_eval import to_results
from minimask.data import runs, shapes_val
from minimask.evaluate import evaluate, run_results
from minimask.explain import explain_dataset

N_IMAGES = 6  # val 0..5: a few ordinary images, enough detections to exercise every step


@pytest.fixture(scope="module")
def model():
    return load_pretrained("shapes")


@pytest.fixture(scope="module")
def val():
    return shapes_val()


@pytest.fixture(scope="module")
def images(val):
    return [val[i][0] for i in range(N_IMAGES)]


def _same_detections(a: list[dict], b: list[dict], masks: bool = True) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for key in ("boxes", "labels", "scores") + (("masks",) if masks else ()):
            torch.testing.assert_close(x[key], y[key], rtol=0, atol=0)


def test_until_shortlist_gives_the_full_runs_detections_without_masks(model, images):
    full = model.run(images)
    short = model.run(images, until="shortlist")
    assert short.segmentation is None and short.scores is None
    assert all("masks" not in d for d in short.detections)
    _same_detections(short.detections, full.detections, masks=False)
    for s in short.shortlist:
        assert s.boxes_orig is not None


def test_until_longlist_stops_before_the_heads(model, images):
    full = model.run(images)
    ll = model.run(images, until="longlist")
    assert ll.classification is None and ll.shortlist is None
    for a, b in zip(ll.longlist, full.longlist, strict=True):
        torch.testing.assert_close(a.boxes, b.boxes, rtol=0, atol=0)
    with pytest.raises(ValueError, match="stopped before the shortlist"):
        _ = ll.detections


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"box_nms_thresh": 0.7},
        {"rpn_post_nms_top_n_test": 10},
        {"box_score_thresh": 0.5, "mask_paste": "subpixel"},
    ],
    ids=["same", "class-nms", "post-nms-cap", "score-and-paste"],
)
def test_resume_equals_a_fresh_run_under_the_changed_config(model, images, change):
    shipped = model.config
    first = model.run(images, until="longlist")
    model.config = shipped.replace(**change)
    try:
        resumed = model.resume(first)
        fresh = model.run(images)
    finally:
        model.config = shipped
    _same_detections(resumed.detections, fresh.detections)
    assert resumed.config == shipped.replace(**change)


def test_resume_refuses_a_change_of_the_features_or_anchors(model, images):
    first = model.run(images[:1], until="longlist")
    shipped = model.config
    model.config = shipped.replace(min_size=shipped.min_size + 32, max_size=shipped.max_size + 32)
    try:
        with pytest.raises(ValueError, match="min_size"):
            model.resume(first)
    finally:
        model.config = shipped
    with pytest.raises(ValueError, match="until"):
        model.resume(first, until="segmentation")


def test_run_results_repasted_equal_a_run_made_with_that_paste(model, val):
    shipped = model.config
    (_, targets, run), *_ = runs(model, val, batch_size=4, progress=False, max_images=4)
    ours = run_results(run, targets, val, shipped.replace(mask_paste="subpixel"), repaste=True)
    model.config = shipped.replace(mask_paste="subpixel")
    try:
        other = model.run([val[i][0] for i in range(4)])
    finally:
        model.config = shipped
    theirs = []
    for t, d in zip(targets, other.detections, strict=True):
        theirs += to_results(d, int(t["image_id"]), val.label_to_category_id, shipped.mask_threshold)
    assert [r["segmentation"] for r in ours] == [r["segmentation"] for r in theirs]
    same = run_results(run, targets, val, shipped)
    assert [r["segmentation"] for r in same] != [r["segmentation"] for r in ours]


def test_runs_covers_every_image_once_in_order(model, val):
    seen = [i for batch, targets, _ in runs(model, val, batch_size=4, progress=False, until="longlist", max_images=10)
            for i in batch]  # fmt: skip
    assert seen == list(range(10))


def test_explain_by_box_is_explain_by_mask_less_the_mask_misses(model, val):
    segm = explain_dataset(model, val, max_images=N_IMAGES, fix_ap=False)
    bbox = explain_dataset(model, val, max_images=N_IMAGES, fix_ap=False, iou_type="bbox")
    assert bbox.ap == segm.ap
    assert bbox.false_positives == segm.false_positives  # judged by box in both
    # by mask, an object matched by box but not by mask is a mask miss, one matched by mask no
    # miss; every other object missed by mask is missed by box, for the same cause
    missed_by_mask = {(m["image_id"], m["index"]) for m in segm.misses}
    assert [m for m in segm.misses if m["reason"] != "mask_quality"] == [
        m for m in bbox.misses if (m["image_id"], m["index"]) in missed_by_mask
    ]
    by_box = {(m["image_id"], m["index"]) for m in bbox.misses}
    assert not any((m["image_id"], m["index"]) in by_box for m in segm.misses if m["reason"] == "mask_quality")
    assert bbox.iou_type == "bbox" and segm.iou_type == "segm"
    with pytest.raises(ValueError, match="iou_type"):
        explain_dataset(model, val, max_images=1, iou_type="mask")


def test_explain_resumed_from_passes_equals_a_fresh_explain(model, val):
    passes = list(runs(model, val, progress=False, until="longlist", max_images=N_IMAGES))
    shipped = model.config
    model.config = shipped.replace(box_nms_thresh=0.7)
    try:
        resumed = explain_dataset(model, val, max_images=N_IMAGES, passes=passes)
        fresh = explain_dataset(model, val, max_images=N_IMAGES)
    finally:
        model.config = shipped
    assert resumed.misses == fresh.misses and resumed.false_positives == fresh.false_positives
    assert resumed.ap == fresh.ap and resumed.fixed == fresh.fixed


def test_explain_with_the_matched_masks_only_equals_the_full_trace_of_each_image(model, val):
    """explain_dataset runs the mask head on the box-matched detections only; the oracle is the
    trace of the full forward of the same batches (every mask pasted): the same misses, mask
    misses included."""
    from minimask.trace import Trace

    n = 20
    report = explain_dataset(model, val, max_images=n, fix_ap=False)
    ours = [(m["image_id"], m["index"], m["stage"], m["reason"]) for m in report.misses]
    theirs = []
    for _, targets, run in runs(model, val, progress=False, max_images=n):
        for j, target in enumerate(targets):
            for m in Trace(run, j, model.config, target).misses:
                theirs.append((int(target["image_id"]), m.gt_index, m.stage, m.reason))
    assert ours == theirs
    assert any(reason == "mask_quality" for *_, reason in theirs), "no mask miss in these images: pick more"


def test_one_box_ap_for_the_model(model, val):
    """The box AP the data-set report states is the one ``evaluate`` states (both COCOeval, the
    same batches of ``data.BATCH_SIZE``): the book quotes one number."""
    report = explain_dataset(model, val, fix_ap=False, iou_type="bbox", progress=False)
    stats = evaluate(model, val, progress=False)["bbox"]
    assert report.ap["AP"] == pytest.approx(stats["AP"], abs=1e-12)
    assert report.ap["AP50"] == pytest.approx(stats["AP50"], abs=1e-12)
