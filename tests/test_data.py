"""Tests for chapter 1: the shapes generator and writer (``minimask.shapes``), the COCO reader
(``minimask.coco``) and the chapter's facade over both (``minimask.data``).

Oracles: pycocotools (``COCO.annToMask``, ``mask.encode/decode/toBbox/area``) for every mask,
box and RLE; torchvision's own image decoder (``torchvision.io.decode_image``) for pixels;
analytic areas for the rasteriser; a second run for determinism.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools.coco import COCO
from torchvision.io import ImageReadMode, decode_image

from minimask import coco, data, shapes
from minimask.data import drop_crowd
from minimask.shapes import (
    CIRCLE,
    CROSS,
    DISTRACTOR,
    ELL,
    MIN_VISIBLE_PIXELS,
    RING,
    SQUARE,
    TRIANGLE,
    Shape,
    paint,
    rasterize,
)

# pycocotools' decoder triggers a numpy-2 DeprecationWarning on every call (see data.decode_rle).
pytestmark = pytest.mark.filterwarnings(f"ignore:{data.PYCOCOTOOLS_NUMPY2_WARNING}:DeprecationWarning")


def _coco(annotation_file: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress lines
        return COCO(str(annotation_file))


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_split(tmp_path_factory) -> Path:
    return data.make_shapes(tmp_path_factory.mktemp("shapes") / "train", "train", 12, seed=3)


# --- the generator ---------------------------------------------------------------------------------
def test_coco_file_decodes_to_the_drawn_masks(small_split):
    """Oracle: pycocotools COCO.annToMask on the written file == the masks render_image drew."""
    coco = _coco(small_split / "annotations.json")
    assert sorted(coco.getCatIds()) == [1, 2, 3, 4, 5, 6]
    assert [coco.cats[i]["name"] for i in range(1, 7)] == list(data.CLASS_NAMES[1:])
    for index in range(12):
        drawing = data.shapes_image(3, "train", index)
        info = coco.imgs[index + 1]
        assert (info["height"], info["width"]) == drawing.image.shape[:2]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[index + 1]))
        assert len(anns) == len(drawing.masks) >= 1
        for ann, mask, label in zip(anns, drawing.masks, drawing.labels, strict=True):
            assert isinstance(ann["segmentation"]["counts"], str)
            np.testing.assert_array_equal(coco.annToMask(ann), mask.astype(np.uint8))
            assert ann["category_id"] == label
        # the PNG holds exactly the drawn pixels (lossless)
        png = np.asarray(Image.open(small_split / "images" / info["file_name"]))
        np.testing.assert_array_equal(png, drawing.image)


def test_boxes_and_areas_are_the_masks_extents(small_split):
    """Oracle: pycocotools mask.toBbox / mask.area of each RLE == the bbox and area in the file."""
    coco = _coco(small_split / "annotations.json")
    for ann in coco.dataset["annotations"]:
        rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
        assert ann["bbox"] == mask_util.toBbox(rle).tolist()
        assert ann["area"] == int(mask_util.area(rle)) >= MIN_VISIBLE_PIXELS


def test_masks_are_visible_pixels_painted_by_their_object():
    """Oracle: each mask's pixels carry its shape's fill (``paint``, within the +-4 shading);
    masks are disjoint; a kept mask is its full shape minus everything drawn later, distractors
    included; distractors are never objects."""
    for index in range(30):
        d = data.shapes_image(0, "train", index)
        assert d.masks.sum(axis=0).max() <= 1  # no pixel belongs to two objects
        height, width = d.image.shape[:2]
        full = [rasterize(s, height, width) for s in d.shapes]
        for mask, k in zip(d.masks, d.kept, strict=True):
            later = np.logical_or.reduce(full[k + 1 :]) if k + 1 < len(full) else np.zeros_like(mask)
            np.testing.assert_array_equal(mask, full[k] & ~later)
            colour = paint(d.shapes[k], height, width)[mask]
            # stripes: a pixel centre on a stripe edge may round either way; all others match
            close = np.abs(d.image[mask].astype(float) - colour).max(axis=1) <= 4.5
            assert close.mean() >= (0.9 if d.shapes[k].fill == "stripes" else 1.0)
        for k, reason in d.dropped.items():
            assert k not in d.kept and reason in ("occluded", "too_few_pixels", "distractor")
            assert (reason == "distractor") == (d.shapes[k].label == DISTRACTOR)
        assert sorted(list(d.kept) + list(d.dropped)) == list(range(len(d.shapes)))


def _outline(kind, size, angle, jitter, thickness):
    if kind == SQUARE:
        corners = shapes._SQUARE
    elif kind == TRIANGLE:
        angles = (0.0, 2 * math.pi / 3 + jitter[0], 4 * math.pi / 3 + jitter[1])
        corners = [(0.5 * math.cos(t), 0.5 * math.sin(t)) for t in angles]
    elif kind == CROSS:
        corners = shapes._cross(thickness)
    else:
        corners = shapes._ell(thickness)
    return shapes._rotate(corners, size, angle, 100.0, 100.0)


@settings(max_examples=80, deadline=None)
@given(
    kind=st.sampled_from([SQUARE, CIRCLE, TRIANGLE, RING, CROSS, ELL]),
    size=st.floats(12, 80),
    angle=st.floats(0, 2 * math.pi),
    aspect=st.floats(0.6, 1.0),
    jitter=st.tuples(st.floats(-0.35, 0.35), st.floats(-0.35, 0.35)),
    thickness=st.floats(0.2, 0.36),
    hole=st.floats(0.45, 0.7),
)
def test_rasterized_area_matches_geometry(kind, size, angle, aspect, jitter, thickness, hole):
    """Oracle: analytic area (s^2, pi*a*b, the ring's difference of ellipses, shoelace for the
    polygons, convex or not); pixel-centre sampling errs by at most the pixels the outline
    crosses (perimeter * sqrt(2) + 4)."""
    cx = cy = 100.0
    if kind in (CIRCLE, RING):
        hole = hole if kind == RING else 0.0
        a, b = size / 2, size / 2 * aspect
        shape = Shape(kind, (cx, cy), size, angle, aspect, (0, 0, 0), (), hole=hole)
        area = math.pi * a * b * (1 - hole**2)
        perimeter = (1 + hole) * math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))  # Ramanujan
    else:
        vertices = _outline(kind, size, angle, jitter, thickness)
        shape = Shape(kind, (cx, cy), size, angle, 1.0, (0, 0, 0), vertices)
        xs, ys = zip(*vertices, strict=True)
        area = 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))
        perimeter = sum(math.dist(vertices[i], vertices[i - 1]) for i in range(len(vertices)))
    mask = rasterize(shape, 200, 200)
    assert abs(int(mask.sum()) - area) <= perimeter * math.sqrt(2) + 4


@functools.cache
def _brief_sample():
    """200 train images (seed 1) and, per kept object, its class, visible size and mean colour."""
    images, rows = [], []
    for index in range(200):
        d = data.shapes_image(1, "train", index)
        height, width = d.image.shape[:2]
        images.append(d)
        for mask, label in zip(d.masks, d.labels, strict=True):
            ys, xs = np.nonzero(mask)
            side = math.sqrt((np.ptp(xs) + 1) * (np.ptp(ys) + 1))
            rows.append((int(label), side / min(height, width), side, d.image[mask].mean(axis=0), d.crowd))
    return images, rows


def test_generator_content_matches_the_brief():
    """Property over 200 images: varied sizes and aspects, 6 classes, sizes from 6 px to over half
    the short side, occlusion, distractors, crowds of 60-150 objects, 1-10 objects otherwise."""
    images, rows = _brief_sample()
    sizes = {d.image.shape[:2] for d in images}
    assert len(sizes) >= 20 and min(min(s) for s in sizes) == 192 and max(max(s) for s in sizes) == 384
    assert {h > w for h, w in sizes} == {True, False}
    assert {r[0] for r in rows} == set(range(1, 7))
    sides = np.array([r[2] for r in rows])
    assert sides.min() <= 7 and max(r[1] for r in rows) > 0.5
    # log-uniform: each octave from 8 to 64 px holds a similar share of the ordinary objects
    ordinary = np.array([r[2] for r in rows if not r[4]])
    octaves = [((ordinary >= lo) & (ordinary < 2 * lo)).mean() for lo in (8, 16, 32)]
    assert max(octaves) < 2 * min(octaves)
    crowds = [d for d in images if d.crowd]
    assert 3 <= len(crowds) <= 20  # about 1 in 20
    for d in crowds:
        sampled = sum(s.label != DISTRACTOR for s in d.shapes)
        assert 60 <= sampled <= 150 and len(d.masks) >= 40
    assert all(1 <= sum(s.label != DISTRACTOR for s in d.shapes) <= 10 for d in images if not d.crowd)
    assert sum(reason == "distractor" for d in images for reason in d.dropped.values()) > 100
    occluded = sum(reason == "occluded" for d in images for reason in d.dropped.values())
    partly = sum(
        int((rasterize(d.shapes[k], *d.image.shape[:2]) & ~m).any())
        for d in images
        for k, m in zip(d.kept, d.masks, strict=True)
    )
    assert occluded > 20 and partly > 200


def test_colour_does_not_tell_the_class():
    """The class is in the outline only: a nearest-mean-colour classifier (class means of the
    visible pixels' mean RGB, fitted on half the objects, scored on the other half) does no
    better than always answering the most frequent class plus 10 points."""
    _, rows = _brief_sample()
    labels = np.array([r[0] for r in rows])
    colours = np.stack([r[3] for r in rows])
    fit, score = np.arange(len(rows)) % 2 == 0, np.arange(len(rows)) % 2 == 1
    means = np.stack([colours[fit & (labels == c)].mean(axis=0) for c in range(1, 7)])
    predicted = 1 + np.argmin(((colours[score, None, :] - means[None]) ** 2).sum(-1), axis=1)
    accuracy = (predicted == labels[score]).mean()
    majority = np.bincount(labels[score]).max() / score.sum()
    assert accuracy <= majority + 0.10, (accuracy, majority)


# --- writing: determinism, refusal, CLI -------------------------------------------------------------
def test_make_shapes_is_byte_identical_for_a_seed(tmp_path):
    """Oracle: a second run (and a different seed, which must differ, so the check can fail)."""
    a = _tree_digest(data.make_shapes(tmp_path / "a", "val", 6, seed=11))
    b = _tree_digest(data.make_shapes(tmp_path / "b", "val", 6, seed=11))
    c = _tree_digest(data.make_shapes(tmp_path / "c", "val", 6, seed=12))
    d = _tree_digest(data.make_shapes(tmp_path / "d", "train", 6, seed=11))
    assert a == b
    assert len(a) == 1 + 6  # annotations.json and 6 PNGs
    assert a["annotations.json"] != c["annotations.json"] and a["images/000001.png"] != c["images/000001.png"]
    assert a["images/000001.png"] != d["images/000001.png"]  # train and val differ for one seed


def test_committed_val_split_is_what_the_generator_makes(tmp_path):
    """A golden-file check: regenerating data/shapes/val with SHAPES_VAL_SEED gives the committed
    bytes (the generator's determinism is tested on fresh folders above)."""
    if not (data.SHAPES_VAL / "annotations.json").is_file():
        pytest.fail(f"the committed val split is missing at {data.SHAPES_VAL}")
    fresh = data.make_shapes(tmp_path / "val", "val", data.SHAPES_VAL_N, data.SHAPES_VAL_SEED)
    assert _tree_digest(fresh) == _tree_digest(data.SHAPES_VAL)
    size = sum(p.stat().st_size for p in data.SHAPES_VAL.rglob("*") if p.is_file())
    assert size < 8 * 1024**2


def test_non_empty_directory_is_refused_unless_overwrite(tmp_path):
    """Oracle: the directory's contents before/after (stale images must go)."""
    out = tmp_path / "out"
    data.make_shapes(out, "train", 5, seed=0)
    with pytest.raises(FileExistsError, match=r"out is not empty.*overwrite"):
        data.make_shapes(out, "train", 3, seed=0)
    data.make_shapes(out, "train", 3, seed=0, overwrite=True)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000001.png", "000002.png", "000003.png"]
    assert _tree_digest(out) == _tree_digest(data.make_shapes(tmp_path / "fresh", "train", 3, seed=0))
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="file"):
        data.make_shapes(tmp_path / "file", "train", 1, seed=0)
    with pytest.raises(ValueError, match="split"):
        data.make_shapes(tmp_path / "x", "test", 1, seed=0)
    with pytest.raises(ValueError, match="n must be"):
        data.make_shapes(tmp_path / "x", "train", 0, seed=0)


def test_command_line(tmp_path):
    """Oracle: make_shapes with the same arguments (byte-identical output); exit status and message."""
    cmd = [sys.executable, "-m", "minimask.data", "--out", str(tmp_path / "cli"), "--split", "train"]
    cmd += ["--n", "3", "--seed", "5"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "3/3" in done.stderr  # the tqdm bar
    assert _tree_digest(tmp_path / "cli") == _tree_digest(data.make_shapes(tmp_path / "api", "train", 3, seed=5))
    again = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert again.returncode == 2 and "not empty" in again.stderr and "--overwrite" in again.stderr
    forced = subprocess.run([*cmd, "--overwrite"], capture_output=True, text=True, check=False)
    assert forced.returncode == 0, forced.stderr


# --- reading real COCO files -----------------------------------------------------------------------
def _fortran_runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE of a mask (column-major runs, starting with zeros), by numpy."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] == 1 else runs


def _write_odd_coco(root: Path) -> tuple[Path, Path]:
    """A small COCO file with what real files contain: every image mode, both polygon kinds,
    both RLE kinds, a crowd region, category ids 5/17/90 listed out of order, an image with
    no annotations, non-square images, ids out of order."""
    rng = np.random.default_rng(0)
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images = []

    def add(image_id: int, name: str, pil: Image.Image, **save) -> None:
        pil.save(images_dir / name, **save)
        images.append({"id": image_id, "file_name": name, "width": pil.size[0], "height": pil.size[1]})

    add(7, "gray.png", Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8), mode="L"))
    add(3, "rgba.png", Image.fromarray(rng.integers(0, 256, (20, 50, 4), dtype=np.uint8), mode="RGBA"))
    palette = Image.fromarray(rng.integers(0, 8, (25, 25), dtype=np.uint8), mode="P")
    palette.putpalette(rng.integers(0, 256, 8 * 3, dtype=np.uint8).tolist())
    add(42, "palette.png", palette, transparency=bytes([255, 0, 128, 255, 255, 255, 255, 255]))
    smooth = np.stack([*np.meshgrid(np.linspace(0, 255, 33), np.linspace(0, 255, 27)), np.full((27, 33), 90.0)], -1)
    add(11, "photo.jpg", Image.fromarray(smooth.astype(np.uint8)), quality=95)
    add(1, "empty.png", Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)))

    blob = np.zeros((25, 25), dtype=np.uint8)
    blob[3:12, 5:20] = 1
    blob[15:22, 2:9] = 1
    compressed = mask_util.encode(np.asfortranarray(blob))
    crowd = np.zeros((27, 33), dtype=np.uint8)
    crowd[4:20, 10:30] = 1
    annotations = [
        # one polygon, on the grayscale image
        {"id": 101, "image_id": 7, "category_id": 17, "bbox": [5, 4, 20, 15], "area": 150.0, "iscrowd": 0,
         "segmentation": [[5, 4, 25, 4, 25, 19, 5, 19]]},
        # two polygons (an occluded object in two parts) plus a degenerate 2-point part
        {"id": 102, "image_id": 3, "category_id": 90, "bbox": [2, 2, 44, 14], "area": 120.0, "iscrowd": 0,
         "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12], [30.5, 3.5, 46, 16, 30, 16], [40, 2, 41, 3]]},
        # compressed RLE with str counts
        {"id": 103, "image_id": 42, "category_id": 5, "bbox": [2, 3, 18, 19], "area": 184.0, "iscrowd": 0,
         "segmentation": {"size": [25, 25], "counts": compressed["counts"].decode("ascii")}},
        # uncompressed RLE crowd region, and an ordinary object on the same (JPEG) image
        {"id": 104, "image_id": 11, "category_id": 17, "bbox": [10, 4, 20, 16], "area": 320.0, "iscrowd": 1,
         "segmentation": {"size": [27, 33], "counts": _fortran_runs(crowd)}},
        {"id": 105, "image_id": 11, "category_id": 5, "bbox": [1.5, 1.5, 6, 8], "iscrowd": 0,
         "segmentation": [[1.5, 1.5, 7.5, 1.5, 7.5, 9.5, 1.5, 9.5]]},
    ]  # fmt: skip
    categories = [{"id": 90, "name": "toothbrush"}, {"id": 5, "name": "airplane"}, {"id": 17, "name": "cat"}]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    annotation_file = root / "instances.json"
    annotation_file.write_text(json.dumps(coco))
    return annotation_file, images_dir


# torchvision 0.29 deprecates its image decoders (for TorchCodec); they stay a fine independent oracle.
@pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")
def test_reads_every_oddity_of_real_coco_files(tmp_path):
    """Oracles: pycocotools COCO.annToMask for masks; torchvision.io.decode_image (RGB mode)
    for pixels; the JSON itself for boxes, ids, areas and crowd flags."""
    annotation_file, images_dir = _write_odd_coco(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # good input: no warning at all
        ds = data.CocoDataset(annotation_file, images_dir)
        items = [ds[i] for i in range(len(ds))]
    oracle = _coco(annotation_file)
    assert ds.class_names == ["__background__", "airplane", "cat", "toothbrush"]
    assert ds.category_id_to_label == {5: 1, 17: 2, 90: 3}
    assert ds.label_to_category_id == {1: 5, 2: 17, 3: 90}
    assert ds.ids == [1, 3, 7, 11, 42] == sorted(oracle.getImgIds())
    for (image, target), image_id in zip(items, ds.ids, strict=True):
        info = oracle.imgs[image_id]
        path = images_dir / info["file_name"]
        # pixels: torchvision's decoder, RGB mode (JPEG decoders may differ by a level or two)
        expected = decode_image(str(path), mode=ImageReadMode.RGB).float() / 255
        assert image.dtype == torch.float32 and image.shape == (3, info["height"], info["width"])
        tolerance = 3 / 255 if path.suffix == ".jpg" else 0.0
        torch.testing.assert_close(image, expected, atol=tolerance, rtol=0)
        # target fields, dtypes and values
        anns = oracle.loadAnns(oracle.getAnnIds(imgIds=[image_id]))
        assert target["image_id"].dtype == torch.int64 and target["image_id"].ndim == 0
        assert int(target["image_id"]) == image_id
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (len(anns), 4)
        assert target["labels"].dtype == torch.int64 and target["iscrowd"].dtype == torch.int64
        assert target["masks"].dtype == torch.uint8
        assert target["masks"].shape == (len(anns), info["height"], info["width"])
        assert target["area"].dtype == torch.float32
        for k, ann in enumerate(anns):
            x, y, w, h = ann["bbox"]
            assert target["boxes"][k].tolist() == [x, y, x + w, y + h]
            assert ds.label_to_category_id[int(target["labels"][k])] == ann["category_id"]
            np.testing.assert_array_equal(target["masks"][k].numpy(), oracle.annToMask(ann))
            assert int(target["iscrowd"][k]) == ann["iscrowd"]
            area = ann.get("area", float(oracle.annToMask(ann).sum()))
            assert float(target["area"][k]) == pytest.approx(area)
    empty = items[0][1]
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 16, 24) and empty["labels"].shape == (0,)
    # the crowd region is kept and flagged; drop_crowd (what training uses) removes it and nothing else
    jpeg = items[ds.ids.index(11)][1]
    assert jpeg["iscrowd"].tolist() == [1, 0]
    kept, dropped = drop_crowd(jpeg)
    assert dropped.tolist() == [0]
    assert kept["iscrowd"].tolist() == [0] and kept["masks"].shape[0] == 1 and kept["area"].shape == (1,)
    torch.testing.assert_close(kept["boxes"], jpeg["boxes"][1:])
    assert int(kept["image_id"]) == 11
    # a DataLoader with our collate keeps images of different sizes as a list
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=data.collate)
    images, targets = next(iter(loader))
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 3
    assert [t["image_id"].item() for t in targets] == [1, 3, 7]


def test_read_annotations_returns_the_checked_table(tmp_path):
    """Oracle: the JSON we wrote (ids, categories, clipped xyxy boxes); nothing skipped."""
    annotation_file, _ = _write_odd_coco(tmp_path)
    table = coco.read_annotations(annotation_file)
    written = json.loads(annotation_file.read_text())
    assert table.source == annotation_file and table.skipped == () and table.skipped_summary() == ""
    assert list(table.images) == [1, 3, 7, 11, 42]
    assert table.class_names == ("__background__", "airplane", "cat", "toothbrush")
    assert table.category_id_to_label == {5: 1, 17: 2, 90: 3} and table.label_to_category_id == {1: 5, 2: 17, 3: 90}
    assert [a["id"] for a in table.annotations[11]] == [104, 105] and table.annotations[1] == ()
    by_id = {a["id"]: a for a in written["annotations"]}
    for image_id, anns in table.annotations.items():
        info = table.images[image_id]
        for ann, box in zip(anns, table.boxes[image_id], strict=True):
            x, y, w, h = by_id[ann["id"]]["bbox"]
            assert box == (max(x, 0), max(y, 0), min(x + w, info["width"]), min(y + h, info["height"]))
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        coco.read_annotations(tmp_path / "nowhere.json")


def test_data_is_the_chapter_facade_over_shapes_and_coco():
    """The chapter's names are the modules' own objects, not copies."""
    assert data.CocoDataset is coco.CocoDataset and data.read_image is coco.read_image
    assert data.collate is coco.collate and data.decode_rle is coco.decode_rle
    assert data.make_shapes is shapes.make_shapes and data.render_image is shapes.render_image
    assert data.CLASS_NAMES is shapes.CLASS_NAMES and data.shapes_image is shapes.shapes_image


def test_shapes_command_line_equals_the_data_one(tmp_path):
    """Oracle: ``python -m minimask.data`` with the same arguments (byte-identical output)."""
    args = ["--split", "val", "--n", "2", "--seed", "4"]
    for module in ("minimask.shapes", "minimask.data"):
        done = subprocess.run([sys.executable, "-m", module, "--out", str(tmp_path / module), *args],
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert _tree_digest(tmp_path / "minimask.shapes") == _tree_digest(tmp_path / "minimask.data")
    bad = subprocess.run([sys.executable, "-m", "minimask.shapes", "--out", str(tmp_path / "x"), "--split", "val",
                          "--n", "0", "--seed", "0"], capture_output=True, text=True, check=False)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: argument --n: must be an integer >= 1, got 0 (see python -m minimask.shapes --help)"
    ]


# --- bad input ------------------------------------------------------------------------------------
def _edit(tmp_path, change) -> tuple[Path, Path]:
    annotation_file, images_dir = _write_odd_coco(tmp_path)
    coco = json.loads(annotation_file.read_text())
    change(coco)
    annotation_file.write_text(json.dumps(coco))
    return annotation_file, images_dir


def _ann(coco, ann_id):
    return next(a for a in coco["annotations"] if a["id"] == ann_id)


def test_unknown_image_or_category_id_fails_at_construction(tmp_path):
    """Oracle: the ids written into the file."""
    f, d = _edit(tmp_path / "a", lambda c: _ann(c, 103).update(image_id=999))
    with pytest.raises(ValueError, match=r"instances.json: annotation id 103 refers to image_id 999"):
        data.CocoDataset(f, d)
    f, d = _edit(tmp_path / "b", lambda c: _ann(c, 101).update(category_id=3))
    with pytest.raises(ValueError, match=r"annotation id 101 refers to category_id 3.*\[5, 17, 90\]"):
        data.CocoDataset(f, d)


def test_missing_image_file_is_named(tmp_path):
    """Oracle: the file we deleted."""
    f, d = _write_odd_coco(tmp_path)
    (d / "rgba.png").unlink()
    ds = data.CocoDataset(f, d)
    with pytest.raises(FileNotFoundError, match=r"image id 3 needs .*rgba\.png"):
        ds[ds.ids.index(3)]


def test_image_size_differing_from_json_is_named(tmp_path):
    """Oracle: the sizes we wrote (file 40x30, JSON edited to 41x30)."""
    f, d = _edit(tmp_path, lambda c: next(i for i in c["images"] if i["id"] == 7).update(width=41))
    ds = data.CocoDataset(f, d)
    with pytest.raises(ValueError, match=r"gray\.png: the file is 40x30 .* says 41x30 for image id 7"):
        ds[ds.ids.index(7)]


@pytest.mark.parametrize(
    ("ann_id", "segmentation", "message"),
    [
        (101, [[5, 4, 25, 4, 25]], "odd number of coordinates"),
        (101, {"polygon": [1, 2]}, "RLE needs 'size'"),
        (101, "5 4 25 4", "expected a list of polygons or an RLE dict"),
        (103, {"size": [25, 25], "counts": [10, 5, 3]}, "RLE runs cover 18 pixels, the image has 25x25 = 625"),
        (103, {"size": [24, 25], "counts": [600]}, r"RLE size \[24, 25\] differs"),
        (103, {"size": [25, 25], "counts": "5220003"}, "RLE runs cover 20 pixels"),
        (103, {"size": [25, 25], "counts": "ab\x7f"}, "compressed RLE counts are corrupt"),
        (103, {"size": [25, 25], "counts": [300, -5, 330]}, "non-negative integers"),
    ],
)
def test_malformed_segmentation_names_the_annotation(tmp_path, ann_id, segmentation, message):
    """Oracle: pycocotools would accept the short RLE and return uninitialised memory; we refuse it."""
    f, d = _edit(tmp_path, lambda c: _ann(c, ann_id).update(segmentation=segmentation))
    with pytest.raises(ValueError, match=rf"instances\.json: annotation id {ann_id} has a malformed segmentation.*"):
        data.CocoDataset(f, d)
    with pytest.raises(ValueError, match=message):
        data.CocoDataset(f, d)


def test_non_numeric_polygon_fails_when_read(tmp_path):
    """Oracle: the coordinate we broke; the error names the annotation id."""
    f, d = _edit(tmp_path, lambda c: _ann(c, 101).update(segmentation=[[5, 4, "x", 4, 25, 19]]))
    ds = data.CocoDataset(f, d)
    with pytest.raises(ValueError, match="annotation id 101 has a malformed segmentation"):
        ds[ds.ids.index(7)]


def test_degenerate_boxes_and_polygons_are_skipped_with_one_warning(tmp_path):
    """Oracle: the annotations we broke (two empty boxes, one box outside the image, one
    annotation whose only polygon has 2 points): all skipped, one warning counting them."""

    def change(c):
        _ann(c, 101).update(bbox=[5, 4, 0, 15])
        _ann(c, 102).update(bbox=[2, 2, 44, -3])
        _ann(c, 105).update(bbox=[40, 1, 5, 5])  # x from 40: outside the 33-px-wide image
        c["annotations"].append(
            {"id": 106, "image_id": 42, "category_id": 5, "bbox": [1, 1, 3, 3], "iscrowd": 0,
             "segmentation": [[1, 1, 4, 4]]}
        )  # fmt: skip

    f, d = _edit(tmp_path, change)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = data.CocoDataset(f, d)
    assert len(caught) == 1 and issubclass(caught[0].category, UserWarning)
    message = str(caught[0].message)
    assert "instances.json: skipped 4 annotation(s)" in message
    assert "3 with a box of zero or negative size (ids 101, 102, 105)" in message
    assert "1 with no polygon of 3 or more points (ids 106)" in message
    empty_box = "a box of zero or negative size"
    assert ds.skipped == {101: empty_box, 102: empty_box, 105: empty_box, 106: "no polygon of 3 or more points"}
    assert ds.table.skipped == (
        ("annotation", 101, empty_box),
        ("annotation", 102, empty_box),
        ("annotation", 105, empty_box),
        ("annotation", 106, "no polygon of 3 or more points"),
    )
    assert ds[ds.ids.index(7)][1]["boxes"].shape == (0, 4)
    assert ds[ds.ids.index(11)][1]["iscrowd"].tolist() == [1]
    with pytest.warns(UserWarning, match="skipped 4"):
        data.CocoDataset(f, d)  # once per dataset, again for a new one


# --- compressed RLE runs and the committed split ---------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_rle_string_runs_match_pycocotools(height, width, density, seed):
    """Oracle: pycocotools mask.encode of a random mask; runs recomputed from the mask by numpy."""
    mask = (np.random.default_rng(seed).random((height, width)) < density).astype(np.uint8)
    counts = mask_util.encode(np.asfortranarray(mask))["counts"].decode("ascii")
    runs = coco._rle_string_counts(counts)
    assert runs == _fortran_runs(mask)
    assert sum(runs) == height * width


def test_featured_images_and_shapes_val(tmp_path):
    """Oracle: pycocotools COCO on the committed file, and the generator's in-memory masks."""
    ds = data.shapes_val()
    assert len(ds) == data.SHAPES_VAL_N and ds.class_names == list(data.CLASS_NAMES)
    oracle = _coco(data.SHAPES_VAL / "annotations.json")
    for i, index in enumerate(data.FEATURED):
        image, target = data.featured(i)
        image_id = int(target["image_id"])
        assert image_id == ds.ids[index] == index + 1
        drawing = data.shapes_image(data.SHAPES_VAL_SEED, "val", index)
        np.testing.assert_array_equal(target["masks"].numpy(), drawing.masks.astype(np.uint8))
        for mask, ann in zip(target["masks"], oracle.loadAnns(oracle.getAnnIds(imgIds=[image_id])), strict=True):
            np.testing.assert_array_equal(mask.numpy(), oracle.annToMask(ann))
        torch.testing.assert_close(image, torch.from_numpy(drawing.image).permute(2, 0, 1).float() / 255)
        # boxes are the masks' extents, xyxy
        for box, mask in zip(target["boxes"], target["masks"], strict=True):
            rows, cols = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    with pytest.raises(IndexError, match="featured"):
        data.featured(len(data.FEATURED))
