"""Chapter 1. The shapes data set: draw an image, remember exactly which pixels each object got,
and write a split as a COCO instance-segmentation file.

- ``render_image`` draws one image and returns it *and* the visible mask of every object,
  before anything is encoded, so the tests can compare the COCO file against these masks.
- ``make_shapes`` writes a split (``annotations.json`` + ``images/``) deterministically: the
  same seed gives byte-identical files. ``python -m minimask.shapes --out DIR --split val --n
  100 --seed 0`` (or ``python -m minimask.data ...``, the chapter's facade) does the same.

Version 2 of the set: six classes told apart by outline only (square, circle, triangle, ring,
cross, ell), colour and fill (solid, gradient, stripes) drawn independently of the class;
sizes log-uniform from 6 px to 0.6 of the short side; image sides 192-384 px; distractors of
no class; about 1 image in 20 a crowd of 60-150 small objects.

Everything is drawn with numpy on pixel centres (no anti-aliasing), so a mask is exactly the
set of pixels painted by its object; occlusion is applied afterwards (later things cover
earlier ones, distractors too) and every object left with too few visible pixels is dropped
with its reason. Randomness comes only from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import argparse
import colorsys
import dataclasses
import json
import math
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image
from tqdm import tqdm

# Index 0 is background, as torchvision counts classes (Detectron2 puts background last).
CLASS_NAMES: tuple[str, ...] = ("__background__", "square", "circle", "triangle", "ring", "cross", "ell")
SQUARE, CIRCLE, TRIANGLE, RING, CROSS, ELL = 1, 2, 3, 4, 5, 6
DISTRACTOR = 0  # label of a drawn thing that belongs to no class (a blob or a bar): never annotated

# Image sides (px) are drawn independently for height and width, so sizes and aspects vary
# (square, up to 2:1 landscape or portrait) and resizing and padding (chapter 2) bind.
IMAGE_SIDES: tuple[int, ...] = (192, 224, 256, 288, 320, 352, 384)
CROWD_SIDES: tuple[int, ...] = (320, 352, 384)
MAX_OBJECTS = 10  # 1..10 objects in an ordinary image
MAX_DISTRACTORS = 4  # 0..4 distractors in an ordinary image, 0..8 in a crowd
CROWD_PROBABILITY = 0.05  # about 1 image in 20 is a crowd ...
CROWD_OBJECTS = (60, 150)  # ... of 60..150 objects, so the proposal and detection caps bind
MIN_OBJECT_SIZE = 6.0  # px; sizes are log-uniform from here ...
MAX_OBJECT_FRACTION = 0.6  # ... to 0.6 of the image's short side (crowds: to CROWD_MAX_SIZE)
CROWD_MAX_SIZE = 32.0
MIN_VISIBLE_PIXELS = 16  # an object covered down to fewer pixels is dropped (no empty masks)
MIN_CONTRAST = 60.0  # RGB distance between an object and the background under its centre
FILLS: tuple[str, ...] = ("solid", "gradient", "stripes")  # drawn independently of the class


@dataclass(frozen=True)
class Shape:
    """One sampled object or distractor, before occlusion. Pixels, x right, y down.

    The class decides the outline only; colour and fill are drawn independently of it, so the
    class cannot be told from colour or texture (chapter 1 measures it).
    """

    label: int  # 1..6: index into CLASS_NAMES; 0 (DISTRACTOR) for a thing of no class
    center: tuple[float, float]  # (x, y); may lie near or past the border: objects get cut
    size: float  # side (square, ell), outer diameter (circle, ring), arm span (cross), circumdiameter (triangle)
    angle: float  # rotation in radians
    aspect: float  # short / long axis of an ellipse (circle, ring); 1.0 for the polygons
    color: tuple[int, int, int]  # RGB 0-255: the fill's first colour
    vertices: tuple[tuple[float, float], ...]  # polygon outline (x, y), any simple polygon; () for ellipses
    hole: float = 0.0  # ring: inner / outer diameter; 0 elsewhere
    fill: str = "solid"  # one of FILLS
    color2: tuple[int, int, int] = (0, 0, 0)  # the fill's second colour (gradient end, stripes)
    fill_angle: float = 0.0  # direction of the gradient or across the stripes, radians
    period: float = 6.0  # px, width of one stripe pair


@dataclass(frozen=True)
class ShapesImage:
    """Chapter 1: one generated image with the exact visible mask of each kept object.

    ``shapes`` lists everything painted, back to front (drawing order), distractors included,
    so ``masks[i]`` is what is left of object ``shapes[kept[i]]`` after every later thing
    (object or distractor) has been painted over it.
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB
    masks: np.ndarray  # (N, H, W) bool, visible pixels of each kept object
    labels: np.ndarray  # (N,) int64 in 1..6
    shapes: tuple[Shape, ...]  # everything sampled, drawing order (kept, dropped, distractors)
    kept: tuple[int, ...]  # (N,) index into ``shapes`` of each mask: the lineage link
    dropped: dict[int, str]  # index into ``shapes`` -> reason ("occluded", "too_few_pixels", "distractor")
    crowd: bool = False  # drawn as a crowd image (CROWD_OBJECTS objects)


# --- sampling ----------------------------------------------------------------------------------
def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0


def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a small (g, g) grid to (height, width) as two matrix products."""

    def weights(n: int, g: int) -> np.ndarray:
        pos = (np.arange(n) + 0.5) / n * (g - 1)
        i0 = np.clip(np.floor(pos).astype(np.int64), 0, g - 2)
        frac = pos - i0
        w = np.zeros((n, g))
        w[np.arange(n), i0] = 1.0 - frac
        w[np.arange(n), i0 + 1] = frac
        return w

    return weights(height, grid.shape[0]) @ grid @ weights(width, grid.shape[1]).T


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A two-colour gradient in a random direction plus smooth texture, (H, W, 3) float.

    The texture's strength varies from image to image (from nearly plain to blotchy); it is
    smooth on purpose (no per-pixel noise), so PNG compresses it and the committed val split
    stays small.
    """
    c0 = _hsv(rng.uniform(), rng.uniform(0.0, 0.6), rng.uniform(0.2, 0.9))
    c1 = _hsv(rng.uniform(), rng.uniform(0.0, 0.6), rng.uniform(0.2, 0.9))
    phi = rng.uniform(0.0, 2 * math.pi)
    y, x = np.mgrid[0:height, 0:width]
    t = x * math.cos(phi) + y * math.sin(phi)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
    bg = c0 + t[..., None] * (c1 - c0)
    strength = rng.uniform(0.5, 2.5)
    texture = 14.0 * strength * _upsample(rng.uniform(-1, 1, (6, 6)), height, width)  # broad blotches
    texture += 6.0 * strength * _upsample(rng.uniform(-1, 1, (32, 32)), height, width)  # fine grain
    return bg + texture[..., None]


# Outlines in units of ``size``, centred on 0, before rotation.
_SQUARE = ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5))


def _cross(t: float) -> list[tuple[float, float]]:
    """A plus sign of span 1 and arm width ``t`` (12 corners)."""
    a, h = 0.5, t / 2
    return [(-h, -a), (h, -a), (h, -h), (a, -h), (a, h), (h, h), (h, a), (-h, a), (-h, h), (-a, h), (-a, -h), (-h, -h)]


def _ell(t: float) -> list[tuple[float, float]]:
    """An L of side 1 and stroke ``t`` (6 corners), centred on its bounding square."""
    return [(-0.5, -0.5), (-0.5 + t, -0.5), (-0.5 + t, 0.5 - t), (0.5, 0.5 - t), (0.5, 0.5), (-0.5, 0.5)]


def _blob(rng: np.random.Generator) -> list[tuple[float, float]]:
    """A distractor: an irregular star-shaped polygon of 9 corners (no class has this outline)."""
    radii = 0.5 * rng.uniform(0.35, 1.0, 9)
    angles = np.sort(rng.uniform(0, 2 * math.pi, 9))
    return [(r * math.cos(a), r * math.sin(a)) for r, a in zip(radii, angles, strict=True)]


def _bar(rng: np.random.Generator) -> list[tuple[float, float]]:
    """A distractor: a thin bar, 4-8 times longer than wide."""
    h = 0.5 / rng.uniform(4.0, 8.0)
    return [(-0.5, -h), (0.5, -h), (0.5, h), (-0.5, h)]


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(max(high, low)))))


def _sample_shape(
    rng: np.random.Generator, height: int, width: int, bg: np.ndarray, max_size: float, label: int | None = None
) -> Shape:
    """One object (``label`` None: a class drawn uniformly) or a distractor (``label`` 0)."""
    if label is None:
        label = int(rng.integers(1, len(CLASS_NAMES)))
    # Log-uniform sizes: every octave from 6 px up holds about as many objects.
    size = _log_uniform(rng, MIN_OBJECT_SIZE, max_size)
    cx, cy = float(rng.uniform(0, width)), float(rng.uniform(0, height))
    angle = float(rng.uniform(0, 2 * math.pi))
    # Colours and fill are drawn the same way for every class: they carry no class information.
    # A colour that stands out from the background under the centre; a few draws, then keep
    # the last one (still deterministic: the same rng gives the same tries).
    under = bg[min(int(cy), height - 1), min(int(cx), width - 1)]
    for _ in range(8):
        color = _hsv(rng.uniform(), rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
        if np.linalg.norm(color - under) >= MIN_CONTRAST:
            break
    color2 = _hsv(rng.uniform(), rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
    fill = FILLS[int(rng.integers(len(FILLS)))]
    fill_angle = float(rng.uniform(0, math.pi))
    period = float(rng.uniform(3.0, 10.0))
    aspect, hole = 1.0, 0.0
    corners: list[tuple[float, float]] | tuple = ()
    if label == SQUARE:
        corners = _SQUARE
    elif label == TRIANGLE:
        # Three points on a circle, spaced 120 degrees +- jitter: always a "fat" triangle.
        jitter = rng.uniform(-0.35, 0.35, 2)
        angles = (0.0, 2 * math.pi / 3 + jitter[0], 4 * math.pi / 3 + jitter[1])
        corners = [(0.5 * math.cos(a), 0.5 * math.sin(a)) for a in angles]
    elif label == CROSS:
        corners = _cross(float(rng.uniform(0.2, 0.34)))
    elif label == ELL:
        corners = _ell(float(rng.uniform(0.22, 0.36)))
    elif label in (CIRCLE, RING):
        aspect = float(rng.uniform(0.75, 1.0)) if rng.uniform() < 0.5 else 1.0
        if label == RING:
            hole = float(rng.uniform(0.45, 0.7))
    else:  # DISTRACTOR
        corners = _blob(rng) if rng.uniform() < 0.5 else _bar(rng)
    vertices = _rotate(corners, size, angle, cx, cy) if corners else ()
    return Shape(
        label,
        (cx, cy),
        size,
        angle,
        aspect,
        _rgb(color),
        vertices,
        hole=hole,
        fill=fill,
        color2=_rgb(color2),
        fill_angle=fill_angle,
        period=period,
    )


def _rgb(color: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(round(c)) for c in color)  # type: ignore[return-value]


def _rotate(corners, size: float, angle: float, cx: float, cy: float) -> tuple[tuple[float, float], ...]:
    c, s = math.cos(angle), math.sin(angle)
    return tuple((cx + size * (u * c - v * s), cy + size * (u * s + v * c)) for u, v in corners)


# --- rasterising ---------------------------------------------------------------------------------
def _window(shape: Shape, height: int, width: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): pixels that can hold ``shape`` (a generous half-extent of ``size``)."""
    r = shape.size
    x0, x1 = max(int(shape.center[0] - r), 0), min(int(shape.center[0] + r) + 1, width)
    y0, y1 = max(int(shape.center[1] - r), 0), min(int(shape.center[1] + r) + 1, height)
    return y0, y1, x0, x1


def rasterize(shape: Shape, height: int, width: int) -> np.ndarray:
    """The (H, W) bool mask of the pixels whose centre (x + 0.5, y + 0.5) lies inside ``shape``.

    Only the shape's bounding window is evaluated, which keeps generation fast.
    """
    mask = np.zeros((height, width), dtype=bool)
    y0, y1, x0, x1 = _window(shape, height, width)
    if x0 >= x1 or y0 >= y1:
        return mask
    px = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5
    py = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5
    if shape.vertices:
        inside = _inside_polygon(shape.vertices, px, py)
    else:
        dx, dy = px - shape.center[0], py - shape.center[1]
        c, s = math.cos(shape.angle), math.sin(shape.angle)
        a = shape.size / 2
        b = a * shape.aspect
        u, v = dx * c + dy * s, -dx * s + dy * c
        r2 = (u / a) ** 2 + (v / b) ** 2
        inside = (r2 <= 1.0) & (r2 >= shape.hole**2)
    mask[y0:y1, x0:x1] = inside
    return mask


def _inside_polygon(vertices, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Even-odd rule (a ray to +x crosses the outline an odd number of times) for any simple
    polygon, convex or not, in either winding order."""
    inside = np.zeros(np.broadcast_shapes(px.shape, py.shape), dtype=bool)
    n = len(vertices)
    for i in range(n):
        (ax, ay), (bx, by) = vertices[i], vertices[(i + 1) % n]
        if ay == by:
            continue  # a horizontal edge is never crossed by a horizontal ray
        straddles = (ay > py) != (by > py)
        x_cross = ax + (py - ay) * (bx - ax) / (by - ay)
        inside ^= straddles & (px < x_cross)
    return inside


def paint(shape: Shape, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float: the colour ``shape``'s fill gives every pixel (used inside its mask).

    solid: ``color``; gradient: ``color`` to ``color2`` across the shape along ``fill_angle``;
    stripes: ``color`` and ``color2`` alternating every ``period / 2`` px across ``fill_angle``.
    """
    y, x = np.mgrid[0:height, 0:width] + 0.5
    c1, c2 = np.array(shape.color, dtype=float), np.array(shape.color2, dtype=float)
    along = (x - shape.center[0]) * math.cos(shape.fill_angle) + (y - shape.center[1]) * math.sin(shape.fill_angle)
    if shape.fill == "gradient":
        t = np.clip(along / max(shape.size, 1e-9) + 0.5, 0.0, 1.0)
    elif shape.fill == "stripes":
        t = (np.floor(along / (shape.period / 2)) % 2).astype(float)
    else:
        t = np.zeros((height, width))
    return c1 + t[..., None] * (c2 - c1)


# --- one image -----------------------------------------------------------------------------------
def render_image(rng: np.random.Generator, size: tuple[int, int] | None = None) -> ShapesImage:
    """Chapter 1. Draw one shapes image and return it with the exact visible mask of each object.

    Steps: 1. decide whether this is a crowd image (probability ``CROWD_PROBABILITY``), pick the
    image size (sides from ``IMAGE_SIDES``, or ``CROWD_SIDES``, unless given) and the
    background; 2. sample the objects (1..10, a crowd 60..150) and the distractors, and shuffle
    them into one drawing order; 3. paint them back to front; 4. visible mask = drawn pixels not
    covered by anything painted later; 5. drop objects left with < ``MIN_VISIBLE_PIXELS`` pixels
    (reason "occluded" if something covered them, else "too_few_pixels"); distractors are never
    objects. No torchvision or Detectron2 counterpart. Matterport's ``samples/shapes/shapes.py``
    is the ancestor: three upright solid shapes on a flat colour, kept apart, made in memory;
    ours rotate, overlap on purpose, hide among distractors, and go to COCO files.
    """
    # 1. crowd or not, size and background
    crowd = bool(rng.uniform() < CROWD_PROBABILITY)
    sides = CROWD_SIDES if crowd else IMAGE_SIDES
    height, width = size if size is not None else (int(rng.choice(sides)), int(rng.choice(sides)))
    background = _background(rng, height, width)
    max_size = CROWD_MAX_SIZE if crowd else MAX_OBJECT_FRACTION * min(height, width)
    while True:  # redraw the objects in the (rare) case that none survives step 5
        # 2.-3. sample, shuffle and paint, back to front
        count = (
            int(rng.integers(CROWD_OBJECTS[0], CROWD_OBJECTS[1] + 1))
            if crowd
            else int(rng.integers(1, MAX_OBJECTS + 1))
        )
        n_distract = int(rng.integers(0, 2 * MAX_DISTRACTORS + 1 if crowd else MAX_DISTRACTORS + 1))
        things = [_sample_shape(rng, height, width, background, max_size) for _ in range(count)]
        things += [_sample_shape(rng, height, width, background, max_size, DISTRACTOR) for _ in range(n_distract)]
        shapes = tuple(things[i] for i in rng.permutation(len(things)))
        drawn = [rasterize(s, height, width) for s in shapes]
        # 4. visible = drawn minus everything painted later (walk front to back)
        covered = np.zeros((height, width), dtype=bool)
        visible: list[np.ndarray] = [covered] * len(shapes)
        for i in range(len(shapes) - 1, -1, -1):
            visible[i] = drawn[i] & ~covered
            covered |= drawn[i]
        # 5. drop what is (almost) gone, and the distractors
        kept, dropped = [], {}
        for i, (shape, full, vis) in enumerate(zip(shapes, drawn, visible, strict=True)):
            if shape.label == DISTRACTOR:
                dropped[i] = "distractor"
            elif vis.sum() >= MIN_VISIBLE_PIXELS:
                kept.append(i)
            else:
                dropped[i] = "occluded" if full.sum() >= MIN_VISIBLE_PIXELS else "too_few_pixels"
        if kept:
            break
    canvas = background.copy()
    for shape, mask in zip(shapes, drawn, strict=True):
        if mask.any():
            y0, y1, x0, x1 = _window(shape, height, width)
            window = mask[y0:y1, x0:x1]
            canvas[y0:y1, x0:x1][window] = _paint_window(shape, y0, y1, x0, x1)[window]
    # Mild shading over everything (objects too), so that no object is one flat colour.
    canvas += 4.0 * _upsample(rng.uniform(-1, 1, (8, 8)), height, width)[..., None]
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    masks = np.stack([visible[i] for i in kept])
    labels = np.array([shapes[i].label for i in kept], dtype=np.int64)
    return ShapesImage(image, masks, labels, shapes, tuple(kept), dropped, crowd)


def _paint_window(shape: Shape, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """``paint`` evaluated on the window only (the fill is anchored on the shape, so it is the same)."""
    moved = dataclasses.replace(shape, center=(shape.center[0] - x0, shape.center[1] - y0))
    return paint(moved, y1 - y0, x1 - x0)


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of a split: independent of every other image, so any
    image can be redrawn alone, and train and val never share an image for the same seed."""
    split_code = {"train": 0, "val": 1}[split]
    return np.random.default_rng([seed, split_code, index])


# --- writing a split as COCO files ---------------------------------------------------------------
GENERATOR_VERSION = "2"  # bump when a change to the drawing changes the files
PNG_COMPRESS_LEVEL = 4  # fixed so the bytes are reproducible; ~3 ms and ~22 KB per image
CATEGORIES: tuple[dict[str, Any], ...] = tuple(
    {"id": i, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASS_NAMES) if i > 0
)


def mask_to_bbox(mask: np.ndarray) -> list[int]:
    """COCO ``[x, y, w, h]`` of the pixels of a non-empty (H, W) mask: x2 = last column + 1.

    Same convention as pycocotools ``mask.toBbox`` (the test's oracle).
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask_to_bbox: the mask is empty")
    return [int(cols[0]), int(rows[0]), int(cols[-1] + 1 - cols[0]), int(rows[-1] + 1 - rows[0])]


def shapes_image(seed: int, split: str, index: int) -> ShapesImage:
    """Image ``index`` of a split exactly as ``make_shapes`` draws it (masks in memory)."""
    return render_image(image_rng(seed, split, index))


def distractor_boxes(drawing: ShapesImage) -> np.ndarray:
    """``(D, 4)`` float32 xyxy pixels: the box around each distractor's outline, clipped to the image.

    Distractors are never annotated; chapter 3 asks what objectness the RPN gives them. The
    box is the outline's, whatever later objects paint over it.
    """
    h, w = drawing.image.shape[:2]
    out = [
        [min(x for x, _ in s.vertices), min(y for _, y in s.vertices), max(x for x, _ in s.vertices),
         max(y for _, y in s.vertices)]
        for s in drawing.shapes
        if s.label == DISTRACTOR and s.vertices
    ]  # fmt: skip
    b = np.array(out, dtype=np.float32).reshape(-1, 4)
    b[:, 0::2] = b[:, 0::2].clip(0, w)
    b[:, 1::2] = b[:, 1::2].clip(0, h)
    return b


def _annotations(drawing: ShapesImage, image_id: int, first_id: int) -> list[dict[str, Any]]:
    """COCO annotations of one drawn image: compressed RLE (counts as str), box from the mask."""
    if len(drawing.masks) == 0:
        return []
    # pycocotools wants (H, W, N) uint8 in Fortran order; it returns one RLE per object.
    rles = mask_util.encode(np.asfortranarray(drawing.masks.transpose(1, 2, 0).astype(np.uint8)))
    anns = []
    for k, (mask, label, rle) in enumerate(zip(drawing.masks, drawing.labels, rles, strict=True)):
        anns.append(
            {
                "id": first_id + k,
                "image_id": image_id,
                "category_id": int(label),
                "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
                "area": int(mask.sum()),
                "bbox": mask_to_bbox(mask),
                "iscrowd": 0,
            }
        )
    return anns


def _dump_coco(coco: dict[str, Any]) -> str:
    """Deterministic JSON: sorted keys, fixed separators, one image/annotation per line."""

    def one(x: Any) -> str:
        return json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    parts = []
    for key in sorted(coco):
        value = coco[key]
        if isinstance(value, list):
            body = ",\n".join(one(v) for v in value)
            parts.append(f"{one(key)}:[\n{body}\n]" if value else f"{one(key)}:[]")
        else:
            parts.append(f"{one(key)}:{one(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _is_image_name(name: str) -> bool:
    """Whether ``name`` is one the generator writes: ``NNNNNN.png``."""
    return len(name) == 10 and name[:6].isascii() and name[:6].isdigit() and name[6:] == ".png"


def _previous_split(out: Path) -> list[Path]:
    """The files an earlier ``make_shapes`` wrote into ``out``: its ``annotations.json`` and the
    ``images/NNNNNN.png`` that file lists. ``FileExistsError`` naming the file if ``out`` holds
    anything else in ``images/``, or an ``annotations.json`` this generator did not write."""
    ann, images = out / "annotations.json", out / "images"
    listed: set[str] = set()
    if ann.exists():
        try:
            coco = json.loads(ann.read_text(encoding="utf-8"))
            ours = str(coco["info"]["description"]).startswith("minimask shapes data set")
            listed = {str(img["file_name"]) for img in coco["images"]}
        except (OSError, ValueError, KeyError, TypeError):
            ours = False
        if not ours or not all(_is_image_name(name) for name in listed):
            raise FileExistsError(f"make_shapes: {ann} was not written by the shapes generator; not replacing it "
                                  "(choose an empty directory)")  # fmt: skip
    if images.exists() and not images.is_dir():
        raise FileExistsError(f"make_shapes: {images} is not a directory; not replacing it")
    others = sorted(p.name for p in images.iterdir() if p.name not in listed) if images.is_dir() else []
    if others:
        raise FileExistsError(
            f"make_shapes: {images} holds {len(others)} file(s) that {ann.name} does not list (e.g. {others[0]}); "
            "--overwrite removes only what the generator wrote: move them or choose an empty directory"
        )
    return [images / name for name in sorted(listed) if (images / name).exists()] + ([ann] if ann.exists() else [])


def make_shapes(
    out_dir: str | Path, split: str, n: int, seed: int, overwrite: bool = False, progress: bool = False
) -> Path:
    """Chapter 1. Write ``n`` shapes images as a COCO instance-segmentation data set; return ``out_dir``.

    Layout: ``out_dir/annotations.json`` and ``out_dir/images/000001.png`` ... (image id =
    index + 1). Image ``i`` is drawn from ``numpy.random.default_rng([seed, s, i])`` with s = 0
    for train, 1 for val (``image_rng``), so the same arguments give byte-identical files,
    any image can be redrawn alone (``shapes_image``), and train and val differ even for the
    same seed. Refuses a non-empty ``out_dir`` unless ``overwrite``, which removes only what an
    earlier run wrote (``annotations.json`` and the images it lists) and refuses if ``images/``
    holds any other file: nothing of the user's is ever deleted.
    """
    if split not in ("train", "val"):
        raise ValueError(f"make_shapes: split must be 'train' or 'val', got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"make_shapes: n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"make_shapes: seed must be a non-negative integer, got {seed!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"make_shapes: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"make_shapes: {out} is not empty; choose an empty directory or pass "
                "overwrite=True (--overwrite) to replace the annotations.json and images an earlier run wrote there"
            )
        for path in _previous_split(out):  # every check passed: nothing is removed before
            path.unlink()
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(images_dir).free
    if free < n * 60_000:  # about 50 KB per image on average, and more for the large ones
        raise OSError(f"make_shapes: {n} images need about {n * 60 // 1000} MB; {out} has {free // 10**6} MB free")

    images, annotations = [], []
    for index in tqdm(range(n), desc=f"shapes {split}", unit="img", disable=not progress):
        drawing = shapes_image(seed, split, index)
        image_id = index + 1
        file_name = f"{image_id:06d}.png"
        Image.fromarray(drawing.image).save(images_dir / file_name, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        height, width = drawing.image.shape[:2]
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        annotations += _annotations(drawing, image_id, first_id=len(annotations) + 1)
    coco = {
        "info": {
            "description": f"minimask shapes data set, split={split}, seed={seed}, n={n}",
            "version": GENERATOR_VERSION,
        },
        "licenses": [],
        "categories": [dict(c) for c in CATEGORIES],
        "images": images,
        "annotations": annotations,
    }
    # Written last: a run stopped half-way leaves no annotations.json that looks complete.
    (out / "annotations.json").write_text(_dump_coco(coco), encoding="ascii")
    return out


def main(argv: Sequence[str] | None = None, prog: str = "python -m minimask.shapes") -> int:
    """``python -m minimask.shapes --out DIR --split {train,val} --n N --seed S [--overwrite]``.

    Exit status 2 with a one-line error for a bad argument or a non-empty ``--out`` (``minimask.cli``).
    """
    from minimask import cli

    parser: argparse.ArgumentParser = cli.Parser(
        prog, "Write the synthetic shapes data set as COCO instance-segmentation files: DIR/annotations.json and "
        "DIR/images/000001.png ... (the same arguments give byte-identical files)."
    )  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="output directory (new or empty)")
    parser.add_argument("--split", required=True, choices=("train", "val"),
                        help="which split: train and val images differ for the same seed")  # fmt: skip
    parser.add_argument("--n", required=True, type=cli.integer(1), help="number of images")
    parser.add_argument("--seed", required=True, type=cli.integer(0), help="random seed (>= 0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a split made earlier in --out: removes only its annotations.json and the "
                        "images it lists; refuses if images/ holds other files")  # fmt: skip
    args = parser.parse_args(argv)
    with cli.user_errors():
        out = make_shapes(args.out, args.split, args.n, args.seed, overwrite=args.overwrite, progress=True)
    print(f"wrote {args.n} images to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
