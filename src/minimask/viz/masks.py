"""Figures of chapters 7 (segmentation) and 8 (scoring).

Each function takes tensors or a stage record and an optional ``ax`` (or draws its own
figure), returns the Figure and never calls ``show`` or ``savefig``. Conventions as
``minimask.viz``: one colour per class (``class_color``), ground truth black dashed.
Image coordinates: pixel ``p`` is centred on ``p`` (``imshow``'s default), which is the
convention of torchvision's RoIAlign (``aligned=False``) and of its mask paste.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.colors
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from minimask.viz import GT_STYLE, NOT_A_CLASS, OKABE_ITO, _figure_and_axes, _image_array, class_color
from minimask.viz._draw import class_name, draw_box

# The book's column: a figure at most WIDTH inches wide at 100 dpi is shown at its drawn size
# (tools/sitecheck.py fails wider ones); text no smaller than SMALL points.
WIDTH = 6.4
SMALL = 10
REMOVED_GREY = "0.25"  # pixels a higher mask threshold removes
WINDOW_GREY = "0.7"  # torchvision's integer paste window: light, to show on the black of an empty mask

__all__ = [
    "class_channels",
    "mask_cases",
    "grid_failures",
    "mask_target",
    "occluded_masks",
    "overlaps",
    "paste_rules",
    "reliability_diagram",
    "rescoring_ap",
    "score_parts",
    "threshold_frame",
    "threshold_sweep",
]


def _np(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def _clean(ax, title: str | None = None, size: float = SMALL) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=size)


def class_channels(
    crop,
    pooled,
    logits,
    label: int,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Chapter 7. One detection: its image crop, the 14x14 RoIAlign input (mean over channels)
    and the 28x28 mask probabilities of **every** class channel; the detected class's channel,
    the only one used, is framed in its colour.

    ``crop``: ``Tensor[3, h, w]`` the image under the box; ``pooled``: ``Tensor[C, 14, 14]``;
    ``logits``: ``Tensor[K+1, 28, 28]`` (channel 0 belongs to the background class).
    """
    k1 = int(logits.shape[0])
    cols = max(k1, 2)
    fig, grid = plt.subplots(2, cols, figsize=(WIDTH, 2 * WIDTH / cols + 1.0), squeeze=False)
    top, axes = grid[0], grid[1]
    top[0].imshow(_image_array(crop), interpolation="nearest")
    _clean(top[0], "the box")
    top[1].imshow(_np(pooled).mean(axis=0), cmap="magma", interpolation="nearest")
    _clean(top[1], f"RoIAlign {pooled.shape[-1]}×{pooled.shape[-1]}\n(mean of {pooled.shape[0]})")
    for ax in top[2:]:
        fig.delaxes(ax)
    probs = _np(logits.sigmoid() if isinstance(logits, torch.Tensor) else 1 / (1 + np.exp(-_np(logits))))
    for c in range(k1):
        ax = axes[c]
        ax.imshow(probs[c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        chosen = c == label
        name = "background" if c == 0 else class_name(c, class_names)
        _clean(ax, f"{c}: {name}" + ("\n← the label" if chosen else "\n(unused)"), size=SMALL - 1.5)
        for side in ax.spines.values():
            side.set_linewidth(4 if chosen else 0.5)
            side.set_edgecolor(class_color(c) if chosen else "0.6")
    fig.suptitle(
        f"{k1} masks predicted; the label ({class_name(label, class_names)}) picks one",
        fontsize=SMALL + 1,
    )
    fig.tight_layout()
    return fig


def _torchvision_window(box, side: int, padding: int) -> tuple[np.ndarray, np.ndarray]:
    """The enlarged box and the integer corners of torchvision's paste (``expand_boxes`` scales
    the box by (M + 2 * padding) / M about its centre; ``paste_mask_in_image`` casts to int)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    scale = (side + 2 * padding) / side
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2 * scale, (y2 - y1) / 2 * scale
    enlarged = np.array([cx - hw, cy - hh, cx + hw, cy + hh])
    return enlarged, np.trunc(enlarged)


def paste_rules(
    probs,
    box,
    pasted: Mapping[str, object],
    label: int,
    threshold: float = 0.5,
    gt_mask=None,
    padding: int = 1,
    margin: int = 4,
) -> Figure:
    """Chapter 7. One 28x28 mask and the pixels each paste rule makes of it.

    ``probs``: ``Tensor[M, M]``; ``box``: its box (x1, y1, x2, y2) in the pixels pasted into;
    ``pasted``: rule name -> ``Tensor[H, W]`` soft pasted mask ("torchvision" draws its
    enlarged box, dashed, and the integer window it pastes into, (x2 - x1 + 1) x
    (y2 - y1 + 1) pixels, dotted). The mask's outline at ``threshold`` in the class colour;
    ``gt_mask`` (H, W) outlined black dashed.
    """
    colour = class_color(label)
    fig, axes = plt.subplots(1, 1 + len(pasted), figsize=(WIDTH, WIDTH / (1 + len(pasted)) + 1.0))
    x1, y1, x2, y2 = (float(v) for v in box)
    side = int(probs.shape[-1])
    axes[0].imshow(_np(probs), cmap="gray", vmin=0, vmax=1, extent=(x1, x2, y2, y1), interpolation="nearest")
    draw_box(axes[0], box, edgecolor=colour, linewidth=1.5, linestyle="-.")
    for ax in axes:
        ax.set_xlim(np.floor(x1) - margin, np.ceil(x2) + margin)
        ax.set_ylim(np.ceil(y2) + margin, np.floor(y1) - margin)
    _clean(axes[0], f"{side}×{side} cells\non the box")
    for ax, (name, mask) in zip(axes[1:], pasted.items(), strict=True):
        mask = _np(mask)
        ax.imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        draw_box(ax, box, edgecolor=colour, linewidth=1.0, linestyle="-.")  # not the mask's solid outline
        if (mask >= threshold).any():
            ax.contour(mask, levels=[threshold], colors=[colour], linewidths=1.5)
        if gt_mask is not None:
            # a white line under the black dashes: the ground truth shows on the black of the mask
            ax.contour(_np(gt_mask), levels=[0.5], colors="white", linewidths=2.4)
            ax.contour(_np(gt_mask), levels=[0.5], colors="black", linewidths=1.2, linestyles="--")
        if name == "torchvision":
            enlarged, corners = _torchvision_window(box, side, padding)
            draw_box(ax, enlarged, edgecolor=NOT_A_CLASS, linewidth=1.2, linestyle="--")
            a, b, c, d = corners
            draw_box(ax, (a - 0.5, b - 0.5, c + 0.5, d + 0.5), edgecolor=WINDOW_GREY, linewidth=1.4, linestyle=":")
            title = f"torchvision:\n{int(c - a + 1)}×{int(d - b + 1)} px window"
        else:
            title = f"{name}:\neach pixel sampled"
        _clean(ax, title)
    handles = [
        Line2D([], [], color=colour, linewidth=1.0, linestyle="-.", label="box"),
        Line2D([], [], color=NOT_A_CLASS, linestyle="--", label=f"box × {side + 2 * padding}/{side}"),
        Line2D([], [], color=WINDOW_GREY, linewidth=1.4, linestyle=":", label="integer window (+1)"),
        Line2D([], [], color=colour, linewidth=1.5, label=f"mask ≥ {threshold:g}"),
    ]
    if gt_mask is not None:
        handles.append(Line2D([], [], **GT_STYLE, label="ground truth"))
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=SMALL - 1, frameon=False)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    return fig


def threshold_sweep(
    thresholds,
    ious,
    labels,
    ax: plt.Axes | None = None,
    chosen: float = 0.5,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Chapter 7. Each detection's mask IoU with its ground truth against the mask threshold.

    ``ious``: ``(D, T)`` (rows: detections, thin lines in the class colour); the median over
    detections black; ``chosen`` marked.
    """
    fig, ax = _figure_and_axes(ax, (WIDTH, 4.3))
    x, table = _np(thresholds), _np(ious)
    for row, label in zip(table, [int(v) for v in labels], strict=True):
        ax.plot(x, row, color=class_color(label), linewidth=0.6, alpha=0.35)
    median = np.median(table, axis=0) if len(table) else np.zeros_like(x)
    ax.plot(x, median, color="black", linewidth=2.2, marker="o", markersize=3, label="median")
    ax.axvline(chosen, color="0.3", linestyle=":", linewidth=1)
    best = x[int(np.argmax(median))]
    handles = [Line2D([], [], color="black", linewidth=2.2, label=f"median (best at {best:g})")]
    for k in sorted({int(v) for v in labels}):
        handles.append(Line2D([], [], color=class_color(k), linewidth=1, label=class_name(k, class_names)))
    # below the axes: inside, the detections' lines ran through it
    ax.legend(
        handles=handles, fontsize=SMALL - 1, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, ncol=4
    )
    ax.set_xlabel("mask threshold", fontsize=SMALL)
    ax.set_ylabel("mask IoU with its object", fontsize=SMALL)
    ax.set_ylim(0, 1)
    ax.tick_params(labelsize=SMALL)
    ax.set_title(f"{len(table)} detections: IoU against the threshold", fontsize=SMALL + 1)
    return fig


def _grey(picture: np.ndarray, light: float = 0.5) -> np.ndarray:
    """An (H, W, 3) picture as light grey (its luminance, raised by ``light``), so that colours
    drawn over it are the figure's own and never the objects' (the data set paints at random)."""
    luminance = picture @ np.array([0.299, 0.587, 0.114])
    return np.repeat((luminance * (1 - light) + light)[..., None], 3, axis=2)


def _fill(ax, region: np.ndarray, colour: str, alpha: float = 1.0, extent=None) -> None:
    """``region`` (h, w) bool drawn as opaque pixels of ``colour`` (nearest, no blending)."""
    layer = np.zeros((*region.shape, 4))
    layer[region] = (*matplotlib.colors.to_rgb(colour), alpha)
    ax.imshow(layer, interpolation="nearest", extent=extent)


def threshold_frame(image, mask, label: int, gt_mask, threshold: float, window, reference: float = 0.5) -> Figure:
    """Chapter 7. One step of the mask-threshold slider, on one detection: its soft pasted mask
    ``(H, W)`` cut at ``threshold`` against the same mask cut at ``reference``, inside ``window``
    (x0, y0, x1, y1, integer pixels, end exclusive) drawn a column wide, pixel by pixel, on the
    greyed image. Pixels in at both: class colour; added by a lower threshold: ``NOT_A_CLASS``;
    removed by a higher one: dark grey. Ground truth dashed black; the legend counts pixels."""
    x0, y0, x1, y1 = (int(v) for v in window)
    picture = _grey(_image_array(image))[y0:y1, x0:x1]
    soft = _np(mask)[y0:y1, x0:x1]
    at, ref = soft >= threshold, soft >= reference
    both, added, removed = at & ref, at & ~ref, ref & ~at
    width = WIDTH * 0.8
    fig, ax = plt.subplots(figsize=(width, min(width * (y1 - y0) / (x1 - x0), 6.0) + 0.9))
    ax.imshow(picture, interpolation="nearest")
    _fill(ax, both, class_color(label), 0.75)
    _fill(ax, added, NOT_A_CLASS)
    _fill(ax, removed, REMOVED_GREY)
    if gt_mask is not None:
        ax.contour(_np(gt_mask)[y0:y1, x0:x1], levels=[0.5], colors="black", linewidths=1.2, linestyles="--")
    handles = [
        Patch(
            color=class_color(label), alpha=0.75, label=f"in at {reference:g} and {threshold:g}: {int(both.sum()):,} px"
        ),
        Patch(color=NOT_A_CLASS, label=f"added at {threshold:g}: {int(added.sum()):,} px"),
        Patch(color=REMOVED_GREY, label=f"removed at {threshold:g}: {int(removed.sum()):,} px"),
        Line2D([], [], **GT_STYLE, label="ground truth"),
    ]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2, fontsize=SMALL - 1,
              frameon=False)  # fmt: skip
    _clean(ax, f"mask at threshold {threshold:g}: {int(at.sum()):,} px (window {x1 - x0}×{y1 - y0} px)")
    fig.tight_layout()
    return fig


def grid_failures(cases: Sequence[Mapping], threshold: float = 0.5, cells: int = 28) -> Figure:
    """Chapter 7. Large objects against the fixed grid, one column each. A case: ``name``,
    ``label``, ``box`` (x1, y1, x2, y2) in image pixels, ``probs`` (M, M) the mask head's
    probabilities on that box, ``mask`` (H, W) the pasted soft mask, ``gt`` (H, W) the object,
    ``iou`` the pasted mask's IoU with it, optionally ``ceiling`` (the IoU of the object's own
    M x M target pasted back: a perfect head's). Top: the M x M cells at ``threshold`` drawn as blocks
    on the box; bottom: the pasted pixels at ``threshold`` with the cell grid. Ground truth
    black dashed; both rows zoomed on the box and the object."""
    n = len(cases)
    fig, axes = plt.subplots(2, n, figsize=(WIDTH, 5.9), squeeze=False)
    for col, case in enumerate(cases):
        x1, y1, x2, y2 = (float(v) for v in case["box"])
        colour = class_color(int(case["label"]))
        gt = _np(case["gt"])
        per_cell = max(x2 - x1, y2 - y1) / cells
        ys, xs = np.nonzero(gt > 0.5) if (gt > 0.5).any() else ([y1, y2], [x1, x2])
        left, right = min(x1, np.min(xs) - 0.5), max(x2, np.max(xs) + 0.5)  # the box and the object
        top, bottom = min(y1, np.min(ys) - 0.5), max(y2, np.max(ys) + 0.5)
        pad = 0.06 * max(right - left, bottom - top)
        for row, ax in enumerate(axes[:, col]):
            ax.imshow(np.ones((*gt.shape, 3)) * 0.93, interpolation="nearest")
            if row == 0:
                _fill(ax, _np(case["probs"]) >= threshold, colour, extent=(x1, x2, y2, y1))
            else:
                _fill(ax, _np(case["mask"]) >= threshold, colour)
                for t in np.linspace(0, 1, cells + 1):
                    ax.plot([x1 + t * (x2 - x1)] * 2, [y1, y2], color="0.45", linewidth=0.3)
                    ax.plot([x1, x2], [y1 + t * (y2 - y1)] * 2, color="0.45", linewidth=0.3)
            ax.contour(gt, levels=[0.5], colors="black", linewidths=1.0, linestyles="--")
            ax.set_xlim(left - pad, right + pad)
            ax.set_ylim(bottom + pad, top - pad)
            ax.set_aspect("equal")
        _clean(axes[0, col], f"{case['name']}: {cells}×{cells} cells\n{per_cell:.1f} px per cell")
        title = f"pasted, mask IoU {float(case['iou']):.2f}"
        if "ceiling" in case:
            title += f"\n(a perfect head: {float(case['ceiling']):.2f})"
        _clean(axes[1, col], title)
    handles = [Line2D([], [], **GT_STYLE, label="ground truth"),
               Line2D([], [], color="0.45", linewidth=0.6, label="a cell's edges")]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=SMALL - 1, frameon=False)
    fig.suptitle(f"The largest objects: {cells}×{cells} cells at {threshold:g}, and their pasted pixels",
                 fontsize=SMALL + 1)  # fmt: skip
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def occluded_masks(
    cases: Sequence[Mapping], threshold: float = 0.5, class_names: Sequence[str] | None = None
) -> Figure:
    """Chapter 7. Partly hidden objects, one panel each, three to a row. A case: ``crop``
    (3, h, w), ``mask`` (h, w) the detection's soft pasted mask, ``visible`` and ``full``
    (h, w) the object's visible and whole (unoccluded) masks, ``label``, ``share`` (the hidden
    fraction of the whole object), ``iou`` (mask IoU with the visible part) and ``hidden``
    (the fraction of the hidden part inside the mask). Greyed crop; the hidden part filled in
    ``NOT_A_CLASS``; the visible part black dashed; the mask at ``threshold`` outlined in the
    class colour."""
    cols = min(max(len(cases), 1), 3)
    rows = -(-max(len(cases), 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH, rows * (WIDTH / 3 + 0.9) + 0.5), squeeze=False)
    for ax in axes.flat[len(cases) :]:
        fig.delaxes(ax)
    for ax, case in zip(axes.flat, cases, strict=False):
        visible, full = _np(case["visible"]) > 0.5, _np(case["full"]) > 0.5
        ax.imshow(_grey(_image_array(case["crop"])), interpolation="nearest")
        _fill(ax, full & ~visible, NOT_A_CLASS, 0.8)
        ax.contour(visible.astype(float), levels=[0.5], colors="black", linewidths=1.0, linestyles="--")
        mask = _np(case["mask"])
        if (mask >= threshold).any() and (mask < threshold).any():
            ax.contour(mask, levels=[threshold], colors=[class_color(int(case["label"]))], linewidths=2.0)
        name = class_name(int(case["label"]), class_names)
        _clean(
            ax,
            f"{name}, {float(case['share']):.0%} hidden\nIoU (visible) {float(case['iou']):.2f}\n"
            f"hidden part in mask {float(case['hidden']):.0%}",
            size=SMALL - 1,
        )
    labels = sorted({int(c["label"]) for c in cases}) or [1]
    handles = [
        tuple(Line2D([], [], color=class_color(k), linewidth=2) for k in labels),
        Line2D([], [], **GT_STYLE),
        Patch(color=NOT_A_CLASS, alpha=0.8),
    ]
    names = [f"mask ≥ {threshold:g} (class colour)", "visible part (ground truth)", "hidden part"]
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=SMALL - 1, frameon=False,
               handler_map={tuple: HandlerTuple(ndivide=None, pad=0)})  # fmt: skip
    fig.tight_layout(rect=(0, 0.5 / (rows * (WIDTH / 3 + 0.9) + 0.5), 1, 1))
    return fig


def overlaps(image, masks, labels, ax: plt.Axes | None = None, class_names: Sequence[str] | None = None) -> Figure:
    """Chapter 7. Binary masks ``(D, H, W)`` outlined in their class colour on the greyed image;
    pixels claimed by two or more detections filled in ``NOT_A_CLASS`` (no class has it, and the
    grey image has no colour of its own), so the overlap a label map would have to resolve shows."""
    picture = _image_array(image)
    binary = _np(masks) >= 0.5
    height, width = picture.shape[:2]
    side = 4.2
    fig, ax = _figure_and_axes(ax, (side * width / max(height, width) + 1.6, side * height / max(height, width) + 1.2))
    ax.imshow(_grey(picture), interpolation="nearest")
    count = binary.sum(axis=0)
    _fill(ax, count >= 2, NOT_A_CLASS)
    for mask, label in zip(binary, [int(v) for v in labels], strict=True):
        if mask.any() and not mask.all():
            ax.contour(mask.astype(float), levels=[0.5], colors=[class_color(label)], linewidths=1.3)
    handles = [Patch(color=NOT_A_CLASS, label=f"in ≥ 2 masks: {int((count >= 2).sum())} px")]
    for k in sorted({int(v) for v in labels}):
        handles.append(Line2D([], [], color=class_color(k), label=class_name(k, class_names)))
    ax.legend(
        handles=handles, fontsize=SMALL - 1, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=3, frameon=False
    )
    _clean(ax, f"{len(binary)} masks, each predicted and pasted alone")
    fig.tight_layout()
    return fig


def mask_target(image, gt_mask, roi, target, prediction=None, label: int = 1) -> Figure:
    """Chapter 7 (training). One positive RoI: the image with its ground-truth mask (dashed) and
    the RoI (the proposal, class colour), the 28x28 target cut from the mask by the RoI, and,
    if given, the mask head's prediction for the same RoI and class."""
    panels = 3 if prediction is None else 4
    fig, axes = plt.subplots(1, panels, figsize=(WIDTH, WIDTH / panels + 0.8))
    x1, y1, x2, y2 = (float(v) for v in roi)
    axes[0].imshow(_image_array(image), interpolation="nearest")
    axes[0].contour(_np(gt_mask), levels=[0.5], colors="black", linewidths=1.0, linestyles="--")
    draw_box(axes[0], roi, edgecolor=class_color(label), linewidth=2)
    _clean(axes[0], "RoI, object")
    axes[1].imshow(_np(gt_mask), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    draw_box(axes[1], roi, edgecolor=class_color(label), linewidth=2)
    pad = 0.3 * max(x2 - x1, y2 - y1)
    axes[1].set_xlim(x1 - pad, x2 + pad)
    axes[1].set_ylim(y2 + pad, y1 - pad)
    _clean(axes[1], "mask in\nthe RoI")
    side = int(target.shape[-1])
    axes[2].imshow(_np(target), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    _clean(axes[2], f"target\n{side}×{side}")
    if prediction is not None:
        axes[3].imshow(_np(prediction), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        _clean(axes[3], "prediction")
    fig.tight_layout()
    return fig


# --- chapter 8 ---------------------------------------------------------------------------------


def score_parts(parts, ax: plt.Axes | None = None, class_names: Sequence[str] | None = None) -> Figure:
    """Chapter 8. Each detection's softmax row taken apart (a ``scoring.Scores``): the score
    (class colour), the runner-up class, the rest of the other classes and the background
    stack to 1; the proposal's objectness (x) and the mask quality (o) are drawn beside it:
    numbers the score is not made of."""
    score, runner = _np(parts.score), _np(parts.runner_up)
    rest = np.clip(_np(parts.other_classes) - runner, 0, None)
    background = _np(parts.background)
    labels = [int(v) for v in parts.labels]
    rows = np.arange(len(score))
    fig, ax = _figure_and_axes(ax, (WIDTH, 0.3 * len(score) + 2.6))
    ax.barh(rows, score, color=[class_color(k) for k in labels], height=0.7)
    ax.barh(rows, runner, left=score, color="0.45", height=0.7)
    ax.barh(rows, rest, left=score + runner, color="0.75", height=0.7)
    ax.barh(rows, background, left=score + runner + rest, color="white", edgecolor="0.3", hatch="///", height=0.7)
    ax.scatter(_np(parts.objectness), rows, marker="x", color="black", s=28, zorder=3)
    ax.scatter(_np(parts.mask_quality), rows, marker="o", facecolor="none", edgecolor="black", s=28, zorder=3)
    ax.set_yticks(
        rows, [f"{i}: {class_name(k, class_names)}" for i, k in zip(rows, labels, strict=True)], fontsize=SMALL
    )
    ax.invert_yaxis()
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("probability (one softmax row each)", fontsize=SMALL)
    ax.tick_params(axis="x", labelsize=SMALL)
    handles = [
        tuple(Patch(color=class_color(k)) for k in sorted(set(labels)) or [1]),
        Patch(color="0.45"),
        Patch(color="0.75"),
        Patch(facecolor="white", edgecolor="0.3", hatch="///"),
        Line2D([], [], marker="x", color="black", linestyle=""),
        Line2D([], [], marker="o", markerfacecolor="none", color="black", linestyle=""),
    ]
    names = ["score (class colour)", "runner-up class", "other classes", "background", "objectness (unused)",
             "mask quality (unused)"]  # fmt: skip
    fig.legend(handles, names, fontsize=SMALL - 1, loc="lower center", ncol=2, frameon=False,
               handler_map={tuple: HandlerTuple(ndivide=None, pad=0)})  # fmt: skip
    ax.set_title(f"{len(score)} detections: the score is one softmax column", fontsize=SMALL + 1)
    fig.tight_layout(rect=(0, 1.0 / (0.3 * len(score) + 2.6), 1, 1))
    return fig


def reliability_diagram(reliabilities: Mapping[str, object], title: str | None = None) -> Figure:
    """Chapter 8. One panel per ``scoring.Reliability``: the fraction of correct detections in
    each score bin (bars) against the diagonal of perfect calibration, counts in a strip
    below; ECE in the panel title. Bars under the diagonal: over-confident scores."""
    n = len(reliabilities)
    fig, axes = plt.subplots(2, n, figsize=(WIDTH, 4.8), height_ratios=(3, 1), squeeze=False, sharex=True)
    for i, (name, rel) in enumerate(reliabilities.items()):
        top, bottom = axes[0, i], axes[1, i]
        edges = _np(rel.edges)
        width = np.diff(edges)
        accuracy = np.nan_to_num(_np(rel.accuracy))
        confidence = _np(rel.confidence)
        top.bar(edges[:-1], accuracy, width=width, align="edge", color=OKABE_ITO[4], alpha=0.75,
                edgecolor="white", label="fraction correct")  # fmt: skip
        top.plot([0, 1], [0, 1], color="0.3", linestyle="--", linewidth=1, label="perfect calibration")
        top.plot(confidence, _np(rel.accuracy), "o", color="black", markersize=3, label="bin mean score")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_title(f"{name}\nECE {rel.ece:.3f}", fontsize=SMALL)
        if i == 0:
            top.legend(fontsize=SMALL - 1, loc="upper left", frameon=False)
            top.set_ylabel("fraction correct", fontsize=SMALL)
            bottom.set_ylabel("detections", fontsize=SMALL)
        for ax in (top, bottom):
            ax.tick_params(labelsize=SMALL - 1)
        bottom.bar(edges[:-1], _np(rel.count), width=width, align="edge", color="0.6", edgecolor="white")
        bottom.set_yscale("log")
        bottom.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # 2x10^2, 3x10^2 ... collide
        bottom.set_xlabel("score", fontsize=SMALL)
    if title:
        fig.suptitle(title, fontsize=SMALL + 1)
    fig.tight_layout()
    return fig


def mask_cases(cases: Sequence[Mapping], title: str | None = None) -> Figure:
    """Chapter 8. A row of detections, each a dict with ``crop`` (3, h, w), ``mask`` and
    ``gt`` (h, w) on the crop, ``label``, ``score`` and ``iou``: the mask outlined in the class
    colour over the ground truth (dashed), titled with score and mask IoU."""
    fig, axes = plt.subplots(1, len(cases), figsize=(WIDTH, WIDTH / max(len(cases), 3) + 0.9), squeeze=False)
    for ax, case in zip(axes[0], cases, strict=True):
        ax.imshow(_image_array(case["crop"]), interpolation="nearest")
        mask = _np(case["mask"])
        if (mask >= 0.5).any() and (mask < 0.5).any():
            ax.contour(mask, levels=[0.5], colors=[class_color(int(case["label"]))], linewidths=1.8)
        ax.contour(_np(case["gt"]), levels=[0.5], colors="black", linewidths=1.0, linestyles="--")
        _clean(ax, f"score {float(case['score']):.3f}\nmask IoU {float(case['iou']):.2f}")
    if title:
        fig.suptitle(title, fontsize=SMALL + 1)
    fig.tight_layout()
    return fig


def rescoring_ap(
    table: Mapping[str, Mapping[str, float]],
    ax: plt.Axes | None = None,
    title: str = "The same detections, ranked three ways",
) -> Figure:
    """Chapters 7 and 8. Grouped bars of COCO AP: ``table`` maps a group (a ranking of the same
    detections, or a paste rule) to ``{"box AP": ..., "mask AP": ...}`` (any keys, same in all)."""
    fig, ax = _figure_and_axes(ax, (WIDTH, 3.3))
    names = list(table)
    kinds = list(next(iter(table.values())))
    width = 0.8 / len(kinds)
    for j, kind in enumerate(kinds):
        values = [table[n][kind] for n in names]
        x = np.arange(len(names)) + (j - (len(kinds) - 1) / 2) * width
        ax.bar(x, values, width=width * 0.95, color=OKABE_ITO[4 + j], label=kind)
        for xi, v in zip(x, values, strict=True):
            ax.text(xi, v + 0.003, f"{v:.3f}", ha="center", va="bottom", fontsize=SMALL - 1)
    # bars from 0, so that their lengths compare; headroom for the numbers above them
    ax.set_ylim(0.0, max(max(r.values()) for r in table.values()) * 1.15)
    ax.set_xticks(np.arange(len(names)), names, fontsize=SMALL)
    ax.tick_params(axis="y", labelsize=SMALL)
    ax.set_ylabel("COCO AP@[.5:.95]", fontsize=SMALL)
    ax.legend(fontsize=SMALL, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(kinds))
    ax.set_title(title, fontsize=SMALL + 1)
    return fig
