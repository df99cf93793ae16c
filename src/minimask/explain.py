"""Chapter 10. The errors of a model, image by image and over a data set: what the trace's
matching leaves unmatched on the detections' side, and what each kind of error costs.

``minimask.trace`` says, for one image, which detection matched which object and which
decision lost each missed object. This module counts those over images:

- ``false_positives(trace)``: every unmatched detection with TIDE's kind of error
  (``FP_KINDS``, by box IoU); ``image_report(trace)`` the text of one image's errors;
- ``explain_dataset(model, dataset) -> Report``: the misses by stage and reason and the false
  positives by kind, per class and per COCO size, with the box AP that fixing each would
  recover (pycocotools ``COCOeval`` on corrected results, ``coco_eval``), and the images
  behind each count. One ``model.run`` per batch; in ``"segm"`` mode the mask head runs only
  on the detections whose mask may match an object (``may_match``), which gives the same
  matching as every mask would;
- ``explain_images`` and ``merge_images``: the same in two steps, a plain record per image,
  then the ``Report`` of the records in the data set's order (records made by several
  processes and gathered: ``minimask.distributed``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor

from minimask import coco_eval
from minimask.data import BATCH_SIZE, runs
from minimask.trace import IOU_TYPES, MISS_CAUSES, Trace, class_label

FP_KINDS: tuple[str, ...] = ("classification", "localisation", "both", "duplicate", "background")
SIZES: tuple[str, ...] = ("small", "medium", "large")  # COCO: area < 32^2, < 96^2, larger
IOU_MATCH = coco_eval.IOU_MATCH  # COCOeval's loosest threshold; TIDE's foreground threshold
IOU_BACKGROUND = 0.1  # TIDE's background threshold


def coco_size(area: float) -> str:
    """COCO's size bin of an object of ``area`` pixels (pycocotools ``Params.areaRng``)."""
    return "small" if area < 32**2 else "medium" if area < 96**2 else "large"


@dataclass(frozen=True)
class FalsePositive:
    """An unmatched detection and TIDE's kind of error (``FP_KINDS``)."""

    detection: int
    label: int
    score: float
    kind: str
    gt_index: int  # the object behind the kind (-1 for background)
    iou: float  # box IoU with that object (the best IoU with any object for background)

    def __str__(self) -> str:
        about = (
            f" (object {self.gt_index}, IoU {self.iou:.2f})" if self.gt_index >= 0 else f" (best IoU {self.iou:.2f})"
        )
        return f"detection {self.detection} (class {self.label}, score {self.score:.3f}): {self.kind}{about}"


def false_positives(trace: Trace) -> list[FalsePositive]:
    """Every detection COCOeval leaves unmatched by box (not ignored by a crowd region), with TIDE's error kind.

    Tested in TIDE's order (``tidecv/quantify.py``, ``TIDERun._eval_image``), box IoU with
    the non-crowd objects: "localisation": 0.1 <= IoU < 0.5 with an object of its class;
    "classification": IoU >= 0.5 with an object of another class; "duplicate": IoU >= 0.5
    with an object of its class that a higher-scoring detection matched; "background":
    IoU < 0.1 with every object; "both": anything else (IoU in [0.1, 0.5) with an object of
    another class only).
    """
    t = trace._need_target()
    det_match, gt_match = trace.box_matching
    labels = t["labels"].tolist()
    real = [g for g in range(len(labels)) if not trace.crowd[g]]
    out = []
    for d, m in enumerate(det_match):
        if m != -1:
            continue
        lab, score = int(trace.shortlist.labels[d]), float(trace.shortlist.scores[d])
        ious = {g: float(trace.box_ious[d, g]) for g in real}
        same = {g: v for g, v in ious.items() if labels[g] == lab}
        other = {g: v for g, v in ious.items() if labels[g] != lab}
        used = {g: v for g, v in same.items() if gt_match[g] >= 0}
        best_same = max(same, key=same.get) if same else -1
        best_other = max(other, key=other.get) if other else -1
        best_used = max(used, key=used.get) if used else -1
        best_any = max(ious, key=ious.get) if ious else -1
        if best_same >= 0 and IOU_BACKGROUND <= same[best_same] < IOU_MATCH:
            fp = FalsePositive(d, lab, score, "localisation", best_same, same[best_same])
        elif best_other >= 0 and other[best_other] >= IOU_MATCH:
            fp = FalsePositive(d, lab, score, "classification", best_other, other[best_other])
        elif best_used >= 0 and used[best_used] >= IOU_MATCH:
            fp = FalsePositive(d, lab, score, "duplicate", best_used, used[best_used])
        elif best_any < 0 or ious[best_any] < IOU_BACKGROUND:
            fp = FalsePositive(d, lab, score, "background", -1, ious[best_any] if best_any >= 0 else 0.0)
        else:
            fp = FalsePositive(d, lab, score, "both", best_any, ious[best_any])
        out.append(fp)
    return out


def image_report(trace: Trace, class_names: list[str] | None = None) -> str:
    """One image's text: ``Trace.report`` (lineage, matches, misses), then the false positives."""
    text = trace.report(class_names)
    if trace.target is None:
        return text
    fps = false_positives(trace)
    lines = [text, f"{len(fps)} false positives (by box)"]
    for fp in fps:
        name = class_label(fp.label, class_names)
        lines.append(f"  {fp} [{name}]")
    return "\n".join(lines)


@dataclass
class Report:
    """Chapter 10. Misses and false positives of a data set, counted, located and priced in AP.

    ``misses`` and ``false_positives``: one dict per error (``image_id``, ``index`` (the
    object or detection row), ``class``, ``size`` (COCO's, of the object; of the detection's
    box for a background false positive), and ``stage``/``reason`` or ``kind``).
    ``objects`` (non-crowd) == ``matched`` + ``len(misses)``: matched and missed as COCOeval
    matches them for ``iou_type``; false positives are judged by box whatever the IoU type.
    ``ap``: box AP and AP50 (pycocotools) of the results; ``fixed``: for each cause
    ("stage/reason" of a miss, or "fp/kind"), the box AP and AP50 gained by fixing every error
    of that cause alone (TIDE's "fixed" AP, computed with COCOeval): a missed object is taken
    out of the ground truth; a localisation error gets its object's box, a classification
    error its object's class (both only when that object is unmatched, else it is removed);
    duplicates, background and "both" detections are removed.
    """

    misses: list[dict]
    false_positives: list[dict]
    ap: dict[str, float]
    fixed: dict[str, dict[str, float]]
    class_names: list[str]
    images: int
    objects: int
    detections: int
    seconds: float = 0.0
    iou_type: str = "segm"  # what matches an object: its mask ("segm") or its box ("bbox")
    matched: int = 0  # objects matched (matched + len(misses) == objects)

    def counts(self, what: str = "misses", by: str = "cause") -> dict[tuple, int]:
        """Counts of ``misses`` (by "cause" = (stage, reason)) or ``false_positives`` (by "kind"),
        optionally crossed with "class" or "size": ``by="cause,class"``."""
        keys = by.split(",")
        rows = getattr(self, what)
        if len(keys) == 1:
            return dict(Counter(_key(r, keys[0]) for r in rows))
        return dict(Counter(tuple(_key(r, k) for k in keys) for r in rows))

    def images_for(self, what: str = "misses", **where: Any) -> list[int]:
        """The image ids behind a cell: ``images_for("misses", stage="longlist", size="small")``."""
        rows = getattr(self, what)
        return sorted({r["image_id"] for r in rows if all(r.get(k) == v for k, v in where.items())})

    def table(self, what: str = "misses") -> list[dict]:
        """One row per cause (misses: (stage, reason); false positives: kind), in pipeline order:
        the count, per class and per size, the AP gained by fixing it, and the images."""
        if what == "misses":
            causes = [c for c in MISS_CAUSES if any((r["stage"], r["reason"]) == c for r in self.misses)]
            rows_of = {c: [r for r in self.misses if (r["stage"], r["reason"]) == c] for c in causes}
            names = {c: f"{c[0]}/{c[1]}" for c in causes}
        else:
            causes = [k for k in FP_KINDS if any(r["kind"] == k for r in self.false_positives)]
            rows_of = {k: [r for r in self.false_positives if r["kind"] == k] for k in causes}
            names = {k: f"fp/{k}" for k in causes}
        out = []
        for c in causes:
            rows = rows_of[c]
            fixed = self.fixed.get(names[c], {})
            entry = {"cause": names[c], "count": len(rows)}
            for cls in self.class_names[1:]:
                entry[cls] = sum(r["class"] == cls for r in rows)
            for size in SIZES:
                entry[size] = sum(r["size"] == size for r in rows)
            entry["dAP"] = fixed.get("AP")
            entry["dAP50"] = fixed.get("AP50")
            entry["images"] = sorted({r["image_id"] for r in rows})
            out.append(entry)
        return out

    def format(self, max_images: int = 6) -> str:
        """The two tables as plain text (the command line prints this)."""
        lines = [f"{self.images} images, {self.objects} objects ({self.matched} matched by {self.iou_type}), "
                 f"{self.detections} detections; box AP "
                 f"{self.ap['AP']:.3f}, AP50 {self.ap['AP50']:.3f}"]  # fmt: skip
        for what, title in (("misses", "missed objects"), ("false_positives", "false positives")):
            rows = self.table(what)
            lines.append(f"\n{title}: {sum(r['count'] for r in rows)}")
            if not rows:
                continue
            cols = ["count", *self.class_names[1:], *SIZES]
            # each column as wide as its name (8 letters at most) or its largest count, plus a space
            width = {c: max(len(c[:8]), *(len(str(r[c])) for r in rows)) + 1 for c in cols}
            first = max(len("cause"), *(len(r["cause"]) for r in rows)) + 1
            head = f"{'cause':{first}}" + "".join(f"{c[:8]:>{width[c]}}" for c in cols)
            lines.append(head + f"{'dAP':>8}{'dAP50':>8}  images")
            for r in rows:
                ap = "" if r["dAP"] is None else f"{r['dAP']:8.3f}{r['dAP50']:8.3f}"
                ims = ",".join(str(i) for i in r["images"][:max_images]) + (
                    ",..." if len(r["images"]) > max_images else ""
                )
                counts = "".join(f"{r[c]:{width[c]}d}" for c in cols)
                lines.append(f"{r['cause']:{first}}" + counts + f"{ap:>16}  {ims}")
        return "\n".join(lines)

    def markdown(
        self, what: str = "misses", max_images: int = 4, by: tuple[str, ...] = ("class", "size"), ap50: bool = True
    ) -> str:
        """One table as Markdown (for the book); ``by`` picks the count columns ("class", "size")."""
        rows = self.table(what)
        cols = ["count", *(self.class_names[1:] if "class" in by else []), *(SIZES if "size" in by else [])]
        gains = ["dAP", "dAP50"] if ap50 else ["dAP"]
        head = ["cause", *cols, *(g.replace("d", "Δ", 1) for g in gains), "images"]
        out = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for r in rows:
            ap = ["" if r[g] is None else f"{r[g]:+.3f}" for g in gains]
            ims = ", ".join(str(i) for i in r["images"][:max_images]) + (", …" if len(r["images"]) > max_images else "")
            out.append("| " + " | ".join([r["cause"], *(str(r[c]) for c in cols), *ap, ims]) + " |")
        return "\n".join(out)

    def to_json(self) -> dict:
        return {
            "images": self.images,
            "objects": self.objects,
            "matched": self.matched,
            "iou_type": self.iou_type,
            "detections": self.detections,
            "seconds": round(self.seconds, 2),
            "ap": self.ap,
            "fixed": self.fixed,
            "misses": self.table("misses"),
            "false_positives": self.table("false_positives"),
            "miss_list": self.misses,
            "false_positive_list": self.false_positives,
        }

    def write(self, path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")


# --- over a data set ------------------------------------------------------------------------------
def reach(trace: Trace) -> Tensor:
    """``(D, 4)`` xyxy, original pixels: a box around each detection that holds every pixel its
    pasted mask can set, under either paste rule (``paste.paste_masks``).

    torchvision's paste enlarges the box by (M + 2 * padding) / M and truncates it to whole
    pixels; the sub-pixel paste reaches half a mask cell past a box that differs from the
    reported one by at most half a pixel per unit of scale. The margin here bounds both: a
    quarter of the box (at least (padding + 1) / M), two pixels, and the scale's offset.
    """
    cfg = trace.config
    boxes = trace.boxes_orig.detach().cpu().double()
    relative = max(0.25, (cfg.mask_paste_padding + 1) / (2 * cfg.mask_roi_output_size))
    scale = max(abs(o / i - 1) for o, i in zip(trace.original_size, trace.image_size, strict=True))
    size = (boxes[:, 2:] - boxes[:, :2]).abs().repeat(1, 2)
    sign = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=boxes.dtype)
    return boxes + sign * (relative * size + 2 + scale)


def may_match(trace: Trace) -> list[int]:
    """The detections whose mask may reach IoU 0.5 with an object of their class, and those
    matched by box: the only masks COCOeval's matching at IoU 0.5 (and a mask miss's numbers)
    depend on.

    Mask IoU >= 0.5 with an object needs an intersection of at least half the object's mask
    area, and the intersection lies inside ``reach`` and the bounding box of the object's mask
    (for a crowd region, whose IoU is over the detection's area, any overlap counts). Matching
    is per class, so only objects of the detection's class count.
    """
    if not len(trace):
        return []
    chosen = {d for d in trace.box_matching[1] if d >= 0}
    if trace.gt_rles:
        x, y, w, h = torch.from_numpy(np.asarray(mask_utils.toBbox(trace.gt_rles), dtype=np.float64)).reshape(-1, 4).T
        area = torch.from_numpy(np.asarray(mask_utils.area(trace.gt_rles), dtype=np.float64))
        r = reach(trace)
        wide = (torch.minimum(r[:, None, 2], (x + w)[None]) - torch.maximum(r[:, None, 0], x[None])).clamp(min=0)
        high = (torch.minimum(r[:, None, 3], (y + h)[None]) - torch.maximum(r[:, None, 1], y[None])).clamp(min=0)
        inter = wide * high  # (D, G): at least the masks' intersection
        crowd = torch.tensor(trace.crowd, dtype=torch.bool)[None]
        enough = torch.where(crowd, inter > 0, inter >= IOU_MATCH * area[None] - 1e-6)
        same = trace.shortlist.labels.cpu()[:, None] == trace.target["labels"][None]
        chosen |= set(torch.where((enough & same).any(dim=1))[0].tolist())
    return sorted(chosen)


def give_masks(model, run, traces: list[Trace]) -> None:
    """The masks of every trace's detections that ``may_match`` an object, by one mask-head pass
    over the batch (``segmentation.segment`` on those boxes only; all images given, so that
    RoIAlign infers its scales from the same padded batch as the full run), handed to each trace
    (``Trace.use_masks``); every other detection's mask IoU is below 0.5 with every object of
    its class, so it matches none, with its mask or without (its IoUs are left at 0)."""
    cfg = model.config
    chosen = [may_match(tr) for tr in traces]
    if not any(chosen):
        for tr in traces:
            tr.use_masks({})
        return
    index = [torch.as_tensor(c, dtype=torch.int64) for c in chosen]
    records = model.segment_boxes(
        run.features,
        run.batch,
        [s.boxes[k] for s, k in zip(run.shortlist, index, strict=True)],
        [s.labels[k] for s, k in zip(run.shortlist, index, strict=True)],
        original_sizes=run.batch.original_sizes,
    )
    for tr, c, seg in zip(traces, chosen, records, strict=True):
        rles = coco_eval.encode_masks(seg.masks.detach().cpu(), cfg.mask_threshold)
        tr.use_masks(dict(zip(c, rles, strict=True)))


def _rows(tr: Trace, image_id: int, anns: list[dict], names: list[str], out: dict) -> tuple[list, list, list]:
    """One image's misses and false positives as report rows, and the false positives' fixes
    ``(kind, detection, annotation id to copy or None)``."""
    areas = tr.target["area"].tolist()
    misses = [{"image_id": image_id, "index": m.gt_index, "annotation_id": anns[m.gt_index].get("id"),
               "class": names[m.label], "size": coco_size(areas[m.gt_index]), "stage": m.stage,
               "reason": m.reason, "text": m.sentence()} for m in tr.misses]  # fmt: skip
    fps, fixes = [], []
    for fp in false_positives(tr):
        box = out["boxes"][fp.detection]
        area = areas[fp.gt_index] if fp.gt_index >= 0 else float((box[2:] - box[:2]).prod())
        fps.append({"image_id": image_id, "index": fp.detection, "class": names[fp.label], "size": coco_size(area),
                    "kind": fp.kind, "score": fp.score, "iou": fp.iou})  # fmt: skip
        unmatched = fp.gt_index >= 0 and tr.box_matching[1][fp.gt_index] < 0
        fixes.append((fp.kind, fp.detection, anns[fp.gt_index].get("id") if unmatched else None))
    return misses, fps, fixes


def _box_ap(coco_gt, results: list[dict], ids: list[int]) -> dict[str, float]:
    """Box AP and AP50 (COCOeval, area "all" only)."""
    if not results:
        return {"AP": 0.0, "AP50": 0.0}
    return coco_eval.ap(coco_eval.evaluate(coco_gt, results, "bbox", ids, all_areas=False))


def _fixed(coco_gt, results: list[dict], ids: list[int], misses: list[dict], fixes: list, base: dict) -> dict:
    """Per cause, the box AP and AP50 gained by fixing its errors alone (``Report.fixed``)."""
    fixed = {}
    for stage, reason in MISS_CAUSES:
        gone = {r["annotation_id"] for r in misses if (r["stage"], r["reason"]) == (stage, reason)}
        if gone and stage != "segmentation":  # a mask miss leaves the box AP as it is
            ap = _box_ap(coco_eval.without(coco_gt, gone), results, ids)
            fixed[f"{stage}/{reason}"] = {k: ap[k] - base[k] for k in ap}
    for kind in FP_KINDS:
        todo = [(row, ann) for k, row, ann in fixes if k == kind]
        if not todo:
            continue
        corrected, drop = [dict(r) for r in results], set()
        for row, ann in todo:
            if kind == "classification" and ann is not None:
                corrected[row]["category_id"] = coco_gt.anns[ann]["category_id"]
            elif kind == "localisation" and ann is not None:
                corrected[row]["bbox"] = list(coco_gt.anns[ann]["bbox"])
            else:
                drop.add(row)
        ap = _box_ap(coco_gt, [r for i, r in enumerate(corrected) if i not in drop], ids)
        fixed[f"fp/{kind}"] = {k: ap[k] - base[k] for k in ap}
    return fixed


def explain_dataset(
    model,
    dataset,
    batch_size: int = BATCH_SIZE,
    progress: bool = False,
    fix_ap: bool = True,
    max_images: int | None = None,
    iou_type: str = "segm",
    passes: Sequence | None = None,
) -> Report:
    """Chapter 10. Explain every image of a ``CocoDataset``: misses and false positives, counted.

    One ``model.run`` per batch (``data.runs``), until the shortlist, one ``Trace`` per image;
    only matching, the misses' attribution and the false positives' kinds are computed (no
    lineage). ``iou_type="segm"``: objects are matched by mask, the masks made by one mask-head
    pass over the detections that may match an object (``give_masks``): the same matches and
    misses as every mask would give. ``"bbox"``:
    matched by box, no mask computed. Box AP and AP50 of the results always (one COCOeval);
    with ``fix_ap``, also the box AP gained by fixing each cause (``Report.fixed``: one COCOeval
    per cause present). ``passes``: an earlier ``data.runs`` pass over ``dataset``
    (``until="longlist"`` is enough) whose features are reused (``model.resume``): a sweep of
    the longlist's and later thresholds without running the backbone again.
    """
    start = time.perf_counter()
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    images = explain_images(model, dataset, batch_size, progress, iou_type, max_images, passes)
    return merge_images([record for _, record in images], dataset, n, fix_ap, iou_type, start)


def explain_images(
    model,
    dataset,
    batch_size: int = BATCH_SIZE,
    progress: bool = False,
    iou_type: str = "segm",
    max_images: int | None = None,
    passes: Sequence | None = None,
) -> Iterator[tuple[int, dict]]:
    """The per-image part of ``explain_dataset``: ``(index, record)`` for each image, in order.

    ``record``: ``results`` (its COCO result entries), ``misses`` and ``false_positives`` (its
    ``Report`` rows), ``fixes`` (``(kind, detection row in its results, annotation id or
    None)`` per false positive), ``objects`` (non-crowd) and ``matched``. Plain data: records
    made by several processes can be gathered, and ``merge_images`` of them in the data
    set's order is the ``Report`` of one pass (``minimask.distributed``).
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"explain_dataset(iou_type=...): expected 'segm' or 'bbox', got {iou_type!r}")
    return _explain_images(model, dataset, batch_size, progress, iou_type, max_images, passes)


def _explain_images(model, dataset, batch_size, progress, iou_type, max_images, passes) -> Iterator[tuple[int, dict]]:
    cfg, names = model.config, list(dataset.class_names)
    for batch, targets, run in runs(model, dataset, batch_size, progress, "explain", "shortlist", max_images, passes):
        traces = [Trace(run, j, cfg, target, iou_type) for j, target in enumerate(targets)]
        if iou_type == "segm":
            give_masks(model, run, traces)
        for j, (i, target, tr) in enumerate(zip(batch, targets, traces, strict=True)):
            image_id = int(target["image_id"])
            out = {k: v.cpu() for k, v in run.detections[j].items()}
            results = coco_eval.to_results(out, image_id, dataset.label_to_category_id, cfg.mask_threshold)
            m, f, x = _rows(tr, image_id, dataset.annotations(i), names, out)
            yield i, {"results": results, "misses": m, "false_positives": f, "fixes": x,
                      "objects": len(tr.crowd) - sum(tr.crowd), "matched": len(tr.matches)}  # fmt: skip


def merge_images(
    records: Iterable[dict],
    dataset,
    n: int | None = None,
    fix_ap: bool = True,
    iou_type: str = "segm",
    start: float | None = None,
) -> Report:
    """The ``Report`` of the first ``n`` images of ``dataset`` (all by default) from their
    ``explain_images`` records, in the data set's order: the rows concatenated, each fix's
    detection row moved to its place in all the results, then COCOeval (box AP and AP50, and
    with ``fix_ap`` the AP each fix recovers). ``start``: the ``time.perf_counter()`` the work
    began at (``Report.seconds``)."""
    start = time.perf_counter() if start is None else start
    n = len(dataset) if n is None else n
    misses, fps, fixes, results = [], [], [], []
    n_objects = n_matched = 0
    for record in records:
        first = len(results)
        results += record["results"]
        misses += record["misses"]
        fps += record["false_positives"]
        fixes += [(k, first + d, a) for k, d, a in record["fixes"]]
        n_objects += record["objects"]
        n_matched += record["matched"]
    coco_gt, ids = coco_eval.ground_truth(dataset)
    ap = _box_ap(coco_gt, results, ids[:n])
    fixed = _fixed(coco_gt, results, ids[:n], misses, fixes, ap) if fix_ap else {}
    return Report(misses, fps, ap, fixed, list(dataset.class_names), n, n_objects, len(results),
                  time.perf_counter() - start, iou_type, n_matched)  # fmt: skip


def _key(row: dict, k: str):
    if k == "cause":
        return (row["stage"], row["reason"]) if "stage" in row else row["kind"]
    return row[k]


__all__ = [
    "FP_KINDS",
    "SIZES",
    "FalsePositive",
    "Report",
    "coco_size",
    "explain_dataset",
    "explain_images",
    "false_positives",
    "give_masks",
    "image_report",
    "may_match",
    "merge_images",
    "reach",
]
