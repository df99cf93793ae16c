"""Every command line meets a user's mistake the same way (``minimask.cli``): exit status 2 and one
``error:`` line naming the culprit (the file, option or key, with a close match when mistyped),
no traceback, and no file that existed before changed. Oracle: the exit status, stderr, and the
SHA-256 of every file in the test's folders before and after.

The commands run in this process (``main(argv)``, ``SystemExit`` caught); one runs as a
subprocess. No case starts real work: training errors are all found before the train split is
generated or the model built.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from minimask import Config, MaskRCNN, evaluate, predict, train
from minimask.coco import read_image
from minimask.data import main as data_main
from minimask.data import make_shapes
from minimask.weights import save_weights

MAINS = {"predict": predict.main, "evaluate": evaluate.main, "data": data_main, "train": train.main}


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> SimpleNamespace:
    """A 2-image COCO split, a random model's weights, a stand-in Detectron2 checkpoint."""
    root = tmp_path_factory.mktemp("shared")
    split = make_shapes(root / "val", "val", 2, seed=3)
    torch.manual_seed(0)
    weights = save_weights(MaskRCNN(Config.shapes()).eval(), root / "random.safetensors")
    (root / "model_final.pth").write_bytes(b"never read: the config is checked first")
    image = split / "images" / "000001.png"
    d2 = str(root / "model_final.pth")
    return SimpleNamespace(root=root, split=split, weights=str(weights), image=str(image), d2=d2,
                           ann=str(split / "annotations.json"))  # fmt: skip


def _write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def _split_copy(t: Path, s: SimpleNamespace, change: Callable[[dict], None] | None = None, drop: str = "") -> str:
    """A copy of the shared split in ``t/data``, its annotations changed, an image file left out."""
    out = t / "data"
    (out / "images").mkdir(parents=True)
    for p in (s.split / "images").iterdir():
        if p.name != drop:
            (out / "images" / p.name).write_bytes(p.read_bytes())
    coco = json.loads((s.split / "annotations.json").read_text())
    if change:
        change(coco)
    (out / "annotations.json").write_text(json.dumps(coco))
    return str(out)


def _user_split(t: Path, s: SimpleNamespace) -> str:
    """A split made by the generator, plus the user's own photo in its images/."""
    out = make_shapes(t / "made", "val", 1, seed=0)
    (out / "images" / "holiday.png").write_bytes(Path(s.image).read_bytes())
    return str(out)


@dataclass(frozen=True)
class Case:
    command: str
    argv: Callable[[Path, SimpleNamespace], list[str]]
    culprit: tuple[str, ...]  # each must be in the error line


def P(t: Path, s: SimpleNamespace, *more: str, image: str = "") -> list[str]:
    """predict argv: an image (the split's first), --out, the random weights, and ``more``."""
    return [image or s.image, "--out", str(t / "o"), "--weights", s.weights, *more]


def D2(t: Path, s: SimpleNamespace, config_yaml: str) -> list[str]:
    """predict argv with a Detectron2 checkpoint and a config.yaml of ``config_yaml``."""
    return [s.image, "--out", str(t / "o"), "--detectron2", s.d2, "--config", _write(t / "config.yaml", config_yaml)]


def E(s: SimpleNamespace, *more: str, data: str = "") -> list[str]:
    """evaluate argv: a split (the shared one), the random weights, and ``more``."""
    return ["--data", data or str(s.split), "--weights", s.weights, *more]


def G(out: str, *more: str) -> list[str]:
    """data argv: one val image, seed 0, into ``out``, and ``more`` (later options win)."""
    return ["--out", out, "--split", "val", "--n", "1", "--seed", "0", *more]


def T(t: Path, *more: str) -> list[str]:
    """train argv: a run folder and a train split folder in ``t``, and ``more``."""
    return ["--out", str(t / "run"), "--train-dir", str(t / "split"), *more]


def _folder_with(path: Path, text: str) -> str:
    """The folder of ``path``, a file written with ``text``."""
    return str(Path(_write(path, text)).parent)


def _ann_file(t: Path, s: SimpleNamespace, change: Callable[[dict], None]) -> str:
    """The annotation file of a changed copy of the shared split."""
    return _split_copy(t, s, change) + "/annotations.json"


def _without_image_1(t: Path, s: SimpleNamespace) -> str:
    """An annotation file of the shared split without its image 1."""

    def change(coco: dict) -> None:
        coco["images"] = coco["images"][1:]
        coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != 1]

    return _ann_file(t, s, change)


def _one_more_category(coco: dict) -> None:
    coco["categories"].append({"id": 1000, "name": "unknown to the model", "supercategory": "shape"})


YAML_TYPO = "MODEL:\n  ROI_HEADS:\n    SCORE_THRES_TEST: 0.9\n"
SCORE_TYPO = ("config.yaml", "MODEL.ROI_HEADS.SCORE_THRES_TEST", "did you mean MODEL.ROI_HEADS.SCORE_THRESH_TEST")

# fmt: off
CASES: dict[str, Case] = {
    # predict
    "predict missing image": Case("predict", lambda t, s: P(t, s, image=str(t / "missing.png")), ("missing.png",)),
    "predict text as image": Case("predict", lambda t, s: P(t, s, image=_write(t / "bad.png", "no")), ("bad.png",)),
    "predict folder as image": Case("predict", lambda t, s: P(t, s, image=str(s.split)), ("val", "folder")),
    "predict --out is a file": Case("predict", lambda t, s: [s.image, "--out", _write(t / "f", "x")], ("--out",)),
    "predict --score 1.5": Case("predict", lambda t, s: P(t, s, "--score", "1.5"), ("--score",)),
    "predict --score abc": Case("predict", lambda t, s: P(t, s, "--score", "abc"), ("--score", "abc")),
    "predict --score nan": Case("predict", lambda t, s: P(t, s, "--score", "nan"), ("--score",)),
    "predict --device banana": Case("predict", lambda t, s: P(t, s, "--device", "banana"), ("--device", "banana")),
    "predict --weights missing":
        Case("predict", lambda t, s: P(t, s, "--weights", "shapez"), ("--weights", "shapez", "did you mean shapes")),
    "predict --weights not safetensors":
        Case("predict", lambda t, s: P(t, s, "--weights", _write(t / "w.safetensors", "x")), ("w.safetensors",)),
    "predict --weights with --detectron2":
        Case("predict", lambda t, s: P(t, s, "--detectron2", s.d2), ("--weights", "--detectron2")),
    "predict --annotations without --explain":
        Case("predict", lambda t, s: P(t, s, "--annotations", s.ann), ("--annotations", "--explain")),
    "predict --config without --detectron2":
        Case("predict", lambda t, s: P(t, s, "--config", _write(t / "c.yaml", "")), ("--config", "--detectron2")),
    "predict --detectron2 missing":
        Case("predict", lambda t, s: [s.image, "--out", str(t), "--detectron2", str(t / "no.pth")],
             ("--detectron2", "no.pth")),
    "predict config key mistyped": Case("predict", lambda t, s: D2(t, s, YAML_TYPO), SCORE_TYPO),
    "predict config value of a wrong type":
        Case("predict", lambda t, s: D2(t, s, "MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: eighty\n"),
             ("config.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", "eighty")),
    "predict config YAML syntax":
        Case("predict", lambda t, s: D2(t, s, "MODEL:\n  ROI_HEADS: [\n"), ("config.yaml", "YAML", "line")),
    "predict config value out of range":
        Case("predict", lambda t, s: D2(t, s, "MODEL:\n  ROI_HEADS:\n    SCORE_THRESH_TEST: 1.5\n"),
             ("config.yaml", "MODEL.ROI_HEADS.SCORE_THRESH_TEST")),
    "predict config top key mistyped":
        Case("predict", lambda t, s: D2(t, s, "MODLE:\n  MASK_ON: true\n"), ("MODLE", "MODEL")),
    "predict same image twice":
        Case("predict", lambda t, s: [s.image, s.image, "--out", str(t)], ("000001.png", "twice")),
    "predict --out over the input image":
        Case("predict", lambda t, s: [_copy(s.image, t / "x.png"), "--out", str(t)], ("x.png", "input image")),
    "predict --out over a user's file":
        Case("predict", lambda t, s: [s.image, "--out", _folder_with(t / "o" / "000001.json", "{}")],
             ("000001.json", "not written by")),
    "predict --annotations missing":
        Case("predict", lambda t, s: P(t, s, "--explain", "--annotations", str(t / "no.json")),
             ("--annotations", "no.json")),
    "predict --annotations without the image":
        Case("predict", lambda t, s: P(t, s, "--explain", "--annotations", _without_image_1(t, s)),
             ("000001.png", "annotations.json")),
    "predict --annotations of other classes":
        Case("predict", lambda t, s: P(t, s, "--explain", "--annotations", _ann_file(t, s, _one_more_category)),
             ("--annotations", "categories")),
    "predict option mistyped":
        Case("predict", lambda t, s: P(t, s, "--scroe", "0.5"), ("--scroe", "did you mean --score")),
    "predict without --out": Case("predict", lambda t, s: [s.image], ("--out",)),
    # evaluate
    "evaluate --data missing": Case("evaluate", lambda t, s: E(s, data=str(t / "nowhere")), ("--data", "nowhere")),
    "evaluate --data without annotations.json":
        Case("evaluate", lambda t, s: E(s, data=_folder_with(t / "d" / "x.txt", "")), ("--data", "annotations.json")),
    "evaluate --batch-size -1": Case("evaluate", lambda t, s: E(s, "--batch-size", "-1"), ("--batch-size",)),
    "evaluate --batch-size x": Case("evaluate", lambda t, s: E(s, "--batch-size", "x"), ("--batch-size", "x")),
    "evaluate --device banana": Case("evaluate", lambda t, s: E(s, "--device", "banana"), ("--device", "banana")),
    "evaluate --weights missing":
        Case("evaluate", lambda t, s: E(s, "--weights", str(t / "m.safetensors")), ("--weights", "m.safetensors")),
    "evaluate --out is a folder": Case("evaluate", lambda t, s: E(s, "--out", str(t)), ("--out", "folder")),
    "evaluate --out over a user's file":
        Case("evaluate", lambda t, s: E(s, "--out", _write(t / "notes.json", "[1]")), ("--out", "notes.json")),
    "evaluate --out under a file":
        Case("evaluate", lambda t, s: E(s, "--out", _write(t / "f", "x") + "/r.json"), ("--out", "f")),
    "evaluate no annotations":
        Case("evaluate", lambda t, s: E(s, data=_split_copy(t, s, lambda c: c.update(annotations=[]))),
             ("annotations.json", "no objects")),
    "evaluate annotations not JSON":
        Case("evaluate", lambda t, s: E(s, data=_folder_with(t / "d" / "annotations.json", "{")),
             ("annotations.json", "JSON")),
    "evaluate an image missing":
        Case("evaluate", lambda t, s: E(s, data=_split_copy(t, s, drop="000002.png")), ("000002.png", "missing")),
    "evaluate classes differ":
        Case("evaluate", lambda t, s: E(s, data=_split_copy(t, s, _one_more_category)), ("--weights", "categories")),
    "evaluate --paste wrong": Case("evaluate", lambda t, s: E(s, "--paste", "nearest"), ("--paste", "nearest")),
    "evaluate option mistyped":
        Case("evaluate", lambda t, s: ["--weight", "shapes"], ("--weight", "did you mean --weights")),
    # data
    "data --n 0": Case("data", lambda t, s: G(str(t / "d"), "--n", "0"), ("--n",)),
    "data --n many": Case("data", lambda t, s: G(str(t / "d"), "--n", "many"), ("--n", "many")),
    "data --seed -1": Case("data", lambda t, s: G(str(t / "d"), "--seed", "-1"), ("--seed",)),
    "data --split test": Case("data", lambda t, s: G(str(t / "d"), "--split", "test"), ("--split", "test")),
    "data non-empty --out":
        Case("data", lambda t, s: G(_folder_with(t / "d" / "mine.txt", "x")), ("not empty", "--overwrite")),
    "data --overwrite keeps the user's photo":
        Case("data", lambda t, s: G(_user_split(t, s), "--overwrite"), ("holiday.png",)),
    "data --overwrite keeps a foreign annotations.json":
        Case("data", lambda t, s: G(_folder_with(t / "d" / "annotations.json", '{"images": []}'), "--overwrite"),
             ("annotations.json", "not written")),
    "data --out is a file": Case("data", lambda t, s: G(_write(t / "f", "x")), ("f", "not a directory")),
    # train: never starts; every error is found before the train split is generated or the model built
    "train --iterations 0": Case("train", lambda t, s: T(t, "--iterations", "0"), ("--iterations",)),
    "train --lr 0": Case("train", lambda t, s: T(t, "--lr", "0"), ("--lr",)),
    "train --hflip 2": Case("train", lambda t, s: T(t, "--hflip", "2"), ("--hflip",)),
    "train --config preset mistyped":
        Case("train", lambda t, s: T(t, "--config", "shapse"), ("shapse", "did you mean shapes")),
    "train --config field mistyped":
        Case("train", lambda t, s: T(t, "--config", _write(t / "c.json", '{"min_sise": 3}')),
             ("c.json", "min_sise", "did you mean min_size")),
    "train --config not JSON":
        Case("train", lambda t, s: T(t, "--config", _write(t / "c.json", "{")), ("c.json", "JSON")),
    "train --config bad value":
        Case("train", lambda t, s: T(t, "--config", _write(t / "c.json", '{"min_size": -1}')), ("c.json", "min_size")),
    "train --resume without checkpoint": Case("train", lambda t, s: T(t, "--resume"), ("--resume", "checkpoint.pt")),
    "train --out holds a run":
        Case("train", lambda t, s: T(t, "--out", _folder_with(t / "r" / "loss_log.jsonl", "")),
             ("--out", "loss_log.jsonl")),
    "train --train-dir holds other files":
        Case("train", lambda t, s: T(t, "--train-dir", _folder_with(t / "s" / "a.txt", "")),
             ("--train-dir", "not empty")),
    "train --train-images differs":
        Case("train", lambda t, s: T(t, "--train-dir", str(s.split), "--train-images", "5"),
             ("--train-images", "2 images")),
    "train --device banana": Case("train", lambda t, s: T(t, "--device", "banana"), ("--device", "banana")),
    "train --threads 0": Case("train", lambda t, s: T(t, "--threads", "0"), ("--threads",)),
    "train --out is a file": Case("train", lambda t, s: T(t, "--out", _write(t / "f", "x")), ("--out",)),
    "train option mistyped":
        Case("train", lambda t, s: T(t, "--iteration", "5"), ("--iteration", "did you mean --iterations")),
}
# fmt: on


def _copy(src: str, dst: Path) -> str:
    dst.write_bytes(Path(src).read_bytes())
    return str(dst)


def _digest(*roots: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for r in roots for p in sorted(r.rglob("*")) if p.is_file()
    }


def _run(command: str, argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        status = MAINS[command](argv)
    except SystemExit as stop:
        status = stop.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("name", list(CASES))
def test_a_mistake_is_one_line_naming_it(name, shared, tmp_path, capsys):
    case = CASES[name]
    argv = case.argv(tmp_path, shared)
    before = _digest(tmp_path, shared.root)
    status, _, err = _run(case.command, argv, capsys)
    assert status == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    for part in case.culprit:
        assert part in errors[0], (part, errors[0])
    after = _digest(tmp_path, shared.root)
    assert {k: after.get(k) for k in before} == before, "a file that existed before changed"


def test_cuda_without_cuda_is_one_line(shared, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for command, argv in (
        ("predict", P(tmp_path, shared, "--device", "cuda")),
        ("train", T(tmp_path, "--device", "cuda")),
        ("evaluate", E(shared, "--device", "cuda")),
    ):
        status, _, err = _run(command, argv, capsys)
        assert status == 2 and err.startswith("error: --device cuda: no CUDA device") and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_refused_before_the_work(shared, tmp_path, capsys):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        status, _, err = _run("evaluate", ["--data", str(shared.split), "--weights", shared.weights, "--out",
                                           str(tmp_path / "ro" / "r.json")], capsys)  # fmt: skip
        assert status == 2 and "--out" in err and "evaluate" not in err.split("error:")[0]
    finally:
        (tmp_path / "ro").chmod(0o700)


def test_one_mistake_in_a_subprocess_has_no_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "minimask.evaluate", "--batch-size", "-1"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "--batch-size" in done.stderr


# --- nothing is lost: outputs of inputs with the same name --------------------------------------
def test_output_names_are_distinct():
    assert predict.output_names(["x.png", "y.png"]) == ["x", "y"]
    assert predict.output_names(["x.png", "x.jpg"]) == ["x_png", "x_jpg"]
    assert predict.output_names(["a/x.png", "b/x.png"]) == ["x_1", "x_2"]
    assert predict.output_names(["a/X.png", "b/x.png", "x_png.png"]) == ["X_1", "x_2", "x_png"]
    names = predict.output_names(["x.png", "x_explain.png"])
    files = [f.casefold() for n in names for f in predict.output_files(n)]
    assert len(files) == len(set(files)) and names[0] == "x"


def test_predict_same_names_write_distinct_files(shared, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = _copy(shared.image, tmp_path / "a" / "x.png"), _copy(shared.image, tmp_path / "b" / "x.png")
    Image.open(shared.image).convert("RGB").save(tmp_path / "a" / "x.jpg")
    out = tmp_path / "out"
    status, stdout, err = _run("predict", [a, b, str(tmp_path / "a" / "x.jpg"), "--out", str(out), "--weights",
                                           shared.weights, "--score", "0.9"], capsys)  # fmt: skip
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["x_1.json", "x_1.png", "x_2.json", "x_2.png", "x_jpg.json",
                                                     "x_jpg.png"]  # fmt: skip
    assert f"{b} -> {out / 'x_2'}.*" in stdout
    assert "wrote 6 files" in stdout
    before = _digest(out)
    status, _, err = _run("predict", [a, "--out", str(out), "--weights", shared.weights, "--score", "0.9"], capsys)
    assert status == 0, err  # x.png alone: out/x.png and out/x.json, new; the others are kept
    after = _digest(out)
    assert {k: after[k] for k in before} == before and len(after) == len(before) + 2


# --- --overwrite removes only what the generator wrote -----------------------------------------
def test_data_overwrite_removes_only_its_own_files(tmp_path, capsys):
    out = make_shapes(tmp_path / "d", "val", 3, seed=0)
    (out / "README.txt").write_text("mine")
    status, _, err = _run(
        "data", ["--out", str(out), "--split", "val", "--n", "2", "--seed", "1", "--overwrite"], capsys
    )
    assert status == 0, err
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000001.png", "000002.png"]
    assert (out / "README.txt").read_text() == "mine"


def test_train_split_generation_is_announced(tmp_path, capsys):
    assert train._train_split_plan(tmp_path / "new", None) == train.DEFAULT_TRAIN_IMAGES
    (tmp_path / "empty").mkdir()
    assert train._train_split_plan(tmp_path / "empty", 2) == 2
    train._ensure_train_split(tmp_path / "empty", 2, seed=1, progress=False)
    assert "generating 2 shapes images into" in capsys.readouterr().out
    assert train._train_split_plan(tmp_path / "empty", None) == 0  # there now: used as it is


# --- one policy for invalid annotations ---------------------------------------------------------
def _invalid(coco: dict) -> None:
    first = coco["annotations"][0]
    first["bbox"] = [first["bbox"][0], first["bbox"][1], -4, first["bbox"][3]]  # a negative width
    two_points = {"bbox": [1, 1, 3, 3], "area": 4, "iscrowd": 0, "segmentation": [[1, 1, 4, 4]]}
    coco["annotations"].append(
        {"id": 999, "image_id": first["image_id"], "category_id": first["category_id"], **two_points}
    )


def test_invalid_annotations_are_named_and_never_matched(shared, tmp_path, capsys):
    data = Path(_split_copy(tmp_path, shared, _invalid))
    first = json.loads((data / "annotations.json").read_text())["annotations"][0]["id"]
    status, stdout, err = _run("evaluate", ["--data", str(data), "--weights", shared.weights], capsys)
    assert status == 0, err
    assert err.startswith("warning: ") and f"ids {first}" in err and "ids 999" in err and "skipped 2" in err
    image = str(data / "images" / "000001.png")
    status, _, err = _run("predict", [image, "--out", str(tmp_path / "o"), "--weights", shared.weights, "--explain",
                                      "--annotations", str(data / "annotations.json")], capsys)  # fmt: skip
    assert status == 0, err
    assert "warning: " in err and "ids 999" in err
    report = (tmp_path / "o" / "000001_explain.txt").read_text()
    assert "id 999: no polygon of 3 or more points" in report and f"id {first}: a box of zero" in report


# --- photos as viewers show them; help for every option ---------------------------------------
def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # a white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view", as phones write it
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    image = read_image(tmp_path / "phone.jpg")
    assert image.shape == (3, 40, 20)
    assert image[:, :10].mean() > 0.9 and image[:, -10:].mean() < 0.1  # the band is now at the top


@pytest.mark.parametrize("command", list(MAINS))
def test_every_option_has_help_and_its_default(command, capsys):
    status, stdout, _ = _run(command, ["--help"], capsys)
    assert status == 0 and "return" not in stdout.split("options:")[0] and "Exit status" in stdout
    parser = {"predict": predict._parser, "evaluate": evaluate._parser, "train": train._parser}.get(command)
    if parser is None:
        return
    for action in parser()._actions:
        assert action.help, action.option_strings
        if action.default is not None and action.default is not False and action.default != "==SUPPRESS==":
            assert "default" in parser()._get_formatter()._get_help_string(action), action.option_strings
