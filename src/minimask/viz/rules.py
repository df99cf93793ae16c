"""Figures of chapter 11: what changes when one model decides by Detectron2's rules.

``rule_changes`` draws, on one image, the proposals, detections and mask pixels that one run
has and the other has not; ``rule_effects`` the share of detections each rule changes.
Both take records (``model.run``) or plain numbers and return a Figure.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from minimask.compat import match_boxes
from minimask.model import Run
from minimask.viz import OKABE_ITO, _figure_and_axes, _image_array

ONLY_A, ONLY_B, BOTH = OKABE_ITO[0], OKABE_ITO[4], "0.6"


def _original(boxes: torch.Tensor, run: Run) -> torch.Tensor:
    """Boxes of the resized image in original pixels (for drawing only: the plain ratio)."""
    (h, w), (oh, ow) = run.batch.image_sizes[0], run.batch.original_sizes[0]
    return boxes.detach() * boxes.new_tensor([ow / w, oh / h, ow / w, oh / h])


def _draw(ax: plt.Axes, boxes: torch.Tensor, colour: str, width: float) -> None:
    for x1, y1, x2, y2 in boxes.tolist():
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=width))


def _split(a_boxes, a_labels, b_boxes, b_labels, iou):
    """(rows of a only, rows of b only, matched pairs) under ``match_boxes``."""
    ab = match_boxes(a_boxes, a_labels, b_boxes, b_labels, iou)
    matched_b = set(ab[ab >= 0].tolist())
    only_a = torch.where(ab < 0)[0]
    only_b = torch.tensor([j for j in range(len(b_boxes)) if j not in matched_b], dtype=torch.int64)
    pairs = [(i, int(j)) for i, j in enumerate(ab.tolist()) if j >= 0]
    return only_a, only_b, pairs


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
    # 1. proposals
    la, lb = run_a.longlist[0], run_b.longlist[0]
    pa, pb = _original(la.boxes[:top], run_a), _original(lb.boxes[:top], run_b)
    zeros_a, zeros_b = torch.zeros(len(pa), dtype=torch.int64), torch.zeros(len(pb), dtype=torch.int64)
    only_a, only_b, pairs = _split(pa, zeros_a, pb, zeros_b, iou)
    axes[0].imshow(picture)
    _draw(axes[0], pa[[i for i, _ in pairs]], BOTH, 0.6)
    _draw(axes[0], pa[only_a], ONLY_A, 1.5)
    _draw(axes[0], pb[only_b], ONLY_B, 1.5)
    axes[0].set_title(f"best {top} proposals\n{len(only_a)} + {len(only_b)} differ")
    # 2. detections
    da, db = run_a.detections[0], run_b.detections[0]
    keep_a, keep_b = da["scores"] >= score, db["scores"] >= score
    ba, bb = da["boxes"][keep_a].detach(), db["boxes"][keep_b].detach()
    only_a, only_b, pairs = _split(ba, da["labels"][keep_a], bb, db["labels"][keep_b], iou)
    axes[1].imshow(picture)
    _draw(axes[1], ba[[i for i, _ in pairs]], BOTH, 1.0)
    _draw(axes[1], ba[only_a], ONLY_A, 2.0)
    _draw(axes[1], bb[only_b], ONLY_B, 2.0)
    axes[1].set_title(f"detections >= {score:g}\n{len(only_a)} + {len(only_b)} differ")
    # 3. mask pixels
    ma = (da["masks"][keep_a][:, 0] >= mask_threshold).cpu().numpy()
    mb = (db["masks"][keep_b][:, 0] >= mask_threshold).cpu().numpy()
    in_a, in_b = np.zeros((height, width), bool), np.zeros((height, width), bool)
    for i, j in pairs:
        in_a |= ma[i] & ~mb[j]
        in_b |= mb[j] & ~ma[i]
    for i in only_a.tolist():
        in_a |= ma[i]
    for j in only_b.tolist():
        in_b |= mb[j]
    shown = 0.35 + 0.65 * picture.mean(axis=2, keepdims=True) * np.ones((1, 1, 3))
    shown[in_a] = plt.matplotlib.colors.to_rgb(ONLY_A)
    shown[in_b] = plt.matplotlib.colors.to_rgb(ONLY_B)
    axes[2].imshow(shown, interpolation="nearest")
    axes[2].set_title(f"mask pixels\n{int(in_a.sum())} + {int(in_b.sum())} differ")
    for ax in axes:
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        Rectangle((0, 0), 1, 1, color=ONLY_A, label=f"only {names[0]}"),
        Rectangle((0, 0), 1, 1, color=ONLY_B, label=f"only {names[1]}"),
        Rectangle((0, 0), 1, 1, color=BOTH, label="both"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, borderaxespad=0.1)
    fig.tight_layout(rect=(0, 0.08, 1, 1), w_pad=0.4)
    return fig


def rule_effects(
    names: list[str], changed: list[float], ax: plt.Axes | None = None, title: str | None = None
) -> Figure:
    """Chapter 11. Share of detections each rule changes, alone: one bar per rule (``changed`` in [0, 1])."""
    if len(names) != len(changed):
        raise ValueError(f"{len(names)} rule names for {len(changed)} values")
    fig, ax = _figure_and_axes(ax, (6.4, 0.32 * len(names) + 1.0))
    y = np.arange(len(names))
    values = 100 * np.asarray(changed, dtype=float)
    ax.barh(y, values, color=[ONLY_B if v > 0 else BOTH for v in values])
    for k, v in enumerate(values):
        ax.text(v + 0.5, k, f"{v:.1f}", va="center", fontsize=10)
    ax.set_yticks(y, names, fontsize=10)
    ax.invert_yaxis()
    ax.set_xlim(0, max(10.0, values.max() * 1.15) if len(values) else 10.0)
    ax.set_xlabel("detections changed (%)")
    ax.set_title(title or "each rule alone")
    fig.tight_layout()
    return fig
