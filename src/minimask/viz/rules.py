"""Figures of chapter 11: what changes when one model decides by Detectron2's rules.

``rule_changes`` draws, on one image, the proposals, detections and mask pixels that one run
has and the other has not; ``rule_effects`` the share of detections and of mask pixels each
rule changes (``mask_pixels_changed``). Both take records (``model.run``) or plain numbers and
return a Figure. ``DETECTRON2_VALUES`` and ``detectron2_cell`` fill the Detectron2 column of
the chapter's table of every field.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from minimask.compat import match_boxes
from minimask.model import Run
from minimask.viz import FIG_WIDTH, OKABE_ITO, _figure_and_axes, _image_array, draw_boxes

ONLY_A, ONLY_B, BOTH = OKABE_ITO[0], OKABE_ITO[4], "0.6"


def _original(boxes: torch.Tensor, run: Run) -> torch.Tensor:
    """Boxes of the resized image in original pixels (for drawing only: the plain ratio)."""
    (h, w), (oh, ow) = run.batch.image_sizes[0], run.batch.original_sizes[0]
    return boxes.detach() * boxes.new_tensor([ow / w, oh / h, ow / w, oh / h])


def _split(a_boxes, a_labels, b_boxes, b_labels, iou):
    """(rows of a only, rows of b only, matched pairs) under ``match_boxes``."""
    ab = match_boxes(a_boxes, a_labels, b_boxes, b_labels, iou)
    matched_b = set(ab[ab >= 0].tolist())
    only_a = torch.where(ab < 0)[0]
    only_b = torch.tensor([j for j in range(len(b_boxes)) if j not in matched_b], dtype=torch.int64)
    pairs = [(i, int(j)) for i, j in enumerate(ab.tolist()) if j >= 0]
    return only_a, only_b, pairs


def _mask_difference(ma, mb, only_a, only_b, pairs, shape):
    """Pixels set only in a's masks and only in b's: matched pairs by XOR, unmatched whole."""
    in_a, in_b = np.zeros(shape, bool), np.zeros(shape, bool)
    for i, j in pairs:
        in_a |= ma[i] & ~mb[j]
        in_b |= mb[j] & ~ma[i]
    for i in only_a.tolist():
        in_a |= ma[i]
    for j in only_b.tolist():
        in_b |= mb[j]
    return in_a, in_b


def _boxes_panel(ax, picture, a_boxes, b_boxes, split, widths, title):
    only_a, only_b, pairs = split
    ax.imshow(picture)
    draw_boxes(ax, a_boxes[[i for i, _ in pairs]], edgecolor=BOTH, linewidth=widths[0])
    draw_boxes(ax, a_boxes[only_a], edgecolor=ONLY_A, linewidth=widths[1])
    draw_boxes(ax, b_boxes[only_b], edgecolor=ONLY_B, linewidth=widths[1])
    ax.set_title(f"{title}\n{len(only_a)} + {len(only_b)} differ")


def rule_changes(
    image,
    run_a: Run,
    run_b: Run,
    names: tuple[str, str] = ("torchvision", "Detectron2"),
    score: float = 0.5,
    top: int = 100,
    iou: float = 0.9,
    mask_threshold: float = 0.5,
) -> Figure:
    """Chapter 11. One image under two rule sets: the decisions that differ, drawn.

    Three panels in original pixels: the ``top`` best proposals of each run (the same box
    in both, IoU > ``iou``: thin grey; only in ``names[0]``'s run: orange; only in
    ``names[1]``'s: blue); the detections with score >= ``score`` (same class and IoU >
    ``iou`` counts as the same); the mask pixels (>= ``mask_threshold``) of the matched
    detections that only one run sets, and the whole masks of unmatched ones.
    """
    picture = _image_array(image)
    height, width = picture.shape[:2]
    fig, axes = plt.subplots(1, 3, figsize=(6.4, 2.1 * height / width + 1.1), squeeze=True)
    pa, pb = _original(run_a.longlist[0].boxes[:top], run_a), _original(run_b.longlist[0].boxes[:top], run_b)
    zeros_a, zeros_b = torch.zeros(len(pa), dtype=torch.int64), torch.zeros(len(pb), dtype=torch.int64)
    _boxes_panel(axes[0], picture, pa, pb, _split(pa, zeros_a, pb, zeros_b, iou), (0.6, 1.5), f"best {top} proposals")
    da, db = run_a.detections[0], run_b.detections[0]
    keep_a, keep_b = da["scores"] >= score, db["scores"] >= score
    ba, bb = da["boxes"][keep_a].detach(), db["boxes"][keep_b].detach()
    split = _split(ba, da["labels"][keep_a], bb, db["labels"][keep_b], iou)
    _boxes_panel(axes[1], picture, ba, bb, split, (1.0, 2.0), f"detections >= {score:g}")
    ma = (da["masks"][keep_a][:, 0].float() >= mask_threshold).cpu().numpy()
    mb = (db["masks"][keep_b][:, 0].float() >= mask_threshold).cpu().numpy()
    in_a, in_b = _mask_difference(ma, mb, split[0], split[1], split[2], (height, width))
    shown = 0.35 + 0.65 * picture.mean(axis=2, keepdims=True) * np.ones((1, 1, 3))
    shown[in_a] = plt.matplotlib.colors.to_rgb(ONLY_A)
    shown[in_b] = plt.matplotlib.colors.to_rgb(ONLY_B)
    axes[2].imshow(shown, interpolation="nearest")
    axes[2].set_title(f"mask pixels\n{int(in_a.sum())} + {int(in_b.sum())} differ")
    for ax in axes:
        ax.set(xlim=(-0.5, width - 0.5), ylim=(height - 0.5, -0.5), xticks=[], yticks=[])
    labels = (f"only {names[0]}", f"only {names[1]}", "both")
    handles = [Rectangle((0, 0), 1, 1, color=c, label=t) for c, t in zip((ONLY_A, ONLY_B, BOTH), labels, strict=True)]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, borderaxespad=0.1)
    fig.tight_layout(rect=(0, 0.08, 1, 1), w_pad=0.4)
    return fig


def mask_pixels_changed(
    a: dict, b: dict, score: float = 0.5, iou: float = 0.9, mask_threshold: float = 0.5
) -> tuple[int, int]:
    """Chapter 11. (mask pixels that differ, mask pixels of both runs) between two eval outputs.

    Detections with score >= ``score`` are matched as ``compat.agreement`` matches them (same
    label, box IoU > ``iou``); a matched pair counts the pixels (>= ``mask_threshold``) that
    only one of its masks sets, out of their union; an unmatched detection all of its pixels,
    out of the same. The ratio is 1 - the pooled mask IoU: a rule that moves no box can still
    change masks, and this measures it.
    """
    ka, kb = a["scores"] >= score, b["scores"] >= score
    ma = a["masks"][ka][:, 0].float() >= mask_threshold
    mb = b["masks"][kb][:, 0].float() >= mask_threshold
    ab = match_boxes(a["boxes"][ka], a["labels"][ka], b["boxes"][kb], b["labels"][kb], iou)
    pairs = [(i, j) for i, j in enumerate(ab.tolist()) if j >= 0]
    changed = sum(int((ma[i] ^ mb[j]).sum()) for i, j in pairs)
    total = sum(int((ma[i] | mb[j]).sum()) for i, j in pairs)
    matched_b = torch.zeros(len(mb), dtype=torch.bool)
    matched_b[ab[ab >= 0]] = True
    alone = int(ma[ab < 0].sum()) + int(mb[~matched_b].sum())
    return changed + alone, total + alone


def rule_effects(
    names: list[str],
    changed: list[float],
    mask_changed: list[float] | None = None,
    ax: plt.Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Chapter 11. What each rule changes, alone: per rule a bar for the share of detections
    changed (``changed``, in [0, 1]) and, with ``mask_changed``, one for the share of mask
    pixels changed (``mask_pixels_changed``), so that a rule that moves no box still shows."""
    series = [("detections", changed, ONLY_B)] + (
        [("mask pixels", mask_changed, ONLY_A)] if mask_changed is not None else []
    )
    for _, values, _ in series:
        if len(values) != len(names):
            raise ValueError(f"{len(names)} rule names for {len(values)} values")
    fig, ax = _figure_and_axes(ax, (6.4, (0.32 if len(series) == 1 else 0.22) * len(names) * len(series) + 1.2))
    height = 0.8 / len(series)
    top = 10.0
    for k, (label, values, colour) in enumerate(series):
        y = np.arange(len(names)) + (k - (len(series) - 1) / 2) * height
        percent = 100 * np.asarray(values, dtype=float)
        ax.barh(y, percent, height=height, color=colour, label=f"{label} changed (%)")
        for yy, v in zip(y, percent, strict=True):
            ax.text(v + 0.5, yy, f"{v:.1f}", va="center", fontsize=9)
        top = max(top, float(percent.max()) * 1.15 if len(percent) else top)
    ax.set_yticks(np.arange(len(names)), names, fontsize=10)
    ax.invert_yaxis()
    ax.set_xlim(0, top)
    ax.set_xlabel("changed (%)")
    if len(series) > 1:
        ax.legend(loc="lower right", frameon=False, fontsize=9)
    ax.set_title(title or "each rule alone")
    fig.tight_layout()
    return fig


# Detectron2's own values for the config keys in config_table's Detectron2 column: the model
# zoo's mask_rcnn_R_50_FPN_3x, i.e. detectron2/config/defaults.py overridden by
# configs/Base-RCNN-FPN.yaml (and the 3x file's RESNETS.DEPTH), written as Detectron2 writes
# them (80 foreground classes, FREEZE_AT counts frozen stages, ...). tests/test_detectron2.py
# reads each back through compat.config_from_detectron2 against Config.detectron2_r50().
DETECTRON2_VALUES: dict[str, Any] = {
    "INPUT.MIN_SIZE_TEST": 800,
    "INPUT.MAX_SIZE_TEST": 1333,
    "INPUT.FORMAT": "BGR",
    "MODEL.PIXEL_MEAN": [103.530, 116.280, 123.675],
    "MODEL.PIXEL_STD": [1.0, 1.0, 1.0],
    "MODEL.RESNETS.DEPTH": 50,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 64,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 256,
    "MODEL.RESNETS.NORM": "FrozenBN",
    "MODEL.RESNETS.STRIDE_IN_1X1": True,
    "MODEL.BACKBONE.FREEZE_AT": 2,
    "MODEL.FPN.OUT_CHANNELS": 256,
    "MODEL.FPN.NORM": "",
    "MODEL.ANCHOR_GENERATOR.SIZES": [[32], [64], [128], [256], [512]],
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.5, 1.0, 2.0]],
    "MODEL.ANCHOR_GENERATOR.OFFSET": 0.0,
    "MODEL.RPN.CONV_DIMS": [-1],
    "MODEL.RPN.BBOX_REG_WEIGHTS": [1.0, 1.0, 1.0, 1.0],
    "MODEL.RPN.IOU_THRESHOLDS": [0.3, 0.7],
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": 256,
    "MODEL.RPN.POSITIVE_FRACTION": 0.5,
    "MODEL.RPN.SMOOTH_L1_BETA": 0.0,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 2000,
    "MODEL.RPN.PRE_NMS_TOPK_TEST": 1000,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 1000,
    "MODEL.RPN.POST_NMS_TOPK_TEST": 1000,
    "MODEL.RPN.NMS_THRESH": 0.7,
    "MODEL.PROPOSAL_GENERATOR.MIN_SIZE": 0,
    "MODEL.ROI_HEADS.NUM_CLASSES": 80,
    "MODEL.ROI_HEADS.IOU_THRESHOLDS": [0.5],
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 512,
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": 0.25,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.05,
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": 0.5,
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 7,
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": 0,
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "ROIAlignV2",
    "MODEL.ROI_BOX_HEAD.FC_DIM": 1024,
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": [10.0, 10.0, 5.0, 5.0],
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": 0.0,
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": 14,
    "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": 0,
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 4,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": 256,
    "TEST.DETECTIONS_PER_IMAGE": 100,
}
# Fields whose Detectron2 column names two keys in one cell.
FIELD_KEYS = {"mask_head_layers": ("MODEL.ROI_MASK_HEAD.NUM_CONV", "MODEL.ROI_MASK_HEAD.CONV_DIM")}
# Fields Detectron2 has no counterpart for: what it does instead.
DETECTRON2_HAS_NONE = {
    "mask_paste_padding": "none (grid_sample over the exact box)",
    "rpn_score_thresh": "none",
    "box_min_size": "none (sides > 0, after rescaling)",
}


def detectron2_keys(row: dict) -> tuple[str, ...]:
    """The Detectron2 config keys of a ``config_table`` row (empty for a rule in code)."""
    if row["name"] in FIELD_KEYS:
        return FIELD_KEYS[row["name"]]
    return (row["detectron2"],) if row["detectron2"] in DETECTRON2_VALUES else ()


def detectron2_cell(row: dict, d2_cfg) -> Any:
    """Chapter 11. What the table shows under "Detectron2" for a ``config_table`` row: the
    value of its config key(s) as Detectron2 writes it; for a rule in code, the switch's value
    in ``Config.detectron2_r50()``; "none" where Detectron2 has no such thing."""
    keys = detectron2_keys(row)
    if keys:
        return " / ".join('""' if v == "" else str(v) for v in (DETECTRON2_VALUES[k] for k in keys))
    return DETECTRON2_HAS_NONE.get(row["name"], getattr(d2_cfg, row["name"]))


def detectron2_comparison(rows: list[dict], picture: int = -1, top: int = 30) -> Figure:
    """Chapter 11. Our run against Detectron2's ``DefaultPredictor`` on a fixture it made.

    ``rows``: ``compat.compare_with_detectron2``. Left: image ``picture`` with Detectron2's
    ``top`` best boxes (solid, orange) and ours (dashed, blue) drawn on them; right: every
    detection's score, ours against Detectron2's, over all images (on the diagonal when equal).
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(FIG_WIDTH, 3.5), gridspec_kw={"width_ratios": [1.15, 1]})
    row = rows[picture]
    left.imshow(row["image"])
    theirs = row["theirs"]["boxes"][:top]
    ours = row["run"].detections[0]["boxes"][:top]
    draw_boxes(left, theirs, edgecolor=OKABE_ITO[0], linewidth=2.2)
    draw_boxes(left, ours, edgecolor=OKABE_ITO[1], linewidth=1.1, linestyle="--")
    left.set_title(f"{row['file_name']}: best {len(theirs)} of {row['detections']}\nsolid Detectron2, dashed minimask")
    left.axis("off")
    pairs = [(r["theirs"]["scores"], r["run"].detections[0]["scores"]) for r in rows]
    n = [min(len(t), len(o)) for t, o in pairs]  # row by row (the counts are equal when all agree)
    a = torch.cat([t[:k] for (t, _), k in zip(pairs, n, strict=True)]).numpy()
    b = torch.cat([o[:k] for (_, o), k in zip(pairs, n, strict=True)]).numpy()
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    right.plot([lo, hi], [lo, hi], color="0.6", linewidth=1, zorder=1)
    right.scatter(a, b, s=10, color=OKABE_ITO[2], zorder=2)
    right.set_xlabel("score, Detectron2")
    right.set_ylabel("score, minimask")
    right.set_title(f"same checkpoint: {len(a)} detections,\n{len(rows)} images")
    right.set_aspect("equal")
    fig.tight_layout()
    return fig


def model_zoo_markdown(rows: list[dict], checked: dict[str, dict]) -> str:
    """Chapter 11. ``compat.model_zoo_table`` as a two-column Markdown table: each config
    (``configs/`` and ``.yaml`` left out) and what ``from_detectron2`` does with it: loads (and
    the fixture that checked it, or the nearest checked one and the fields that differ from
    it), or refused (the first Detectron2 key it cannot run, ``MODEL.`` left out)."""
    lines = ["| Detectron2 config | `from_detectron2` |", "|---|---|"]
    for row in rows:
        name = row["config"].removeprefix("configs/").removesuffix(".yaml")
        if row["loads"]:
            fixture = row["checked"]
            if fixture and not fixture.startswith("~"):
                where = "in CI" if checked.get(fixture, {}).get("in_repository") else "outside the repository"
                verdict = f"loads; checked by fixture {fixture} ({where})"
            elif fixture and row["differs"]:
                fields = ", ".join(f"`{f}`" for f in row["differs"])
                verdict = f"loads; as {fixture.removeprefix('~')} but {fields}"
            elif fixture:
                verdict = f"loads; the same model as {fixture.removeprefix('~')} at inference"
            else:
                verdict = "loads"
        else:
            first = row["reason"].split("; ")[0].removeprefix("MODEL.")
            verdict = f"refused: `{first.split(' (minimask')[0]}`"
        lines.append(f"| `{name}` | {verdict} |")
    return "\n".join(lines)
