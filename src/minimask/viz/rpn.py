"""Figures for chapters 2-4: the features, the objectness of every anchor, the longlist.

Every function takes a stage record (``transform.Batch``, ``backbone.Features``,
``objectness.Objectness``, ``targets.RpnTargets``, ``longlist.Longlist``) or plain tensors,
plus the picture to draw on, and returns a ``Figure``; none calls ``show`` or ``savefig``.
Conventions of the book: before classification one colour per FPN level
(``viz.level_color``); kept boxes solid, dropped ones thin grey dotted; ground truth black
dashed. Pictures are ``Tensor[3, h, w]`` in [0, 1] at the size the boxes are in (the
resized image for every record of these chapters).

What these figures count is computed next to the records it reads:
``objectness.anchor_verdicts``, ``longlist.funnel_per_level``, ``longlist.coverage_ledger``
and ``longlist.nms_groups``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from torch import Tensor

from minimask import boxes as box_ops
from minimask.longlist import nms_groups
from minimask.objectness import anchor_verdicts
from minimask.viz import (
    DROPPED_STYLE,
    FIG_WIDTH,
    GT_STYLE,
    NOT_A_CLASS,
    OKABE_ITO,
    _figure_and_axes,
    _image_array,
    level_color,
)
from minimask.viz._draw import LEVEL_NAMES, draw_box, draw_boxes, level_name

SMALL = 10.0  # points: titles and labels of small panels (the book's default is viz.FONT_SIZE)
STEP_LABELS = {
    "input": "all anchors",
    "pre_nms_top_k": "pre-NMS top-k",
    "small_box": "small boxes",
    "score_threshold": "score threshold",
    "nms": "NMS",
    "cap": "post-NMS top-k",
}


def _picture(ax: plt.Axes, picture, grey: bool = False) -> tuple[int, int]:
    """Draw the picture (optionally as a faint grey), limits on its pixels; returns (h, w)."""
    array = _image_array(picture)
    if grey:
        array = np.repeat(array.mean(axis=2, keepdims=True), 3, axis=2) * 0.6 + 0.4
    h, w = array.shape[:2]
    ax.imshow(array, interpolation="nearest", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    return h, w


def _axes_grid(rows: int, cols: int, figsize: tuple[float, float], axes=None):
    if axes is None:
        fig, axes = plt.subplots(rows, cols, figsize=figsize, squeeze=False)
        return fig, axes
    axes = np.asarray(axes, dtype=object).reshape(rows, cols)
    return axes[0, 0].figure, axes


# --- chapter 2: features ---------------------------------------------------------------------------
def unnormalize(tensor: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Chapter 2. A normalised ``Tensor[3, H, W]`` back to [0, 1] colours (for display only)."""
    m = torch.as_tensor(mean, dtype=tensor.dtype)[:, None, None]
    s = torch.as_tensor(std, dtype=tensor.dtype)[:, None, None]
    return (tensor * s + m).clamp(0, 1)


def resize_and_pad(images: Sequence[Tensor], batch, mean, std, axes=None) -> Figure:
    """Chapter 2. Each image as given and as the network gets it, at one pixel scale.

    One row per image: left the original, right its slice of ``batch.tensors`` (resized,
    then zero-padded to the batch's padded size; the padding hatched). All panels span the
    largest of the originals and the padded size, so an enlarged image looks larger and a
    shrunk one smaller, and no image is cut.
    """
    n = len(images)
    hp, wp = batch.padded_size
    hmax = max([hp] + [size[0] for size in batch.original_sizes])
    wmax = max([wp] + [size[1] for size in batch.original_sizes])
    fig, axes = _axes_grid(n, 2, (FIG_WIDTH, 3.1 * n), axes)
    for i, image in enumerate(images):
        (h, w), (oh, ow) = batch.image_sizes[i], batch.original_sizes[i]
        left, right = axes[i]
        left.imshow(_image_array(image), interpolation="nearest", extent=(-0.5, ow - 0.5, oh - 0.5, -0.5))
        left.set_title(f"given: {oh}×{ow}", fontsize=SMALL)
        shown = unnormalize(batch.tensors[i], mean, std)
        right.imshow(_image_array(shown), interpolation="nearest", extent=(-0.5, wp - 0.5, hp - 0.5, -0.5))
        pad_style = {"facecolor": "0.85", "edgecolor": "0.5", "hatch": "///", "linewidth": 0}
        if h < hp:
            right.add_patch(Rectangle((-0.5, h - 0.5), wp, hp - h, **pad_style))
        if w < wp:
            right.add_patch(Rectangle((w - 0.5, -0.5), wp - w, hp, **pad_style))
        scale = batch.scale_factors[i]
        right.set_title(f"network: {h}×{w} (×{scale:.3g}), padded {hp}×{wp}", fontsize=SMALL)
        for ax in (left, right):
            ax.set_xlim(-0.5, wmax - 0.5)
            ax.set_ylim(hmax - 0.5, -0.5)
            ax.tick_params(labelsize=SMALL)
    fig.tight_layout()
    return fig


def level_energy(features, picture, image_size: tuple[int, int], index: int = 0, axes=None) -> Figure:
    """Chapter 2. What each pyramid level responds to: its channel energy beside the image.

    Energy of a cell = root mean square over the map's channels, ``sqrt(mean_c x_c^2)``,
    drawn over the cells that cover the (unpadded) resized image, each panel scaled to its
    own maximum. ``features`` is a ``backbone.Features``; ``picture`` the resized image.
    """
    names = features.names
    cols = 3
    rows = math.ceil((len(names) + 1) / cols)
    fig, axes = _axes_grid(rows, cols, (FIG_WIDTH, 2.45 * rows), axes)
    flat = axes.reshape(-1)
    h, w = image_size
    _picture(flat[0], picture)
    flat[0].set_title(f"resized image {h}×{w}", fontsize=SMALL)
    for level, name in enumerate(names):
        ax = flat[level + 1]
        fmap = features.maps[name][index].detach().float()
        energy = fmap.pow(2).mean(0).sqrt()
        sy, sx = features.strides[name]
        rows_in, cols_in = math.ceil(h / sy), math.ceil(w / sx)
        energy = energy[:rows_in, :cols_in]
        ax.imshow(energy.numpy(), cmap="magma", interpolation="nearest",
                  extent=(-0.5, cols_in * sx - 0.5, rows_in * sy - 0.5, -0.5))  # fmt: skip
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
        mh, mw = fmap.shape[-2:]
        ax.set_title(f'{level_name(level)} ("{name}"): stride {sx}, {mh}×{mw}', fontsize=SMALL,
                     color=level_color(level))  # fmt: skip
    for ax in flat[len(names) + 1 :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def level_sizes(object_sides, anchor_sizes: Sequence[Sequence[float]], ax: plt.Axes | None = None) -> Figure:
    """Chapter 2. Object sizes (sqrt of box area, network pixels) against the levels' anchors.

    Each level serves the sizes nearest (in log scale) to its anchor size: the band from
    the geometric mean with the size below to the one with the size above. Bars are
    coloured by the band they fall in; the legend counts the objects of each level.
    """
    sides = np.asarray(object_sides, dtype=np.float64)
    sizes = [float(s[0]) for s in anchor_sizes]
    edges = [0.0] + [math.sqrt(a * b) for a, b in zip(sizes, sizes[1:], strict=False)] + [math.inf]
    fig, ax = _figure_and_axes(ax, (FIG_WIDTH, 3.8))
    top = max(float(sides.max()) if sides.size else 1.0, sizes[-1]) * 1.15
    bins = np.geomspace(max(1.0, min(sizes) / 2), top, 40)
    for level, size in enumerate(sizes):
        lo, hi = edges[level], min(edges[level + 1], top)
        inside = sides[(sides >= edges[level]) & (sides < edges[level + 1])]
        ax.axvspan(max(lo, bins[0]), hi, color=level_color(level), alpha=0.12)
        ax.hist(inside, bins=bins, color=level_color(level),
                label=f"{level_name(level)} (anchor {size:g} px): {len(inside)}")  # fmt: skip
        ax.axvline(size, color=level_color(level), linestyle="--", linewidth=1.0)
    ax.set_xscale("log")
    ax.set_xlim(bins[0], top)
    ax.set_xlabel("object size: sqrt(box area), pixels of the resized image")
    ax.set_ylabel("objects")
    # below the axes: the tall bars of the small levels fill the top left
    ax.legend(fontsize=SMALL, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
    fig.tight_layout()
    return fig


# --- chapter 3: objectness -------------------------------------------------------------------------
def _cell_centre_row(obj, level: int, y: int, x: int) -> int:
    gh, gw = obj.grid_sizes[level]
    start = obj.level_rows(level).start
    return start + (y * gw + x) * obj.anchors_per_location


def anchor_grid(obj, picture, axes=None) -> Figure:
    """Chapter 3. The anchors of every level: cell centres as dots, one cell's anchors drawn.

    One panel per level: every cell centre on the image (a dot in the level's colour) and
    the ``A_cell`` anchors of the cell nearest the image centre, solid; a last panel counts
    the anchors per level. ``obj`` is an ``objectness.Objectness``.
    """
    levels = len(obj.grid_sizes)
    fig, axes = _axes_grid(2, 3, (FIG_WIDTH, 4.9), axes)
    flat = axes.reshape(-1)
    h, w = obj.image_size
    for level in range(levels):
        ax = flat[level]
        _picture(ax, picture, grey=True)
        sy, sx = obj.strides[level]
        gh, gw = obj.grid_sizes[level]
        ys, xs = np.meshgrid(np.arange(gh) * sy, np.arange(gw) * sx, indexing="ij")
        inside = (ys < h) & (xs < w)
        ax.plot(xs[inside], ys[inside], ".", color=level_color(level), markersize=1.5 if sx < 8 else 3)
        y, x = min(round(h / 2 / sy), gh - 1), min(round(w / 2 / sx), gw - 1)
        row = _cell_centre_row(obj, level, y, x)
        for a in range(obj.anchors_per_location):
            draw_box(ax, obj.anchors[row + a].tolist(), edgecolor=level_color(level), linewidth=1.6)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        n = obj.num_per_level[level]
        ax.set_title(f"{level_name(level)}: stride {sx}\n{gh}×{gw}×{obj.anchors_per_location} = {n:,}",
                     fontsize=SMALL, color=level_color(level))  # fmt: skip
    bar = flat[levels] if levels < len(flat) else None
    if bar is not None:
        counts = obj.num_per_level
        bar.bar(range(levels), counts, color=[level_color(lv) for lv in range(levels)])
        bar.set_xticks(range(levels), [level_name(lv) for lv in range(levels)])
        bar.set_yscale("log")
        bar.set_title(f"{sum(counts):,} anchors", fontsize=SMALL)
        bar.tick_params(labelsize=SMALL)
        for ax in flat[levels + 1 :]:
            ax.axis("off")
    fig.tight_layout()
    return fig


def objectness_maps(obj, picture, gt_boxes=None, axes=None) -> Figure:
    """Chapter 3. P(object) of every anchor, one heat map per (level, aspect ratio).

    Rows are levels, columns the cell anchors (aspect ratios); each cell of a map is drawn
    as the square of image pixels around its anchors' centre, over a faint copy of the
    picture, with the ground truth black dashed. Colour: sigmoid(logit) from 0 to 1.
    """
    levels, a_cell = len(obj.grid_sizes), obj.anchors_per_location
    fig, axes = _axes_grid(levels, a_cell, (FIG_WIDTH, 2.05 * levels + 0.7), axes)
    h, w = obj.image_size
    image = None
    for level in range(levels):
        maps = torch.sigmoid(obj.level_logits(level).detach().float())
        sy, sx = obj.strides[level]
        gh, gw = obj.grid_sizes[level]
        first = obj.level_rows(level).start
        for a in range(a_cell):
            ax = axes[level, a]
            _picture(ax, picture, grey=True)
            image = ax.imshow(maps[a].numpy(), cmap="viridis", vmin=0, vmax=1, alpha=0.75, interpolation="nearest",
                              extent=(-sx / 2 - 0.5, gw * sx - sx / 2 - 0.5, gh * sy - sy / 2 - 0.5, -sy / 2 - 0.5))  # fmt: skip
            draw_boxes(ax, gt_boxes, **GT_STYLE)
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            x1, y1, x2, y2 = obj.anchors[first + a].tolist()
            ax.set_title(f"{level_name(level)}, anchor {x2 - x1:g}×{y2 - y1:g} (w×h)", fontsize=SMALL,
                         color=level_color(level))  # fmt: skip
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    cax = fig.add_axes((0.25, 0.028, 0.5, 0.011))
    fig.colorbar(image, cax=cax, orientation="horizontal")
    cax.tick_params(labelsize=SMALL)
    cax.set_title("P(object) = sigmoid(logit)", fontsize=SMALL, pad=2)
    return fig


def anchors_to_boxes(obj, rows, picture, gt_boxes=None, ax: plt.Axes | None = None, title: str | None = None) -> Figure:
    """Chapter 3. Anchors (dotted) joined to the boxes their deltas decode to (solid).

    ``rows`` are anchor rows of ``obj``; each pair is drawn in its level's colour with a
    line from the anchor's centre to the box's centre and the objectness beside the box.
    """
    rows = torch.as_tensor(rows, dtype=torch.int64).reshape(-1)
    h, w = obj.image_size
    fig, ax = _figure_and_axes(ax, (5.2, 5.2 * h / w + 0.6))
    _picture(ax, picture, grey=True)
    draw_boxes(ax, gt_boxes, **GT_STYLE)
    scores = torch.sigmoid(obj.logits.detach())
    levels_seen = set()
    for row in rows.tolist():
        level = int(obj.anchor_level[row])
        levels_seen.add(level)
        colour = level_color(level)
        anchor, box = obj.anchors[row].tolist(), obj.proposals[row].tolist()
        draw_box(ax, anchor, edgecolor=colour, linestyle=":", linewidth=1.3)
        draw_box(ax, box, edgecolor=colour, linewidth=2)
        ca = ((anchor[0] + anchor[2]) / 2, (anchor[1] + anchor[3]) / 2)
        cb = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        ax.plot([ca[0], cb[0]], [ca[1], cb[1]], color=colour, linewidth=1.0)
        ax.plot(*ca, "o", color=colour, markersize=2.5)
        ax.text(box[0], box[1] - 1, f"{float(scores[row]):.2f}", fontsize=SMALL, color="white", va="bottom",
                bbox={"facecolor": colour, "edgecolor": "none", "pad": 1})  # fmt: skip
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    handles = [Line2D([], [], color="0.3", linestyle=":", label="anchor"),
               Line2D([], [], color="0.3", linewidth=2, label="decoded box"),
               Line2D([], [], **GT_STYLE, label="ground truth")]  # fmt: skip
    handles += [Patch(color=level_color(lv), label=level_name(lv)) for lv in sorted(levels_seen)]
    ax.legend(handles=handles, fontsize=SMALL, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=3, frameon=False)
    ax.set_title(title or f"{len(rows)} anchors and their decoded boxes", fontsize=SMALL, pad=12)
    fig.tight_layout()
    return fig


# The verdicts of ``objectness.anchor_verdicts``: no two alike for colour-blind readers (green,
# orange, sky blue, grey, black); the level colours of the chapter are not needed here (y is the level).
VERDICT_COLORS = {
    "positive": OKABE_ITO[2],
    "best anchor": OKABE_ITO[0],
    "other object": OKABE_ITO[1],
    "ignored": "0.6",
    "negative": "black",
}


def verdict_labels(fg: float, bg: float) -> dict[str, str]:
    """The legend's words for each verdict, with the foreground and background thresholds."""
    return {
        "positive": f"IoU ≥ {fg:g}",
        "best anchor": "best anchor",
        "other object": "other object",
        "ignored": "ignored",
        "negative": f"IoU < {bg:g}",
    }


def anchor_targets(rpn, gt: int, picture, anchor_level=None, axes=None, min_iou: float = 0.05) -> Figure:
    """Chapter 3. Which anchors object ``gt`` makes positive, negative or ignored, and which are drawn.

    Left: the image with object ``gt`` (black dashed), its positive anchors solid (green; orange
    for a "best anchor"), its ignored anchors grey dotted. Right: every anchor overlapping the
    object at IoU >= ``min_iou``: IoU on x, level on y (jittered), colour = verdict, filled =
    drawn by the sampler into the loss, hollow = not drawn; dashed: the thresholds the match
    used (``rpn.match.bg``, ``rpn.match.fg``).
    """
    iou, names = anchor_verdicts(rpn, gt)
    fg, bg = rpn.match.fg, rpn.match.bg
    labels = verdict_labels(fg, bg)
    drawn = (rpn.sample.positive_mask | rpn.sample.negative_mask).tolist()
    fig, axes = _axes_grid(1, 2, (FIG_WIDTH, 3.9), axes)
    left, right = axes[0]
    _picture(left, picture, grey=True)  # limits on the picture: the anchors beyond it are cut
    near = torch.where(iou >= min_iou)[0].tolist()
    for row in sorted(near, key=lambda r: float(iou[r])):
        verdict = names[row]
        if verdict == "ignored":
            draw_box(left, rpn.anchors[row], **DROPPED_STYLE)
        elif verdict in ("positive", "best anchor"):
            draw_box(left, rpn.anchors[row], edgecolor=VERDICT_COLORS[verdict], linewidth=2.2 if drawn[row] else 1.2)
    draw_boxes(left, rpn.gt_boxes[gt : gt + 1], **GT_STYLE)
    counts = {k: sum(1 for r in near if names[r] == k) for k in VERDICT_COLORS}
    positives = counts["positive"] + counts["best anchor"]
    left.set_title(f"object {gt}: {positives} positive,\n{counts['ignored']} ignored anchors", fontsize=SMALL)
    levels = rpn.anchors.new_zeros(len(iou)) if anchor_level is None else torch.as_tensor(anchor_level)
    jitter = np.random.default_rng(0).uniform(-0.25, 0.25, len(near))
    for verdict, colour in VERDICT_COLORS.items():
        rows = [r for r in near if names[r] == verdict]
        if not rows:
            continue
        x = iou[rows].numpy()
        y = levels[rows].float().numpy() + jitter[[near.index(r) for r in rows]]
        filled = np.array([drawn[r] for r in rows])
        right.scatter(x[filled], y[filled], s=16, color=colour, label=f"{labels[verdict]}: {len(rows)}")
        right.scatter(x[~filled], y[~filled], s=16, facecolors="none", edgecolors=colour, linewidths=0.8)
    for t in (bg, fg):
        right.axvline(t, color="black", linestyle="--", linewidth=0.9)
    right.set_xlim(0, 1)
    right.set_yticks(range(int(levels.max()) + 1), [level_name(lv) for lv in range(int(levels.max()) + 1)])
    right.invert_yaxis()
    right.set_xlabel(f"IoU with object {gt}", fontsize=SMALL)
    right.tick_params(labelsize=SMALL)
    n_drawn = sum(1 for r in near if drawn[r])
    right.set_title(f"{len(near)} anchors at IoU ≥ {min_iou:g}\n(filled: {n_drawn} drawn)", fontsize=SMALL)
    right.legend(
        fontsize=9,
        frameon=False,
        loc="upper center",
        bbox_to_anchor=(0.45, -0.2),
        ncol=2,
        handletextpad=0.1,
        columnspacing=0.6,
    )
    fig.tight_layout()
    return fig


def best_anchor_levels(sides, levels, anchor_sizes: Sequence[Sequence[float]], ax: plt.Axes | None = None) -> Figure:
    """Chapter 3. Which level finds each object: its side against the level of its best anchor.

    ``sides`` (G,) object sides in pixels (square root of the box area); ``levels`` (G,) the level
    of each object's best covering anchor (``objectness.best_covering_anchors``), -1 where no
    decoded anchor box covers it. One row per level (plus "none"), each labelled with its count;
    a black bar marks the level's anchor size.
    """
    sides = torch.as_tensor(sides, dtype=torch.float64)
    levels = torch.as_tensor(levels, dtype=torch.int64)
    fig, ax = _figure_and_axes(ax, (FIG_WIDTH, 3.4))
    jitter = np.random.default_rng(0).uniform(-0.28, 0.28, len(sides))
    names = []
    for lv in range(-1, len(anchor_sizes)):
        m = (levels == lv).numpy()
        colour = "0.4" if lv < 0 else level_color(lv)
        ax.scatter(sides.numpy()[m], lv + jitter[m], s=7, color=colour, alpha=0.7, linewidths=0)
        if lv >= 0:
            size = float(anchor_sizes[lv][0])
            ax.plot([size, size], [lv - 0.4, lv + 0.4], color="black", linewidth=2)
            names.append(f"{level_name(lv)} ({size:g} px): {int(m.sum())}")
        else:
            names.append(f"none: {int(m.sum())}")
    ax.set_xscale("log")
    ax.set_yticks(range(-1, len(anchor_sizes)), names, fontsize=SMALL)
    ax.invert_yaxis()
    ax.set_xlabel("object side, px (√ box area, resized image; log scale)", fontsize=SMALL)
    ax.tick_params(axis="x", labelsize=SMALL)
    ax.set_title(f"level of the best anchor of each of {len(sides)} objects (black bar: anchor size)", fontsize=SMALL)
    fig.tight_layout()
    return fig


def distractor_objectness(picture, gt_boxes, distractors, covering, scores, val_scores: dict, axes=None) -> Figure:
    """Chapter 3. Objectness of things of no class. Left: the picture with the objects (black
    dashed), the distractors (``NOT_A_CLASS``, dash-dot, numbered from 1) and, for each, the
    decoded box of its best covering anchor (solid; ``covering`` (D, 4), ``scores`` (D,) its
    P(object), NaN where none covers it), the scores listed in the title. Right: histograms of
    ``val_scores``, a dict name -> best P(object) per thing over a split, 0 where none.
    """
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(FIG_WIDTH, 3.8), gridspec_kw={"width_ratios": [1.4, 1]})
        axes = np.asarray(axes).reshape(1, 2)
    else:
        fig, axes = _axes_grid(1, 2, (FIG_WIDTH, 3.8), axes)
    left, right = axes[0]
    _picture(left, picture, grey=True)
    draw_boxes(left, gt_boxes, **GT_STYLE)
    distractor_style = {"color": NOT_A_CLASS, "linestyle": "-.", "linewidth": 1.4}
    distractors = torch.as_tensor(distractors).reshape(-1, 4)
    listed = []
    for k, (box, cover, p) in enumerate(
        zip(
            distractors.tolist(),
            torch.as_tensor(covering).reshape(-1, 4).tolist(),
            torch.as_tensor(scores).tolist(),
            strict=True,
        )  # fmt: skip
    ):
        draw_box(left, box, **distractor_style)
        left.text(box[2] + 1, box[3] + 1, str(k + 1), color=NOT_A_CLASS, fontsize=SMALL, fontweight="bold",
                  va="top", ha="left")  # fmt: skip
        listed.append(f"{k + 1}: " + ("none" if math.isnan(p) else f"{p:.2f}"))
        if not math.isnan(p):
            draw_box(left, cover, edgecolor=OKABE_ITO[4], linewidth=1.6)
    left.set_title("P(object) of distractor " + ", ".join(listed), fontsize=9)
    handles = [Line2D([], [], **GT_STYLE, label="object"), Line2D([], [], **distractor_style, label="distractor"),
               Line2D([], [], color=OKABE_ITO[4], linewidth=1.6, label="its best box")]  # fmt: skip
    left.legend(handles=handles, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=3, frameon=False,
                handlelength=1.5, columnspacing=0.8)  # fmt: skip
    bins = np.linspace(0, 1, 21)
    colours = ("black", NOT_A_CLASS, "0.5")
    for (name, values), colour in zip(val_scores.items(), colours, strict=False):
        v = torch.as_tensor(values, dtype=torch.float64).numpy()
        high = int((v >= 0.5).sum())
        right.hist(v, bins=bins, histtype="step", linewidth=1.8, color=colour, weights=np.full(len(v), 1 / max(len(v), 1)),
                   label=f"{name}: {high} of {len(v)} ≥ 0.5")  # fmt: skip
    right.axvline(0.5, color="0.5", linestyle="--", linewidth=0.9)
    right.set_xlabel("best P(object) covering it", fontsize=SMALL)
    right.set_ylabel("share", fontsize=SMALL)
    right.tick_params(labelsize=SMALL)
    right.legend(fontsize=9, frameon=False, loc="upper center", bbox_to_anchor=(0.45, -0.2))
    right.set_title("over the val split", fontsize=SMALL)
    fig.tight_layout()
    return fig


def crowd_targets(rpn, picture, axes=None) -> Figure:
    """Chapter 3. The RPN's training labels on a whole (crowd) image. Left: every positive anchor
    (green: IoU >= fg; orange: by the best-anchor rule; thick: drawn by the sampler) over the
    objects (thin black dashed). Right: the counts of ``rpn.counts()`` as bars (log scale),
    and in the title the objects left with no positive anchor.
    """
    counts = rpn.counts()
    m = rpn.match
    fig, axes = _axes_grid(1, 2, (FIG_WIDTH, 3.5), axes)
    left, right = axes[0]
    _picture(left, picture, grey=True)
    draw_boxes(left, rpn.gt_boxes, color="black", linestyle="--", linewidth=0.6)
    drawn = rpn.sample.positive_mask
    for row in torch.where(m.label == 1)[0].tolist():
        colour = VERDICT_COLORS["best anchor" if bool(m.low_quality[row]) else "positive"]
        draw_box(left, rpn.anchors[row], edgecolor=colour, linewidth=1.6 if bool(drawn[row]) else 0.7)
    no_positive = len(rpn.gt_boxes) - int(torch.unique(m.gt_index[m.label == 1]).numel())
    left.set_title(f"{len(rpn.gt_boxes)} objects, {no_positive} with no positive", fontsize=SMALL)
    labels = verdict_labels(m.fg, m.bg)
    bars = [
        (f"positive, {labels['positive']}", counts["positive_iou"], VERDICT_COLORS["positive"]),
        ("positive, best anchor", counts["low_quality"], VERDICT_COLORS["best anchor"]),
        ("ignored", counts["ignored"], VERDICT_COLORS["ignored"]),
        (f"negative, {labels['negative']}", counts["negative"], VERDICT_COLORS["negative"]),
        ("drawn positive", counts["sampled_positive"], OKABE_ITO[4]),
        ("drawn negative", counts["sampled_negative"], "0.3"),
    ]
    y = np.arange(len(bars))
    right.barh(y, [b[1] for b in bars], color=[b[2] for b in bars])
    for yi, (_, n, _) in zip(y, bars, strict=True):
        right.text(n * 1.15, yi, f"{n:,}", va="center", fontsize=SMALL)
    right.set_xscale("log")
    right.set_xlim(1, max(b[1] for b in bars) * 12)
    right.set_yticks(y, [b[0] for b in bars], fontsize=SMALL)
    right.invert_yaxis()
    right.set_xlabel("anchors (log scale)", fontsize=SMALL)
    right.tick_params(axis="x", labelsize=SMALL)
    fig.tight_layout()
    return fig


# --- chapter 4: the longlist -----------------------------------------------------------------------
def funnel(counts: dict[str, Sequence[int]], ax: plt.Axes | None = None, title: str | None = None) -> Figure:
    """Chapter 4. The longlist's funnel: anchors left after each step, per level and in all.

    ``counts`` as returned by ``longlist.funnel_per_level`` (or summed over images). Log scale: the
    input is ~100 times the output.
    """
    fig, ax = _figure_and_axes(ax, (FIG_WIDTH, 3.6))
    steps = list(counts)
    x = np.arange(len(steps))
    table = np.array([counts[s] for s in steps], dtype=np.float64)  # (steps, levels)
    total = table.sum(1)
    ax.plot(x, total, "-o", color="black", label="all levels", linewidth=2)
    for level in range(table.shape[1]):
        ax.plot(x, table[:, level], "-o", color=level_color(level), label=level_name(level), markersize=4)
    for xi, t in zip(x, total, strict=True):
        ax.annotate(f"{int(t):,}", (xi, t), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=SMALL)
    ax.set_yscale("log")
    ax.set_xlim(-0.5, len(steps) - 0.5)  # room for the first and last counts inside the frame
    ax.set_xticks(x, [STEP_LABELS.get(s, s) for s in steps], rotation=20, fontsize=SMALL)
    ax.set_ylabel("anchors left")
    ax.set_ylim(max(0.8, table[table > 0].min() / 2 if (table > 0).any() else 1), total.max() * 3)
    ax.legend(fontsize=SMALL, frameon=False, ncol=3, loc="lower left")
    ax.set_title(title or f"{int(total[-1]):,} of {int(total[0]):,} anchors become proposals", fontsize=10)
    fig.tight_layout()
    return fig


def nms_pairs(longlist, picture, gt_boxes=None, max_groups: int = 4, max_shown: int = 6, axes=None) -> Figure:
    """Chapter 4. NMS drawn: a kept proposal (solid, level colour) and the ones it removed.

    One panel per kept proposal (those that removed the most, ``longlist.nms_groups``), zoomed
    on it; each removed proposal grey dotted with its IoU with the kept one (at most
    ``max_shown`` drawn, best first, but all counted in the title).
    """
    step = longlist.nms
    groups = nms_groups(longlist, max_groups)
    cols = min(2, max(1, len(groups)))
    rows = max(1, math.ceil(len(groups) / cols))
    fig, axes = _axes_grid(rows, cols, (FIG_WIDTH, 3.1 * rows + 0.5), axes)
    flat = axes.reshape(-1)
    h, w = picture.shape[-2:]
    for ax, (kept, victims) in zip(flat, groups, strict=False):
        _picture(ax, picture, grey=True)
        draw_boxes(ax, gt_boxes, **GT_STYLE)
        level = int(step.groups[kept])
        kb = step.boxes[kept]
        ious = box_ops.iou(kb[None], step.boxes[victims])[0]
        shown = victims[:max_shown]
        draw_boxes(ax, step.boxes[shown], **DROPPED_STYLE)
        listed = ", ".join(f"{v:.2f}" for v in ious[: len(shown)].tolist())
        more = f" (+{len(victims) - len(shown)})" if len(victims) > len(shown) else ""
        ax.text(0.02, 0.02, f"IoU: {listed}{more}", transform=ax.transAxes, fontsize=SMALL, va="bottom",
                bbox={"facecolor": "white", "edgecolor": "0.6", "pad": 2})  # fmt: skip
        draw_box(ax, kb, edgecolor=level_color(level), linewidth=2)
        everything = torch.cat([kb[None], step.boxes[shown]])
        x1, y1 = everything[:, :2].min(0).values.tolist()
        x2, y2 = everything[:, 2:].max(0).values.tolist()
        pad = 0.15 * max(x2 - x1, y2 - y1) + 2
        ax.set_xlim(max(-0.5, x1 - pad), min(w - 0.5, x2 + pad))
        ax.set_ylim(min(h - 0.5, y2 + pad), max(-0.5, y1 - pad))
        ax.set_title(f"{level_name(level)} {float(step.scores[kept]):.3f} removed {len(victims)} "
                     f"(IoU {float(ious.min()):.2f}–{float(ious.max()):.2f})", fontsize=SMALL)  # fmt: skip
    for ax in flat[len(groups) :]:
        ax.axis("off")
    handles = [Line2D([], [], color="0.3", linewidth=2, label="kept (level colour)"),
               Line2D([], [], **DROPPED_STYLE, label=f"removed by NMS: IoU > {step.threshold:g}"),
               Line2D([], [], **GT_STYLE, label="ground truth")]  # fmt: skip
    fig.legend(handles=handles, fontsize=SMALL, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def recall_ledger(
    covered: Tensor, num_objects: int, steps: Sequence[str], ax: plt.Axes | None = None, title: str | None = None
) -> Figure:
    """Chapter 4. The recall ledger: objects still covered after each step, per level and in all.

    ``covered`` is ``Tensor[S + 1, L + 1]``: objects covered (``longlist.coverage_ledger`` summed
    over objects and images) after the input and each step, for each level and (last column) any
    level; ``num_objects`` the number of objects; ``steps`` the longlist's ``steps``.
    """
    fig, ax = _figure_and_axes(ax, (FIG_WIDTH, 3.6))
    names = ["input", *steps]
    x = np.arange(len(names))
    table = covered.double().numpy() / max(num_objects, 1)
    ax.plot(x, table[:, -1], "-o", color="black", linewidth=2, label="any level")
    for lv in range(table.shape[1] - 1):
        ax.plot(x, table[:, lv], "-o", color=level_color(lv), markersize=4, label=level_name(lv))
    for xi, value, n in zip(x, table[:, -1], covered[:, -1].tolist(), strict=True):
        ax.annotate(f"{n}", (xi, value), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=SMALL)
    ax.set_xticks(x, [STEP_LABELS.get(s, s) for s in names], rotation=20, fontsize=SMALL)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(f"share of the {num_objects} objects covered", fontsize=SMALL)
    ax.legend(fontsize=SMALL, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    left = int(covered[-1, -1])
    ax.set_title(title or f"{left} of {num_objects} objects still covered at IoU ≥ 0.5 after the longlist", fontsize=10)
    fig.tight_layout()
    return fig


def sweep(values, recall, size, xlabel: str, marked=None, axes=None) -> Figure:
    """Chapter 4. Recall and longlist size as one Config field varies (two panels)."""
    fig, axes = _axes_grid(1, 2, (FIG_WIDTH, 2.9), axes)
    left, right = axes[0]
    left.plot(values, recall, "-o", color="black", markersize=4)
    right.plot(values, size, "-o", color="black", markersize=4)  # black: the val split, as on the left
    left.set_ylabel("objects covered (share)", fontsize=SMALL)
    right.set_ylabel("proposals per image (mean)", fontsize=SMALL)
    for ax in (left, right):
        ax.set_xlabel(xlabel, fontsize=SMALL)
        ax.tick_params(labelsize=SMALL)
        if marked is not None:
            ax.axvline(marked, color="0.5", linestyle="--", linewidth=1.0)
    fig.tight_layout()
    return fig


def proposals(
    longlist, picture, gt_boxes=None, top: int = 30, ax: plt.Axes | None = None, title: str | None = None
) -> Figure:
    """Chapter 4. The ``top`` best proposals of the longlist, in their anchor level's colour."""
    h, w = longlist.image_size
    fig, ax = _figure_and_axes(ax, (5.2, 5.2 * h / w + 0.6))
    _picture(ax, picture, grey=True)
    n = min(top, len(longlist))
    for box, level in zip(longlist.boxes[:n].flip(0).tolist(), longlist.anchor_level[:n].flip(0).tolist(), strict=True):
        draw_box(ax, box, edgecolor=level_color(level), linewidth=1.5)
    draw_boxes(ax, gt_boxes, **GT_STYLE)
    # every level in the legend, shown or not, so that frames of a slider share one layout
    handles = [Patch(color=level_color(lv), label=level_name(lv)) for lv in range(len(LEVEL_NAMES))]
    handles.append(Line2D([], [], **GT_STYLE, label="ground truth"))
    fig.legend(handles=handles, fontsize=SMALL, loc="lower center", ncol=3, frameon=False)
    ax.set_title(title or f"the {n} best of {len(longlist)} proposals", fontsize=SMALL)
    fig.tight_layout(rect=(0, 0.1, 1, 0.97))
    return fig


__all__ = [
    "anchor_grid",
    "best_anchor_levels",
    "crowd_targets",
    "distractor_objectness",
    "lost_objects",
    "cap_and_nms_sweeps",
    "anchor_targets",
    "anchors_to_boxes",
    "funnel",
    "level_energy",
    "level_sizes",
    "nms_pairs",
    "objectness_maps",
    "proposals",
    "recall_ledger",
    "resize_and_pad",
    "sweep",
    "unnormalize",
]


def cap_and_nms_sweeps(cap_sweep, nms_sweep, cap_extra=None) -> Figure:
    """Chapter 4. Two ``sweep`` rows: the post-NMS cap (top, log x) and the NMS threshold (bottom).

    Each argument is ``(values, recall, size, marked)``: the field's values, the recall and the
    mean proposal count at each, and the shipped value (dashed). The bottom size is counted
    after NMS and before the cap, so its axis says so. ``cap_extra``: ``(label, recall, size)``
    of one image (a crowd), drawn on the top row in ``NOT_A_CLASS``. Recall axes span 0 to 1.
    """
    fig, axes = plt.subplots(2, 2, figsize=(FIG_WIDTH, 5.6))
    for row, name, (values, recall, size, marked) in (
        (0, "rpn_post_nms_top_n_test", cap_sweep),
        (1, "rpn_nms_thresh", nms_sweep),
    ):
        sweep(values, recall, size, name, marked=marked, axes=axes[row])
        axes[row, 0].set_ylim(0, 1.02)
    if cap_extra is not None:
        label, recall, size = cap_extra
        values = cap_sweep[0]
        axes[0, 0].plot(values, recall, "-s", color=NOT_A_CLASS, markersize=4, label=label)
        axes[0, 1].plot(values, size, "-s", color=NOT_A_CLASS, markersize=4, label=label)
        axes[0, 0].plot([], [], "-o", color="black", markersize=4, label="val split")
        axes[0, 0].legend(fontsize=9, frameon=False, loc="lower right")
    axes[1, 1].set_ylabel("proposals after NMS (mean)", fontsize=9)
    axes[0, 0].set_xscale("log")
    axes[0, 1].set_xscale("log")
    fig.tight_layout()
    return fig


def lost_objects(picture, gt_boxes, lost_at, steps: Sequence[str], ax: plt.Axes | None = None, title=None) -> Figure:
    """Chapter 4. Where each object of one image was lost in the longlist.

    ``lost_at`` (G,) is, per object, the index into ``steps`` of the step after which no box
    covers it any more; -1: still covered after the last step (thin grey dashed); -2: no box
    covers it even before the first step (black dash-dotted). Lost objects are drawn solid in one
    colour per step; the legend counts every group.
    """
    h, w = picture.shape[-2:]
    fig, ax = _figure_and_axes(ax, (5.2, 5.2 * h / w + 0.9))
    _picture(ax, picture, grey=True)
    lost_at = torch.as_tensor(lost_at, dtype=torch.int64)
    gt_boxes = torch.as_tensor(gt_boxes).reshape(-1, 4)
    kept_style = {"color": "0.45", "linestyle": "--", "linewidth": 0.6}
    never_style = {"color": "black", "linestyle": "-.", "linewidth": 1.6}  # apart from the thin grey
    draw_boxes(ax, gt_boxes[lost_at == -1], **kept_style)
    draw_boxes(ax, gt_boxes[lost_at == -2], **never_style)
    handles = [
        Line2D([], [], **kept_style, label=f"still covered: {int((lost_at == -1).sum())}"),
        Line2D([], [], **never_style, label=f"never covered: {int((lost_at == -2).sum())}"),
    ]
    palette = (OKABE_ITO[1], OKABE_ITO[2], OKABE_ITO[3], NOT_A_CLASS, OKABE_ITO[5])  # one per step
    for s, step in enumerate(steps):
        m = lost_at == s
        if not bool(m.any()):
            continue
        colour = palette[s % len(palette)]
        draw_boxes(ax, gt_boxes[m], color=colour, linewidth=2.0)
        label = f"lost at {STEP_LABELS.get(step, step)}: {int(m.sum())}"
        handles.append(Line2D([], [], color=colour, linewidth=2.0, label=label))
    fig.legend(handles=handles, fontsize=SMALL, loc="lower center", ncol=2, frameon=False)
    ax.set_title(title or f"{int((lost_at >= 0).sum())} of {len(gt_boxes)} objects lost, by step", fontsize=SMALL)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    return fig
