"""Chapter 1. What the model is given: the shapes data set, the COCO reader, and the images
every chapter uses.

The chapter's one import: the pieces live in two modules and are re-exported here.

- ``minimask.shapes`` draws the synthetic shapes data set and writes it as a COCO
  instance-segmentation file (``make_shapes``, ``render_image``, ``shapes_image``);
  ``python -m minimask.data --out DIR --split val --n 100 --seed 0`` runs its command line.
- ``minimask.coco`` reads any COCO instance file (the shapes set or real COCO) into
  torchvision's detection contract (``CocoDataset``, ``read_annotations``, ``read_image``).

Defined here: the committed validation split (``SHAPES_VAL``, ``shapes_val()``) and the four
featured images of it (``featured(i)``; ``featured(4)`` is a crowd image).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from minimask.coco import (
    PYCOCOTOOLS_NUMPY2_WARNING,
    AnnotationTable,
    CocoDataset,
    collate,
    decode_rle,
    drop_crowd,
    read_annotations,
    read_image,
)
from minimask.shapes import CLASS_NAMES, ShapesImage, make_shapes, mask_to_bbox, render_image, shapes_image
from minimask.shapes import main as _shapes_main

__all__ = [
    "CLASS_NAMES",
    "FEATURED",
    "PYCOCOTOOLS_NUMPY2_WARNING",
    "SHAPES_VAL",
    "SHAPES_VAL_N",
    "SHAPES_VAL_SEED",
    "AnnotationTable",
    "CocoDataset",
    "ShapesImage",
    "collate",
    "drop_crowd",
    "decode_rle",
    "featured",
    "make_shapes",
    "mask_to_bbox",
    "read_annotations",
    "read_image",
    "render_image",
    "runs",
    "shapes_image",
    "shapes_val",
]

# --- the committed validation split ------------------------------------------------------------
SHAPES_VAL_SEED = 0  # the seed data/shapes/val was made with
SHAPES_VAL_N = 60  # its number of images (60: every chapter that passes over the split runs in under a minute)
# Found relative to the package in the repository layout: src/minimask/data.py -> data/shapes/val.
SHAPES_VAL = Path(__file__).resolve().parents[2] / "data" / "shapes" / "val"
# Val images every chapter reuses: dataset indices (image id = index + 1), picked by looking.
#   featured(0) = index 12: portrait 288x224, 10 objects of all six classes; 7 partly covered,
#                 a ring, a cross and a square in one overlapping cluster
#   featured(1) = index 32: landscape 224x288, a large ring over a cross and two triangles,
#                 4 distractors (blobs and bars) among 9 objects
#   featured(2) = index 0: portrait 384x288, 10 objects, 8 of them COCO-small (area < 32^2)
#   featured(3) = index 34: 320x256, a large ell and a cross; the generator dropped one
#                 object as occluded and one as too small
#   featured(4) = index 45: a crowd image, 384x384, 141 small objects: the caps bind here
FEATURED: tuple[int, ...] = (12, 32, 0, 34, 45)


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
    """Featured val image ``i`` (0..4, see ``FEATURED``; 4 is a crowd) as ``(image, target)``: every chapter uses these."""
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(FEATURED):
        raise IndexError(f"featured: i must be in 0..{len(FEATURED) - 1}, got {i!r}")
    return shapes_val()[FEATURED[i]]


def noise_images(seed: int, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Smooth random images (blurred noise plus a little fine noise), one per ``(h, w)`` in
    ``sizes``: inputs with no object on which a randomly initialised model's features and
    detections are not pure noise (the tests and benches compare models on them)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        coarse = torch.rand(1, 3, h // 16 + 2, w // 16 + 2, generator=g)
        fine = torch.rand(1, 3, h, w, generator=g) * 0.2
        out.append((torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear") * 0.8 + fine)[0])
    return out


BATCH_SIZE = 8  # images per forward in every pass over a data set (padding depends on it: chapter 9)


def runs(model: torch.nn.Module, dataset, batch_size: int = BATCH_SIZE, progress: bool = True, desc: str = "evaluate",
         until: str | None = None, max_images: int | None = None, resume: Sequence | None = None):  # fmt: skip
    """One pass of a model over a ``CocoDataset``: per batch, ``(indices, targets, run)``.

    ``run`` is ``model.run`` of the batch's images (``until`` as there); ``targets`` their
    targets (original-image pixels). The only loop over a data set's images: evaluation,
    ``explain_dataset`` and the chapters read their batches from here. ``resume``: the
    ``(indices, targets, run)`` of an earlier pass (e.g. ``until="longlist"``); each run is
    then ``model.resume(run, until)``: the decisions again under the model's config, without
    the backbone (a threshold sweep).
    """
    model.eval()
    if resume is not None:
        for batch, targets, run in tqdm(resume, desc=desc, unit="batch", disable=not progress):
            if max_images is not None and batch[0] >= max_images:
                break
            yield batch, targets, model.resume(run, until)
        return
    device = next(model.parameters()).device
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress):
        items = [dataset[i] for i in batch]
        with torch.no_grad():
            run = model.run([img.to(device) for img, _ in items], until=until)
        yield batch, [t for _, t in items], run


def main(argv: list[str] | None = None) -> int:
    """``python -m minimask.data --out DIR --split {train,val} --n N --seed S [--overwrite]``
    (``minimask.shapes.main``)."""
    return _shapes_main(argv, prog="python -m minimask.data")


if __name__ == "__main__":
    sys.exit(main())
