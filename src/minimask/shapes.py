"""Chapter 1. The shapes data set: draw an image, remember exactly which pixels each object got,
and write a split as a COCO instance-segmentation file.

- ``render_image`` draws one image and returns it *and* the visible mask of every object,
  before anything is encoded, so the tests can compare the COCO file against these masks.
- ``make_shapes`` writes a split (``annotations.json`` + ``images/``) deterministically: the
  same seed gives byte-identical files. ``python -m minimask.shapes --out DIR --split val --n
  100 --seed 0`` (or ``python -m minimask.data ...``, the chapter's facade) does the same.

Everything is drawn with numpy on pixel centres (no anti-aliasing), so a mask is exactly the
set of pixels painted in the object's colour; occlusion is applied afterwards (later objects
cover earlier ones) and every object left with too few visible pixels is dropped with its
reason. Randomness comes only from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import argparse
import colorsys
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
CLASS_NAMES: tuple[str, ...] = ("__background__", "square", "circle", "triangle")
SQUARE, CIRCLE, TRIANGLE = 1, 2, 3

# (height, width): square, landscape and portrait, so that resizing and padding (chapter 2)
# have something to do. The long side of 224 and short side of 160 both map onto 192.
IMAGE_SIZES: tuple[tuple[int, int], ...] = ((192, 192), (160, 224), (224, 160))
MAX_OBJECTS = 6  # 1..6 objects are sampled per image
SIZE_RANGE = (8.0, 80.0)  # px, uniform: side / long diameter / circumdiameter
MIN_VISIBLE_PIXELS = 20  # an object covered down to fewer pixels is dropped (no empty masks)
MIN_CONTRAST = 60.0  # RGB distance between an object and the background under its centre


@dataclass(frozen=True)
class Shape:
    """One sampled object, before occlusion. Coordinates are pixels, x right, y down."""

    label: int  # 1 square, 2 circle, 3 triangle (index into CLASS_NAMES)
    center: tuple[float, float]  # (x, y); may lie near or past the border: objects get cut
    size: float  # side (square), long diameter (ellipse), circumdiameter (triangle)
    angle: float  # rotation in radians
    aspect: float  # short / long axis of an ellipse; 1.0 for the polygons
    color: tuple[int, int, int]  # RGB 0-255
    vertices: tuple[tuple[float, float], ...]  # polygon corners (x, y), counter-clockwise on screen; () for ellipses


@dataclass(frozen=True)
class ShapesImage:
    """Chapter 1: one generated image with the exact visible mask of each kept object.

    Objects are listed back to front (drawing order), so ``masks[i]`` is what is left of
    object ``i`` after every later object has been painted over it.
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB
    masks: np.ndarray  # (N, H, W) bool, visible pixels of each kept object
    labels: np.ndarray  # (N,) int64 in 1..3
    shapes: tuple[Shape, ...]  # every sampled object, drawing order (kept and dropped)
    kept: tuple[int, ...]  # (N,) index into ``shapes`` of each mask: the lineage link
    dropped: dict[int, str]  # index into ``shapes`` -> reason ("occluded", "too_few_pixels")


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
    """A muted two-colour gradient in a random direction plus smooth texture, (H, W, 3) float.

    The texture is smooth on purpose (no per-pixel noise): it keeps the image from being
    flat yet lets PNG compress it, so the committed val split stays small.
    """
    c0 = _hsv(rng.uniform(), rng.uniform(0.0, 0.45), rng.uniform(0.25, 0.85))
    c1 = _hsv(rng.uniform(), rng.uniform(0.0, 0.45), rng.uniform(0.25, 0.85))
    phi = rng.uniform(0.0, 2 * math.pi)
    y, x = np.mgrid[0:height, 0:width]
    t = x * math.cos(phi) + y * math.sin(phi)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
    bg = c0 + t[..., None] * (c1 - c0)
    texture = 14.0 * _upsample(rng.uniform(-1, 1, (6, 6)), height, width)  # broad blotches
    texture += 6.0 * _upsample(rng.uniform(-1, 1, (32, 32)), height, width)  # fine grain
    return bg + texture[..., None]


def _sample_shape(rng: np.random.Generator, height: int, width: int, bg: np.ndarray) -> Shape:
    label = int(rng.integers(1, 4))
    # Uniform in size (not log-uniform) gives ~45% COCO-small objects, near COCO's own 41%.
    size = float(rng.uniform(*SIZE_RANGE))
    cx, cy = float(rng.uniform(0, width)), float(rng.uniform(0, height))
    angle = float(rng.uniform(0, 2 * math.pi))
    # A saturated colour that stands out from the background under the centre; a few
    # draws, then keep the last one (still deterministic: the same rng gives the same try).
    under = bg[min(int(cy), height - 1), min(int(cx), width - 1)]
    for _ in range(8):
        color = _hsv(rng.uniform(), rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0))
        if np.linalg.norm(color - under) >= MIN_CONTRAST:
            break
    rgb = tuple(int(round(c)) for c in color)
    aspect = 1.0
    vertices: tuple[tuple[float, float], ...] = ()
    if label == SQUARE:
        corners = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]
        vertices = _rotate(corners, size, angle, cx, cy)
    elif label == TRIANGLE:
        # Three points on a circle, spaced 120 degrees +- jitter: always a "fat" triangle.
        jitter = rng.uniform(-0.35, 0.35, 2)
        angles = (0.0, 2 * math.pi / 3 + jitter[0], 4 * math.pi / 3 + jitter[1])
        corners = [(0.5 * math.cos(a), 0.5 * math.sin(a)) for a in angles]
        vertices = _rotate(corners, size, angle, cx, cy)
    else:
        aspect = float(rng.uniform(0.6, 1.0)) if rng.uniform() < 0.5 else 1.0
    return Shape(label, (cx, cy), size, angle, aspect, rgb, vertices)  # type: ignore[arg-type]


def _rotate(corners, size: float, angle: float, cx: float, cy: float) -> tuple[tuple[float, float], ...]:
    c, s = math.cos(angle), math.sin(angle)
    return tuple((cx + size * (u * c - v * s), cy + size * (u * s + v * c)) for u, v in corners)


# --- rasterising ---------------------------------------------------------------------------------
def rasterize(shape: Shape, height: int, width: int) -> np.ndarray:
    """The (H, W) bool mask of the pixels whose centre (x + 0.5, y + 0.5) lies inside ``shape``.

    Only the shape's bounding window is evaluated, which keeps generation fast.
    """
    mask = np.zeros((height, width), dtype=bool)
    r = shape.size  # generous half-extent: covers any rotation of every shape
    x0, x1 = max(int(shape.center[0] - r), 0), min(int(shape.center[0] + r) + 1, width)
    y0, y1 = max(int(shape.center[1] - r), 0), min(int(shape.center[1] + r) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return mask
    px = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5
    py = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5
    if shape.vertices:
        inside = _inside_convex(shape.vertices, px, py)
    else:
        dx, dy = px - shape.center[0], py - shape.center[1]
        c, s = math.cos(shape.angle), math.sin(shape.angle)
        a = shape.size / 2
        b = a * shape.aspect
        u, v = dx * c + dy * s, -dx * s + dy * c
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    mask[y0:y1, x0:x1] = inside
    return mask


def _inside_convex(vertices, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Point-in-convex-polygon by half-planes; works for either winding order."""
    n = len(vertices)
    signs = []
    for i in range(n):
        (ax, ay), (bx, by) = vertices[i], vertices[(i + 1) % n]
        signs.append((bx - ax) * (py - ay) - (by - ay) * (px - ax))
    pos = np.logical_and.reduce([s >= 0 for s in signs])
    neg = np.logical_and.reduce([s <= 0 for s in signs])
    return pos | neg


# --- one image -----------------------------------------------------------------------------------
def render_image(rng: np.random.Generator, size: tuple[int, int] | None = None) -> ShapesImage:
    """Chapter 1. Draw one shapes image and return it with the exact visible mask of each object.

    Steps: 1. pick the image size (one of ``IMAGE_SIZES`` unless given) and the background;
    2. sample 1..6 shapes; 3. paint them back to front; 4. visible mask = drawn pixels not
    covered by any later shape; 5. drop objects left with < ``MIN_VISIBLE_PIXELS`` pixels
    (reason "occluded" if something covered them, else "too_few_pixels"). No torchvision or
    Detectron2 counterpart. Matterport's ``samples/shapes/shapes.py`` is the ancestor: upright
    shapes on a flat colour, 1-4 per image, kept apart by NMS on their boxes at IoU 0.3 and
    made in memory; ours rotate, overlap on purpose, and go to COCO files.
    """
    # 1. size and background
    height, width = size if size is not None else IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    background = _background(rng, height, width)
    while True:  # redraw the objects in the (rare) case that none survives step 5
        # 2.-3. sample and paint, back to front
        count = int(rng.integers(1, MAX_OBJECTS + 1))
        shapes = tuple(_sample_shape(rng, height, width, background) for _ in range(count))
        drawn = [rasterize(s, height, width) for s in shapes]
        # 4. visible = drawn minus everything painted later (walk front to back)
        covered = np.zeros((height, width), dtype=bool)
        visible: list[np.ndarray] = [covered] * count
        for i in range(count - 1, -1, -1):
            visible[i] = drawn[i] & ~covered
            covered |= drawn[i]
        # 5. drop what is (almost) gone
        kept, dropped = [], {}
        for i, (full, vis) in enumerate(zip(drawn, visible, strict=True)):
            if vis.sum() >= MIN_VISIBLE_PIXELS:
                kept.append(i)
            else:
                dropped[i] = "occluded" if full.sum() >= MIN_VISIBLE_PIXELS else "too_few_pixels"
        if kept:
            break
    canvas = background.copy()
    for shape, mask in zip(shapes, drawn, strict=True):
        canvas[mask] = shape.color
    # Mild shading over everything (objects too), so that no object is one flat colour.
    canvas += 4.0 * _upsample(rng.uniform(-1, 1, (8, 8)), height, width)[..., None]
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    masks = np.stack([visible[i] for i in kept])
    labels = np.array([shapes[i].label for i in kept], dtype=np.int64)
    return ShapesImage(image, masks, labels, shapes, tuple(kept), dropped)


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of a split: independent of every other image, so any
    image can be redrawn alone, and train and val never share an image for the same seed."""
    split_code = {"train": 0, "val": 1}[split]
    return np.random.default_rng([seed, split_code, index])


# --- writing a split as COCO files ---------------------------------------------------------------
GENERATOR_VERSION = "1"  # bump when a change to the drawing changes the files
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


def make_shapes(
    out_dir: str | Path, split: str, n: int, seed: int, overwrite: bool = False, progress: bool = False
) -> Path:
    """Chapter 1. Write ``n`` shapes images as a COCO instance-segmentation data set; return ``out_dir``.

    Layout: ``out_dir/annotations.json`` and ``out_dir/images/000001.png`` ... (image id =
    index + 1). Image ``i`` is drawn from ``numpy.random.default_rng([seed, s, i])`` with s = 0
    for train, 1 for val (``image_rng``), so the same arguments give byte-identical files,
    any image can be redrawn alone (``shapes_image``), and train and val differ even for the
    same seed. Refuses a non-empty ``out_dir`` unless ``overwrite`` (which replaces
    ``annotations.json`` and ``images/`` only).
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
                "overwrite=True (--overwrite) to replace its annotations.json and images/"
            )
        (out / "annotations.json").unlink(missing_ok=True)
        shutil.rmtree(out / "images", ignore_errors=True)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)

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

    Exit status 2 with a one-line error for a bad argument or a non-empty ``--out``.
    """
    parser = argparse.ArgumentParser(prog=prog, description=make_shapes.__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory (must be empty)")
    parser.add_argument("--split", required=True, choices=("train", "val"))
    parser.add_argument("--n", required=True, type=int, help="number of images")
    parser.add_argument("--seed", required=True, type=int)
    parser.add_argument("--overwrite", action="store_true", help="replace annotations.json and images/ in --out")
    args = parser.parse_args(argv)
    try:
        out = make_shapes(args.out, args.split, args.n, args.seed, overwrite=args.overwrite, progress=True)
    except (ValueError, FileExistsError, NotADirectoryError) as e:
        parser.exit(2, f"error: {e}\n")
    print(f"wrote {args.n} images to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
