"""Figures of chapter 12: a Detectron2 model run by minimask, against what Detectron2 computed.

``parity`` draws one image's detections from both (ours coloured by class, Detectron2's
black dashed) beside a scatter of the two scores of each detection; ``thresholds`` the
detections left at each ``SCORE_THRESH_TEST``, one panel per threshold; ``agreement_bars``
the share of Detectron2's detections that each run reproduces (``compat.agreement``), one
bar per cause of difference; ``count_bars`` a count per key (the steps that lost the missed
objects). Each returns a Figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from minimask.viz import FIG_WIDTH, GT_STYLE, NOT_A_CLASS, _image_array, class_color, draw_box

IMAGE_COLORS = ("0.35", NOT_A_CLASS)  # the images of the score scatter: not classes


def _boxes_on(ax, image, output: Mapping[str, torch.Tensor], **style) -> int:
    """``output``'s boxes on ``image``, each in its class colour; the number drawn."""
    for box, label in zip(output["boxes"].tolist(), output["labels"].tolist(), strict=True):
        draw_box(ax, box, edgecolor=class_color(int(label)), **style)
    return len(output["boxes"])


def parity(image, ours: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor],
           pairs: Sequence[tuple[Sequence[float], Sequence[float]]], top: int = 20,
           figsize: tuple[float, float] = (FIG_WIDTH, 3.3)) -> Figure:  # fmt: skip
    """Left: ``image`` with the ``top`` best detections of ``ours`` (class colours, solid) and of
    ``theirs`` (Detectron2's, black dashed). Right: for every detection of every image in
    ``pairs`` (``(our scores, their scores)`` in the same order), our score against theirs."""
    fig, (left, right) = plt.subplots(1, 2, figsize=figsize, gridspec_kw={"width_ratios": [1, 1.1]})
    left.imshow(_image_array(image))
    _boxes_on(left, image, {k: v[:top] for k, v in ours.items()}, linewidth=1.6)
    for box in theirs["boxes"][:top].tolist():
        draw_box(left, box, **{**GT_STYLE, "linewidth": 1.0})
    if len(ours["boxes"][:top]):  # the part of the image the boxes cover, 16 px around
        (x1, y1), (x2, y2) = ours["boxes"][:top, :2].min(0).values, ours["boxes"][:top, 2:].max(0).values
        left.set_xlim(float(x1) - 16, float(x2) + 16)
        left.set_ylim(float(y2) + 16, float(y1) - 16)
    left.set_title(f"best {top}: ours, Detectron2's dashed")
    left.set_axis_off()
    low, high = 1.0, 0.0
    for k, (a, b) in enumerate(pairs):
        colour = IMAGE_COLORS[k % len(IMAGE_COLORS)]
        right.scatter(b, a, s=10, color=colour, label=f"image {k + 1}", zorder=3)
        low, high = min(low, *a, *b), max(high, *a, *b)
    pad = 0.05 * (high - low)
    right.plot([low - pad, high + pad], [low - pad, high + pad], color="0.6", linewidth=0.8, zorder=1)
    right.set_xlim(low - pad, high + pad)
    right.set_ylim(low - pad, high + pad)
    right.set_xlabel("Detectron2's score")
    right.set_ylabel("our score")
    right.legend(loc="upper left", frameon=False)
    fig.tight_layout()
    return fig


def thresholds(image, outputs: Mapping[float, Mapping[str, torch.Tensor]],
               figsize: tuple[float, float] = (FIG_WIDTH, 2.9)) -> Figure:  # fmt: skip
    """One panel per threshold of ``outputs`` (threshold -> detections): ``image`` with the
    detections left, in class colours; the title gives the threshold and their number."""
    fig, axes = plt.subplots(1, len(outputs), figsize=figsize, squeeze=False)
    for ax, (threshold, output) in zip(axes[0], outputs.items(), strict=True):
        ax.imshow(_image_array(image))
        n = _boxes_on(ax, image, output, linewidth=1.2)
        ax.set_title(f"score > {threshold:g}: {n}")
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def agreement_bars(causes: Sequence[str], shares: Sequence[float], title: str = "",
                   figsize: tuple[float, float] = (FIG_WIDTH, 2.8)) -> Figure:  # fmt: skip
    """One horizontal bar per cause: the share of Detectron2's detections (0..1) that the run
    under that cause reproduces (same class, box IoU > 0.9), written at the bar's end in %."""
    fig, ax = plt.subplots(figsize=figsize)
    rows = range(len(causes))
    ax.barh(rows, [100 * s for s in shares], color=NOT_A_CLASS, height=0.6)
    for row, share in zip(rows, shares, strict=True):
        ax.text(100 * share + 1, row, f"{100 * share:.0f}%", va="center")
    ax.set_yticks(list(rows), list(causes))
    ax.invert_yaxis()
    ax.set_xlim(0, 118)
    ax.set_xticks([0, 25, 50, 75, 100])
    ax.set_xlabel("Detectron2's detections reproduced (%)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def count_bars(counts: Mapping[str, int], xlabel: str, title: str = "",
               figsize: tuple[float, float] = (FIG_WIDTH, 2.8)) -> Figure:  # fmt: skip
    """One horizontal bar per key of ``counts`` (e.g. the step that lost each missed object,
    as ``--explain`` names it), its count written at the bar's end."""
    fig, ax = plt.subplots(figsize=figsize)
    rows = range(len(counts))
    values = list(counts.values())
    ax.barh(rows, values, color=NOT_A_CLASS, height=0.6)
    top = max(values, default=1)
    for row, value in zip(rows, values, strict=True):
        ax.text(value + 0.01 * top, row, str(value), va="center")
    ax.set_yticks(list(rows), list(counts))
    ax.invert_yaxis()
    ax.set_xlim(0, 1.15 * top)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
