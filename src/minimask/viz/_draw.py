"""The few drawing helpers every figure module shares: names of levels and classes, boxes, tags.

Defined once here and re-exported by ``minimask.viz`` (``viz.draw_box``, ``viz.level_name``, ...).
"""

from __future__ import annotations

import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.patches import Rectangle
from matplotlib.text import Text

LEVEL_NAMES = ("P2", "P3", "P4", "P5", "P6")  # level index 0 is P2, the finest


def level_name(level: int) -> str:
    """The name of FPN level index ``level``: "P2" for 0, ...; "level 7" past ``LEVEL_NAMES``."""
    return LEVEL_NAMES[level] if 0 <= level < len(LEVEL_NAMES) else f"level {level}"


def class_name(label: int, class_names=None) -> str:
    """``class_names[label]`` if there is one, else the label as text."""
    if class_names is not None and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


def draw_box(ax: Axes, box, **style) -> Rectangle:
    """One box ``(x1, y1, x2, y2)`` as an unfilled rectangle on ``ax``; ``style``: patch keywords."""
    x1, y1, x2, y2 = (float(v) for v in box)
    patch = Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, **style)
    ax.add_patch(patch)
    return patch


def draw_boxes(ax: Axes, boxes, **style) -> None:
    """Every box of ``boxes`` (a tensor, array or list of ``(x1, y1, x2, y2)``; None: none)."""
    if boxes is None:
        return
    for box in torch.as_tensor(boxes).detach().cpu().reshape(-1, 4).tolist():
        draw_box(ax, box, **style)


def ink(colour) -> str:
    """The text colour that reads on a ``colour`` background: black on light colours (the
    palette's yellow and sky blue), white on dark ones."""
    r, g, b = to_rgb(colour)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.6 else "white"


def keep_clear(ax: Axes, label: Text) -> bool:
    """Keep ``label`` only if it overlaps no label kept before on ``ax`` (by this function);
    otherwise remove it. On a crowded picture the first labels drawn win: draw the ones that
    matter first. Returns whether it was kept."""
    renderer = ax.figure.canvas.get_renderer()
    extent = label.get_window_extent(renderer).padded(1)
    if label.get_bbox_patch() is not None:
        label.update_bbox_position_size(renderer)
        extent = label.get_bbox_patch().get_window_extent(renderer).padded(1)
    kept = ax.__dict__.setdefault("_clear_labels", [])
    if any(extent.overlaps(other) for other in kept):
        label.remove()
        return False
    kept.append(extent)
    return True


def tag(ax: Axes, x: float, y: float, text: str, colour: str, clear: bool = True, **placement) -> bool:
    """``text`` on a ``colour`` label at ``(x, y)`` (``placement``: ``ax.text`` keywords such as
    ``ha``, ``va``), in the ink that reads on it; with ``clear``, left out where it would cover
    a label already there (``keep_clear``). Returns whether drawn."""
    label = ax.text(x, y, text, color=ink(colour), bbox={"facecolor": colour, "edgecolor": "none", "pad": 1},
                    **placement)  # fmt: skip
    return keep_clear(ax, label) if clear else True


def box_tag(ax: Axes, box, text: str, colour: str, clear: bool = True) -> bool:
    """``text`` on a ``colour`` label just above the top-left corner of ``box`` (``tag``)."""
    return tag(ax, float(box[0]), float(box[1]) - 1, text, colour, clear, va="bottom")
