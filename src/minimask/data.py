"""Chapter 1. What the model is given: the shapes data set and a loader for COCO files.

Two halves:

- ``make_shapes`` writes the synthetic shapes data set as a COCO instance-segmentation file
  (``annotations.json`` + ``images/``), deterministically: the same seed gives byte-identical
  files. ``python -m minimask.data --out DIR --split val --n 100 --seed 0`` does the same.
- ``CocoDataset`` reads any COCO instance file (the shapes set or real COCO) into
  torchvision's detection contract, refusing bad input with an error that names the file
  and the annotation, never returning a silently wrong target.

Targets keep ``iscrowd`` regions (flagged ``iscrowd == 1``). They are not objects to detect:
training drops them with ``non_crowd`` (torchvision's reference ``ConvertCocoPolysToMask`` and
Detectron2's ``DatasetMapper`` drop them too); pycocotools' ``COCOeval`` uses them as
"ignore" regions when scoring.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from minimask._shapes import CLASS_NAMES, ShapesImage, image_rng, render_image

__all__ = [
    "CLASS_NAMES",
    "FEATURED",
    "SHAPES_VAL",
    "SHAPES_VAL_N",
    "SHAPES_VAL_SEED",
    "CocoDataset",
    "collate",
    "decode_rle",
    "featured",
    "make_shapes",
    "mask_to_bbox",
    "non_crowd",
    "render_image",
    "shapes_image",
    "shapes_val",
]

# --- the committed validation split ------------------------------------------------------------
SHAPES_VAL_SEED = 0  # the seed data/shapes/val was made with
SHAPES_VAL_N = 100  # its number of images
# Found relative to the package in the repository layout: src/minimask/data.py -> data/shapes/val.
SHAPES_VAL = Path(__file__).resolve().parents[2] / "data" / "shapes" / "val"
# Val images every chapter reuses: dataset indices (image id = index + 1), picked by looking.
#   featured(0) = index 48: 192x192, 6 objects in one overlapping cluster, 3 of them partly covered
#   featured(1) = index 16: 192x192, a circle drawn over a larger one leaves it a ring (1113 of
#                 3443 px visible); a square under a circle keeps 615 of 1649 px
#   featured(2) = index 25: landscape 160x224, 6 objects, 4 of them COCO-small (area < 32^2)
#   featured(3) = index 1: portrait 224x160, a 27-px triangle, a square with 142 of 1537 px
#                 visible, and one object the generator dropped as occluded
FEATURED: tuple[int, ...] = (48, 16, 25, 1)

GENERATOR_VERSION = "1"  # bump when a change to the drawing changes the files
PNG_COMPRESS_LEVEL = 4  # fixed so the bytes are reproducible; ~3 ms and ~22 KB per image
CATEGORIES: tuple[dict[str, Any], ...] = tuple(
    {"id": i, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASS_NAMES) if i > 0
)


# --- writing the shapes data set ---------------------------------------------------------------
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
    for train, 1 for val (``_shapes.image_rng``), so
    the same arguments give byte-identical files, any image can be redrawn alone
    (``shapes_image``), and train and val differ even for the same seed. Refuses a non-empty
    ``out_dir`` unless ``overwrite`` (which replaces ``annotations.json`` and ``images/`` only).
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m minimask.data --out DIR --split {train,val} --n N --seed S [--overwrite]``."""
    parser = argparse.ArgumentParser(prog="python -m minimask.data", description=make_shapes.__doc__.split("\n")[0])
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


# --- reading COCO files -------------------------------------------------------------------------
# pycocotools 2.0.11's decoder hands numpy 2 an object whose __array__ lacks the ``copy``
# keyword, and numpy warns on every call. Nothing is wrong with the mask; we silence exactly
# that message, only around the call.
PYCOCOTOOLS_NUMPY2_WARNING = "__array__ implementation doesn't accept a copy keyword"


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """pycocotools ``mask.decode`` of one compressed RLE -> (H, W) uint8, without numpy 2's warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PYCOCOTOOLS_NUMPY2_WARNING, category=DeprecationWarning)
        return mask_util.decode(rle)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _rle_string_counts(counts: str) -> list[int]:
    """The run lengths in a compressed COCO RLE string (the format of pycocotools' maskApi.c).

    Each run is written in 5-bit groups, low group first, one character (value + 48) per
    group; bit 0x20 says another group follows and bit 0x10 of the last group is the sign.
    From the third run on, the number stored is the difference to the run two places
    before. Decoded here only to check the runs before pycocotools sees them: it silently
    returns garbage for runs that fall short of H*W pixels.
    """
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(counts):
                raise ValueError("the string ends in the middle of a run")
            c = ord(counts[pos]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {counts[pos]!r} at position {pos} is not RLE")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value -= 1 << shift  # negative: sign-extend
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError(f"run {len(runs)} is negative ({value})")
        runs.append(value)
    return runs


class CocoDataset(Dataset):
    """Chapter 1. A COCO instance-segmentation file as a torch ``Dataset`` of ``(image, target)``.

    ``image``: float32 (3, H, W) RGB in [0, 1] (grayscale, palette, RGBA, CMYK and 16-bit
    files are converted; alpha is dropped; EXIF orientation is ignored, as COCO and
    torchvision ignore it). ``target`` (torchvision's detection contract, as built by its
    reference ``references/detection/coco_utils.py:ConvertCocoPolysToMask``):

    - ``boxes`` float32 (N, 4) xyxy: the annotation's ``bbox`` [x, y, w, h] -> [x, y, x+w, y+h],
      clipped to the image;
    - ``labels`` int64 (N,) in 1..K: category ids mapped to contiguous labels in sorted-id
      order (``category_id_to_label`` / ``label_to_category_id``; ``class_names[0]`` is
      ``"__background__"``);
    - ``masks`` uint8 (N, H, W), decoded by pycocotools as ``COCO.annToMask`` does
      (polygons: one or several per object, merged; compressed or uncompressed RLE);
    - ``image_id`` int64 scalar tensor; ``area`` float32 (N,) from the file (what COCOeval
      bins by; computed from the mask when absent); ``iscrowd`` int64 (N,).

    Differences from torchvision's reference: crowd regions are *kept* and flagged (training
    removes them with ``non_crowd``); the ids in the file are checked when the dataset is
    built; annotations that cannot be a training object (box of zero or negative size after
    clipping, or no polygon with 3 or more points, which Detectron2's ``load_coco_json`` also
    drops) are skipped with one ``UserWarning`` per dataset and listed in ``self.skipped``.
    Anything malformed raises ``ValueError`` naming the file and the annotation id.
    Images are ordered by id, as torchvision's ``CocoDetection``.
    """

    def __init__(self, annotation_file: str | Path, images_dir: str | Path) -> None:
        self.annotation_file = Path(annotation_file)
        self.images_dir = Path(images_dir)
        coco = self._load_json()
        self.class_names, self.category_id_to_label, self.label_to_category_id = self._categories(coco)
        self._images = self._image_table(coco)
        self.ids: list[int] = sorted(self._images)
        self._anns: dict[int, list[dict[str, Any]]] = {i: [] for i in self.ids}
        self._boxes: dict[int, list[list[float]]] = {i: [] for i in self.ids}
        self.skipped: dict[int, str] = {}  # annotation id -> reason it is not in any target
        self._read_annotations(coco)
        if self.skipped:
            reasons: dict[str, list[int]] = {}
            for ann_id, reason in self.skipped.items():
                reasons.setdefault(reason, []).append(ann_id)
            detail = "; ".join(
                f"{len(ids)} with {reason} (ids {', '.join(map(str, ids[:5]))}{', ...' if len(ids) > 5 else ''})"
                for reason, ids in reasons.items()
            )
            warnings.warn(
                f"{self.annotation_file}: skipped {len(self.skipped)} annotation(s) that cannot be "
                f"training objects: {detail}. See CocoDataset.skipped.",
                UserWarning,
                stacklevel=2,
            )

    # --- construction-time checks -----------------------------------------------------------------
    def _fail(self, what: str) -> ValueError:
        return ValueError(f"{self.annotation_file}: {what}")

    def _load_json(self) -> dict[str, Any]:
        if not self.annotation_file.is_file():
            raise FileNotFoundError(f"COCO annotation file not found: {self.annotation_file}")
        try:
            coco = json.loads(self.annotation_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise self._fail(f"not valid JSON ({e})") from e
        if not isinstance(coco, dict):
            raise self._fail("the top level must be a JSON object with 'images' and 'categories'")
        for key in ("images", "categories"):
            if not isinstance(coco.get(key), list):
                raise self._fail(f"'{key}' must be a list")
        if not isinstance(coco.get("annotations", []), list):
            raise self._fail("'annotations' must be a list")
        return coco

    def _categories(self, coco: dict[str, Any]) -> tuple[list[str], dict[int, int], dict[int, int]]:
        names: dict[int, str] = {}
        for k, cat in enumerate(coco["categories"]):
            if not isinstance(cat, dict) or isinstance(cat.get("id"), bool) or not isinstance(cat.get("id"), int):
                raise self._fail(f"categories[{k}] has no integer 'id'")
            if cat["id"] in names:
                raise self._fail(f"category id {cat['id']} appears twice in 'categories'")
            names[cat["id"]] = str(cat.get("name", cat["id"]))
        # Contiguous labels 1..K in sorted-id order; 0 is background (torchvision's convention).
        to_label = {cid: i + 1 for i, cid in enumerate(sorted(names))}
        to_cid = {label: cid for cid, label in to_label.items()}
        return ["__background__"] + [names[c] for c in sorted(names)], to_label, to_cid

    def _image_table(self, coco: dict[str, Any]) -> dict[int, dict[str, Any]]:
        table: dict[int, dict[str, Any]] = {}
        for k, img in enumerate(coco["images"]):
            if not isinstance(img, dict) or isinstance(img.get("id"), bool) or not isinstance(img.get("id"), int):
                raise self._fail(f"images[{k}] has no integer 'id'")
            if img["id"] in table:
                raise self._fail(f"image id {img['id']} appears twice in 'images'")
            if not isinstance(img.get("file_name"), str) or not img["file_name"]:
                raise self._fail(f"image id {img['id']} has no 'file_name'")
            for key in ("height", "width"):
                v = img.get(key)
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise self._fail(
                        f"image id {img['id']} ({img['file_name']}) has {key}={v!r}; need a positive integer"
                    )
            table[img["id"]] = img
        return table

    def _read_annotations(self, coco: dict[str, Any]) -> None:
        seen: set[Any] = set()
        for k, ann in enumerate(coco.get("annotations", [])):
            if not isinstance(ann, dict):
                raise self._fail(f"annotations[{k}] is not an object")
            ann_id = ann.get("id", f"#{k}")
            if ann_id in seen:
                raise self._fail(f"annotation id {ann_id} appears twice")
            seen.add(ann_id)
            image_id, category_id = ann.get("image_id"), ann.get("category_id")
            if image_id not in self._images:
                raise self._fail(f"annotation id {ann_id} refers to image_id {image_id!r}, which is not in 'images'")
            if category_id not in self.category_id_to_label:
                raise self._fail(
                    f"annotation id {ann_id} refers to category_id {category_id!r}, which is not in 'categories' "
                    f"(ids: {sorted(self.category_id_to_label)})"
                )
            if ann.get("iscrowd", 0) not in (0, 1):
                raise self._fail(f"annotation id {ann_id} has iscrowd={ann['iscrowd']!r}; must be 0 or 1")
            if "area" in ann and not _is_number(ann["area"]):
                raise self._fail(f"annotation id {ann_id} has a malformed area {ann['area']!r}")
            info = self._images[image_id]
            height, width = info["height"], info["width"]
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
                raise self._fail(f"annotation id {ann_id} has a malformed bbox {bbox!r}; need [x, y, w, h]")
            # xywh -> xyxy, clipped to the image as torchvision's reference does.
            x1, y1 = min(max(bbox[0], 0.0), width), min(max(bbox[1], 0.0), height)
            x2, y2 = min(max(bbox[0] + bbox[2], 0.0), width), min(max(bbox[1] + bbox[3], 0.0), height)
            if not (x2 > x1 and y2 > y1):
                self.skipped[ann_id] = "a box of zero or negative size"
                continue
            seg = self._check_segmentation(ann.get("segmentation"), ann_id, height, width)
            if seg is None:
                self.skipped[ann_id] = "no polygon of 3 or more points"
                continue
            self._anns[image_id].append({**ann, "segmentation": seg})
            self._boxes[image_id].append([float(x1), float(y1), float(x2), float(y2)])

    def _check_segmentation(self, seg: Any, ann_id: Any, height: int, width: int) -> Any:
        """The segmentation ready for pycocotools, or None if it has no usable polygon.

        Checked here because pycocotools checks little: a polygon of 4 numbers is taken for a
        box, and RLE runs that fall short of H*W give uninitialised memory.
        """
        bad = f"annotation id {ann_id} has a malformed segmentation"
        if isinstance(seg, list):
            if not all(isinstance(p, list) for p in seg):
                raise self._fail(f"{bad}: a polygon segmentation must be a list of [x1, y1, x2, y2, ...] lists")
            odd = [len(p) for p in seg if len(p) % 2]
            if odd:
                raise self._fail(f"{bad}: a polygon has an odd number of coordinates ({odd[0]})")
            # Fewer than 3 points has no area; real COCO files contain a few (Detectron2 drops them).
            polygons = [p for p in seg if len(p) >= 6]
            return polygons or None
        if isinstance(seg, dict):
            size, counts = seg.get("size"), seg.get("counts")
            if not isinstance(size, list) or len(size) != 2:
                raise self._fail(f"{bad}: RLE needs 'size': [height, width], got {size!r}")
            if list(size) != [height, width]:
                raise self._fail(
                    f"{bad}: RLE size {size} differs from the image's [height, width] = [{height}, {width}]"
                )
            if isinstance(counts, list):  # uncompressed RLE (COCO's crowd regions use it)
                if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                    raise self._fail(f"{bad}: RLE counts must be non-negative integers")
                total = sum(counts)
            elif isinstance(counts, (str, bytes)):  # compressed RLE
                text = counts.decode("ascii") if isinstance(counts, bytes) else counts
                try:
                    total = sum(_rle_string_counts(text))
                except ValueError as e:
                    raise self._fail(f"{bad}: compressed RLE counts are corrupt: {e}") from e
                seg = {"size": list(size), "counts": text}
            else:
                raise self._fail(f"{bad}: RLE 'counts' must be a string or a list of integers")
            if total != height * width:
                raise self._fail(
                    f"{bad}: RLE runs cover {total} pixels, the image has {height}x{width} = {height * width}"
                )
            return seg
        raise self._fail(f"{bad}: expected a list of polygons or an RLE dict, got {type(seg).__name__}")

    # --- reading one image ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def image_info(self, index: int) -> dict[str, Any]:
        """The ``images`` entry of dataset item ``index`` (a copy)."""
        return dict(self._images[self.ids[index]])

    def annotations(self, index: int) -> list[dict[str, Any]]:
        """The annotations of dataset item ``index`` that make up its target, as in the file."""
        return [dict(a) for a in self._anns[self.ids[index]]]

    def load_image(self, index: int) -> Tensor:
        """Dataset item ``index``'s image as float32 (3, H, W) RGB in [0, 1], size checked."""
        info = self._images[self.ids[index]]
        path = self.images_dir / info["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"{self.annotation_file}: image id {info['id']} needs {path}, which does not exist")
        with Image.open(path) as pil:
            if pil.size != (info["width"], info["height"]):
                raise ValueError(
                    f"{path}: the file is {pil.size[0]}x{pil.size[1]} (width x height) but "
                    f"{self.annotation_file.name} says {info['width']}x{info['height']} for image id {info['id']}"
                )
            array = _to_rgb_array(pil, path)
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255.0)

    def decode_mask(self, ann: dict[str, Any], height: int, width: int) -> np.ndarray:
        """One annotation's (H, W) uint8 mask, decoded as pycocotools ``COCO.annToMask`` does."""
        seg = ann["segmentation"]
        try:
            if isinstance(seg, list):
                polygons = [np.asarray(p, dtype=np.float64) for p in seg]
                if not all(np.isfinite(p).all() for p in polygons):
                    raise ValueError("a polygon coordinate is not finite")
                rle = mask_util.merge(mask_util.frPyObjects([p.tolist() for p in polygons], height, width))
            elif isinstance(seg["counts"], list):
                rle = mask_util.frPyObjects(seg, height, width)
            else:
                rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
            return decode_rle(rle)
        except (ValueError, TypeError) as e:
            raise self._fail(f"annotation id {ann.get('id')} has a malformed segmentation: {e}") from e

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not 0 <= index < len(self.ids):
            raise IndexError(f"CocoDataset index {index} out of range for {len(self.ids)} images")
        image_id = self.ids[index]
        image = self.load_image(index)
        height, width = image.shape[-2:]
        anns = self._anns[image_id]
        masks = [self.decode_mask(a, height, width) for a in anns]
        mask_tensor = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, height, width), dtype=torch.uint8)
        area = [float(a["area"]) if "area" in a else float(m.sum()) for a, m in zip(anns, masks, strict=True)]
        target = {
            "boxes": torch.tensor(self._boxes[image_id], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([self.category_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
            "masks": mask_tensor,
            "image_id": torch.tensor(image_id, dtype=torch.int64),
            "area": torch.tensor(area, dtype=torch.float32),
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64),
        }
        return image, target

    def __repr__(self) -> str:
        return (
            f"CocoDataset({str(self.annotation_file)!r}, {str(self.images_dir)!r}): {len(self)} images, "
            f"{sum(len(a) for a in self._anns.values())} objects, {len(self.class_names) - 1} classes"
        )


def _to_rgb_array(pil: Image.Image, path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any common PIL mode (16-bit grayscale is scaled, not clipped)."""
    if pil.mode in ("I;16", "I;16B", "I;16L"):
        gray = np.asarray(pil, dtype=np.uint16).astype(np.float64) / 65535.0 * 255.0
        return np.repeat(np.rint(gray).astype(np.uint8)[..., None], 3, axis=2)
    if pil.mode in ("I", "F"):
        raise ValueError(f"{path}: image mode {pil.mode!r} (32-bit) has no defined 0-1 range; convert it to 8 bits")
    if pil.mode == "P" and "transparency" in pil.info:
        pil = pil.convert("RGBA")  # via RGBA: PIL asks for this when the palette has transparency
    return np.asarray(pil.convert("RGB"), dtype=np.uint8)


def collate(batch: Sequence[tuple[Tensor, dict[str, Tensor]]]) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """DataLoader ``collate_fn``: images differ in size, so keep lists (torchvision's ``utils.collate_fn``)."""
    return [image for image, _ in batch], [target for _, target in batch]


def non_crowd(target: dict[str, Tensor]) -> dict[str, Tensor]:
    """The target without its ``iscrowd == 1`` regions: what training may use as objects.

    Same rule as torchvision's reference ``ConvertCocoPolysToMask`` (keeps ``iscrowd == 0``)
    and Detectron2's ``DatasetMapper`` (``obj.get("iscrowd", 0) == 0``).
    """
    keep = target["iscrowd"] == 0
    per_object = ("boxes", "labels", "masks", "area", "iscrowd")
    return {key: (value[keep] if key in per_object else value) for key, value in target.items()}


# --- the committed split and the featured images ------------------------------------------------
@functools.cache
def shapes_val() -> CocoDataset:
    """The committed val split (``SHAPES_VAL``) as a ``CocoDataset``; a clear error if missing."""
    annotation_file = SHAPES_VAL / "annotations.json"
    if not annotation_file.is_file():
        raise FileNotFoundError(
            f"the shapes val split is missing: {annotation_file} does not exist. minimask looks for it in the "
            "repository layout (src/minimask -> data/shapes/val). Recreate it with: python -m minimask.data "
            f"--out data/shapes/val --split val --n {SHAPES_VAL_N} --seed {SHAPES_VAL_SEED}"
        )
    return CocoDataset(annotation_file, SHAPES_VAL / "images")


def featured(i: int) -> tuple[Tensor, dict[str, Tensor]]:
    """Featured val image ``i`` (0..3, see ``FEATURED``) as ``(image, target)``: every chapter uses these."""
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(FEATURED):
        raise IndexError(f"featured: i must be in 0..{len(FEATURED) - 1}, got {i!r}")
    return shapes_val()[FEATURED[i]]


if __name__ == "__main__":
    sys.exit(main())
