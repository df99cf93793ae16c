"""Chapter 10 figures: a detection's lineage, a missed object's ledger, an image's errors.

Each function takes a ``minimask.trace.Trace`` (and the image it explains) and returns a
Figure (the false positives of ``errors`` are ``minimask.explain.false_positives``); boxes are drawn in original-image pixels (the stages' resized boxes are mapped back).
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


def _label(ax, box, text: str, colour: str, width: int, above: bool) -> None:
    """A label on a box's top (above) or bottom edge, aligned to stay inside the image."""
    left = box[0] < width / 2
    ax.text(box[0] if left else box[2], box[1] - 1 if above else box[3] + 1, text, color="white",
            ha="left" if left else "right", va="bottom" if above else "top", clip_on=True,
            bbox={"facecolor": colour, "edgecolor": "none", "pad": 1})  # fmt: skip


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
            _label(ax, boxes[d], f"{class_name(labels[d], class_names)} {scores[d]:.2f}", colour, width, above=True)
        elif d in kinds:
            draw_box(ax, boxes[d], edgecolor=colour, linewidth=1, linestyle=":")
    lost = trace.misses if trace.target is not None else []
    for m in lost:
        box = trace.target["boxes"][m.gt_index].tolist()
        draw_box(ax, box, **GT_STYLE)
        _label(ax, box, f"missed: {m.words}", MISS_COLOR, width, above=False)
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
    ax.set_title(textwrap.fill(title or default, 60))
    return fig
