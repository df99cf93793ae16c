"""Chapter 10 figures: a detection's lineage, a missed object's ledger, one example of each
cause of a miss, an image's errors; and chapter 8's per-class precision-recall curves with
their operating points (``pr_curves``, ``crop_case``).

Each chapter-10 function takes a ``minimask.trace.Trace`` (and the image it explains) and
returns a Figure (the false positives of ``errors`` are ``minimask.explain.false_positives``);
boxes are drawn in original-image pixels (the stages' resized boxes are mapped back).
Conventions of ``minimask.viz``: before classification the FPN level's colour, after it the
class colour; dropped boxes thin grey dotted; ground truth black dashed.
"""

from __future__ import annotations

import textwrap

import matplotlib.colors
import numpy as np
import torch
from matplotlib.figure import Figure
from pycocotools import mask as mask_utils

from minimask.explain import false_positives
from minimask.transform import resize_boxes
from minimask.viz import (
    DROPPED_STYLE,
    FIG_WIDTH,
    GT_STYLE,
    NOT_A_CLASS,
    _figure_and_axes,
    _image_array,
    class_color,
    class_name,
    draw_box,
    level_color,
    plt,
)
from minimask.viz._draw import tag

MISS_COLOR = NOT_A_CLASS  # a missed object's label: never a class colour


def _orig(trace, box) -> list[float]:
    """A resized-image box (4,) -> original-image pixels, as a list."""
    b = torch.as_tensor(box, dtype=torch.float32).reshape(1, 4)
    return resize_boxes(b, trace.image_size, trace.original_size)[0].tolist()


def _zoom(ax, boxes: list[list[float]], size: tuple[int, int], margin: float = 0.35) -> None:
    """Show the region around ``boxes`` (original pixels), square-ish, inside the image."""
    b = np.asarray(boxes, dtype=float).reshape(-1, 4)
    x1, y1 = b[:, 0].min(), b[:, 1].min()
    x2, y2 = b[:, 2].max(), b[:, 3].max()
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin) + 8
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    h, w = size
    ax.set_xlim(max(cx - side / 2, -0.5), min(cx + side / 2, w - 0.5))
    ax.set_ylim(min(cy + side / 2, h - 0.5), max(cy - side / 2, -0.5))


def lineage(image, trace, detection: int, class_names=None, gt_index: int | None = None) -> Figure:
    """Chapter 10. One detection stage by stage: anchor -> proposal -> refined box -> mask.

    Four panels on the same crop: the anchor (its level's colour) and the object (black
    dashed, when ``gt_index`` is given); the proposal decoded from it, the anchor dotted; the
    class's refined box, the proposal dotted and the candidates it suppressed in class NMS grey
    dotted; the mask (>= ``mask_threshold``) and the reported box with its score.
    """
    lin = trace.lineage(detection)
    picture = _image_array(image)
    size = trace.original_size
    fig, axes = plt.subplots(2, 2, figsize=(FIG_WIDTH, FIG_WIDTH * 1.2))
    axes = axes.flat
    anchor = _orig(trace, lin.anchor.box)
    proposal = _orig(trace, lin.proposal_box)
    refined = lin.box_orig.tolist()
    level = level_color(lin.anchor.level)
    colour = class_color(lin.label)
    gt = trace.target["boxes"][gt_index].tolist() if gt_index is not None and trace.target is not None else None
    suppressed = [
        _orig(trace, trace.shortlist.nms.boxes[trace.shortlist.nms.rows == row][0]) for row, _ in lin.suppressed
    ]
    a = lin.anchor
    titles = [
        f"1. anchor P{a.level + 2}, {a.size:g} px, {a.aspect_ratio:g}:1\nobjectness {lin.objectness:.2f}, #{lin.level_rank}",
        f"2. proposal #{lin.longlist_rank}\npooled on P{lin.roi_level + 2}",
        f"3. {class_name(lin.label, class_names)} p={lin.class_probs[lin.label]:.2f}\nrefined, {len(lin.suppressed)} suppressed",
        f"4. mask\nscore {lin.score:.2f}",
    ]
    for i, ax in enumerate(axes):
        ax.imshow(picture, interpolation="nearest")
        if gt is not None:
            draw_box(ax, gt, **GT_STYLE)
        if i == 0:
            draw_box(ax, anchor, edgecolor=level, linewidth=2)
        elif i == 1:
            draw_box(ax, anchor, edgecolor=level, linewidth=1, linestyle=":")
            draw_box(ax, proposal, edgecolor=level, linewidth=2)
        elif i == 2:
            for box in suppressed:
                draw_box(ax, box, **{**DROPPED_STYLE, "color": None}, edgecolor=DROPPED_STYLE["color"])
            draw_box(ax, proposal, edgecolor=level, linewidth=1, linestyle=":")
            draw_box(ax, refined, edgecolor=colour, linewidth=2)
        else:
            mask = lin.mask.numpy() >= trace.config.mask_threshold
            overlay = np.zeros((*mask.shape, 4))
            overlay[mask] = (*matplotlib.colors.to_rgb(colour), 0.5)
            ax.imshow(overlay, interpolation="nearest")
            draw_box(ax, refined, edgecolor=colour, linewidth=2)
        _zoom(ax, [anchor, proposal, refined] + ([gt] if gt else []), size)
        ax.set_title(titles[i], loc="left")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Detection {detection} ({class_name(lin.label, class_names)}): where it came from")
    fig.tight_layout()
    return fig


def _miss_boxes(ax, trace, m) -> list[list[float]]:
    """Draw a miss's representative box (grey dotted) and, where NMS or the mask lost the object,
    the detection or anchor that won (solid); returns the boxes drawn (original pixels)."""
    n, label = m.numbers, m.label
    box = sup = colour = None
    if m.stage == "longlist" and m.row >= 0:
        box = _orig(trace, torch.clamp(trace.objectness.proposals[m.row], min=0))
        if m.reason == "nms":
            sup = _orig(trace, trace.objectness.proposals[n["suppressor"]])
            colour = level_color(int(trace.objectness.anchor_level[n["suppressor"]]))
    elif m.stage in ("classification", "shortlist") and "proposal" in n:
        box = _orig(trace, trace.classification.boxes[n["proposal"], label])
        if m.reason == "nms" and n["suppressor_detection"] >= 0:
            sup, colour = (
                trace.boxes_orig[n["suppressor_detection"]].tolist(),
                class_color(int(trace.shortlist.labels[n["suppressor_detection"]])),
            )
    elif m.stage == "segmentation":
        d = n["detection"]
        mask = mask_utils.decode(trace.det_rles[d]).astype(bool)
        overlay = np.zeros((*mask.shape, 4))
        overlay[mask] = (*matplotlib.colors.to_rgb(class_color(label)), 0.5)
        ax.imshow(overlay, interpolation="nearest")
        sup, colour = trace.boxes_orig[d].tolist(), class_color(label)
    if box is not None:
        draw_box(ax, box, color=DROPPED_STYLE["color"], linestyle=":", linewidth=1.5)
    if sup is not None:
        draw_box(ax, sup, edgecolor=colour, linewidth=2)
    return [b for b in (box, sup) if b is not None]


def _ledger_bars(bx, ledger: dict[str, int]) -> None:
    """``Trace.ledger`` as horizontal bars in the order the steps ran; the first empty step coloured."""
    names = list(ledger)
    counts = [ledger[k] for k in names]
    first_zero = next((i for i, v in enumerate(counts) if v == 0), None)
    colours = ["0.6"] * len(names)
    if first_zero is not None:
        colours[first_zero] = MISS_COLOR
    bx.barh(range(len(names)), counts, color=colours)
    bx.set_yticks(range(len(names)), names)
    bx.invert_yaxis()
    if first_zero is not None:
        tick = bx.get_yticklabels()[first_zero]
        tick.set_color(MISS_COLOR)
        tick.set_fontweight("bold")
    bx.set_xlabel("rows still covering it (IoU >= 0.5)")
    for i, v in enumerate(counts):
        bx.text(v + max(counts) * 0.02, i, str(v), va="center")
    bx.set_xlim(0, max(max(counts), 1) * 1.15)
    bx.spines[["top", "right"]].set_visible(False)


def miss(image, trace, gt_index: int, class_names=None) -> Figure:
    """Chapter 10. A missed object followed through every step, and the decision that lost it.

    Top: the object (black dashed), the representative row of the losing step (grey dotted)
    and, where NMS did it, the suppressor (solid: level colour in the longlist, class colour
    in the shortlist); for a mask miss, the box-matched detection and its mask. Bottom:
    ``Trace.ledger``: how many anchors, proposals and candidates still cover the object after
    each step, in the order the steps ran; the first empty step's bar is coloured.
    """
    m = {x.gt_index: x for x in trace.misses}.get(gt_index)
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(FIG_WIDTH, 8.4), gridspec_kw={"height_ratios": [1, 1.25]})
    ax.imshow(_image_array(image), interpolation="nearest")
    gt = trace.target["boxes"][gt_index].tolist()
    draw_box(ax, gt, **GT_STYLE)
    name = class_name(int(trace.target["labels"][gt_index]), class_names)
    shown = [gt] + (_miss_boxes(ax, trace, m) if m is not None else [])
    ax.set_title(f"object {gt_index} ({name})\n" + (f"{m.stage}: {m.words}" if m is not None else "matched"))
    _zoom(ax, shown, trace.original_size, margin=0.6)
    ax.set_xticks([])
    ax.set_yticks([])
    _ledger_bars(bx, trace.ledger(gt_index))
    if m is not None:
        fig.suptitle(textwrap.fill(m.sentence(), 70))
    fig.tight_layout()
    return fig


LABEL_ROOM = 0.07  # share of the image height a label needs; nearer an edge it goes inside the box


def _label(ax, box, text: str, colour: str, size: tuple[int, int], above: bool) -> None:
    """A label on a box's top (above) or bottom edge, kept inside the image: a label that would
    cross the image's top or bottom edge (and so the title or the caption) is drawn inside the
    box instead."""
    height, width = size
    left = box[0] < width / 2
    room = LABEL_ROOM * height
    if above:
        y, va = (box[1] - 1, "bottom") if box[1] > room else (box[1] + 1, "top")
    else:
        y, va = (box[3] + 1, "top") if box[3] < height - room else (box[3] - 1, "bottom")
    tag(ax, box[0] if left else box[2], y, text, colour, ha="left" if left else "right", va=va, clip_on=True)


def errors(image, trace, class_names=None, ax=None, title: str | None = None) -> Figure:
    """Chapter 10. An image's detections and errors: matched detections solid with their score,
    false positives dotted with their kind, missed objects black dashed with their cause."""
    picture = _image_array(image)
    height, width = picture.shape[:2]
    fig, ax = _figure_and_axes(ax, (5.0 * width / max(height, width) + 0.4, 5.0 * height / max(height, width)))
    ax.imshow(picture, interpolation="nearest")
    boxes = trace.boxes_orig.tolist()
    labels = trace.shortlist.labels.tolist()
    scores = trace.shortlist.scores.tolist()
    kinds = {}
    if trace.target is not None:
        kinds = {fp.detection: fp.kind for fp in false_positives(trace)}
        matched = {mt.detection for mt in trace.matches}
    else:
        matched = set(range(len(boxes)))
    for d in sorted(range(len(boxes)), key=lambda d: d in matched):  # false positives first, below
        colour = class_color(labels[d])
        if d in matched:
            draw_box(ax, boxes[d], edgecolor=colour, linewidth=2)
        elif d in kinds:
            draw_box(ax, boxes[d], edgecolor=colour, linewidth=1, linestyle=":")
    lost = trace.misses if trace.target is not None else []
    for m in lost:
        box = trace.target["boxes"][m.gt_index].tolist()
        draw_box(ax, box, **GT_STYLE)
        _label(ax, box, f"missed: {m.words}", MISS_COLOR, (height, width), False)
    # the misses' labels first (the point of the figure), then the best detections' that fit
    for d in sorted(matched, key=lambda d: -scores[d]):
        name = f"{class_name(labels[d], class_names)} {scores[d]:.2f}"
        _label(ax, boxes[d], name, class_color(labels[d]), (height, width), True)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if trace.target is not None:
        counts = {}
        for k in kinds.values():
            counts[k] = counts.get(k, 0) + 1
        fp_text = ", ".join(f"{v} {k}" for k, v in counts.items()) or "none"
        default = f"{len(matched)} matched, {len(lost)} missed; false positives (dotted): {fp_text}"
    else:
        default = f"{len(boxes)} detections"
    ax.set_title(textwrap.fill(title or default, 60), pad=8)
    return fig


def miss_examples(cases, class_names=None, columns: int = 3) -> Figure:
    """Chapter 10. One missed object per cause: ``cases`` is a list of ``(image, trace, miss)``
    (a ``trace.Miss`` of that trace). Each panel: the object (black dashed), the losing step's
    representative box (grey dotted) and what won, where NMS or the mask lost it (solid), as in
    ``miss``; titled with the stage and the cause's words."""
    rows = max(1, -(-len(cases) // columns))
    side = FIG_WIDTH / columns
    fig, axes = plt.subplots(rows, columns, figsize=(FIG_WIDTH, rows * (side + 0.75)), squeeze=False)
    for ax in axes.flat[len(cases) :]:
        ax.set_axis_off()
    for ax, (image, trace, m) in zip(axes.flat, cases, strict=False):
        ax.imshow(_image_array(image), interpolation="nearest")
        gt = trace.target["boxes"][m.gt_index].tolist()
        draw_box(ax, gt, **GT_STYLE)
        shown = [gt] + _miss_boxes(ax, trace, m)
        _zoom(ax, shown, trace.original_size, margin=0.5)
        name = class_name(m.label, class_names)
        ax.set_title(f"{m.stage}/{m.reason}\n{name}, image {int(trace.target['image_id'])}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(h_pad=0.6, w_pad=0.4)
    return fig


def crop_case(image, box, mask, gt, margin: float = 0.25) -> dict:
    """Chapter 8. A detection cropped with a margin of ``margin`` times its longer side:
    ``{"crop": (3, h, w), "mask": (h, w), "gt": (h, w)}`` from the image (3, H, W), its box
    (4,) xyxy, its pasted mask (H, W) and its object's mask (H, W), for ``viz.masks.mask_cases``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    pad = margin * max(x2 - x1, y2 - y1)
    ys = slice(max(0, int(y1 - pad)), int(y2 + pad) + 1)
    xs = slice(max(0, int(x1 - pad)), int(x2 + pad) + 1)
    return {"crop": image[:, ys, xs], "mask": mask[ys, xs], "gt": gt[ys, xs].float()}


def pr_curves(points, class_names=None, label_of=None) -> Figure:
    """Chapter 8. One panel per class (``scoring.OperatingPoint``s): COCOeval's precision-recall
    curve at IoU 0.5 in the class colour, the target precision dashed, the threshold that reaches
    it with the most recall (filled circle) and the one of the highest F1 (open square), each
    with its score threshold. ``label_of``: category id -> model label (class colour and name);
    default the category id itself."""
    columns = 3
    rows = max(1, -(-len(points) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(FIG_WIDTH, rows * 2.35 + 0.9), squeeze=False,
                             sharex=True, sharey=True)  # fmt: skip
    for ax in axes.flat[len(points) :]:
        ax.set_axis_off()
    for i, (ax, p) in enumerate(zip(axes.flat, points, strict=False)):
        label = label_of[p.category_id] if label_of is not None else p.category_id
        colour = class_color(label)
        reach = p.precision > 0
        ax.plot(p.recall[reach], p.precision[reach], color=colour, linewidth=2)
        ax.axhline(p.target, color="black", linestyle="--", linewidth=0.8)
        if p.at_target >= 0:
            r = p.at_target
            ax.plot(p.recall[r], p.precision[r], "o", color="black", markersize=7)
            ax.annotate(f"{p.threshold('target'):.2f}", (p.recall[r], p.precision[r]), xytext=(4, 4),
                        textcoords="offset points", fontsize=10)  # fmt: skip
        if p.at_f1 >= 0:
            r = p.at_f1
            ax.plot(p.recall[r], p.precision[r], "s", markerfacecolor="white", color="black", markersize=7)
            ax.annotate(f"{p.threshold('f1'):.2f}", (p.recall[r], p.precision[r]), xytext=(4, -12),
                        textcoords="offset points", fontsize=10)  # fmt: skip
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.set_title(class_name(label, class_names), color="black", fontsize=11)
        ax.tick_params(labelsize=10)
        if i % columns == 0:
            ax.set_ylabel("precision", fontsize=11)
        if i >= len(points) - columns:
            ax.set_xlabel("recall", fontsize=11)
            ax.tick_params(labelbottom=True)
    target = points[0].target if points else 0.9
    handles = [
        plt.Line2D([], [], color="black", linestyle="--", linewidth=0.8),
        plt.Line2D([], [], marker="o", color="black", linestyle=""),
        plt.Line2D([], [], marker="s", markerfacecolor="white", color="black", linestyle=""),
    ]
    fig.legend(handles, [f"precision {target:g}", f"score threshold: precision {target:g}", "score threshold: best F1"],
               loc="lower center", ncol=3, frameon=False, fontsize=10, handlelength=1.5, columnspacing=1.0)  # fmt: skip
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
