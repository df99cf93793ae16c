"""python -m minimask.predict: a drawing and a JSON per image, equal to the model's own output;
images read by the data loader's reader (``minimask.coco.read_image``)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from minimask import Config, MaskRCNN, predict
from minimask.coco import CocoDataset, read_image
from minimask.data import CLASS_NAMES, SHAPES_VAL
from minimask.weights import load_pretrained, save_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "random.safetensors"
    return save_weights(MaskRCNN(Config.shapes()).eval(), path)


def test_predict_cli_matches_model_output(weights, tmp_path):
    """Oracle: the model called directly, and pycocotools decoding the JSON's RLE masks."""
    ds = CocoDataset(SHAPES_VAL / "annotations.json", SHAPES_VAL / "images")
    files = [ds.images_dir / ds.image_info(i)["file_name"] for i in (0, 1)]
    jpeg = tmp_path / "gray.jpg"
    Image.open(files[1]).convert("L").save(jpeg)  # another mode and format
    done = subprocess.run(
        [sys.executable, "-m", "minimask.predict", str(files[0]), str(jpeg), "--out", str(tmp_path / "out"),
         "--weights", str(weights), "--score", "0.0"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    model = load_pretrained(weights)
    model.config = model.config.replace(box_score_thresh=0.0)
    for path in (files[0], jpeg):
        stem = path.stem
        assert (tmp_path / "out" / f"{stem}.png").stat().st_size > 1000
        pred = json.loads((tmp_path / "out" / f"{stem}.json").read_text())
        expected = model([read_image(path)])[0]
        assert len(pred["scores"]) == len(expected["scores"]) > 0
        np.testing.assert_allclose(pred["boxes"], expected["boxes"].numpy(), atol=0.01)
        np.testing.assert_allclose(pred["scores"], expected["scores"].numpy(), atol=1e-5)
        assert pred["labels"] == expected["labels"].tolist()
        assert pred["class_names"][0] in CLASS_NAMES[1:]
        for rle, soft in zip(pred["masks"], expected["masks"], strict=True):
            decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            np.testing.assert_array_equal(decoded, (soft[0] >= 0.5).numpy().astype(np.uint8))


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="bad.png"):
        read_image(bad)


def test_read_image_modes():
    """Oracle: PIL's own RGB conversion; values in [0, 1], float32, CHW."""
    path = SHAPES_VAL / "images" / sorted(p.name for p in (SHAPES_VAL / "images").iterdir())[0]
    image = read_image(path)
    expected = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    assert image.dtype == torch.float32 and image.shape[0] == 3
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected)


def test_predict_reads_images_with_the_data_loaders_reader(tmp_path):
    """One image reader: 16-bit grey is scaled (not clipped) and a palette with transparency
    goes through RGBA, as the data loader reads them. Oracle: numpy on the raw pixel values."""
    assert predict.read_image is read_image
    deep = np.array([[0, 257, 32768], [65535, 1000, 20000]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    image = read_image(tmp_path / "deep.png")
    expected = torch.from_numpy(np.rint(deep / 65535 * 255) / 255).float()
    torch.testing.assert_close(image, expected.expand(3, -1, -1), rtol=0, atol=1e-7)
    palette = Image.fromarray(np.array([[0, 1], [2, 1]], dtype=np.uint8), mode="P")
    palette.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90])
    palette.save(tmp_path / "palette.png", transparency=bytes([255, 0, 255]))
    expected = np.asarray(Image.open(tmp_path / "palette.png").convert("RGBA").convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_allclose(read_image(tmp_path / "palette.png").permute(1, 2, 0).numpy(), expected)


def test_cli_missing_or_unreadable_image_is_one_line_naming_the_file(weights, tmp_path):
    """Exit status 2 and one ``error:`` line naming the file; no traceback."""
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    for path in (tmp_path / "missing.png", bad):
        done = subprocess.run(
            [sys.executable, "-m", "minimask.predict", str(path), "--out", str(tmp_path / "out"), "--weights", str(weights)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("error: ") and path.name in done.stderr
