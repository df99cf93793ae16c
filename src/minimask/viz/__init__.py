"""Figures for the book. One palette for the whole book; functions return a Figure.

Conventions: one colour per class (Okabe-Ito, colour-blind safe) and, before
classification, one colour per FPN level; kept boxes solid 2 pt; dropped boxes thin grey
dotted; ground truth black dashed. Functions take a stage record or tensors and an optional
``ax``, and never call ``show`` or ``savefig``.
"""

from __future__ import annotations

import sys
import textwrap

import matplotlib


def _use_inline_backend_in_a_kernel() -> bool:
    """In a Jupyter kernel (the book's build, JupyterLab), make figures display as PNGs.

    ipykernel picks the inline backend only when MPLBACKEND is unset; with ``MPLBACKEND=Agg``
    (common on servers and CI images) a Figure has no picture to show, and glue stores the text
    ``<Figure size 1100x440 with 1 Axes>``. So a non-interactive backend is replaced by the
    inline one, the way ``%matplotlib inline`` does it; an interactive choice (ipympl, a GUI) is
    kept. Returns False outside a kernel.
    """
    if "ipykernel" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return False
    from matplotlib.backends import BackendFilter, backend_registry

    if matplotlib.get_backend().lower() in backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE):
        shell.run_line_magic("matplotlib", "inline")
    return True


# Scripts and tests have no screen: draw headless.
if not _use_inline_backend_in_a_kernel():
    matplotlib.use("Agg")

# Figures are drawn for the book's column: 660 px for a figure at a 1280 px window, up to 775 px
# on wider screens (the site check, tools/sitecheck.py, fails a figure shown narrower than it was
# drawn). At 100 dpi a figure FIG_WIDTH inches wide is 640 px, plus 20 px of the inline backend's
# tight-box padding, and is shown at its drawn size; a font of FONT_SIZE pt then appears at
# 12 * 100 / 72 = 16.7 px: no smaller than the page's captions (16 px).
FIG_WIDTH = 6.4  # inches; the widest a figure should be
FONT_SIZE = 12.0  # points; the smallest text in a figure
matplotlib.rcParams.update(
    {
        "figure.dpi": 100,
        "savefig.dpi": "figure",
        "figure.figsize": (FIG_WIDTH, 4.0),
        "font.size": FONT_SIZE,
        "axes.titlesize": FONT_SIZE,
        "axes.labelsize": FONT_SIZE,
        "xtick.labelsize": FONT_SIZE,
        "ytick.labelsize": FONT_SIZE,
        "legend.fontsize": FONT_SIZE,
        "legend.title_fontsize": FONT_SIZE,
        "figure.titlesize": FONT_SIZE,
    }
)

import matplotlib.colors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch, Rectangle  # noqa: E402

from minimask.viz._draw import (  # noqa: E402, F401
    LEVEL_NAMES,
    box_tag,
    class_name,
    draw_box,
    draw_boxes,
    ink,
    keep_clear,
    level_name,
    tag,
)

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
# The class palette: label 1 -> OKABE_ITO[0], ..., label 7 -> OKABE_ITO[0] again. Every figure
# that colours by class takes its colour from here (``class_color``), never from the object
# itself (the data set paints its objects at random). The classes leave two colours free for
# marks that mean something else: black (ground truth, thresholds) and NOT_A_CLASS; greys and
# line styles tell the other such marks apart (dropped, negative, sampled, ...).
CLASS_COLORS = OKABE_ITO[:6]
NOT_A_CLASS = OKABE_ITO[6]  # reddish purple: overlaps, windows, a second curve; never a class
LEVEL_COLORS = (OKABE_ITO[4], OKABE_ITO[2], OKABE_ITO[0], OKABE_ITO[5], OKABE_ITO[6])  # P2..P6
DROPPED_STYLE = {"color": "0.55", "linestyle": ":", "linewidth": 0.8}
GT_STYLE = {"color": "black", "linestyle": "--", "linewidth": 1.2}


def output(fig: Figure) -> Figure:
    """A figure as a cell's output, shown once: closed in pyplot (so the inline backend does not
    show it a second time) and returned. A chapter cell ends with ``viz.output(fig)``; the book
    numbers and captions that output from the cell's ``mystnb.figure`` metadata, and a notebook
    shows it under the cell."""
    plt.close(fig)
    return fig


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
    """Chapter 0. The six decisions of Mask R-CNN in order, each with its question.

    Drawn for the column (``FIG_WIDTH`` wide, two rows of three) with no text below
    ``FONT_SIZE``. Coordinates are inches of the figure.
    """
    width, height = FIG_WIDTH, 6.5
    if ax is None:
        fig = plt.figure(figsize=(width, height))
        ax = fig.add_axes((0, 0, 1, 1))
    else:
        fig = ax.figure
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    grey = "0.25"
    # input and features: the start of the chain
    ax.text(0.05, height - 0.2, "image → resize, normalise, pad (ch. 2)", va="center", color=grey)
    ax.text(0.05, height - 0.5, "→ ResNet + FPN features P2–P6 (ch. 2) →", va="center", color=grey)
    box_w, box_h, gap, row_gap = 1.9, 2.3, 0.25, 0.45
    tops = (height - 0.8, height - 0.8 - box_h - row_gap)
    for i, (name, chapter, question, how) in enumerate(DECISIONS):
        row, col = divmod(i, 3)
        x, top = 0.05 + col * (box_w + gap), tops[row]
        colour = OKABE_ITO[i]
        ax.add_patch(
            FancyBboxPatch(
                (x, top - box_h),
                box_w,
                box_h,
                boxstyle="round,pad=0,rounding_size=0.1",
                facecolor=colour,
                alpha=0.22,
                edgecolor=colour,
                linewidth=2,
            )
        )
        cx = x + box_w / 2
        ax.text(cx, top - 0.22, f"{i + 1}. {name}", ha="center", va="center", weight="bold")
        ax.text(cx, top - 0.5, chapter, ha="center", va="center", color="0.3")
        ax.text(cx, top - 0.72, textwrap.fill(question, 19), ha="center", va="top", style="italic")
        ax.text(cx, top - box_h + 0.1, textwrap.fill(how, 20), ha="center", va="bottom", color=grey)
        arrow = {"arrowstyle": "-|>", "mutation_scale": 14, "color": "0.3", "linewidth": 1.2}
        if col < 2:  # to the next box in the row
            y = top - box_h / 2
            ax.add_patch(FancyArrowPatch((x + box_w + 0.02, y), (x + box_w + gap - 0.02, y), **arrow))
        elif row == 0:  # from the end of the first row down to the start of the second
            y = top - box_h - row_gap / 2
            first = 0.05 + box_w / 2
            ax.plot([cx, cx, first], [top - box_h, y, y], color="0.3", linewidth=1.2)
            ax.add_patch(FancyArrowPatch((first, y), (first, tops[1] + 0.02), **arrow))
    ax.text(0.05, tops[1] - box_h - 0.25, "→ boxes, labels, scores and masks in the original", va="center", color=grey)
    ax.text(0.05, tops[1] - box_h - 0.55, "image (ch. 9); the trace of each (ch. 10)", va="center", color=grey)
    return fig


# --- chapter 1: data ---------------------------------------------------------------------------
COCO_SIZE_BINS = (32, 96)  # sqrt(area) limits of COCO's small / medium / large (pycocotools areaRng)


def _image_array(image) -> np.ndarray:
    """(H, W, 3) float in [0, 1] from a float (3, H, W) tensor in [0, 1] or an (H, W, 3) uint8 array."""
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().float().numpy()
        if array.ndim != 3 or array.shape[0] not in (1, 3):
            raise ValueError(f"image tensor must be (3, H, W) or (1, H, W), got {tuple(array.shape)}")
        array = np.repeat(array, 3, axis=0) if array.shape[0] == 1 else array
        return np.clip(array.transpose(1, 2, 0), 0.0, 1.0)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image array must be (H, W, 3), got {array.shape}")
    return array.astype(np.float64) / 255.0 if array.dtype == np.uint8 else np.clip(array, 0.0, 1.0)


def _figure_and_axes(ax: plt.Axes | None, figsize: tuple[float, float]) -> tuple[Figure, plt.Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def ground_truth(
    image,
    target: dict,
    ax: plt.Axes | None = None,
    class_names: tuple[str, ...] | list[str] | None = None,
    title: str | None = None,
    masks: bool = True,
    names: bool = True,
) -> Figure:
    """Chapter 1. An image with its target: masks filled in the class colour, boxes black dashed.

    ``names=False`` leaves out the class name on each box (a crowd image has too many to read).

    ``target`` is a torchvision-style dict (``boxes`` xyxy, ``labels``, optional ``masks``
    and ``iscrowd``). Crowd regions (``iscrowd == 1``) are grey and labelled "crowd": they
    are in the annotation but are not objects to find.
    """
    picture = _image_array(image)
    height, width = picture.shape[:2]
    fig, ax = _figure_and_axes(ax, (4.0 * width / max(height, width) + 0.4, 4.0 * height / max(height, width)))
    ax.imshow(picture, interpolation="nearest")
    boxes = target["boxes"].detach().cpu().reshape(-1, 4).tolist()
    labels = target["labels"].detach().cpu().tolist()
    crowd = target.get("iscrowd", torch.zeros(len(labels), dtype=torch.int64)).detach().cpu().tolist()
    if masks and "masks" in target and len(target["masks"]):
        overlay = np.zeros((height, width, 4))
        for mask, label, is_crowd in zip(target["masks"].detach().cpu().numpy(), labels, crowd, strict=True):
            rgb = matplotlib.colors.to_rgb("0.5" if is_crowd else class_color(label))
            overlay[mask.astype(bool)] = (*rgb, 0.55)
            ax.contour(mask, levels=[0.5], colors=[rgb], linewidths=1.0)
        ax.imshow(overlay, interpolation="nearest")
    for (x1, y1, x2, y2), label, is_crowd in zip(boxes, labels, crowd, strict=True):
        draw_box(ax, (x1, y1, x2, y2), **GT_STYLE)
        if not names:
            continue
        name = class_name(label, class_names)
        inside = y1 < 0.06 * height  # a label above a box at the top edge would hit the title
        colour = "0.4" if is_crowd else class_color(label)
        # a name that would cover another is left out (the mask colour tells the class)
        tag(ax, x1 + (1 if inside else 0), y1 + 1 if inside else y1 - 1, "crowd" if is_crowd else name,
            colour, va="top" if inside else "bottom")  # fmt: skip
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title)
    return fig


def object_sizes(
    areas,
    labels=None,
    class_names: tuple[str, ...] | list[str] | None = None,
    ax: plt.Axes | None = None,
    bin_width: float = 4.0,
) -> Figure:
    """Chapter 1. Histogram of object size, sqrt(area) in pixels, against COCO's size bins.

    COCO calls an object small below 32^2 px of area, large from 96^2 (pycocotools
    ``COCOeval`` ``areaRng``); the bars are stacked by class when ``labels`` is given.
    """
    side = np.sqrt(np.asarray(areas, dtype=np.float64))
    fig, ax = _figure_and_axes(ax, (6.4, 3.2))
    top = max(float(side.max()) if side.size else 0.0, COCO_SIZE_BINS[1] + 8.0)
    edges = np.arange(0.0, top + bin_width, bin_width)
    if labels is None:
        ax.hist(side, bins=edges, color=OKABE_ITO[4])
    else:
        labels = np.asarray(labels)
        present = sorted(set(labels.tolist()))
        ax.hist(
            [side[labels == k] for k in present],
            bins=edges,
            stacked=True,
            color=[class_color(k) for k in present],
            label=[class_name(k, class_names) for k in present],
        )
        ax.legend(frameon=False)
    for limit in COCO_SIZE_BINS:
        ax.axvline(limit, color="black", linestyle="--", linewidth=1.0)
    counts = np.histogram(side, bins=[0.0, COCO_SIZE_BINS[0], COCO_SIZE_BINS[1], np.inf])[0]
    top = ax.get_ylim()[1]
    ax.set_ylim(0, top * 1.15)  # the bin counts above the tallest bar
    y_text = top * 1.05
    for x, name, count in zip(
        (COCO_SIZE_BINS[0] / 2, sum(COCO_SIZE_BINS) / 2, COCO_SIZE_BINS[1] + 4),
        ("small", "medium", "large"),
        counts,
        strict=True,
    ):
        ax.text(x, y_text, f"{name}: {count}", ha="center" if name != "large" else "left")
    ax.set_xlabel("object size: sqrt(area in pixels)")
    ax.set_ylabel("objects")
    ax.set_xlim(0, edges[-1])
    return fig


def mask_difference(reference, other, ax: plt.Axes | None = None, names: tuple[str, str] = ("a", "b")) -> Figure:
    """Chapter 1. Two (H, W) masks of one object: pixels in both grey, in only one coloured."""
    a = np.asarray(reference).astype(bool)
    b = np.asarray(other).astype(bool)
    fig, ax = _figure_and_axes(ax, (3.4, 3.4))
    picture = np.ones((*a.shape, 3))
    picture[a & b] = 0.6
    picture[a & ~b] = matplotlib.colors.to_rgb(OKABE_ITO[5])
    picture[~a & b] = matplotlib.colors.to_rgb(OKABE_ITO[4])
    rows, cols = np.nonzero(a | b)
    ax.imshow(picture, interpolation="nearest")
    if rows.size:
        ax.set_xlim(cols.min() - 2.5, cols.max() + 2.5)
        ax.set_ylim(rows.max() + 2.5, rows.min() - 2.5)
    handles = [
        Rectangle((0, 0), 1, 1, color="0.6", label="both"),
        Rectangle((0, 0), 1, 1, color=OKABE_ITO[5], label=f"only {names[0]}: {int((a & ~b).sum())}"),
        Rectangle((0, 0), 1, 1, color=OKABE_ITO[4], label=f"only {names[1]}: {int((~a & b).sum())}"),
    ]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=3, frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def detections(
    image,
    output: dict,
    class_names: tuple[str, ...] | list[str] | None = None,
    mask_threshold: float = 0.5,
    ax: plt.Axes | None = None,
    target: dict | None = None,
    title: str | None = None,
    tags: bool = True,
) -> Figure:
    """Chapter 9. A model's output on an image: mask (>= ``mask_threshold``) filled and outlined
    in the class colour, the box solid, "class score" above it (``tags``; where small panels
    would overprint them, leave them out and add ``class_legend``); ground truth black dashed
    if given.
    """
    picture = _image_array(image)
    height, width = picture.shape[:2]
    fig, ax = _figure_and_axes(ax, (5.0 * width / max(height, width) + 0.4, 5.0 * height / max(height, width)))
    ax.imshow(picture, interpolation="nearest")
    masks = output["masks"].detach().cpu()[:, 0].numpy() if len(output["masks"]) else []
    overlay = np.zeros((height, width, 4))
    for mask, label in zip(masks, output["labels"].tolist(), strict=False):
        rgb = matplotlib.colors.to_rgb(class_color(label))
        overlay[mask >= mask_threshold] = (*rgb, 0.45)
        if (mask >= mask_threshold).any() and (mask < mask_threshold).any():
            ax.contour(mask, levels=[mask_threshold], colors=[rgb], linewidths=1.0)
    ax.imshow(overlay, interpolation="nearest")
    if target is not None:
        draw_boxes(ax, target["boxes"], **GT_STYLE)
    for box, label, score in zip(
        output["boxes"].tolist(), output["labels"].tolist(), output["scores"].tolist(), strict=True
    ):
        colour = class_color(label)
        draw_box(ax, box, edgecolor=colour, linewidth=2)
        if tags:
            box_tag(ax, box, f"{class_name(label, class_names)} {score:.2f}", colour)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{len(output['scores'])} detections")
    return fig


def code_cell(name: str) -> str:
    """``name`` as inline code for a Markdown table cell that may break only after "_", "." or
    "/" (``<wbr>``), not between any two letters as a narrow column otherwise breaks it."""
    import html

    text = html.escape(name)
    for mark in "_./":
        text = text.replace(mark, mark + "<wbr>")
    return f'<code class="docutils literal notranslate">{text}</code>'


def class_legend(fig: Figure, labels, class_names=None, ncol: int = 3) -> None:
    """A legend of class colours below a figure's panels, one entry per label in ``labels``."""
    handles = [Patch(color=class_color(k), label=class_name(k, class_names)) for k in sorted(set(labels))]
    fig.legend(handles=handles, loc="lower center", ncol=min(ncol, max(len(handles), 1)), frameon=False)


def loss_curves(log, names, ax: plt.Axes | None = None, title: str | None = None) -> Figure:
    """Chapter 9. Training losses against the iteration, one line per loss, log scale.

    ``log``: rows (dicts) with an ``"iteration"`` and a value for each of ``names``, as in
    the shipped ``shapes_loss_log.jsonl``; the legend names each loss below the axes.
    """
    fig, ax = _figure_and_axes(ax, (FIG_WIDTH, 4.8))
    its = [row["iteration"] for row in log]
    for i, name in enumerate(names):
        ax.plot(its, [row[name] for row in log], label=name, color=OKABE_ITO[i % len(OKABE_ITO)], linewidth=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (log scale)")
    if title:
        ax.set_title(title)
    ax.legend(ncol=3, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    return fig
