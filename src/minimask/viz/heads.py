"""Figures of chapters 5 (classification) and 6 (the shortlist).

Each function takes stage records (``Classification``, ``Shortlist``, ``RoiTargets``) or
plain tensors and an optional ``ax``, and returns the Figure (never shows or saves it).
Boxes of these stages are in the pixels of the *resized* image; :func:`resized_image`
gives the picture they belong to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from minimask.viz import (
    DROPPED_STYLE,
    FIG_WIDTH,
    GT_STYLE,
    NOT_A_CLASS,
    OKABE_ITO,
    _figure_and_axes,
    _image_array,
    class_color,
    level_color,
)
from minimask.viz._draw import box_tag, class_name, draw_box, draw_boxes, level_name


def resized_image(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A (3, H, W) image in [0, 1] resized to ``size`` (h, w), bilinear as torchvision's transform."""
    out = F.interpolate(image[None].float(), size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)
    return out[0].clamp(0.0, 1.0)


def _show(ax: plt.Axes, image) -> tuple[int, int]:
    picture = _image_array(image)
    ax.imshow(picture, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return picture.shape[:2]


# --- chapter 5: classification ------------------------------------------------------------------


def level_assignment(
    sides,
    levels,
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
    k_min: int = 2,
    k_max: int = 5,
    featured_sides=None,
    featured_levels=None,
) -> Figure:
    """Chapter 5. Which map each box is pooled from: the FPN formula and the real proposals.

    Top: ``k = floor(canonical_level + log2(side / canonical_scale))`` clamped to
    ``[k_min, k_max]`` against the box side ``sqrt(area)`` (log scale), with the featured
    image's proposals (``featured_sides``, ``featured_levels``: 0 = P2) on it. Bottom: the
    sides of ``sides`` (e.g. every proposal of the val split) stacked by their ``levels``.
    """
    sides = np.asarray(sides, dtype=np.float64)
    levels = np.asarray(levels).astype(int)
    fig, (left, right) = plt.subplots(2, 1, figsize=(FIG_WIDTH, 7.0))
    xs = np.geomspace(4, 1000, 400)
    raw = canonical_level + np.log2(xs / canonical_scale)
    unclamped = f"{canonical_level} + log2(side / {canonical_scale:g})"
    left.plot(xs, raw, color="0.6", linewidth=1, linestyle=":", label=unclamped)
    left.plot(
        xs, np.clip(np.floor(raw + 1e-6), k_min, k_max), color="black", linewidth=1.5, label="level (floor, clamped)"
    )
    if featured_sides is not None:
        fs = np.asarray(featured_sides, dtype=np.float64)
        fl = np.asarray(featured_levels).astype(int)
        for k in sorted(set(fl.tolist())):
            sel = fl == k
            left.scatter(fs[sel], fl[sel] + k_min, s=14, color=level_color(k), zorder=3,
                         label=f"{sel.sum()} on {level_name(k)}", edgecolor="white", linewidth=0.3)  # fmt: skip
    for j in range(k_min + 1, k_max + 1):
        edge = canonical_scale * 2.0 ** (j - canonical_level)
        left.axvline(edge, color="0.8", linewidth=0.8)
        right.axvline(edge, color="0.8", linewidth=0.8)
    left.set_xscale("log")
    left.set_xlim(4, 1000)
    left.set_yticks(range(k_min, k_max + 1), [f"P{k}" for k in range(k_min, k_max + 1)])
    left.set_ylim(k_min - 0.6, k_max + 0.6)
    left.set_xlabel("box side sqrt(area), px of the resized image")
    left.set_title("the level-assignment formula")
    left.legend(loc="lower right", frameon=False)  # large boxes never read P2: that corner is empty
    edges = np.geomspace(max(sides.min(), 1.0) if sides.size else 1.0, max(sides.max(), 2.0) if sides.size else 2.0, 40)
    present = sorted(set(levels.tolist()))
    right.hist(
        [sides[levels == k] for k in present],
        bins=edges,
        stacked=True,
        color=[level_color(k) for k in present],
        label=[f"{level_name(k)}: {(levels == k).sum()} ({(levels == k).mean():.1%})" for k in present],
    )
    right.set_xscale("log")
    right.set_xlabel("box side sqrt(area), px")
    right.set_ylabel("proposals")
    right.set_title(f"{len(sides)} proposals by pooled level")
    right.legend(frameon=False)
    fig.tight_layout()
    return fig


def sample_points(box, scale: float, output_size: int, sampling_ratio: int, aligned: bool):
    """Where RoIAlign samples one box, in feature-map coordinates (cell ``i`` centred at ``i``).

    Follows torchvision ``ops/roi_align.py`` ``_roi_align``: the box scaled by ``scale``,
    shifted by -0.5 if ``aligned``; if not aligned, width and height at least 1 cell; bins of
    size/``output_size``; ``sampling_ratio`` points per bin and axis (adaptive
    ``ceil(size / output_size)`` if <= 0), evenly spaced at (i + 0.5) / n of the bin.
    Returns ``(x_edges, y_edges, points)``: bin edges (output_size + 1,) and points (n, 2) x, y.
    """
    x1, y1, x2, y2 = (float(v) * scale - (0.5 if aligned else 0.0) for v in box)
    w, h = x2 - x1, y2 - y1
    if not aligned:
        w, h = max(w, 1.0), max(h, 1.0)
    gx = sampling_ratio if sampling_ratio > 0 else max(math.ceil(w / output_size), 1)
    gy = sampling_ratio if sampling_ratio > 0 else max(math.ceil(h / output_size), 1)
    bw, bh = w / output_size, h / output_size
    xs = x1 + np.concatenate([p * bw + (np.arange(gx) + 0.5) * bw / gx for p in range(output_size)])
    ys = y1 + np.concatenate([p * bh + (np.arange(gy) + 0.5) * bh / gy for p in range(output_size)])
    points = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    return x1 + bw * np.arange(output_size + 1), y1 + bh * np.arange(output_size + 1), points


def roi_align_grid(
    feature_map,
    box,
    scale: float,
    output_size: int = 7,
    settings: Sequence[tuple[str, int, bool]] = (("torchvision", 2, False), ("Detectron2", 0, True)),
    level_name: str = "P2",
    margin: float = 2.0,
) -> Figure:
    """Chapter 5. RoIAlign's bins and sampling points for one box over the map it reads.

    ``feature_map`` (h, w) (e.g. the channel mean of one FPN map); ``box`` xyxy in image
    pixels; ``scale`` the map's spatial scale (1/stride). One panel per ``settings`` entry
    ``(name, sampling_ratio, aligned)``: the box in feature cells (dashed), its
    ``output_size`` x ``output_size`` bins (thin) and the sampling points (dots).
    """
    fmap = np.asarray(feature_map, dtype=np.float64)
    fig, axes = plt.subplots(1, len(settings), figsize=(FIG_WIDTH, 4.0), squeeze=False)
    bx = [float(v) * scale for v in box]
    lo_x, hi_x = bx[0] - margin - 0.5, bx[2] + margin
    lo_y, hi_y = bx[1] - margin - 0.5, bx[3] + margin
    for ax, (name, ratio, aligned) in zip(axes[0], settings, strict=True):
        ax.imshow(fmap, cmap="Greys", interpolation="nearest", alpha=0.6)
        x_edges, y_edges, points = sample_points(box, scale, output_size, ratio, aligned)
        draw_box(ax, bx, **GT_STYLE)
        for x in x_edges:
            ax.plot([x, x], [y_edges[0], y_edges[-1]], color=OKABE_ITO[4], linewidth=0.7)
        for y in y_edges:
            ax.plot([x_edges[0], x_edges[-1]], [y, y], color=OKABE_ITO[4], linewidth=0.7)
        ax.scatter(points[:, 0], points[:, 1], s=6, color=OKABE_ITO[5], zorder=3)
        per_bin = len(points) // (output_size * output_size)
        ax.set_title(f"{name}\naligned={aligned}, {per_bin} per bin")
        ax.set_xlim(lo_x, hi_x)
        ax.set_ylim(hi_y, lo_y)
        ax.set_xlabel(f"{level_name} cell (x)")
        ax.set_ylabel(f"{level_name} cell (y)")
    handles = [
        Line2D([], [], **GT_STYLE, label="proposal x scale"),
        Line2D([], [], color=OKABE_ITO[4], linewidth=0.7, label=f"{output_size}x{output_size} bins"),
        Line2D([], [], color=OKABE_ITO[5], marker=".", linestyle="none", label="sampling points"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    return fig


def class_distribution(
    logits,
    probs,
    rows: Sequence[int],
    class_names: Sequence[str] | None = None,
    row_titles: Sequence[str] | None = None,
) -> Figure:
    """Chapter 5. The full K+1 output of several proposals: logits beside probabilities.

    ``logits``, ``probs``: (P, K+1), background in column 0; ``rows``: the proposals drawn,
    one figure row each. Background bars are grey, classes in their colour.
    """
    logits = torch.as_tensor(logits).detach().cpu().numpy()
    probs = torch.as_tensor(probs).detach().cpu().numpy()
    n_classes = logits.shape[1]
    names = [class_name(k, class_names) for k in range(n_classes)]
    colours = ["0.55"] + [class_color(k) for k in range(1, n_classes)]
    names = ["background" if n.startswith("__") else n for n in names]  # "__background__"
    fig, axes = plt.subplots(len(rows), 2, figsize=(FIG_WIDTH, 2.0 * len(rows) + 1.0), squeeze=False)
    x = np.arange(n_classes)
    for i, row in enumerate(rows):
        lax, pax = axes[i]
        lax.bar(x, logits[row], color=colours)
        lax.axhline(0, color="black", linewidth=0.6)
        pax.bar(x, probs[row], color=colours)
        pax.set_ylim(0, 1.45)
        pax.set_yticks([0, 0.5, 1])
        for k in x:  # upright numbers collide on narrow bars; those under 0.005 read 0.00
            if probs[row, k] >= 0.005:
                pax.text(k, probs[row, k] + 0.03, f"{probs[row, k]:.2f}", ha="center", va="bottom",
                         rotation=90, fontsize=8)  # fmt: skip
        title = row_titles[i] if row_titles is not None else f"proposal {row}"
        lax.set_title(title, loc="left")
        lax.set_ylabel("logit")
        pax.set_ylabel("probability")
        for ax in (lax, pax):
            last = i == len(rows) - 1
            ax.set_xticks(x, names if last else [""] * n_classes, rotation=30 if last else 0, ha="right")
    fig.tight_layout()
    return fig


def refinement(
    image,
    proposal_box,
    refined: Mapping[int, object],
    probs: Mapping[int, float] | None = None,
    class_names: Sequence[str] | None = None,
    ax: plt.Axes | None = None,
    gt_boxes=None,
    margin: float = 12.0,
) -> Figure:
    """Chapter 5. One proposal (dotted) and its refined box for several classes (solid).

    ``refined``: class label -> refined box (xyxy, the picture's pixels); a thin line joins
    each corner of the proposal to the same corner of the refined box. ``probs``: label ->
    the class probability shown in the legend.
    """
    fig, ax = _figure_and_axes(ax, (4.6, 4.6))
    height, width = _show(ax, image)
    p = [float(v) for v in proposal_box]
    draw_box(ax, p, color="black", linestyle=":", linewidth=1.5)
    handles = [Line2D([], [], color="black", linestyle=":", linewidth=1.5, label="proposal")]
    xs, ys = [p[0], p[2]], [p[1], p[3]]
    for label, box in refined.items():
        b = [float(v) for v in box]
        colour = class_color(int(label))
        draw_box(ax, b, color=colour, linewidth=2)
        for cx, cy in ((0, 1), (2, 1), (0, 3), (2, 3)):
            ax.plot([p[cx], b[cx]], [p[cy], b[cy]], color=colour, linewidth=0.8)
        extra = f", p = {probs[label]:.3f}" if probs is not None else ""
        handles.append(
            Line2D([], [], color=colour, linewidth=2, label=f"refined as {class_name(int(label), class_names)}{extra}")
        )
        xs += [b[0], b[2]]
        ys += [b[1], b[3]]
    if gt_boxes is not None:
        draw_boxes(ax, gt_boxes, **GT_STYLE)
        handles.append(Line2D([], [], **GT_STYLE, label="ground truth"))
    ax.set_xlim(max(min(xs) - margin, -0.5), min(max(xs) + margin, width - 0.5))
    ax.set_ylim(min(max(ys) + margin, height - 0.5), max(min(ys) - margin, -0.5))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=1, frameon=False)
    fig.tight_layout()
    return fig


def roi_sampling(
    image,
    boxes,
    labels,
    positive,
    negative,
    gt_boxes=None,
    iou=None,
    class_names: Sequence[str] | None = None,
    ax: plt.Axes | None = None,
    max_unsampled: int = 50,
    title: str | None = None,
) -> Figure:
    """Chapter 5. Training: the RoIs the box head is taught on, on one image.

    ``boxes`` (R, 4) proposals (+ GT); ``labels`` (R,) class target (0 background);
    ``positive``/``negative`` bool (R,) drawn by the sampler. Sampled positives solid in
    their target's class colour, sampled negatives thin dark grey, not sampled grey dotted
    (the ``max_unsampled`` of highest ``iou`` if given), ground truth black dashed.
    """
    fig, ax = _figure_and_axes(ax, (FIG_WIDTH, 6.4))
    _show(ax, image)
    boxes = torch.as_tensor(boxes).detach().cpu()
    labels = torch.as_tensor(labels).cpu()
    positive = torch.as_tensor(positive).cpu().bool()
    negative = torch.as_tensor(negative).cpu().bool()
    rest = torch.where(~(positive | negative))[0]
    if iou is not None and len(rest):
        rest = rest[torch.argsort(torch.as_tensor(iou).cpu()[rest], descending=True, stable=True)]
    draw_boxes(ax, boxes[rest[:max_unsampled]], **DROPPED_STYLE)
    draw_boxes(ax, boxes[negative], color="0.25", linewidth=0.6)
    for r in torch.where(positive)[0].tolist():
        draw_box(ax, boxes[r], color=class_color(int(labels[r])), linewidth=1.5)
    draw_boxes(ax, gt_boxes, **GT_STYLE)
    present = sorted({int(labels[r]) for r in torch.where(positive)[0].tolist()})
    handles = [
        Line2D([], [], color=class_color(k), linewidth=1.5, label=f"positive: {class_name(k, class_names)}")
        for k in present
    ]
    handles += [
        Line2D([], [], color="0.25", linewidth=0.6, label=f"negative (background): {int(negative.sum())}"),
        Line2D(
            [], [], **DROPPED_STYLE, label=f"not sampled: {len(rest)} (best {min(len(rest), max_unsampled)} by IoU)"
        ),
        Line2D([], [], **GT_STYLE, label="ground truth"),
    ]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2, frameon=False)
    ax.set_title(title or f"{int(positive.sum())} positive and {int(negative.sum())} negative RoIs sampled")
    fig.tight_layout()
    return fig


def confusion_matrix(
    counts, class_names: Sequence[str] | None = None, ax: plt.Axes | None = None, title: str | None = None
) -> Figure:
    """Chapter 5. Proposals counted by true class (rows) and most probable class (columns).

    ``counts`` (K+1, K+1) integers, background in row and column 0 (a proposal that matches
    no object is background). Each cell prints its count; shading is logarithmic, so that the
    few confusions between shapes show beside the large background cell.
    """
    counts = np.asarray(torch.as_tensor(counts).cpu(), dtype=np.int64)
    n = counts.shape[0]
    names = [class_name(k, class_names) for k in range(n)]
    names = ["background" if k == 0 or v.startswith("__") else v for k, v in enumerate(names)]
    fig, ax = _figure_and_axes(ax, (FIG_WIDTH, 5.6))
    shade = np.log10(counts + 1.0)
    ax.imshow(shade, cmap="Greys", vmin=0, vmax=shade.max() * 1.25 if shade.size else 1, aspect="auto")
    for (i, j), v in np.ndenumerate(counts):
        dark = shade[i, j] > 0.55 * shade.max() * 1.25
        ax.text(j, i, str(v), ha="center", va="center", color="white" if dark else "black")
    ax.set_xticks(range(n), names, rotation=30, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("most probable class (argmax over the K+1 columns)")
    ax.set_ylabel("true class of the matched object")
    ax.set_title(title or f"{int(counts.sum())} proposals")
    fig.tight_layout()
    return fig


def iou_histograms(
    series: Mapping[str, object],
    ax: plt.Axes | None = None,
    title: str | None = None,
    xlabel: str = "IoU with the matched object",
) -> Figure:
    """Chapter 5. Overlaid step histograms of IoU values in [0, 1], one per ``series`` entry.

    Each series is normalised to sum to 1 (series of different sizes side by side); the
    legend gives its name, mean and count. Lines are grey, black and reddish purple (never a
    class colour): the series are kinds of box, not classes.
    """
    fig, ax = _figure_and_axes(ax, (FIG_WIDTH, 3.6))
    styles = [("0.55", "--"), ("black", "-"), (NOT_A_CLASS, "-")]
    bins = np.linspace(0, 1, 41)
    for i, (name, values) in enumerate(series.items()):
        v = np.asarray(torch.as_tensor(values).cpu(), dtype=np.float64)
        colour, style = styles[i % len(styles)]
        ax.hist(v, bins=bins, weights=np.full(len(v), 1 / max(len(v), 1)), histtype="step", color=colour,
                linestyle=style, linewidth=1.6, label=f"{name}: mean {v.mean():.3f} ({len(v)})")  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, ax.get_ylim()[1] * (1.25 + 0.15 * len(series)))  # room for the legend above
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"share of boxes per {bins[1]:.3f} bin")
    ax.legend(loc="upper left", frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# --- chapter 6: the shortlist --------------------------------------------------------------------

# Bars of counts are grey, not a class colour: these figures sit beside class-coloured boxes.
STAGE_GREYS = ("0.3", "0.6")  # what enters the stage; what is left after its steps
FATE_LABELS = {"nms": "removed by NMS", "cap": "past the cap", "small_box": "too small"}
FATE_STYLES = {
    "nms": {"color": "0.45", "linestyle": ":", "linewidth": 1.0},
    "cap": {"color": "0.45", "linestyle": "-.", "linewidth": 1.0},
    "small_box": {"color": "0.45", "linestyle": "--", "linewidth": 0.8},
}


def detections_panel(
    image,
    boxes,
    labels,
    scores,
    class_names: Sequence[str] | None = None,
    ax: plt.Axes | None = None,
    dropped: Mapping[str, object] | None = None,
    gt_boxes=None,
    title: str | None = None,
    numbers: bool | int = False,
    tags: bool = True,
    zoom: float | None = None,
    legend_columns: int = 2,
) -> Figure:
    """Chapter 6. Detections (solid, class colour, "class score") and dropped candidates.

    ``dropped``: reason -> boxes (n, 4), or (boxes, how many the step dropped in all), drawn grey
    in the style of ``FATE_STYLES`` with the reason and count in the legend. ``numbers``: tag
    detections with their rank (0 = best) instead of class and score, all of them or (an int)
    only the best ``numbers``, so that tags do not pile up on a crowded picture; ``tags=False``:
    no tags. ``zoom``: show only the
    detections and ground truth plus this margin (pixels).
    """
    fig, ax = _figure_and_axes(ax, (4.6, 4.8))
    size = _show(ax, image)
    handles = []
    for reason, rows in (dropped or {}).items():
        rows, total = rows if isinstance(rows, tuple) else (rows, None)
        rows = torch.as_tensor(rows).reshape(-1, 4)
        style = FATE_STYLES.get(reason, DROPPED_STYLE)
        draw_boxes(ax, rows, **style)
        count = f"{len(rows)}" if total is None or total == len(rows) else f"{total} ({len(rows)} drawn)"
        handles.append(Line2D([], [], **style, label=f"{FATE_LABELS.get(reason, reason)}: {count}"))
    if gt_boxes is not None:
        draw_boxes(ax, gt_boxes, **GT_STYLE)
        handles.append(Line2D([], [], **GT_STYLE, label="ground truth"))
    boxes = torch.as_tensor(boxes).detach().reshape(-1, 4)
    labels = torch.as_tensor(labels).reshape(-1).tolist()
    scores = torch.as_tensor(scores).detach().reshape(-1).tolist()
    tagged = len(labels) if numbers is True or not numbers else int(numbers)
    for rank in reversed(range(len(labels))):  # the best drawn last, on top
        draw_box(ax, boxes[rank], color=class_color(int(labels[rank])), linewidth=2)
    for rank in range(min(tagged, len(labels)) if tags else 0):  # the best tagged first: its tag stays
        colour = class_color(int(labels[rank]))
        text = f"{rank}" if numbers else f"{class_name(int(labels[rank]), class_names)} {scores[rank]:.2f}"
        box_tag(ax, boxes[rank], text, colour)
    for k in sorted(set(int(v) for v in labels)):
        handles.insert(0, Line2D([], [], color=class_color(k), linewidth=2,
                                 label=f"kept {class_name(k, class_names)}: {labels.count(k)}"))  # fmt: skip
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=legend_columns, frameon=False)
    if zoom is not None and len(boxes):
        every = boxes if gt_boxes is None else torch.cat([boxes, torch.as_tensor(gt_boxes).reshape(-1, 4)])
        _square_view(ax, every, zoom, size)
    ax.set_title(title or f"{len(labels)} detections")
    fig.tight_layout()
    return fig


def _square_view(ax: plt.Axes, boxes: torch.Tensor, margin: float, size: tuple[int, int]) -> None:
    """Limit ``ax`` to a square around ``boxes`` (N, 4) plus ``margin`` pixels, inside the (h, w) image."""
    height, width = size
    lo = (boxes[:, :2].min(0).values - margin).tolist()
    hi = (boxes[:, 2:].max(0).values + margin).tolist()
    side = max(hi[0] - lo[0], hi[1] - lo[1])
    cx, cy = (lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2
    x0 = min(max(cx - side / 2, -0.5), max(width - 0.5 - side, -0.5))
    y0 = min(max(cy - side / 2, -0.5), max(height - 0.5 - side, -0.5))
    ax.set_xlim(x0, min(x0 + side, width - 0.5))
    ax.set_ylim(min(y0 + side, height - 0.5), y0)


def funnel(counts: Mapping[str, int], ax: plt.Axes | None = None, title: str | None = None) -> Figure:
    """Chapter 6. How many candidates survive each step (``Filtered.funnel``), as bars."""
    fig, ax = _figure_and_axes(ax, (FIG_WIDTH, 3.0))
    names = list(counts)
    values = [counts[n] for n in names]
    y = np.arange(len(names))[::-1]
    ax.barh(y, values, color=[STAGE_GREYS[0]] + [STAGE_GREYS[1]] * (len(names) - 1))
    for yy, v in zip(y, values, strict=True):
        ax.text(v, yy, f" {v}", va="center")
    ax.set_yticks(y, [n.replace("_", " ") if i == 0 else f"after {n.replace('_', ' ')}" for i, n in enumerate(names)])
    ax.set_xscale("log")
    ax.set_xlim(0.8, max(values) * 4 if values else 10)
    ax.set_xlabel("candidates (log scale)")
    ax.set_title(title or "candidates left after each step")
    fig.tight_layout()
    return fig


def recall_ledger(
    steps: Mapping[str, float], ax: plt.Axes | None = None, total: int | None = None, title: str | None = None
) -> Figure:
    """Chapter 6. The share of ground-truth objects still found after each step (IoU >= 0.5)."""
    fig, ax = _figure_and_axes(ax, (FIG_WIDTH, 3.6))
    names = list(steps)
    values = [float(steps[n]) for n in names]
    x = np.arange(len(names))
    ax.bar(x, values, color=[STAGE_GREYS[0] if i < 2 else STAGE_GREYS[1] for i in range(len(names))])
    for xx, v in zip(x, values, strict=True):
        ax.text(xx, v + 0.01, f"{v:.3f}", ha="center", va="bottom")
    ax.set_xticks(x, [n.replace("_", " ") for n in names], rotation=25, ha="right")
    ax.set_ylim(0.0, 1.1)  # bars from 0 (their lengths compare); the numbers give the drops
    ax.set_ylabel("recall at IoU 0.5")
    suffix = f" ({total} objects)" if total is not None else ""
    ax.set_title(title or f"ground-truth objects still covered after each step{suffix}")
    fig.tight_layout()
    return fig


def nms_frame(
    image,
    shortlist,
    candidate_boxes,
    candidate_scores,
    class_names: Sequence[str] | None = None,
    gt_boxes=None,
    title: str | None = None,
    best: int = 40,
) -> Figure:
    """Chapter 6. One frame of the NMS-threshold slider: a ``Shortlist``'s detections and the
    ``best`` best-scoring candidates its NMS removed (grey dotted), zoomed on the detections.

    ``candidate_boxes``, ``candidate_scores``: every candidate (``flatten_candidates``), rows as
    in ``Shortlist.dropped``. The legend counts every candidate NMS removed, not only those drawn.
    """
    gone = shortlist.dropped["nms"]
    drawn = gone[candidate_scores[gone].argsort(descending=True)][:best]
    # the legend in 2 columns: 3 ran past the frame's edges with six classes kept
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, FIG_WIDTH))
    detections_panel(
        image, shortlist.boxes, shortlist.labels, shortlist.scores, class_names, ax=ax,
        dropped={"nms": (candidate_boxes[drawn], len(gone))}, gt_boxes=gt_boxes, title=title, tags=False,
        zoom=6, legend_columns=2,
    )  # fmt: skip
    return fig
