"""The one bridge to COCO's evaluation: results, RLEs, IoUs, COCOeval runs and its matching.

Every module and chapter that speaks to pycocotools goes through here, so that a box is
turned into ``[x, y, w, h]`` one way, a mask into an RLE one way, and a detection is matched
to an object by the rule ``COCOeval.evaluateImg`` uses (``pycocotools/cocoeval.py``):

- ``xywh``, ``encode``, ``encode_masks``, ``to_results``: model outputs as COCO result entries;
- ``ground_truth``, ``without``: pycocotools' ``COCO`` of a data set, and a copy without some
  annotations;
- ``iou``: ``pycocotools.mask.iou`` of boxes or RLEs, with crowd flags;
- ``greedy_match``: COCOeval's greedy matching of one image at one IoU threshold;
- ``evaluate``, ``summary``, ``ap``: one quiet COCOeval run and what is read from it;
- ``ap_above``: COCOeval's AP50, precision and recall of the detections scoring above each of
  several thresholds, from one run.

AP is only ever read from COCOeval's own arrays (``summarize``'s ``stats`` or the
``precision`` array it averages), never recomputed by hand.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from minimask.coco import PYCOCOTOOLS_NUMPY2_WARNING

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_MATCH = 0.5  # COCOeval's loosest IoU threshold


def xywh(boxes: Tensor) -> list[list[float]]:
    """``Tensor[N, 4]`` xyxy -> COCO ``[x, y, w, h]`` lists, in the boxes' own precision.

    The width is ``x2 - x1`` computed in the tensor's dtype (float32 for model outputs), so a
    box matched here has exactly the coordinates COCOeval reads from the result entries.
    """
    boxes = boxes.detach().cpu()
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()


def encode(masks: Tensor | np.ndarray) -> list[dict]:
    """Binary masks ``(N, H, W)`` -> COCO RLEs (pycocotools), ``counts`` as ``str`` (JSON-ready)."""
    if isinstance(masks, Tensor):
        masks = masks.detach().cpu().numpy()
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def encode_masks(masks: Tensor, threshold: float) -> list[dict]:
    """Soft masks ``Tensor[D, 1, H, W]`` -> COCO RLEs of ``mask >= threshold``."""
    return encode(masks[:, 0] >= threshold)


def to_results(
    output: dict[str, Tensor], image_id: int, label_to_category_id: dict[int, int], mask_threshold: float
) -> list[dict]:
    """One image's output (``boxes``, ``labels``, ``scores``, optional ``masks``) as COCO result entries."""
    scores = output["scores"].detach().cpu().tolist()
    labels = output["labels"].detach().cpu().tolist()
    rles = encode_masks(output["masks"], mask_threshold) if "masks" in output else [None] * len(scores)
    results = []
    for box, score, label, rle in zip(xywh(output["boxes"]), scores, labels, rles, strict=True):
        entry = {"image_id": int(image_id), "category_id": label_to_category_id[int(label)], "bbox": box,
                 "score": float(score)}  # fmt: skip
        if rle is not None:
            entry["segmentation"] = rle
        results.append(entry)
    return results


def _quiet():
    """COCO and COCOeval print their progress; pycocotools 2.0.11 under numpy 2 warns on every
    mask decode (the numbers are unaffected)."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.filterwarnings("ignore", message=PYCOCOTOOLS_NUMPY2_WARNING, category=DeprecationWarning)
    return stack


def ground_truth(dataset) -> tuple[COCO, list[int]]:
    """pycocotools' ``COCO`` of a ``CocoDataset``'s annotation file and its image ids, in order.

    Annotations the reader skipped as invalid (``dataset.skipped``) are no object here either.
    """
    with _quiet():
        coco = COCO(str(dataset.annotation_file))
        skipped = set(getattr(dataset, "skipped", {}))
        if skipped:
            coco.dataset["annotations"] = [a for a in coco.dataset["annotations"] if a.get("id") not in skipped]
            coco.createIndex()
    return coco, list(dataset.ids)


def without(coco_gt: COCO, annotation_ids: set[int]) -> COCO:
    """A copy of a pycocotools ``COCO`` without the annotations ``annotation_ids``."""
    data = dict(coco_gt.dataset)
    data["annotations"] = [a for a in coco_gt.dataset["annotations"] if a["id"] not in annotation_ids]
    out = COCO()
    out.dataset = data
    with _quiet():
        out.createIndex()
    return out


def iou(
    detections: Tensor | list[dict], objects: Tensor | list[dict], crowd: Sequence[int] | None = None
) -> np.ndarray:
    """``(D, G)`` IoU by ``pycocotools.mask.iou``, as ``COCOeval.computeIoU``: both boxes
    (``Tensor[N, 4]`` xyxy) or both RLE lists; against a crowd object (``crowd[g]`` true) the
    intersection is divided by the detection's area."""
    rows, cols = len(detections), len(objects)
    if rows == 0 or cols == 0:
        return np.zeros((rows, cols))
    if isinstance(detections, Tensor):
        detections, objects = xywh(detections), xywh(objects)
    flags = [int(c) for c in crowd] if crowd is not None else [0] * cols
    return np.asarray(mask_utils.iou(detections, objects, flags), dtype=np.float64).reshape(rows, cols)


def greedy_match(
    ious: np.ndarray,
    det_scores: Sequence[float],
    det_labels: Sequence[int],
    gt_labels: Sequence[int],
    gt_crowd: Sequence[int] | None = None,
    iou_threshold: float = IOU_MATCH,
    max_dets: int = 100,
) -> tuple[list[int], list[int]]:
    """COCOeval's matching of one image at one IoU threshold, every class.

    The loop of ``COCOeval.evaluateImg``: per class, the ``max_dets`` best detections by
    descending score (stable sort), each takes the not yet taken object of its class with the
    highest IoU of at least ``iou_threshold``; objects are visited non-crowd first, equal IoUs go
    to the later object, and a crowd region can absorb any number of detections. Returns
    ``det_match`` (D,): the object each detection matched, -1 none, -2 ignored (it matched a
    crowd region, or ranked past ``max_dets`` in its class); ``gt_match`` (G,): the detection
    each object matched, -1 none.
    """
    det_scores, det_labels, gt_labels = (
        list(map(float, det_scores)),
        list(map(int, det_labels)),
        list(map(int, gt_labels)),
    )
    gt_crowd = [int(c) for c in gt_crowd] if gt_crowd is not None else [0] * len(gt_labels)
    det_match, gt_match = [-1] * len(det_scores), [-1] * len(gt_labels)
    for label in sorted(set(det_labels) | set(gt_labels)):
        dets = sorted((d for d in range(len(det_scores)) if det_labels[d] == label), key=lambda d: -det_scores[d])
        for d in dets[max_dets:]:
            det_match[d] = -2
        gts = sorted((g for g in range(len(gt_labels)) if gt_labels[g] == label), key=lambda g: gt_crowd[g])
        for d in dets[:max_dets]:
            m = _best_object(ious[d], gts, gt_crowd, gt_match, iou_threshold)
            if m >= 0 and gt_crowd[m]:
                det_match[d] = -2
            elif m >= 0:
                det_match[d], gt_match[m] = m, d
    return det_match, gt_match


def _best_object(row: np.ndarray, gts: list[int], crowd: list[int], gt_match: list[int], threshold: float) -> int:
    """The object one detection takes in ``COCOeval.evaluateImg`` (-1: none)."""
    best, m = min(threshold, 1 - 1e-10), -1
    for g in gts:
        if gt_match[g] >= 0 and not crowd[g]:
            continue
        if m > -1 and not crowd[m] and crowd[g]:
            break
        if row[g] < best:
            continue
        best, m = row[g], g
    return m


def evaluate(
    coco_gt: COCO,
    results: list[dict],
    iou_type: str,
    image_ids: Sequence[int],
    category_ids: Sequence[int] | None = None,
    all_areas: bool = True,
) -> COCOeval:
    """One quiet COCOeval run (``evaluate`` and ``accumulate``) of ``results`` on ``image_ids``.

    ``category_ids``: score only those categories (``params.catIds``). ``all_areas=False``
    scores the area range "all" only (what AP and AP50 read; faster). For ``"bbox"`` the
    entries are copied without their masks (``loadRes`` writes into the entries it is given).
    """
    if iou_type == "bbox":
        results = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    with _quiet():
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
        ev.params.imgIds = list(image_ids)
        if category_ids is not None:
            ev.params.catIds = list(category_ids)
        if not all_areas:
            ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.evaluate()
        ev.accumulate()
    return ev


def summary(
    coco_gt: COCO,
    results: list[dict],
    iou_type: str,
    image_ids: Sequence[int],
    category_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """COCOeval's twelve summary numbers (``STAT_NAMES``); all zeros when there is no detection."""
    if not results:
        return {name: 0.0 for name in STAT_NAMES}
    ev = evaluate(coco_gt, results, iou_type, image_ids, category_ids)
    with _quiet():
        ev.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, ev.stats, strict=True)}


def ap(ev: COCOeval) -> dict[str, float]:
    """AP@[.5:.95] and AP50 of an evaluated COCOeval, area "all", the most detections: the
    entries of ``precision`` that ``summarize`` averages (-1 where no object)."""
    area = ev.params.areaRngLbl.index("all")
    precision = ev.eval["precision"][:, :, :, area, -1]

    def mean(p: np.ndarray) -> float:
        p = p[p > -1]
        return float(p.mean()) if p.size else -1.0

    return {"AP": mean(precision), "AP50": mean(precision[0])}


def ap_above(ev: COCOeval, thresholds: Sequence[float]) -> dict[str, np.ndarray]:
    """AP50, precision and recall of the detections scoring above each threshold, at IoU 0.5.

    ``ev``: an evaluated COCOeval (``evaluate``) of every detection. Per threshold ``t`` the
    detections scoring at most ``t`` are marked ignored (``dtIgnore``) in a copy of
    ``ev.evalImgs`` and COCOeval's own ``accumulate`` runs again. Matching is greedy in
    descending score, so removing the lowest-scored detections changes no earlier match: this
    is COCOeval on the thresholded results (``tests/test_evaluate.py`` checks it). ``AP50``:
    read by ``ap``; ``precision``: the share of the kept detections that match an object (NaN
    when none is kept); ``recall``: the share of the objects matched (area "all").
    """
    if ev.params.iouThrs[0] != IOU_MATCH:
        raise ValueError(f"ap_above: the first IoU threshold is {ev.params.iouThrs[0]}, not {IOU_MATCH}")
    scores = [None if e is None else np.asarray(e["dtScores"]) for e in ev.evalImgs]
    sweep = copy.copy(ev)  # shares ev's matches; its own evalImgs, params and eval
    sweep.params = copy.copy(ev.params)
    sweep.params.iouThrs = ev.params.iouThrs[:1]  # IoU 0.5, the first row of the matches
    sweep.params.maxDets = ev.params.maxDets[-1:]  # the only one ``ap`` reads
    out = {"AP50": []}
    for t in thresholds:
        sweep.evalImgs = [e if e is None else {**e, "dtMatches": e["dtMatches"][:1],
                                                "dtIgnore": e["dtIgnore"][:1] | (s <= t)}
                          for e, s in zip(ev.evalImgs, scores, strict=True)]  # fmt: skip
        with _quiet():
            sweep.accumulate()
        out["AP50"].append(ap(sweep)["AP50"])
    every = [(e, s) for e, s in zip(ev.evalImgs, scores, strict=True) if e is not None and e["aRng"] == [0, 1e10]]
    kept = [(s[~e["dtIgnore"][0]], (e["dtMatches"][0] > 0)[~e["dtIgnore"][0]]) for e, s in every]
    score = np.concatenate([k[0] for k in kept]) if kept else np.zeros(0)
    hit = np.concatenate([k[1] for k in kept]) if kept else np.zeros(0, dtype=bool)
    objects = sum(int((e["gtIgnore"] == 0).sum()) for e, _ in every)
    out["precision"] = [float(hit[score > t].mean()) if (score > t).any() else float("nan") for t in thresholds]
    out["recall"] = [float(hit[score > t].sum()) / objects if objects else float("nan") for t in thresholds]
    return {k: np.asarray(v) for k, v in out.items()}
