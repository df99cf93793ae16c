"""Chapter 1. Reading COCO files: the annotations, checked once, and the images.

- ``read_annotations`` reads a COCO instance-segmentation file and checks it, once: it
  returns an ``AnnotationTable`` (images, the annotations of each image that can be training
  objects, the categories, and what it skipped and why), or raises ``ValueError`` naming the
  file and the annotation, never a silently wrong table.
- ``read_image`` reads an image file as the model wants it (float RGB in [0, 1]), whatever
  its mode: grey, palette, RGBA, CMYK, 16-bit. ``predict`` reads its images with it too.
- ``CocoDataset`` puts the two together as a torch ``Dataset`` in torchvision's detection
  contract (torchvision's reference ``references/detection/coco_utils.py``,
  ``ConvertCocoPolysToMask``).

Targets keep ``iscrowd`` regions (flagged ``iscrowd == 1``). They are not objects to detect:
training drops them with ``drop_crowd`` (below) (torchvision's reference
``ConvertCocoPolysToMask`` and Detectron2's ``DatasetMapper`` drop them too); pycocotools'
``COCOeval`` uses them as "ignore" regions when scoring.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "PYCOCOTOOLS_NUMPY2_WARNING",
    "AnnotationTable",
    "CocoDataset",
    "collate",
    "decode_rle",
    "read_annotations",
    "read_image",
]

# pycocotools 2.0.11's decoder hands numpy 2 an object whose __array__ lacks the ``copy``
# keyword, and numpy warns on every call. Nothing is wrong with the mask; we silence exactly
# that message, only around the call.
PYCOCOTOOLS_NUMPY2_WARNING = "__array__ implementation doesn't accept a copy keyword"

SKIP_EMPTY_BOX = "a box of zero or negative size"
SKIP_NO_POLYGON = "no polygon of 3 or more points"


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """pycocotools ``mask.decode`` of one compressed RLE -> (H, W) uint8, without numpy 2's warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PYCOCOTOOLS_NUMPY2_WARNING, category=DeprecationWarning)
        return mask_util.decode(rle)


# --- the annotation file ------------------------------------------------------------------------
@dataclass(frozen=True)
class AnnotationTable:
    """Chapter 1: a COCO instance file after its checks, as ``read_annotations`` returns it.

    Images are in id order, as torchvision's ``CocoDetection`` orders them. Labels are the
    category ids mapped to 1..K in sorted-id order (0 is background, torchvision's convention).
    """

    source: Path  # the annotation file
    images: dict[int, dict[str, Any]]  # image id -> its ``images`` entry, ids ascending
    annotations: dict[int, tuple[dict[str, Any], ...]]  # image id -> its usable annotations, file order
    boxes: dict[int, tuple[tuple[float, float, float, float], ...]]  # image id -> xyxy, clipped; one per annotation
    class_names: tuple[str, ...]  # index = label; "__background__" at 0
    category_id_to_label: dict[int, int]
    label_to_category_id: dict[int, int]
    skipped: tuple[tuple[str, Any, str], ...]  # (what, id, why) of everything left out
    skipped_image_ids: dict[Any, int] = field(default_factory=dict)  # skipped annotation id -> its image id

    def skipped_summary(self, image_ids: Collection[int] | None = None) -> str:
        """One sentence counting the skipped annotations by reason ("" when none); only those of
        ``image_ids`` when given.

        The one policy for invalid boxes and polygons (training, ``evaluate``, ``predict --explain
        --annotations`` and the trace): such an annotation is no object at all, neither trained
        on, nor scored, nor counted as matched or missed, and this sentence says so.
        """
        chosen = [s for s in self.skipped if image_ids is None or self.skipped_image_ids.get(s[1]) in image_ids]
        if not chosen:
            return ""
        reasons: dict[str, list[Any]] = {}
        for _, item_id, why in chosen:
            reasons.setdefault(why, []).append(item_id)
        detail = "; ".join(
            f"{len(ids)} with {why} (ids {', '.join(map(str, ids[:5]))}{', ...' if len(ids) > 5 else ''})"
            for why, ids in reasons.items()
        )
        return (f"{self.source}: skipped {len(chosen)} annotation(s) that cannot be training objects: {detail}. "
                "They count as no object: not trained on, not scored, never matched or missed.")  # fmt: skip


def read_annotations(annotation_file: str | Path) -> AnnotationTable:
    """Chapter 1. Read and check a COCO instance-segmentation file; the ``AnnotationTable``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and
    the image, category or annotation for anything malformed: bad JSON, missing or repeated
    ids, unknown image or category ids, bad ``iscrowd``, ``area`` or ``bbox``, and
    segmentations pycocotools would misread (a polygon with an odd number of coordinates,
    RLE runs that do not cover H x W pixels: pycocotools returns uninitialised memory for
    those). Skips, listing each in ``skipped``, the annotations that cannot be a training
    object: a box of zero or negative size after clipping to the image (torchvision's
    reference ``ConvertCocoPolysToMask`` drops those), or no polygon with 3 or more points
    (Detectron2's ``data/datasets/coco.py`` ``load_coco_json`` drops those).
    """
    path = Path(annotation_file)

    def fail(what: str) -> ValueError:
        return ValueError(f"{path}: {what}")

    coco = _read_json(path, fail)
    names = _read_categories(coco["categories"], fail)
    to_label = {cid: i + 1 for i, cid in enumerate(sorted(names))}  # contiguous 1..K in sorted-id order
    images = _read_images(coco["images"], fail)
    anns, boxes, skipped, skipped_image_ids = _read_objects(coco.get("annotations", []), images, to_label, fail)
    return AnnotationTable(
        source=path,
        images=images,
        annotations={i: tuple(a) for i, a in anns.items()},
        boxes={i: tuple(b) for i, b in boxes.items()},
        class_names=("__background__", *(names[c] for c in sorted(names))),
        category_id_to_label=to_label,
        label_to_category_id={label: cid for cid, label in to_label.items()},
        skipped=tuple(skipped),
        skipped_image_ids=skipped_image_ids,
    )


Fail = Callable[[str], ValueError]  # an error naming the annotation file


def _read_json(path: Path, fail: Fail) -> dict[str, Any]:
    """The file's JSON object, with list-valued ``images``, ``categories`` (and ``annotations``)."""
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise fail(f"not valid JSON ({e})") from e
    if not isinstance(coco, dict):
        raise fail("the top level must be a JSON object with 'images' and 'categories'")
    for key in ("images", "categories"):
        if not isinstance(coco.get(key), list):
            raise fail(f"'{key}' must be a list")
    if not isinstance(coco.get("annotations", []), list):
        raise fail("'annotations' must be a list")
    return coco


def _read_categories(categories: list, fail: Fail) -> dict[int, str]:
    """Category id -> name (the id as text when it has none); ids integer and unique."""
    names: dict[int, str] = {}
    for k, cat in enumerate(categories):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            raise fail(f"categories[{k}] has no integer 'id'")
        if cat["id"] in names:
            raise fail(f"category id {cat['id']} appears twice in 'categories'")
        names[cat["id"]] = str(cat.get("name", cat["id"]))
    return names


def _read_images(entries: list, fail: Fail) -> dict[int, dict[str, Any]]:
    """Image id -> its entry, ids ascending; each with a unique integer id, a file name and a size."""
    images: dict[int, dict[str, Any]] = {}
    for k, img in enumerate(entries):
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            raise fail(f"images[{k}] has no integer 'id'")
        if img["id"] in images:
            raise fail(f"image id {img['id']} appears twice in 'images'")
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            raise fail(f"image id {img['id']} has no 'file_name'")
        for key in ("height", "width"):
            v = img.get(key)
            if not _is_int(v) or v < 1:
                raise fail(f"image id {img['id']} ({img['file_name']}) has {key}={v!r}; need a positive integer")
        images[img["id"]] = img
    return {i: images[i] for i in sorted(images)}


def _read_objects(annotations: list, images: dict[int, dict[str, Any]], to_label: dict[int, int], fail: Fail):
    """Per image, its usable annotations (file order) and their clipped xyxy boxes; and the skipped
    ones, ``(what, id, why)`` and their image ids: an empty box after clipping, or no polygon."""
    anns: dict[int, list[dict[str, Any]]] = {i: [] for i in images}
    boxes: dict[int, list[tuple[float, float, float, float]]] = {i: [] for i in images}
    skipped: list[tuple[str, Any, str]] = []
    skipped_image_ids: dict[Any, int] = {}
    seen: set[Any] = set()
    for k, ann in enumerate(annotations):
        ann_id, box = _checked_annotation(k, ann, images, to_label, seen, fail)
        image_id = ann["image_id"]
        height, width = images[image_id]["height"], images[image_id]["width"]
        seg = None
        if box is not None:
            seg = _checked_segmentation(ann.get("segmentation"), height, width, fail, f"annotation id {ann_id}")
        if seg is None:
            skipped.append(("annotation", ann_id, SKIP_EMPTY_BOX if box is None else SKIP_NO_POLYGON))
            skipped_image_ids[ann_id] = image_id
            continue
        anns[image_id].append({**ann, "segmentation": seg})
        boxes[image_id].append(box)
    return anns, boxes, skipped, skipped_image_ids


def _checked_annotation(k: int, ann: Any, images: dict, to_label: dict[int, int], seen: set, fail: Fail):
    """Annotation ``k``'s id (added to ``seen``) and its box as xyxy clipped to the image, None
    if that is empty; an error for a repeated id, unknown image or category, bad ``iscrowd``,
    ``area`` or ``bbox``."""
    if not isinstance(ann, dict):
        raise fail(f"annotations[{k}] is not an object")
    ann_id = ann.get("id", f"#{k}")
    if ann_id in seen:
        raise fail(f"annotation id {ann_id} appears twice")
    seen.add(ann_id)
    image_id, category_id = ann.get("image_id"), ann.get("category_id")
    if image_id not in images:
        raise fail(f"annotation id {ann_id} refers to image_id {image_id!r}, which is not in 'images'")
    if category_id not in to_label:
        raise fail(
            f"annotation id {ann_id} refers to category_id {category_id!r}, which is not in 'categories' "
            f"(ids: {sorted(to_label)})"
        )
    if ann.get("iscrowd", 0) not in (0, 1):
        raise fail(f"annotation id {ann_id} has iscrowd={ann['iscrowd']!r}; must be 0 or 1")
    if "area" in ann and not _is_number(ann["area"]):
        raise fail(f"annotation id {ann_id} has a malformed area {ann['area']!r}")
    height, width = images[image_id]["height"], images[image_id]["width"]
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise fail(f"annotation id {ann_id} has a malformed bbox {bbox!r}; need [x, y, w, h]")
    # xywh -> xyxy, clipped to the image as torchvision's reference does.
    x1, y1 = min(max(bbox[0], 0.0), width), min(max(bbox[1], 0.0), height)
    x2, y2 = min(max(bbox[0] + bbox[2], 0.0), width), min(max(bbox[1] + bbox[3], 0.0), height)
    box = (float(x1), float(y1), float(x2), float(y2))
    return ann_id, box if x2 > x1 and y2 > y1 else None


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _checked_segmentation(seg: Any, height: int, width: int, fail: Fail, who: str) -> Any:
    """The segmentation ready for pycocotools, or None if it has no usable polygon.

    Checked here because pycocotools checks little: a polygon of 4 numbers is taken for a
    box, and RLE runs that fall short of H*W give uninitialised memory.
    """
    bad = f"{who} has a malformed segmentation"
    if isinstance(seg, list):
        if not all(isinstance(p, list) for p in seg):
            raise fail(f"{bad}: a polygon segmentation must be a list of [x1, y1, x2, y2, ...] lists")
        odd = [len(p) for p in seg if len(p) % 2]
        if odd:
            raise fail(f"{bad}: a polygon has an odd number of coordinates ({odd[0]})")
        # Fewer than 3 points has no area; real COCO files contain a few (Detectron2 drops them).
        polygons = [p for p in seg if len(p) >= 6]
        return polygons or None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not isinstance(size, list) or len(size) != 2:
            raise fail(f"{bad}: RLE needs 'size': [height, width], got {size!r}")
        if list(size) != [height, width]:
            raise fail(f"{bad}: RLE size {size} differs from the image's [height, width] = [{height}, {width}]")
        if isinstance(counts, list):  # uncompressed RLE (COCO's crowd regions use it)
            if not all(_is_int(c) and c >= 0 for c in counts):
                raise fail(f"{bad}: RLE counts must be non-negative integers")
            total = sum(counts)
        elif isinstance(counts, (str, bytes)):  # compressed RLE
            text = counts.decode("ascii") if isinstance(counts, bytes) else counts
            try:
                total = sum(_rle_string_counts(text))
            except ValueError as e:
                raise fail(f"{bad}: compressed RLE counts are corrupt: {e}") from e
            seg = {"size": list(size), "counts": text}
        else:
            raise fail(f"{bad}: RLE 'counts' must be a string or a list of integers")
        if total != height * width:
            raise fail(f"{bad}: RLE runs cover {total} pixels, the image has {height}x{width} = {height * width}")
        return seg
    raise fail(f"{bad}: expected a list of polygons or an RLE dict, got {type(seg).__name__}")


def _rle_string_counts(counts: str) -> list[int]:
    """The run lengths in a compressed COCO RLE string (the format of pycocotools' ``maskApi.c``).

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


# --- image files --------------------------------------------------------------------------------
def read_image(path: str | Path) -> Tensor:
    """Chapter 1. An image file as float32 ``Tensor[3, H, W]``, RGB in [0, 1].

    Any common PIL mode: grey, palette (with or without transparency), RGBA and CMYK become
    RGB (alpha is dropped); 16-bit grey is scaled from 0-65535, not clipped. 32-bit integer
    or float images have no defined range and are refused. Any format Pillow reads (PNG, JPEG,
    TIFF, BMP, GIF, WebP ...; the first frame of an animation). A photo is read as a viewer
    shows it: its EXIF orientation (as cameras and phones write it) is applied
    (``PIL.ImageOps.exif_transpose``). Raises ``FileNotFoundError`` or ``ValueError`` naming the file.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as pil:
            array = _to_rgb_array(ImageOps.exif_transpose(pil), path)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as err:
        raise ValueError(f"{path} is not an image PIL can read: {err}") from err
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255.0)


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


# --- the data set -------------------------------------------------------------------------------
class CocoDataset(Dataset):
    """Chapter 1. A COCO instance-segmentation file as a torch ``Dataset`` of ``(image, target)``.

    ``image``: ``read_image`` of the file (float32 (3, H, W) RGB in [0, 1]). ``target``
    (torchvision's detection contract, as built by its reference
    ``references/detection/coco_utils.py:ConvertCocoPolysToMask``):

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
    removes them with ``drop_crowd`` (below)); the file is checked when the dataset
    is built (``read_annotations``, whose table is ``self.table``); the annotations it skips
    are counted in one ``UserWarning`` per dataset and listed in ``self.skipped``
    (annotation id -> reason). Images are ordered by id, as torchvision's ``CocoDetection``.
    """

    def __init__(self, annotation_file: str | Path, images_dir: str | Path) -> None:
        self.annotation_file = Path(annotation_file)
        self.images_dir = Path(images_dir)
        self.table = read_annotations(self.annotation_file)
        self.class_names: list[str] = list(self.table.class_names)
        self.category_id_to_label = dict(self.table.category_id_to_label)
        self.label_to_category_id = dict(self.table.label_to_category_id)
        self.ids: list[int] = list(self.table.images)
        self.skipped: dict[Any, str] = {item_id: why for _, item_id, why in self.table.skipped}
        if self.table.skipped:
            warnings.warn(self.table.skipped_summary() + " See CocoDataset.skipped.", UserWarning, stacklevel=2)

    def __len__(self) -> int:
        return len(self.ids)

    def image_info(self, index: int) -> dict[str, Any]:
        """The ``images`` entry of dataset item ``index`` (a copy)."""
        return dict(self.table.images[self.ids[index]])

    def annotations(self, index: int) -> list[dict[str, Any]]:
        """The annotations of dataset item ``index`` that make up its target, as in the file."""
        return [dict(a) for a in self.table.annotations[self.ids[index]]]

    def load_image(self, index: int) -> Tensor:
        """Dataset item ``index``'s image (``read_image``), its size checked against the file."""
        info = self.table.images[self.ids[index]]
        path = self.images_dir / info["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"{self.annotation_file}: image id {info['id']} needs {path}, which does not exist")
        image = read_image(path)
        height, width = image.shape[-2:]
        if (width, height) != (info["width"], info["height"]):
            turned = " (its EXIF orientation turns it; minimask reads photos as viewers show them)"
            raise ValueError(
                f"{path}: the file is {width}x{height} (width x height) but "
                f"{self.annotation_file.name} says {info['width']}x{info['height']} for image id {info['id']}"
                + (turned if (height, width) == (info["width"], info["height"]) else "")
            )
        return image

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
            raise ValueError(
                f"{self.annotation_file}: annotation id {ann.get('id')} has a malformed segmentation: {e}"
            ) from e

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not 0 <= index < len(self.ids):
            raise IndexError(f"CocoDataset index {index} out of range for {len(self.ids)} images")
        image_id = self.ids[index]
        image = self.load_image(index)
        height, width = image.shape[-2:]
        anns = self.table.annotations[image_id]
        masks = [self.decode_mask(a, height, width) for a in anns]
        mask_tensor = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, height, width), dtype=torch.uint8)
        area = [float(a["area"]) if "area" in a else float(m.sum()) for a, m in zip(anns, masks, strict=True)]
        target = {
            "boxes": torch.tensor(self.table.boxes[image_id], dtype=torch.float32).reshape(-1, 4),
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
            f"{sum(len(a) for a in self.table.annotations.values())} objects, {len(self.class_names) - 1} classes"
        )


def collate(batch: Sequence[tuple[Tensor, dict[str, Tensor]]]) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """DataLoader ``collate_fn``: images differ in size, so keep lists (torchvision's ``utils.collate_fn``)."""
    return [image for image, _ in batch], [target for _, target in batch]


def drop_crowd(target: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
    """Chapter 1. The target without its crowd objects, and the dropped rows (``Tensor[C]``).

    Objects with ``iscrowd == 1`` are removed from ``boxes``, ``labels``, ``masks`` (and any
    other per-object tensor) before matching, so they are never positives. torchvision's model
    does not read ``iscrowd``; its reference training scripts filter crowd annotations out of
    the data set instead (``references/detection/coco_utils.py``), as Detectron2 does.
    """
    crowd = target.get("iscrowd")
    n = target["boxes"].shape[0]
    if crowd is None:
        return dict(target), torch.zeros(0, dtype=torch.int64, device=target["boxes"].device)
    keep = crowd == 0
    out = {k: (v[keep] if isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == n else v) for k, v in target.items()}
    return out, torch.where(~keep)[0]
