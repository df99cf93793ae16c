"""Figures for the book. One palette for the whole book; functions return a Figure.

Conventions (STYLE.md): one colour per class (Okabe-Ito, colour-blind safe) and, before
classification, one colour per FPN level; kept boxes solid 2 pt; dropped boxes thin grey
dotted; ground truth black dashed. Functions take a stage record or tensors and an optional
``ax``, and never call ``show`` or ``savefig``.
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")  # figures are built headless: the book and the tests have no screen

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

# Okabe & Ito (2008), "Color Universal Design": eight colours distinguishable by most readers.
OKABE_ITO = (
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#009E73",  # bluish green
    "#F0E442",  # yellow
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#000000",  # black
)
CLASS_COLORS = OKABE_ITO[:7]  # label 1 -> OKABE_ITO[0], ...; black is kept for ground truth
LEVEL_COLORS = ("#0072B2", "#009E73", "#E69F00", "#D55E00", "#CC79A7")  # P2..P6
DROPPED_STYLE = {"color": "0.55", "linestyle": ":", "linewidth": 0.8}
GT_STYLE = {"color": "black", "linestyle": "--", "linewidth": 1.2}


def class_color(label: int) -> str:
    """The book's colour for a class label (1-based; 0 is background and has none)."""
    if label < 1:
        raise ValueError(f"label {label} is background or invalid: only labels >= 1 have a colour")
    return CLASS_COLORS[(label - 1) % len(CLASS_COLORS)]


def level_color(level: int) -> str:
    """The book's colour for FPN level index ``level`` (0 = P2, the finest)."""
    return LEVEL_COLORS[level % len(LEVEL_COLORS)]


# The six decisions, in order, with the question each answers (chapter 0's map).
DECISIONS = (
    ("Objectness", "ch. 3", "object or not?", "RPN head: one logit per anchor"),
    ("Longlist", "ch. 4", "which regions are worth a look?", "top-k, NMS 0.7, top-k: the proposals"),
    ("Classification", "ch. 5", "which class?", "softmax over K+1 on each proposal"),
    ("Shortlist", "ch. 6", "which boxes survive?", "score > 0.05, NMS 0.5 per class, top 100"),
    ("Segmentation", "ch. 7", "where does it begin and end?", "28x28 mask per detection, pasted"),
    ("Scoring", "ch. 8", "how confident?", "the class probability, nothing more"),
)


def pipeline(ax: plt.Axes | None = None) -> Figure:
    """Chapter 0. The six decisions of Mask R-CNN in order, each with its question."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(11, 4.4))
    else:
        fig = ax.figure
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 4.6)
    ax.axis("off")
    # input and features, drawn as the start of the chain
    ax.text(
        0.05,
        4.35,
        "image  →  resize, normalise, pad (ch. 2)  →  ResNet + FPN features P2-P6 (ch. 2)",
        fontsize=10,
        va="center",
        color="0.25",
    )
    width, gap = 1.78, 0.19
    for i, (name, chapter, question, how) in enumerate(DECISIONS):
        x = 0.1 + i * (width + gap)
        colour = OKABE_ITO[i]
        box = FancyBboxPatch(
            (x, 0.55),
            width,
            3.15,
            boxstyle="round,pad=0.02,rounding_size=0.12",
            facecolor=colour,
            alpha=0.22,
            edgecolor=colour,
            linewidth=2,
        )
        ax.add_patch(box)
        ax.text(x + width / 2, 3.4, f"{i + 1}. {name}", ha="center", va="center", fontsize=10.5, weight="bold")
        ax.text(x + width / 2, 3.05, chapter, ha="center", va="center", fontsize=9, color="0.3")
        ax.text(
            x + width / 2, 2.55, textwrap.fill(question, 17), ha="center", va="center", fontsize=9.5, style="italic"
        )
        ax.text(x + width / 2, 1.3, textwrap.fill(how, 22), ha="center", va="top", fontsize=8, color="0.25")
        if i < len(DECISIONS) - 1:
            ax.add_patch(
                FancyArrowPatch(
                    (x + width + 0.01, 2.1),
                    (x + width + gap - 0.01, 2.1),
                    arrowstyle="-|>",
                    mutation_scale=12,
                    color="0.3",
                )
            )
    ax.text(
        11.95,
        0.12,
        "→ boxes, labels, scores, masks in the original image (ch. 9); the trace of each (ch. 10)",
        fontsize=9.5,
        ha="right",
        color="0.25",
    )
    fig.tight_layout()
    return fig
